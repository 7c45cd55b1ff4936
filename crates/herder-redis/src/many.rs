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
    /// The lease it was last told to wait for (its value).
    blocked_by: Option<Vec<u8>>,
    /// While the batch holds its answers back (see `Rounds::holding`): the lease it waits for,
    /// granted before the batch's own.
    older: Option<Vec<u8>>,
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
    /// Answers held back, with the leases among them, while the batch waits for the keys other
    /// instances hold (see `Rounds::run`); `holding` once it does.
    held: Vec<(usize, Acquired<V>)>,
    holding: bool,
    /// Whether the batch may hold its answers back: on a single server only.
    may_hold: bool,
}

impl<K, V> Shared<K, V>
where
    K: Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) async fn acquire_many(self: &Arc<Self>, keys: &[K]) -> Acquisition<V> {
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
                    blocked_by: None,
                    older: None,
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
            held: Vec::new(),
            holding: false,
            may_hold: !self.connection.is_cluster(),
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
                    let poll = self
                        .backoff
                        .min(Duration::from_millis(self.lease_left))
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
                    ask.blocked_by = None;
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
                        Some(Reply::Wait(left_ms, lease)) => {
                            if !ask.waited {
                                ask.waited = true;
                                bump(&shared.stats.lease_waits);
                            }
                            ask.blocked_by = Some(lease);
                            self.lease_left = self.lease_left.min(left_ms);
                            again.push(ask);
                            continue;
                        }
                    };
                    answers.push((ask.index, answer));
                }
                self.asks = again;
                if self.may_hold && !self.asks.is_empty() {
                    answers = self.hold(answers);
                }
                if self.asks.is_empty() {
                    answers.append(&mut self.held);
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
                    let mut answers: Vec<_> = self
                        .asks
                        .iter()
                        .map(|ask| {
                            bump(&shared.stats.skipped);
                            (ask.index, Acquired::Unavailable)
                        })
                        .collect();
                    answers.append(&mut self.held);
                    return Acquisition {
                        answers,
                        later: None,
                    };
                }
            }
        })
    }
}

impl<K, V> Rounds<K, V> {
    /// Whether to hold this round's `answers` back (returning none) and wait for the keys left,
    /// all held by other instances: what it returns is to be answered now.
    ///
    /// A batch that answers a lease at once, with keys other instances are loading still to
    /// come, loads (`get_many_with` calls its loader once) the keys it waits for too: they would
    /// reach the backend twice. So a batch that got a lease holds its answers back (its
    /// watchdog extends its leases meanwhile) while it waits for the others' leases, provided
    /// each is one it saw held in the round where it got its first lease, so granted before that
    /// round. That cannot deadlock: such a batch waits only for leases granted before it began
    /// holding any, by batches that began holding before (a lease is granted in the holder's
    /// round, after it began), so a chain of waits goes back in time and never closes. It relies
    /// on a round's script being one atomic step, which holds on a single server (on a cluster a
    /// round is one script per node: `may_hold` is `false`, and a batch loads the keys it waits
    /// for with its own). A lease the batch did not see at that round (re-leased since, by
    /// another batch, after a release, an expiry or an invalidation) ends the holding: the
    /// answers go out, and the keys left come later (a batch whose loader runs once then loads
    /// them too), as do the keys still unanswered after `max_wait`.
    fn hold(&mut self, mut answers: Vec<(usize, Acquired<V>)>) -> Vec<(usize, Acquired<V>)> {
        let leased = |answers: &[(usize, Acquired<V>)]| {
            answers
                .iter()
                .any(|(_, answer)| matches!(answer, Acquired::Lead(_)))
        };
        if !self.holding {
            if !leased(&answers) {
                return answers;
            }
            self.holding = true;
            for ask in &mut self.asks {
                ask.older = ask.blocked_by.clone();
            }
        } else if self.asks.iter().any(|ask| ask.older != ask.blocked_by) {
            // A lease granted after the batch's own: stop holding.
            self.holding = false;
            self.may_hold = false;
            answers.append(&mut self.held);
            return answers;
        }
        self.held.append(&mut answers);
        answers
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
