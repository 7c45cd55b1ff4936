//! The cache's front for a [`DataLoader`](crate::DataLoader) in front of it: the only way the
//! batch module reaches a [`Cache`].
//!
//! A key is consulted ([`CacheFront::consult`]): a hit is answered at once; a miss leads the
//! cache's flight for the key ([`LoadTicket`]), and the batch that loads the key finishes that
//! flight ([`CacheFront::finish`]), which stores the value with the cache's TTLs (unless an
//! invalidation or insert came first) and answers every other reader of the key (a `get_with`,
//! another loader sharing the cache), who joined the batch instead of loading again. A key
//! someone else is loading is waited for ([`JoinedLoad`]). A stale hit is answered at once and
//! its key refreshed by a batch. Everything the cache keeps (entries, flights, landings, the
//! tier's leases) stays behind this front.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::entry::Loaded;
use super::fetch::Lookup;
use super::handle::{Cache, Inner};
use super::load::{CacheTicket, Cause, Landing};
use super::tiered::Calls;
use crate::flight::{Failure, Join, Waiter};

/// A [`Cache`] as a DataLoader sees it.
pub(crate) struct CacheFront<K, V> {
    inner: Arc<Inner<K, V>>,
}

/// What the cache says about a key.
pub(crate) enum Consult<K, V> {
    /// A value (or a cached absence) to answer with now.
    Hit(Option<V>),
    /// A stale value to answer with now; the key goes into a batch to refresh it.
    HitAndRefresh(Option<V>, LoadTicket<K, V>),
    /// Someone else is loading the key: wait for that load.
    Wait(JoinedLoad<V>),
    /// Nobody is: load the key in a batch, and finish its flight with the batch's outcome.
    Lead(LoadTicket<K, V>),
}

/// The cache's flight for one key, led by a batch: [`CacheFront::finish`] or
/// [`CacheFront::abandon`] ends it (dropped unfinished, it ends as cancelled).
pub(crate) struct LoadTicket<K, V>(CacheTicket<K, V>);

/// The wait for a load of the cache that another reader started.
/// The flag says whether fail-safe could still serve this key's stale value to this load: only
/// then may it take the one a load released early (at its soft timeout) with, as a reader of the
/// cache would (see `Inner::wait`).
pub(crate) struct JoinedLoad<V>(Waiter<Landing<V>>, bool);

/// Why a joined load gave no value, in the joiner's terms.
#[derive(Debug)]
pub(crate) enum JoinedFailure<E> {
    /// Its loader returned an error of the joiner's type.
    Loader(Arc<E>),
    /// Its loader, from a call site with another error type, returned an error the joiner
    /// cannot name: the joiner loads the key itself.
    Foreign,
    /// It panicked or was cancelled.
    Failed(Failure),
    /// It ran out of time (the cache's load timeout).
    TimedOut(Duration),
}

/// How a batch that led flights ended.
pub(crate) enum BatchEnd<'a, V, E> {
    /// The loader answered: each key's value by its position (`None`: the loader left it out).
    Loaded {
        values: &'a [Option<V>],
        took: Duration,
    },
    /// The loader returned an error.
    Error(&'a Arc<E>),
    /// The loader panicked, or its batch was cancelled.
    Failed(&'a Failure),
    /// The batch ran past its load timeout (the loader's, or the cache's `load_timeout`).
    TimedOut(Duration),
}

/// The TTLs a tier's answers carry, by key, for [`CacheFront::finish`].
pub(crate) struct Ttls<K>(HashMap<K, Duration>);

impl<K> Default for Ttls<K> {
    fn default() -> Self {
        Ttls(HashMap::new())
    }
}

impl<K, V> CacheFront<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(cache: &Cache<K, V>) -> Self {
        CacheFront {
            inner: cache.inner.clone(),
        }
    }

    /// The cache's hard limit on a load (its `load_timeout`), which bounds a batch that leads
    /// its flights as it bounds the cache's own loads: a hung backend cannot hold a key of the
    /// cache for ever through a DataLoader either.
    pub(crate) fn load_timeout(&self) -> Option<std::time::Duration> {
        self.inner.config.load_timeout
    }

    /// Looks `key` up; on a miss, leads or joins its flight.
    pub(crate) fn consult(&self, key: &K) -> Consult<K, V> {
        let cache = &self.inner;
        match cache.lookup(key) {
            Lookup::Serve {
                fetched,
                refresh: None,
            } => Consult::Hit(fetched.value),
            Lookup::Serve {
                fetched,
                refresh: Some(stale),
            } => match cache.join_refresh(key, &stale) {
                Some((ticket, _)) => Consult::HitAndRefresh(fetched.value, LoadTicket(ticket)),
                None => Consult::Hit(fetched.value),
            },
            Lookup::Miss(fallback) => match cache.join_flight(key, true).0 {
                Join::Found(fetched) => Consult::Hit(fetched.value),
                Join::Follow(waiter, _) => Consult::Wait(JoinedLoad(waiter, fallback.is_some())),
                Join::Lead(ticket, _) => Consult::Lead(LoadTicket(ticket)),
            },
        }
    }

    /// The cache's fresh answer for `key` (its value, or a cached absence), if it has one that
    /// needs no refresh; nothing else happens. For a key whose batch has not started: a value
    /// written meanwhile (a `prime`, an `insert`) answers later loads.
    pub(crate) fn fresh(&self, key: &K) -> Option<Option<V>> {
        match self.inner.lookup(key) {
            Lookup::Serve {
                fetched,
                refresh: None,
            } => Some(fetched.value),
            _ => None,
        }
    }

    /// `true` if the cache has a shared tier, which a batch then goes through
    /// ([`CacheFront::load_through_tier`]).
    pub(crate) fn has_tier(&self) -> bool {
        self.inner.has_tier()
    }

    /// Loads a batch's `keys` through the cache's tier: what another instance holds comes from
    /// the tier, the rest from `load` (once per round of the tier's answers). Returns the
    /// values in the loader's shape, and the TTLs the tier's answers carry (a cached absence
    /// with one is kept as `None`, with it).
    pub(crate) async fn load_through_tier<F, Fut, E>(
        &self,
        keys: Vec<K>,
        load: F,
        ttls: &mut Ttls<K>,
    ) -> Result<HashMap<K, V>, E>
    where
        F: FnMut(Vec<K>) -> Fut,
        Fut: Future<Output = Result<HashMap<K, V>, E>>,
    {
        let found = self
            .inner
            .load_through_tier(keys, load, Calls::PerRound)
            .await?;
        let mut values = HashMap::with_capacity(found.len());
        for (key, Loaded { value, ttl }) in found {
            if let Some(ttl) = ttl {
                ttls.0.insert(key.clone(), ttl);
            }
            if let Some(value) = value {
                values.insert(key, value);
            }
        }
        Ok(values)
    }

    /// Finishes the flights a batch led with the batch's outcome: each key's value (or
    /// absence), or the batch's failure. `tickets` pairs each flight with its key's position.
    pub(crate) fn finish<E>(
        &self,
        tickets: Vec<(usize, LoadTicket<K, V>)>,
        end: BatchEnd<'_, V, E>,
        ttls: &Ttls<K>,
    ) where
        E: Send + Sync + 'static,
    {
        for (position, LoadTicket(ticket)) in tickets {
            let landing = match &end {
                BatchEnd::Loaded { values, took } => Ok(Landing::Loaded {
                    value: values[position].clone(),
                    ttl: if ttls.0.is_empty() {
                        None
                    } else {
                        ttls.0.get(ticket.key()).copied()
                    },
                    took: *took,
                }),
                BatchEnd::Error(error) => Ok(Landing::Failed {
                    cause: Cause::Error((*error).clone()),
                    fallback: None,
                    late: None,
                }),
                BatchEnd::Failed(Failure::Panicked(message)) => Ok(Landing::Failed {
                    cause: Cause::Panicked(message.clone()),
                    fallback: None,
                    late: None,
                }),
                BatchEnd::Failed(Failure::Cancelled) => Err(Failure::Cancelled),
                BatchEnd::TimedOut(limit) => Ok(Landing::Failed {
                    cause: Cause::TimedOut(*limit),
                    fallback: None,
                    late: None,
                }),
            };
            self.inner.finish_load(ticket, landing, None);
        }
    }

    /// Ends the flights of a batch that will never answer, as cancelled, so that no reader
    /// waits for them.
    pub(crate) fn abandon(&self, tickets: Vec<(usize, LoadTicket<K, V>)>) {
        for (_, LoadTicket(ticket)) in tickets {
            self.inner
                .finish_load(ticket, Err(Failure::Cancelled), None);
        }
    }

    /// Stores `value` as an explicit write ([`Cache::insert`]).
    pub(crate) fn insert(&self, key: K, value: V) {
        self.inner.insert(key, Some(value), None);
    }

    /// Invalidates `key` here and, through the tier, everywhere ([`Cache::invalidate`]).
    pub(crate) fn invalidate(&self, key: &K) {
        self.inner.invalidate(key);
    }

    /// Invalidates every key ([`Cache::invalidate_all`]).
    pub(crate) fn invalidate_all(&self) {
        self.inner.invalidate_all();
    }
}

impl<V: Clone> JoinedLoad<V> {
    /// Polls the joined load: its value (or absence; a stale value when it failed and fail-safe
    /// serves one), or why it gave none.
    pub(crate) fn poll_joined<E: Send + Sync + 'static>(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<V>, JoinedFailure<E>>> {
        let outcome = match Pin::new(&mut self.0).poll(cx) {
            Poll::Ready(outcome) => outcome,
            Poll::Pending => return Poll::Pending,
        };
        Poll::Ready(match outcome {
            Ok(Landing::Loaded { value, .. }) => Ok(value),
            Ok(Landing::Failed {
                fallback: Some(value),
                ..
            }) if self.1 => Ok(Some(value)),
            Ok(Landing::Failed { cause, .. }) => Err(match cause {
                Cause::Error(error) => {
                    let error: Arc<dyn Any + Send + Sync> = error;
                    match error.downcast::<E>() {
                        Ok(error) => JoinedFailure::Loader(error),
                        Err(_) => JoinedFailure::Foreign,
                    }
                }
                Cause::Panicked(message) => JoinedFailure::Failed(Failure::Panicked(message)),
                Cause::TimedOut(after) => JoinedFailure::TimedOut(after),
            }),
            Err(failure) => Err(JoinedFailure::Failed(failure)),
        })
    }
}

impl<K, V> fmt::Debug for CacheFront<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheFront").finish_non_exhaustive()
    }
}

impl<K, V> fmt::Debug for LoadTicket<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadTicket").finish_non_exhaustive()
    }
}

impl<V> fmt::Debug for JoinedLoad<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinedLoad").finish_non_exhaustive()
    }
}
