//! The leases of one batch (one `acquire_many`): one watchdog extends them all, and their fills
//! (and releases) go to Redis together, one FILL_MANY (one per node on a cluster: see
//! `nodes.rs`), once every lease of the batch is settled.
//!
//! A batch's caller fills its leases concurrently (see [`herder::cache::Lease`]); each fill
//! waits for the last one, which sends them all. A fill that waits too long (a caller that fills
//! one lease after another) sends its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herder::cache::{Lease, Loaded, TierFuture};
use tokio::sync::watch;

use crate::events::Kind;
use crate::layout::Keys;
use crate::lease::{Sealed, seal};
use crate::nodes::Route;
use crate::scripts::{EXTEND_MANY, EXTEND_MANY_CROSS, FILL_MANY, FILL_MANY_CROSS};
use crate::stats::bump;
use crate::tier::{Shared, batch_keys, lock};

/// One lease of the batch, as FILL_MANY needs it.
struct Held {
    /// The user key's bytes, for the messages.
    key: Vec<u8>,
    keys: Keys,
    /// `{generation}|{token}`.
    lease: String,
    epoch: String,
    generation: String,
}

/// How a lease was settled: filled (with what), or released (`None`).
type Settled = (Held, Option<Sealed>);

struct State {
    /// Leases granted and not yet settled.
    outstanding: usize,
    /// Settled leases waiting for the batch's write, by number.
    settled: HashMap<usize, Settled>,
    /// The lease keys and values the watchdog extends.
    extend: Vec<(Vec<u8>, Vec<u8>, String)>,
    next: usize,
}

pub(crate) struct Group<K, V> {
    shared: Arc<Shared<K, V>>,
    state: Mutex<State>,
    /// `true` once the batch's write is done; stops the watchdog.
    sent: watch::Sender<bool>,
}

impl<K, V> Group<K, V>
where
    K: Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(shared: Arc<Shared<K, V>>) -> Arc<Self> {
        let (sent, _) = watch::channel(false);
        Arc::new(Group {
            shared,
            state: Mutex::new(State {
                outstanding: 0,
                settled: HashMap::new(),
                extend: Vec::new(),
                next: 0,
            }),
            sent,
        })
    }

    /// A lease of this batch; the first one starts the batch's watchdog.
    pub(crate) fn grant(
        self: &Arc<Self>,
        key: Vec<u8>,
        keys: Keys,
        token: &str,
        epoch: String,
        generation: String,
    ) -> GroupLease<K, V> {
        let lease = format!("{generation}|{token}");
        let (id, first) = {
            let mut state = lock(&self.state);
            state.outstanding += 1;
            state
                .extend
                .push((keys.lease.clone(), keys.generation.clone(), lease.clone()));
            state.next += 1;
            (state.next, state.next == 1)
        };
        if first {
            tokio::spawn(watchdog(Arc::downgrade(self), self.sent.subscribe()));
        }
        GroupLease {
            group: self.clone(),
            id,
            held: Some(Held {
                key,
                keys,
                lease,
                epoch,
                generation,
            }),
        }
    }

    /// Records how lease `id` was settled; `true` if it was the batch's last.
    fn settle(&self, id: usize, settled: Settled) -> bool {
        let mut state = lock(&self.state);
        state.settled.insert(id, settled);
        state.outstanding -= 1;
        state.outstanding == 0
    }

    /// Sends every settled lease: one FILL_MANY per script group (`Shared::route`), concurrently.
    async fn send(&self) {
        let settled: Vec<Settled> = {
            let mut state = lock(&self.state);
            state.settled.drain().map(|(_, settled)| settled).collect()
        };
        let shared = &self.shared;
        let map = shared.routes().await;
        let map = map.as_deref().map(Vec::as_slice);
        let (cross, fill) = shared.script_for(map, &FILL_MANY, &FILL_MANY_CROSS);
        let mut groups: HashMap<Route, Vec<Settled>> = HashMap::new();
        for settled in settled {
            let route = shared.route(map, &settled.0.keys.generation);
            groups.entry(route).or_default().push(settled);
        }
        let calls = groups.into_values().map(|settled| async move {
            let mut script = fill.prepare_invoke();
            script.arg(&shared.channel);
            let mut names: Vec<&[u8]> = Vec::with_capacity(4 * settled.len());
            for (held, fill) in &settled {
                let keys = &held.keys;
                names.extend(
                    [&keys.generation, &keys.value, &keys.lease, &keys.epoch].map(|k| &k[..]),
                );
                let (mode, kind, sealed) = match fill {
                    Some(sealed) => ("f", Kind::Filled, sealed),
                    None => ("r", Kind::Released, &EMPTY),
                };
                script
                    .arg(mode)
                    .arg(&held.lease)
                    .arg(&held.epoch)
                    .arg(&held.generation)
                    .arg(sealed.fresh_ms)
                    .arg(&sealed.body)
                    .arg(sealed.px)
                    .arg(shared.message(kind, &held.key));
            }
            batch_keys(&mut script, cross, &names, 1 + 8 * settled.len());
            let Some(answers) = shared.run::<Vec<i64>>(script).await else {
                if cross {
                    shared.nodes.failed();
                }
                return;
            };
            if cross {
                shared.nodes.succeeded();
            }
            for ((_, fill), answer) in settled.iter().zip(answers) {
                match (fill, answer) {
                    (Some(_), 1) => bump(&shared.stats.fills),
                    (Some(_), _) => bump(&shared.stats.fills_lost),
                    (None, _) => {}
                }
            }
        });
        futures_util::future::join_all(calls).await;
        self.sent.send_replace(true);
        // The releases are sent: the keys asked for again need not wait for them.
        let mut releasing = lock(&shared.releasing);
        releasing.retain(|_, sent| !*sent.borrow() && sent.has_changed().is_ok());
    }

    /// Takes settled lease `id` back out of the batch's write, unless that is under way.
    fn take_back(&self, id: usize) -> Option<Settled> {
        lock(&self.state).settled.remove(&id)
    }
}

const EMPTY: Sealed = Sealed {
    body: Vec::new(),
    fresh_ms: 0,
    px: 0,
};

/// Extends the batch's leases every third of their TTL until the batch's write is sent (or the
/// batch is gone), one EXTEND_MANY per script group. Leases already settled or lost are skipped by the
/// script.
async fn watchdog<K, V>(group: std::sync::Weak<Group<K, V>>, mut sent: watch::Receiver<bool>)
where
    K: Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let Some(every) = group.upgrade().map(|g| g.shared.config.lease_ttl / 3) else {
        return;
    };
    loop {
        tokio::select! {
            _ = sent.wait_for(|sent| *sent) => return,
            () = tokio::time::sleep(every) => {}
        }
        let Some(group) = group.upgrade() else { return };
        let shared = &group.shared;
        let map = shared.routes().await;
        let map = map.as_deref().map(Vec::as_slice);
        let (cross, extend) = shared.script_for(map, &EXTEND_MANY, &EXTEND_MANY_CROSS);
        let mut groups: HashMap<Route, Vec<(Vec<u8>, String)>> = HashMap::new();
        for (lease_key, generation, lease) in lock(&group.state).extend.iter() {
            groups
                .entry(shared.route(map, generation))
                .or_default()
                .push((lease_key.clone(), lease.clone()));
        }
        let lease_ms = shared.config.lease_ttl.as_millis().to_string();
        let calls = groups.into_values().map(|leases| {
            let mut script = extend.prepare_invoke();
            script.arg(&lease_ms);
            for (_, lease) in &leases {
                script.arg(lease);
            }
            let names: Vec<&[u8]> = leases.iter().map(|(key, _)| &key[..]).collect();
            batch_keys(&mut script, cross, &names, 1 + leases.len());
            async move { shared.run::<i64>(script).await }
        });
        let extended: i64 = futures_util::future::join_all(calls)
            .await
            .into_iter()
            .map(|n| n.unwrap_or(1))
            .sum();
        if extended == 0 {
            return;
        }
    }
}

/// A lease granted to a batch: its fill joins the batch's write.
pub(crate) struct GroupLease<K, V>
where
    K: Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    group: Arc<Group<K, V>>,
    id: usize,
    held: Option<Held>,
}

impl<K, V> Lease<V> for GroupLease<K, V>
where
    K: Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn fill(
        mut self: Box<Self>,
        loaded: Loaded<V>,
        ttl: Option<Duration>,
    ) -> TierFuture<'static, ()> {
        let held = self.held.take().expect("filled once");
        let sealed = seal(&*self.group.shared.codec, &loaded, ttl);
        let group = self.group.clone();
        let id = self.id;
        Box::pin(async move {
            if group.settle(id, (held, Some(sealed))) {
                group.send().await;
                return;
            }
            // The last fill of the batch sends this one too; a batch that fills its leases one
            // after another would wait here for ever: past the budget, send this one alone.
            let mut sent = group.sent.subscribe();
            let budget = group.shared.config.budget;
            if tokio::time::timeout(budget, sent.wait_for(|sent| *sent))
                .await
                .is_ok()
            {
                return;
            }
            if let Some(settled) = group.take_back(id) {
                let alone = Group::new(group.shared.clone());
                lock(&alone.state).settled.insert(0, settled);
                alone.send().await;
            }
        })
    }
}

impl<K, V> Drop for GroupLease<K, V>
where
    K: Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        // Dropped without a fill (the load failed): release it with the batch's write, so that
        // other instances load the key at once instead of waiting for the lease to expire.
        let Some(held) = self.held.take() else {
            return;
        };
        // Asked for again by this instance before the release is sent, the key waits for it.
        lock(&self.group.shared.releasing).insert(held.key.clone(), self.group.sent.subscribe());
        if !self.group.settle(self.id, (held, None)) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let group = self.group.clone();
        runtime.spawn(async move { group.send().await });
    }
}
