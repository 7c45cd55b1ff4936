//! The tier's background work: the pub/sub subscriber (wake-ups and invalidations from other
//! instances) and the sender of this instance's pending invalidations, which retries each one
//! until Redis applies it (see `pending.rs`).

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::events::{self, Kind};
use crate::pending::Job;
use crate::scripts::{INVALIDATE, INVALIDATE_ALL};
use crate::stats::bump;
use crate::tier::{Shared, lock};

/// How long a key's epoch outlives its last invalidation: longer than any load should take.
const EPOCH_TTL_MS: u64 = 3_600_000;

/// The longest pause between two attempts to apply a pending invalidation, and between two
/// attempts to resubscribe: with Redis back, both resume within this.
pub(crate) const MAX_RETRY: Duration = Duration::from_millis(250);

/// How often the subscriber checks that its connection still answers.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// The background half of a [`RedisTier`](crate::RedisTier), from
/// [`Builder::build_with_worker`](crate::Builder::build_with_worker): run it with
/// [`Worker::run`]. It ends once every handle on the tier is dropped.
pub struct Worker<K, V> {
    shared: Weak<Shared<K, V>>,
    client: redis::Client,
    channel: String,
    added: Arc<Notify>,
}

impl<K, V> Worker<K, V>
where
    K: DeserializeOwned + std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(shared: &Arc<Shared<K, V>>) -> Self {
        Worker {
            shared: Arc::downgrade(shared),
            client: shared.client.clone(),
            channel: shared.channel.clone(),
            added: shared.pending_added.clone(),
        }
    }

    /// Subscribes to the namespace's channel (resubscribing, and flushing L1, after a lost
    /// connection) and publishes this instance's invalidations, until the tier is dropped.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the background work; the cache goes on with Redis as a
    /// shared store, but invalidations then neither leave nor reach this instance.
    pub async fn run(self) {
        let Worker {
            shared,
            client,
            channel,
            added,
        } = self;
        tokio::select! {
            () = subscribe(shared.clone(), client, channel) => {}
            () = invalidate(shared, added) => {}
        }
    }
}

impl<K, V> fmt::Debug for Worker<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

async fn subscribe<K, V>(shared: Weak<Shared<K, V>>, client: redis::Client, channel: String)
where
    K: DeserializeOwned + std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let mut first = true;
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(budget) = shared.upgrade().map(|s| s.config.budget) else {
            return;
        };
        let connect = tokio::time::timeout(
            budget.max(Duration::from_millis(500)),
            client.get_async_pubsub(),
        );
        if let Ok(Ok(mut pubsub)) = connect.await
            && pubsub.subscribe(&channel).await.is_ok()
        {
            backoff = Duration::from_millis(50);
            if let Some(shared) = shared.upgrade() {
                bump(&shared.stats.subscriptions);
            }
            if !std::mem::take(&mut first) {
                // Messages were lost while disconnected: every L1 entry may be stale.
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                if let Some(local) = shared.local.get() {
                    local.evict_all();
                }
                bump(&shared.stats.resubscribes);
                shared.wake(None);
                #[cfg(feature = "tracing")]
                tracing::info!(prefix = %shared.prefix, "redis tier: resubscribed, L1 flushed");
            }
            let (mut sink, mut messages) = pubsub.split();
            // A connection can die without a word (a half-open socket, a paused server): a
            // PING that does not come back in time ends it like a lost connection, so that the
            // next subscription flushes L1.
            let mut heartbeat = tokio::time::interval(HEARTBEAT);
            heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            heartbeat.tick().await;
            let ping_budget = budget.max(Duration::from_millis(500));
            loop {
                tokio::select! {
                    message = messages.next() => {
                        let Some(message) = message else { break };
                        let Some(shared) = shared.upgrade() else {
                            return;
                        };
                        shared.receive(message.get_payload_bytes());
                    }
                    _ = heartbeat.tick() => {
                        let ping = tokio::time::timeout(ping_budget, sink.ping::<redis::Value>());
                        if !matches!(ping.await, Ok(Ok(_))) {
                            if let Some(shared) = shared.upgrade() {
                                bump(&shared.stats.heartbeats_missed);
                            }
                            break;
                        }
                    }
                }
            }
        }
        if shared.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_RETRY);
    }
}

impl<K, V> Shared<K, V>
where
    K: DeserializeOwned + std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn receive(&self, message: &[u8]) {
        let Some((kind, origin, key)) = events::decode(message) else {
            return;
        };
        let foreign = origin != self.instance;
        match kind {
            Kind::Filled | Kind::Released => self.wake(Some(key)),
            Kind::Invalidated => {
                if foreign
                    && let (Some(local), Ok(key)) =
                        (self.local.get(), postcard::from_bytes::<K>(key))
                {
                    local.evict(&key);
                    bump(&self.stats.invalidations_received);
                }
                self.wake(Some(key));
            }
            Kind::All => {
                if foreign && let Some(local) = self.local.get() {
                    local.evict_all();
                    bump(&self.stats.invalidations_received);
                }
                self.wake(None);
            }
        }
    }
}

/// Applies this instance's pending invalidations in Redis, oldest first, retrying each until
/// Redis answers; never drops one.
async fn invalidate<K, V>(shared: Weak<Shared<K, V>>, added: Arc<Notify>)
where
    K: Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let mut backoff = Duration::from_millis(10);
    // Set by a failed attempt, cleared once nothing is pending: what is sent meanwhile was
    // replayed after an outage.
    let mut outage = false;
    loop {
        let wake = added.notified();
        let mut wake = std::pin::pin!(wake);
        wake.as_mut().enable();
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let job = lock(&shared.pending).next_job();
        let Some(job) = job else {
            outage = false;
            // No strong reference while waiting: dropping the tier wakes and ends this loop.
            drop(shared);
            wake.await;
            continue;
        };
        let script = match &job {
            Job::Key(key, _) => {
                let mut script = INVALIDATE.prepare_invoke();
                script
                    .arg(&shared.prefix)
                    .arg(key)
                    .arg(EPOCH_TTL_MS)
                    .arg(&shared.channel)
                    .arg(shared.message(Kind::Invalidated, key));
                script
            }
            Job::All(_) => {
                let mut script = INVALIDATE_ALL.prepare_invoke();
                script
                    .arg(&shared.prefix)
                    .arg(&shared.channel)
                    .arg(shared.message(Kind::All, b""));
                script
            }
        };
        if shared.run_unguarded::<i64>(script).await.is_some() {
            lock(&shared.pending).done(&job);
            bump(&shared.stats.invalidations_sent);
            if outage {
                bump(&shared.stats.invalidations_replayed);
            }
            backoff = Duration::from_millis(10);
        } else {
            if !outage {
                #[cfg(feature = "tracing")]
                tracing::warn!(prefix = %shared.prefix, "redis tier: an invalidation could not be applied; keeping it, and retrying");
            }
            outage = true;
            bump(&shared.stats.invalidations_failed);
            drop(shared);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_RETRY);
        }
    }
}
