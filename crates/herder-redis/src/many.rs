//! The acquire protocol for a batch of keys (see [`Tier::acquire_many`](herder::cache::Tier)):
//! one ACQUIRE_MANY (one round trip; on a cluster one per node, see `nodes.rs`), sent
//! concurrently; the keys other instances hold leases on are asked again, together, when one
//! of them is filled or released (or at the next poll), until each has an answer or
//! `max_wait` has passed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;

use herder::cache::{Acquired, Acquisition, TierFuture};
use redis::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::codec;
use crate::group::Group;
use crate::layout::Keys;
use crate::nodes::Route;
use crate::scripts::{ACQUIRE_MANY, ACQUIRE_MANY_CROSS};
use crate::stats::bump;
use crate::tier::{Reply, Shared, WaitGuard, answers_of, batch_keys, loaded, lock, parse};

/// The shortest wait between two asks for keys other instances hold.
const MIN_POLL: Duration = Duration::from_millis(5);

/// A key still to be answered.
struct Ask {
    /// Its place in the batch.
    index: usize,
    key: Vec<u8>,
    keys: Keys,
    /// Its stored value could not be read: ask past it.
    ignore_value: bool,
    /// It waited for another instance's lease.
    waited: bool,
}

/// The keys of a batch still to be answered, and how to ask for them.
struct Rounds<K, V> {
    shared: Arc<Shared<K, V>>,
    asks: Vec<Ask>,
    token: String,
    lease_ms: String,
    started: Instant,
    backoff: Duration,
    /// Listening for fills and releases of `asks` since before the last ask, so that none
    /// between that answer and the next wait is missed.
    /// (The notified future first: it holds the notifier too, and must be gone when the guard
    /// checks whether it was the last waiter.)
    listening: Vec<(Pin<Box<OwnedNotified>>, WaitGuard<K, V>)>,
    /// The shortest time left on the leases the keys wait for (ms).
    lease_left: u64,
}

impl<K, V> Shared<K, V>
where
    K: Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) async fn acquire_many(self: &Arc<Self>, keys: &[K]) -> Acquisition<V> {
        // A key whose lease this instance released, asked for again before the release is
        // sent (a batch that gave its leases back): the ask waits for the release, within the
        // budget, or it would be told to wait for its own old lease. (Before the look at the
        // pending invalidations, so that nothing comes between that look and the ask.)
        let releases: Vec<watch::Receiver<bool>> = {
            let releasing = lock(&self.releasing);
            if releasing.is_empty() {
                Vec::new()
            } else {
                keys.iter()
                    .filter_map(|key| postcard::to_stdvec(key).ok())
                    .filter_map(|key| releasing.get(&key).cloned())
                    .collect()
            }
        };
        if !releases.is_empty() {
            let sent = releases.into_iter().map(|mut sent| async move {
                let _ = sent.wait_for(|sent| *sent).await;
            });
            let _ = tokio::time::timeout(self.config.budget, futures_util::future::join_all(sent))
                .await;
        }
        // Whatever this answers (a value, a lease, or nothing) ends up in L1.
        self.expose();
        let mut unavailable = Vec::new();
        let mut asks = Vec::with_capacity(keys.len());
        {
            let pending = lock(&self.pending);
            for (index, key) in keys.iter().enumerate() {
                let Ok(key) = postcard::to_stdvec(key) else {
                    unavailable.push((index, Acquired::Unavailable));
                    continue;
                };
                if pending.covers(&key) {
                    // Invalidated here, not yet in Redis: load locally, fill nothing.
                    bump(&self.stats.l2_skipped_pending);
                    unavailable.push((index, Acquired::Unavailable));
                    continue;
                }
                let keys = self.layout.keys(&key);
                asks.push(Ask {
                    index,
                    key,
                    keys,
                    ignore_value: false,
                    waited: false,
                });
            }
        }
        let rounds = Rounds {
            shared: self.clone(),
            asks,
            token: format!("{:016x}{:016x}", self.instance, fastrand::u64(..)),
            lease_ms: self.config.lease_ttl.as_millis().to_string(),
            started: Instant::now(),
            backoff: Duration::from_millis(5),
            listening: Vec::new(),
            lease_left: u64::MAX,
        };
        let mut acquisition = if rounds.asks.is_empty() {
            Acquisition {
                answers: Vec::new(),
                later: None,
            }
        } else {
            rounds.run().await
        };
        acquisition.answers.extend(unavailable);
        acquisition
    }
}

impl<K, V> Rounds<K, V>
where
    K: Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Asks for the keys left until at least one is answered (or `max_wait` has passed, and
    /// the rest are unavailable): those answers, and a later round for the keys still held by
    /// other instances.
    fn run(mut self) -> TierFuture<'static, Acquisition<V>> {
        Box::pin(async move {
            let shared = self.shared.clone();
            // This round's leases, filled together.
            let group = Group::new(shared.clone());
            loop {
                if !self.listening.is_empty() {
                    // A fill or release of any of them wakes us; otherwise poll, in case a
                    // message was lost or a holder died (its lease then expires and the next
                    // ask takes it).
                    // Never faster than `MIN_POLL`, whatever the leases' time left says (a
                    // lease about to expire, or a reply that is not a time).
                    // Nor past `max_wait`: the ask after it is the last.
                    let left = shared
                        .config
                        .max_wait
                        .saturating_sub(self.started.elapsed());
                    let poll = self
                        .backoff
                        .min(Duration::from_millis(self.lease_left))
                        .min(left)
                        .max(MIN_POLL);
                    let woken = self.listening.iter_mut().map(|(woken, _)| woken.as_mut());
                    let _ =
                        tokio::time::timeout(poll, futures_util::future::select_all(woken)).await;
                    self.backoff = (self.backoff * 2).min(shared.config.lease_ttl / 4);
                }
                // Listen before asking: a fill between the answer and the wait is not missed.
                self.listening.clear();
                self.listening = self
                    .asks
                    .iter()
                    .map(|ask| {
                        let guard = shared.waiter(&ask.key);
                        let mut woken = Box::pin(guard.notify.clone().notified_owned());
                        woken.as_mut().enable();
                        (woken, guard)
                    })
                    .collect();
                let replies = shared.ask(&self.asks, &self.token, &self.lease_ms).await;
                let mut answers = Vec::new();
                let mut again = Vec::new();
                let mut retry_now = false;
                self.lease_left = u64::MAX;
                for (mut ask, reply) in std::mem::take(&mut self.asks).into_iter().zip(replies) {
                    let answer = match reply {
                        None => Acquired::Unavailable,
                        Some(Reply::Fresh(body, left_ms)) => {
                            match codec::open(&*shared.codec, &body) {
                                Some(value) => {
                                    bump(&shared.stats.l2_hits);
                                    Acquired::Hit(loaded(value, Duration::from_millis(left_ms)))
                                }
                                None => {
                                    bump(&shared.stats.decode_failures);
                                    ask.ignore_value = true;
                                    retry_now = true;
                                    again.push(ask);
                                    continue;
                                }
                            }
                        }
                        Some(Reply::Stale(body)) => match codec::open(&*shared.codec, &body) {
                            // Another instance refreshes it: serve it stale meanwhile.
                            Some(value) => {
                                bump(&shared.stats.l2_stale_hits);
                                Acquired::Hit(loaded(value, Duration::ZERO))
                            }
                            None => {
                                bump(&shared.stats.decode_failures);
                                ask.ignore_value = true;
                                retry_now = true;
                                again.push(ask);
                                continue;
                            }
                        },
                        Some(Reply::Lease(epoch, generation, corrupt)) => {
                            if corrupt {
                                bump(&shared.stats.decode_failures);
                            }
                            bump(&shared.stats.leases);
                            if ask.waited {
                                bump(&shared.stats.takeovers);
                            }
                            let lease =
                                group.grant(ask.key, ask.keys, &self.token, epoch, generation);
                            Acquired::Lead(Box::new(lease))
                        }
                        Some(Reply::Wait(left_ms)) => {
                            if !ask.waited {
                                ask.waited = true;
                                bump(&shared.stats.lease_waits);
                            }
                            self.lease_left = self.lease_left.min(left_ms);
                            again.push(ask);
                            continue;
                        }
                    };
                    answers.push((ask.index, answer));
                }
                self.asks = again;
                if self.asks.is_empty() {
                    return Acquisition {
                        answers,
                        later: None,
                    };
                }
                if !answers.is_empty() {
                    return Acquisition {
                        answers,
                        later: Some(self.run()),
                    };
                }
                if retry_now {
                    // Unreadable values: ask past them at once.
                    self.listening.clear();
                    continue;
                }
                if self.started.elapsed() >= shared.config.max_wait {
                    let answers = self
                        .asks
                        .iter()
                        .map(|ask| {
                            bump(&shared.stats.skipped);
                            (ask.index, Acquired::Unavailable)
                        })
                        .collect();
                    return Acquisition {
                        answers,
                        later: None,
                    };
                }
            }
        })
    }
}

impl<K, V> Shared<K, V> {
    /// One ACQUIRE_MANY per script group (`Shared::route`), concurrently: an answer per ask, in order (`None`: Redis did
    /// not answer).
    async fn ask(&self, asks: &[Ask], token: &str, lease_ms: &str) -> Vec<Option<Reply>> {
        let map = self.routes().await;
        let map = map.as_deref().map(Vec::as_slice);
        let (cross, script) = self.script_for(map, &ACQUIRE_MANY, &ACQUIRE_MANY_CROSS);
        let mut groups: HashMap<Route, Vec<usize>> = HashMap::new();
        for (at, ask) in asks.iter().enumerate() {
            let route = self.route(map, &ask.keys.generation);
            groups.entry(route).or_default().push(at);
        }
        let calls = groups.into_values().map(|members| {
            let mut invocation = script.prepare_invoke();
            invocation.arg(token).arg(lease_ms);
            let mut ignore = String::with_capacity(members.len());
            let mut names: Vec<&[u8]> = Vec::with_capacity(4 * members.len());
            for &at in &members {
                let keys = &asks[at].keys;
                names.extend(
                    [&keys.generation, &keys.value, &keys.lease, &keys.epoch].map(|k| &k[..]),
                );
                ignore.push(if asks[at].ignore_value { '1' } else { '0' });
            }
            invocation.arg(ignore);
            batch_keys(&mut invocation, cross, &names, 3);
            async move {
                let reply = self.run::<Value>(invocation).await;
                let replies = match reply.and_then(|r| answers_of(r, token, members.len())) {
                    Some(replies) => replies,
                    None => {
                        if cross {
                            // The slots may have moved: read the map again next time.
                            self.nodes.failed();
                        }
                        return (members, Vec::new());
                    }
                };
                if cross {
                    self.nodes.succeeded();
                }
                (members, replies.into_iter().map(parse).collect())
            }
        });
        let mut replies: Vec<Option<Reply>> = asks.iter().map(|_| None).collect();
        for (members, answers) in futures_util::future::join_all(calls).await {
            for (at, reply) in members.into_iter().zip(answers) {
                replies[at] = reply;
            }
        }
        replies
    }
}
