//! The read path: look up, serve or refresh, or lead or join a load and wait for it.

use std::borrow::Borrow;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use super::config::EarlyRefresh;
use super::entry::{Entry, Freshness, Loaded};
use super::error::CacheError;
use super::handle::Inner;
use super::listener::{RemovalCause, Removed};
use super::load::{self, CacheTicket, Fallback, Landing};
use super::stats::Counter;
use super::status::{Fetched, Status};
use crate::flight::{Join, Outcome, Waiter, task};

/// What a lookup found.
pub(crate) enum Lookup<V> {
    /// A value to serve now; `refresh` (the value, as fallback) asks for a background refresh.
    Serve {
        fetched: Fetched<V>,
        refresh: Option<Fallback<V>>,
    },
    /// Nothing to serve: load. A kept stale value may stand in if the load fails or the wait
    /// runs out.
    Miss(Option<Fallback<V>>),
}

/// How many times a read re-judges an entry that was replaced while it judged an older copy.
const RETRIES: u8 = 16;

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The hit path: one storage read, the clock only if the entry expires, one counter on a
    /// stripe this thread owns; the full classification only for entries past their TTL or
    /// due for an early refresh.
    pub(crate) fn lookup<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Lookup<V>
    where
        K: Borrow<Q>,
    {
        match self.storage.get(key) {
            Some(entry) => self.classify(key, entry, RETRIES),
            None => Lookup::Miss(None),
        }
    }

    /// [`lookup`](Self::lookup) for a read that wants a value (`get_with`): a cached absence is a
    /// miss, not a negative hit, since the read goes on to load the key.
    pub(crate) fn lookup_present(&self, key: &K) -> Lookup<V> {
        match self.storage.get(key) {
            Some(entry) if entry.value().is_none() => Lookup::Miss(None),
            Some(entry) => self.classify(key, entry, RETRIES),
            None => Lookup::Miss(None),
        }
    }

    /// [`Cache::get`](crate::Cache::get): the value of a hit, without building a [`Lookup`]
    /// for the common cases (an entry that never expires, or a fresh one on a cache without
    /// early refresh or time to idle).
    #[inline]
    pub(crate) fn get_value<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let entry = match self.storage.get(key) {
            Some(entry) => entry,
            None if self.config.tti.is_some() => self.reread(key, false)?,
            None => return None,
        };
        // Never expires; or fresh, with nothing to do on a hit (no early refresh, no idle
        // timer to push back). Anything else takes the full classification.
        if !entry.needs_clock()
            || (self.config.tti.is_none()
                && matches!(self.config.early_refresh, EarlyRefresh::Off)
                && !entry.is_degraded()
                && self.clock.now_on_hit() < entry.fresh_until)
        {
            let value = entry.into_value();
            self.stats.bump(match value {
                Some(_) => Counter::Hit,
                None => Counter::NegativeHit,
            });
            return value;
        }
        match self.classify(key, entry, RETRIES) {
            Lookup::Serve { fetched, .. } => fetched.value,
            Lookup::Miss(_) => None,
        }
    }

    /// A miss, read again under the key's flight lock. With an idle timer, a read that pushes
    /// an entry's deadline back replaces it under that lock (`Inner::touch`: removed, then
    /// inserted again): read without the lock, a key read all the time could look missing.
    /// `quietly`: without counting as a use (`peek`).
    pub(crate) fn reread<Q: Hash + Eq + ?Sized>(&self, key: &Q, quietly: bool) -> Option<Entry<V>>
    where
        K: Borrow<Q>,
    {
        self.flights.with_lock(key, || match quietly {
            true => self.storage.peek(key),
            false => self.storage.get(key),
        })
    }

    /// What a stored entry means now: served (fresh, stale or re-served by fail-safe, maybe
    /// with a refresh due), or a miss (expired, maybe with a fallback).
    fn classify<Q: Hash + Eq + ?Sized>(&self, key: &Q, entry: Entry<V>, retries: u8) -> Lookup<V>
    where
        K: Borrow<Q>,
    {
        let now = if entry.needs_clock() {
            let now = self.clock.now_on_hit();
            if now < entry.fresh_until
                && !entry.is_degraded()
                && matches!(self.config.early_refresh, EarlyRefresh::Off)
            {
                if let Some(tti) = self.config.tti {
                    self.keep_alive(key, &entry, now, tti);
                }
                return self.hit(entry.into_value());
            }
            now
        } else {
            // Never expires, never refreshed early.
            return self.hit(entry.into_value());
        };
        let (keep_until, fresh_until, degraded) = (
            entry.keep_until(&self.config),
            entry.fresh_until,
            entry.is_degraded(),
        );
        let freshness = entry.freshness(now, &self.config);
        if let (Freshness::Fresh { .. }, Some(tti)) = (freshness, self.config.tti) {
            self.keep_alive(key, &entry, now, tti);
        }
        match (freshness, entry.into_value()) {
            (Freshness::Fresh { refresh }, value) => {
                let status = match (&value, degraded) {
                    (None, _) => Status::NegativeHit,
                    (Some(_), true) => Status::StaleOnError,
                    (Some(_), false) => Status::Hit,
                };
                self.stats.bump(match status {
                    Status::NegativeHit => Counter::NegativeHit,
                    Status::StaleOnError => Counter::StaleServed,
                    _ => Counter::Hit,
                });
                let refresh = match (&value, refresh) {
                    (Some(value), true) => Some(Fallback {
                        value: value.clone(),
                        keep_until,
                        fresh_until,
                    }),
                    _ => None,
                };
                Lookup::Serve {
                    fetched: Fetched { value, status },
                    refresh,
                }
            }
            (Freshness::Stale, Some(value)) => {
                self.stats.bump(Counter::StaleServed);
                let refresh = Some(Fallback {
                    value: value.clone(),
                    keep_until,
                    fresh_until,
                });
                Lookup::Serve {
                    fetched: Fetched {
                        value: Some(value),
                        status: Status::Stale,
                    },
                    refresh,
                }
            }
            (Freshness::Kept, Some(value)) => Lookup::Miss(Some(Fallback {
                value,
                keep_until,
                fresh_until,
            })),
            (Freshness::Gone, _) => {
                // Reclaim the dead entry, unless it was replaced meanwhile.
                let mut removed = Removed::new(&self.listener);
                let reclaimed = self.storage.remove_if(key, |e| {
                    e.fresh_until == fresh_until && e.is_degraded() == degraded
                });
                match reclaimed {
                    Some((key, entry)) => {
                        removed.entry(key, entry, RemovalCause::Expired, now, &self.config);
                    }
                    // Replaced since this read took its copy (a write, or a read with a time to
                    // idle pushing the deadline back while this one was descheduled): the copy
                    // was stale, the entry that is there now decides. A miss is only ever
                    // answered for an entry this read found expired and still there (it removed
                    // it), or found gone: the key really was missing during the read. (Bounded:
                    // each retry means another write or idle push happened meanwhile.)
                    None if retries > 0 => {
                        // Under the key's flight lock: a push of the idle deadline (removed, then
                        // inserted) may be half done.
                        if let Some(current) = self.reread(key, true) {
                            return self.classify(key, current, retries - 1);
                        }
                    }
                    None => {}
                }
                Lookup::Miss(None)
            }
            // Negative entries are never stale or kept.
            (Freshness::Stale | Freshness::Kept, None) => Lookup::Miss(None),
        }
    }

    /// A read of a fresh entry with a time to idle: push its idle deadline back, now and then.
    fn keep_alive<Q: Hash + Eq + ?Sized>(&self, key: &Q, entry: &Entry<V>, now: u64, tti: Duration)
    where
        K: Borrow<Q>,
    {
        if let Some(deadline) = entry.touched(now, tti) {
            self.touch(key, entry.fresh_until, deadline);
        }
    }

    /// A fresh entry, served as it is.
    #[inline]
    fn hit(&self, value: Option<V>) -> Lookup<V> {
        let status = if value.is_some() {
            self.stats.bump(Counter::Hit);
            Status::Hit
        } else {
            self.stats.bump(Counter::NegativeHit);
            Status::NegativeHit
        };
        Lookup::Serve {
            fetched: Fetched { value, status },
            refresh: None,
        }
    }

    /// Under the flight shard lock, after a miss: did a load store a fresh entry meanwhile? If
    /// not, the value the new flight may fall back on is read here, under the lock that every
    /// write of `key` takes (see `write.rs`): a fallback read before an invalidation never
    /// reaches a flight registered after it.
    fn recheck(&self, key: &K, absent_is_hit: bool) -> Result<Fetched<V>, Option<Fallback<V>>> {
        let Some(entry) = self.storage.peek(key) else {
            return Err(None);
        };
        let now = if entry.needs_clock() {
            self.clock.now()
        } else {
            0
        };
        match (entry.freshness(now, &self.config), entry.value()) {
            (Freshness::Fresh { .. }, None) if !absent_is_hit => Err(None),
            (Freshness::Fresh { .. }, _) => {
                let value = entry.into_value();
                let status = if value.is_some() {
                    Status::Hit
                } else {
                    Status::NegativeHit
                };
                Ok(Fetched { value, status })
            }
            (Freshness::Stale | Freshness::Kept, Some(_)) => {
                Err(Some(Fallback::of(entry, &self.config)))
            }
            _ => Err(None),
        }
    }

    /// Joins the flight of `key` after a miss, counting the miss (and the wait, for a follower).
    /// `Found` if a load stored a fresh entry meanwhile. A leader also gets the stale value its
    /// load may fall back on, as it stood when the flight was registered.
    pub(crate) fn join_flight(
        &self,
        key: &K,
        absent_is_hit: bool,
    ) -> (Join<K, Landing<V>, Fetched<V>>, Option<Fallback<V>>) {
        let mut fallback = None;
        let join = self
            .flights
            .join(key, false, || match self.recheck(key, absent_is_hit) {
                Ok(fetched) => Some(fetched),
                Err(stale) => {
                    fallback = stale;
                    None
                }
            });
        match &join {
            Join::Lead(..) => self.stats.bump(Counter::Miss),
            Join::Follow(..) => {
                self.stats.bump(Counter::Miss);
                self.stats.bump(Counter::Coalesced);
            }
            // A load stored the key between the lookup and the join: a hit after all.
            Join::Found(fetched) => self.stats.bump(if fetched.value.is_some() {
                Counter::Hit
            } else {
                Counter::NegativeHit
            }),
        }
        (join, fallback)
    }

    /// The flight for a background refresh of `key`, unless one is under way or the entry that
    /// asked for it (`stale`) was replaced or removed since it was read. The refresh falls back
    /// on the entry as it stands under the flight lock, never on the caller's earlier copy.
    pub(crate) fn join_refresh(
        &self,
        key: &K,
        stale: &Fallback<V>,
    ) -> Option<(CacheTicket<K, V>, Option<Fallback<V>>)> {
        let mut fallback = None;
        let current = || {
            let entry = self
                .storage
                .peek(key)
                .filter(|entry| entry.fresh_until == stale.fresh_until);
            match entry {
                Some(entry) if entry.value().is_some() => {
                    fallback = Some(Fallback::of(entry, &self.config));
                    None
                }
                // Replaced, invalidated or expired meanwhile: nothing to refresh.
                _ => Some(()),
            }
        };
        match self.flights.join(key, false, current) {
            Join::Lead(ticket, _) => {
                self.stats.bump(Counter::Refresh);
                Some((ticket, fallback))
            }
            Join::Follow(..) | Join::Found(()) => None,
        }
    }

    /// Starts a background refresh of `key` unless one is under way.
    pub(crate) fn refresh<F, Fut, E>(self: &Arc<Self>, key: &K, load: F, stale: Fallback<V>)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Loaded<V>, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let runtime = task::runtime("Cache");
        if let Some((ticket, fallback)) = self.join_refresh(key, &stale) {
            load::start(self, &runtime, ticket, load, fallback, true);
        }
    }

    /// Leads or joins the load of `key`. Returns the wait and how this call will be reported, or
    /// the value if a load stored it meanwhile (a cached absence only if `absent_is_hit`).
    pub(crate) fn join_load<F, Fut, E>(
        self: &Arc<Self>,
        key: &K,
        load: F,
        absent_is_hit: bool,
    ) -> Result<(Waiter<Landing<V>>, Status), Fetched<V>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Loaded<V>, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let runtime = task::runtime("Cache");
        let (join, fallback) = self.join_flight(key, absent_is_hit);
        match join {
            Join::Found(fetched) => Err(fetched),
            Join::Lead(ticket, waiter) => {
                load::start(self, &runtime, ticket, load, fallback, absent_is_hit);
                Ok((waiter, Status::Miss))
            }
            Join::Follow(waiter, _) => Ok((waiter, Status::Coalesced)),
        }
    }

    /// Waits for a load, within `deadline`, falling back on the stale value the caller saw
    /// when the wait runs out. A `patient` caller (one with no use for a timeout) waits past a
    /// soft timeout for the load's final landing.
    pub(crate) async fn wait<E: Send + Sync + 'static>(
        &self,
        waiter: Waiter<Landing<V>>,
        status: Status,
        deadline: Option<(tokio::time::Instant, Duration)>,
        fallback: Option<Fallback<V>>,
        patient: bool,
    ) -> Result<Fetched<V>, CacheError<E>> {
        // The load's fallback is the value fail-safe kept when it started. Only a caller that
        // found that value still servable itself may be given it: one that joins later (past
        // `max_stale`, or after the entry left) gets the load's error instead.
        let may_serve_stale = fallback.is_some();
        let mut outcome = match deadline {
            None => waiter.await,
            Some((at, wait)) => match tokio::time::timeout_at(at, waiter).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    return match fallback {
                        Some(stale) => {
                            self.stats.bump(Counter::StaleServed);
                            Ok(Fetched {
                                value: Some(stale.value),
                                status: Status::StaleOnTimeout,
                            })
                        }
                        None => Err(CacheError::timed_out(wait)),
                    };
                }
            },
        };
        if patient
            && let Ok(Landing::Failed {
                fallback,
                late: Some(late),
                ..
            }) = &outcome
            && (fallback.is_none() || !may_serve_stale)
        {
            outcome = Waiter::new(late.clone()).await;
        }
        self.interpret(outcome, status, may_serve_stale)
    }

    /// What a waiter makes of a load's outcome.
    fn interpret<E: Send + Sync + 'static>(
        &self,
        outcome: Outcome<Landing<V>>,
        status: Status,
        may_serve_stale: bool,
    ) -> Result<Fetched<V>, CacheError<E>> {
        match outcome {
            Ok(Landing::Loaded { value, .. }) => Ok(Fetched { value, status }),
            Ok(Landing::Failed {
                cause,
                fallback: Some(value),
                ..
            }) if may_serve_stale => {
                self.stats.bump(Counter::StaleServed);
                let status = match cause {
                    load::Cause::TimedOut(_) => Status::StaleOnTimeout,
                    _ => Status::StaleOnError,
                };
                Ok(Fetched {
                    value: Some(value),
                    status,
                })
            }
            Ok(Landing::Failed { cause, .. }) => Err(CacheError::from_cause(cause)),
            Err(failure) => Err(CacheError::from_failure(failure)),
        }
    }
}

/// How a read treats what it finds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Read {
    /// The longest the caller waits for a load.
    pub(crate) wait: Option<Duration>,
    /// `get_with`: a cached absence is a miss (its own loader says the value exists), and a soft
    /// timeout is waited out.
    pub(crate) present: bool,
}

/// One read-through call: serve what is cached, or lead or join the load.
pub(crate) async fn fetch<K, V, F, Fut, E>(
    inner: &Arc<Inner<K, V>>,
    key: K,
    load: F,
    read: Read,
) -> Result<Fetched<V>, CacheError<E>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Loaded<V>, E>> + Send + 'static,
    E: Send + Sync + 'static,
{
    let looked = inner.lookup(&key);
    fetch_after(inner, key, looked, load, read).await
}

/// [`fetch`] once `key` has been looked up (`looked`).
pub(crate) async fn fetch_after<K, V, F, Fut, E>(
    inner: &Arc<Inner<K, V>>,
    key: K,
    looked: Lookup<V>,
    load: F,
    read: Read,
) -> Result<Fetched<V>, CacheError<E>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Loaded<V>, E>> + Send + 'static,
    E: Send + Sync + 'static,
{
    let fallback = match looked {
        Lookup::Serve { fetched, .. } if read.present && fetched.value.is_none() => None,
        Lookup::Serve {
            fetched,
            refresh: None,
        } => return Ok(fetched),
        Lookup::Serve {
            fetched,
            refresh: Some(stale),
        } => {
            inner.refresh(&key, load, stale);
            return Ok(fetched);
        }
        Lookup::Miss(fallback) => fallback,
    };
    let deadline = super::clock::deadline(read.wait);
    match inner.join_load(&key, load, !read.present) {
        Err(fetched) => Ok(fetched),
        Ok((waiter, status)) => {
            inner
                .wait(waiter, status, deadline, fallback, read.present)
                .await
        }
    }
}
