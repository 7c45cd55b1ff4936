//! A DataLoader in front of a shared [`Cache`](crate::Cache).
//!
//! A key is looked up in the cache first. A miss leads the cache's flight for the key and goes
//! into a batch, so that every other reader of the key (a `get_with`, another loader sharing the
//! cache) joins the batch instead of loading again; when the batch ends, it finishes those flights,
//! which stores the values with the cache's TTLs (unless an invalidation or insert came first) and
//! answers their waiters. A stale hit is answered at once and its key refreshed by a batch.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use super::state::BatchResult;
use crate::cache::{CacheTicket, Cause, Found, Inner as CacheInner, Landing, Lookup};
use crate::flight::{Failure, Join, Outcome, Waiter};

/// What the cache says about a key.
pub(crate) enum Consult<K, V> {
    /// A value (or a cached absence) to answer with now.
    Hit(Option<V>),
    /// A stale value to answer with now; the key goes into a batch to refresh it.
    HitAndRefresh(Option<V>, CacheTicket<K, V>),
    /// Someone else is loading the key: wait for that load.
    Wait(Waiter<Landing<V>>),
    /// Nobody is: load the key in a batch, and finish its flight.
    Lead(CacheTicket<K, V>),
}

pub(crate) fn consult<K, V>(cache: &CacheInner<K, V>, key: &K) -> Consult<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    match cache.lookup(key) {
        Lookup::Serve {
            fetched,
            refresh: None,
        } => Consult::Hit(fetched.value),
        Lookup::Serve {
            fetched,
            refresh: Some(stale),
        } => match cache.join_refresh(key, &stale) {
            Some((ticket, _)) => Consult::HitAndRefresh(fetched.value, ticket),
            None => Consult::Hit(fetched.value),
        },
        Lookup::Miss(_) => match cache.join_flight(key, true).0 {
            Join::Found(fetched) => Consult::Hit(fetched.value),
            Join::Follow(waiter, _) => Consult::Wait(waiter),
            Join::Lead(ticket, _) => Consult::Lead(ticket),
        },
    }
}

/// Splits what a batch found through the cache's tier into the loader's shape, keeping aside
/// the TTLs the tier's answers carry (a cached absence with one is kept as `None`, with it).
pub(crate) fn split<K, V>(found: Found<K, V>, ttls: &mut HashMap<K, Duration>) -> HashMap<K, V>
where
    K: Hash + Eq + Clone,
{
    let mut values = HashMap::with_capacity(found.len());
    for (key, loaded) in found {
        if let Some(ttl) = loaded.ttl {
            ttls.insert(key.clone(), ttl);
        }
        if let Some(value) = loaded.value {
            values.insert(key, value);
        }
    }
    values
}

/// Finishes the cache flights a batch led, with the batch's outcome: each key's value (or
/// absence), or the batch's failure. `tickets` pairs each flight with its key's position;
/// `ttls`, the TTLs of the answers that carry one (a tier's).
pub(crate) fn finish<K, V, E>(
    cache: &CacheInner<K, V>,
    tickets: Vec<(usize, CacheTicket<K, V>)>,
    outcome: &Outcome<BatchResult<V, E>>,
    ttls: &HashMap<K, Duration>,
    took: Duration,
) where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    for (position, ticket) in tickets {
        let landing = match outcome {
            Ok(Ok(values)) => Ok(Landing::Loaded {
                value: values[position].clone(),
                ttl: if ttls.is_empty() {
                    None
                } else {
                    ttls.get(ticket.key()).copied()
                },
                took,
            }),
            Ok(Err(error)) => {
                let cause = Cause::Error(error.clone());
                Ok(Landing::Failed {
                    cause,
                    fallback: None,
                    late: None,
                })
            }
            Err(Failure::Panicked(message)) => Ok(Landing::Failed {
                cause: Cause::Panicked(message.clone()),
                fallback: None,
                late: None,
            }),
            Err(Failure::Cancelled) => Err(Failure::Cancelled),
        };
        cache.finish_load(ticket, landing, None);
    }
}

/// Fails the cache flights of a batch that will never run.
pub(crate) fn abandon<K, V>(cache: &CacheInner<K, V>, tickets: Vec<(usize, CacheTicket<K, V>)>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    for (_, ticket) in tickets {
        cache.finish_load(ticket, Err(Failure::Cancelled), None);
    }
}
