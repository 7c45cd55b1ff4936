//! The acquire protocol for a batch of keys (see [`Tier::acquire_many`](herder::cache::Tier)):
//! one ACQUIRE_MANY per bucket (a single server has one bucket: one round trip), sent
//! concurrently; the keys other instances hold leases on are asked again, together, when one
//! of them is filled or released (or at the next poll), until each has an answer or
//! `max_wait` has passed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use herder::cache::Acquired;
use redis::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::codec;
use crate::group::Group;
use crate::layout::Keys;
use crate::scripts::ACQUIRE_MANY;
use crate::stats::bump;
use crate::tier::{Reply, Shared, loaded, lock, parse};

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

impl<K, V> Shared<K, V>
where
    K: Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) async fn acquire_many(self: &Arc<Self>, keys: &[K]) -> Vec<Acquired<V>> {
        let mut answers: Vec<Option<Acquired<V>>> = keys.iter().map(|_| None).collect();
        let mut asks = Vec::with_capacity(keys.len());
        {
            let pending = lock(&self.pending);
            for (index, key) in keys.iter().enumerate() {
                let Ok(key) = postcard::to_stdvec(key) else {
                    continue;
                };
                if pending.covers(&key) {
                    // Invalidated here, not yet in Redis: load locally, fill nothing.
                    bump(&self.stats.l2_skipped_pending);
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
        let token = format!("{:016x}{:016x}", self.instance, fastrand::u64(..));
        let lease_ms = self.config.lease_ttl.as_millis().to_string();
        let group = Group::new(self.clone());
        let started = Instant::now();
        let mut backoff = Duration::from_millis(5);
        while !asks.is_empty() {
            // Listen before asking: a fill between the answer and the wait is not missed.
            let guards: Vec<_> = asks.iter().map(|ask| self.waiter(&ask.key)).collect();
            let mut woken: Vec<_> = guards
                .iter()
                .map(|guard| Box::pin(guard.notify.clone().notified_owned()))
                .collect();
            for woken in &mut woken {
                woken.as_mut().enable();
            }
            let replies = self.ask(&asks, &token, &lease_ms).await;
            let mut again = Vec::new();
            let (mut retry_now, mut lease_left) = (false, u64::MAX);
            for (mut ask, reply) in asks.into_iter().zip(replies) {
                let answer = match reply {
                    None => Acquired::Unavailable,
                    Some(Reply::Fresh(body, left_ms)) => {
                        match codec::open(&*self.codec, &body) {
                            Some(value) => {
                                bump(&self.stats.l2_hits);
                                Acquired::Hit(loaded(value, Duration::from_millis(left_ms)))
                            }
                            None => {
                                bump(&self.stats.decode_failures);
                                ask.ignore_value = true;
                                retry_now = true;
                                again.push(ask);
                                continue;
                            }
                        }
                    }
                    Some(Reply::Stale(body)) => match codec::open(&*self.codec, &body) {
                        Some(value) => {
                            bump(&self.stats.l2_stale_hits);
                            Acquired::Hit(loaded(value, Duration::ZERO))
                        }
                        None => {
                            bump(&self.stats.decode_failures);
                            ask.ignore_value = true;
                            retry_now = true;
                            again.push(ask);
                            continue;
                        }
                    },
                    Some(Reply::Lease(epoch, generation, corrupt)) => {
                        if corrupt {
                            bump(&self.stats.decode_failures);
                        }
                        bump(&self.stats.leases);
                        if ask.waited {
                            bump(&self.stats.takeovers);
                        }
                        let lease = group.grant(ask.key, ask.keys, &token, epoch, generation);
                        Acquired::Lead(Box::new(lease))
                    }
                    Some(Reply::Wait(left_ms)) => {
                        if !ask.waited {
                            ask.waited = true;
                            bump(&self.stats.lease_waits);
                        }
                        lease_left = lease_left.min(left_ms);
                        again.push(ask);
                        continue;
                    }
                };
                answers[ask.index] = Some(answer);
            }
            asks = again;
            if asks.is_empty() || retry_now {
                continue;
            }
            if started.elapsed() >= self.config.max_wait {
                for _ in &asks {
                    bump(&self.stats.skipped);
                }
                break;
            }
            // A fill or release of any of them wakes us; otherwise poll, in case a message was
            // lost or a holder died (its lease then expires and the next ask takes it).
            let poll = backoff.min(Duration::from_millis(lease_left.max(1)));
            let _ = tokio::time::timeout(poll, futures_util::future::select_all(woken)).await;
            backoff = (backoff * 2).min(self.config.lease_ttl / 4);
            drop(guards);
        }
        answers
            .into_iter()
            .map(|answer| answer.unwrap_or(Acquired::Unavailable))
            .collect()
    }

    /// One ACQUIRE_MANY per bucket, concurrently: an answer per ask, in order (`None`: Redis did
    /// not answer).
    async fn ask(&self, asks: &[Ask], token: &str, lease_ms: &str) -> Vec<Option<Reply>> {
        let mut buckets: HashMap<&[u8], Vec<usize>> = HashMap::new();
        for (at, ask) in asks.iter().enumerate() {
            buckets.entry(&ask.keys.generation).or_default().push(at);
        }
        let calls = buckets.into_iter().map(|(generation, members)| {
            let mut script = ACQUIRE_MANY.prepare_invoke();
            script.key(generation).arg(token).arg(lease_ms);
            let mut ignore = String::with_capacity(members.len());
            for &at in &members {
                let keys = &asks[at].keys;
                script.key(&keys.value).key(&keys.lease).key(&keys.epoch);
                ignore.push(if asks[at].ignore_value { '1' } else { '0' });
            }
            script.arg(ignore);
            async move {
                let replies = match self.run::<Value>(script).await {
                    Some(Value::Array(replies)) if replies.len() == members.len() => replies,
                    _ => return (members, Vec::new()),
                };
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
