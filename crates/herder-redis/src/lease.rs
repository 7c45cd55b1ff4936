//! A lease held by this instance: extended by a watchdog while the load runs, filled once, or
//! released if the load fails.

use std::sync::Arc;
use std::time::Duration;

use herder::cache::{Lease, Loaded, TierFuture};
use tokio::sync::oneshot;

use crate::codec;
use crate::events::Kind;
use crate::layout::Keys;
use crate::scripts::{EXTEND, FILL, RELEASE};
use crate::stats::bump;
use crate::tier::Shared;

/// The fresh time stored for a value that never expires (about 142,000 years in ms).
const NEVER_MS: u64 = 1 << 52;

/// What a fill writes: the envelope (empty: store nothing), the fresh time and the expiry.
pub(crate) struct Sealed {
    pub(crate) body: Vec<u8>,
    pub(crate) fresh_ms: u64,
    pub(crate) px: u64,
}

/// Encodes a fill: `loaded` for `ttl` (see [`Lease::fill`]).
pub(crate) fn seal<V: 'static>(
    codec: &dyn codec::Codec<V>,
    loaded: &Loaded<V>,
    ttl: Option<Duration>,
) -> Sealed {
    // An absence that is not to be cached, or a value the codec cannot encode: release the
    // lease (waiters then load for themselves) without storing anything.
    let body = match ttl {
        Some(ttl) if ttl.is_zero() => Vec::new(),
        _ => codec::seal(codec, loaded.value()).unwrap_or_default(),
    };
    // Durations saturate: one too long for Redis is "never" (no expiry), not an error.
    let millis = |ttl: Duration| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let fresh_ms = loaded
        .expires_after()
        .map_or(NEVER_MS, |ttl| millis(ttl).min(NEVER_MS));
    let px = match ttl.map(millis) {
        Some(ms) if ms < NEVER_MS => ms.max(1),
        _ => 0,
    };
    Sealed { body, fresh_ms, px }
}

pub(crate) struct RedisLease<K: Send + Sync + 'static, V: Send + Sync + 'static> {
    shared: Arc<Shared<K, V>>,
    /// The user key's bytes, for the messages.
    key: Vec<u8>,
    keys: Keys,
    /// What the lease key holds while this instance holds it: `{generation}|{token}`.
    lease: String,
    epoch: String,
    generation: String,
    /// Dropping it stops the watchdog.
    watchdog: Option<oneshot::Sender<()>>,
    settled: bool,
}

impl<K, V> RedisLease<K, V>
where
    K: Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn grant(
        shared: Arc<Shared<K, V>>,
        key: Vec<u8>,
        keys: Keys,
        token: &str,
        epoch: String,
        generation: String,
    ) -> Self {
        let lease = format!("{generation}|{token}");
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(watchdog(
            shared.clone(),
            keys.lease.clone(),
            lease.clone(),
            stopped,
        ));
        RedisLease {
            shared,
            key,
            keys,
            lease,
            epoch,
            generation,
            watchdog: Some(stop),
            settled: false,
        }
    }
}

/// Extends the lease every third of its TTL until stopped or lost. Without it, a load longer
/// than the lease would let another instance take over and load the key again (a convoy).
async fn watchdog<K, V>(
    shared: Arc<Shared<K, V>>,
    lease_key: Vec<u8>,
    lease: String,
    mut stopped: oneshot::Receiver<()>,
) {
    let every = shared.config.lease_ttl / 3;
    let lease_ms = shared.config.lease_ttl.as_millis().to_string();
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep(every) => {}
        }
        let mut script = EXTEND.prepare_invoke();
        script.key(&lease_key).arg(&lease).arg(&lease_ms);
        if shared.run::<i64>(script).await == Some(0) {
            #[cfg(feature = "tracing")]
            tracing::debug!(prefix = %shared.layout.prefix(), "redis tier: lease lost while loading");
            return;
        }
    }
}

impl<K, V> Lease<V> for RedisLease<K, V>
where
    K: Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn fill(
        mut self: Box<Self>,
        loaded: Loaded<V>,
        ttl: Option<Duration>,
    ) -> TierFuture<'static, ()> {
        Box::pin(async move {
            self.watchdog.take();
            self.settled = true;
            let shared = self.shared.clone();
            let Sealed { body, fresh_ms, px } = seal(&*shared.codec, &loaded, ttl);
            let mut script = FILL.prepare_invoke();
            script
                .key(&self.keys.generation)
                .key(&self.keys.value)
                .key(&self.keys.lease)
                .key(&self.keys.epoch)
                .arg(&self.lease)
                .arg(&self.epoch)
                .arg(&self.generation)
                .arg(fresh_ms)
                .arg(&body)
                .arg(px)
                .arg(&shared.channel)
                .arg(shared.message(Kind::Filled, &self.key));
            match shared.run::<i64>(script).await {
                Some(1) => bump(&shared.stats.fills),
                Some(_) => bump(&shared.stats.fills_lost),
                None => {}
            }
        })
    }
}

impl<K: Send + Sync + 'static, V: Send + Sync + 'static> Drop for RedisLease<K, V> {
    fn drop(&mut self) {
        self.watchdog.take();
        if self.settled {
            return;
        }
        // The load failed: give the lease up at once, so another instance can load the key
        // instead of waiting for the lease to expire. Best effort: it expires anyway.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = self.shared.clone();
        let (key, lease_key, lease) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.keys.lease),
            std::mem::take(&mut self.lease),
        );
        runtime.spawn(async move {
            let mut script = RELEASE.prepare_invoke();
            script
                .key(&lease_key)
                .arg(&lease)
                .arg(&shared.channel)
                .arg(shared.message(Kind::Released, &key));
            let _ = shared.run::<i64>(script).await;
        });
    }
}
