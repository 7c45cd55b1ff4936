//! Bulk reads: hits from the cache, in-flight keys joined, the rest loaded in one call (through
//! the shared tier, if there is one: see `tiered.rs`).
//!
//! Each missing key gets a flight of its own (so single-key readers and other bulk calls join
//! it), all led by one task that calls the bulk loader once and finishes every flight. A call
//! only ever waits for flights, and flights never wait for anything but their loader: two
//! overlapping bulk calls cannot deadlock.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use tokio::runtime::Handle;

use super::error::CacheError;
use super::fetch::Lookup;
use super::handle::Inner;
use super::load::{CacheTicket, Fallback, Landing, bounded};
use super::status::{Fetched, Status};
use super::tiered::{Calls, Found};
use crate::flight::{Join, Outcome, Waiter, task};

/// A key this call loads: its flight, and the stale value it may fall back on.
type Lead<K, V> = (CacheTicket<K, V>, Option<Fallback<V>>);

/// One key this call waits for.
struct Wait<K, V> {
    key: K,
    waiter: Waiter<Landing<V>>,
    status: Status,
    fallback: Option<Fallback<V>>,
}

pub(crate) async fn get_many<K, V, I, F, Fut, E>(
    inner: &Arc<Inner<K, V>>,
    keys: I,
    load: F,
) -> Result<HashMap<K, Fetched<V>>, CacheError<E>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    I: IntoIterator<Item = K>,
    F: FnOnce(Vec<K>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<HashMap<K, V>, E>> + Send + 'static,
    E: Send + Sync + 'static,
{
    let mut found = HashMap::new();
    let mut waits = Vec::new();
    let mut leads: Vec<Lead<K, V>> = Vec::new();
    let mut seen = HashSet::new();
    let mut runtime: Option<Handle> = None;
    // The caller's iterator runs before any flight is registered: if it panics, no key is left
    // with a flight that nothing will finish.
    let keys: Vec<K> = keys.into_iter().collect();
    for key in keys {
        if !seen.insert(key.clone()) {
            continue;
        }
        let (fallback, waiting) = match inner.lookup(&key) {
            Lookup::Serve { fetched, refresh } => {
                found.insert(key.clone(), fetched);
                match refresh {
                    // Stale: refresh it with this call's load, without waiting for it.
                    Some(stale) => (Some(stale), false),
                    None => continue,
                }
            }
            Lookup::Miss(fallback) => (fallback, true),
        };
        // Before the first join: without a runtime nothing could carry the load.
        runtime.get_or_insert_with(|| task::runtime("Cache::get_many_with"));
        if !waiting {
            // Stale: refresh it with this call's load, unless it changed meanwhile.
            if let Some(refresh) = fallback
                .as_ref()
                .and_then(|stale| inner.join_refresh(&key, stale))
            {
                leads.push(refresh);
            }
            continue;
        }
        match inner.join_flight(&key, true) {
            (Join::Found(fetched), _) => {
                found.insert(key, fetched);
            }
            (Join::Lead(ticket, waiter), flight_fallback) => {
                waits.push(Wait {
                    key,
                    waiter,
                    status: Status::Miss,
                    fallback,
                });
                leads.push((ticket, flight_fallback));
            }
            (Join::Follow(waiter, _), _) => {
                waits.push(Wait {
                    key,
                    waiter,
                    status: Status::Coalesced,
                    fallback,
                });
            }
        }
    }
    if let (false, Some(runtime)) = (leads.is_empty(), &runtime) {
        start(inner, runtime, leads, load);
    }
    let deadline = super::clock::deadline(inner.config.wait_timeout);
    for wait in waits {
        let fetched = inner
            .wait(wait.waiter, wait.status, deadline, wait.fallback, false)
            .await?;
        found.insert(wait.key, fetched);
    }
    Ok(found)
}

/// Loads every led key with one call, as its own task, and finishes each key's flight.
fn start<K, V, F, Fut, E>(
    inner: &Arc<Inner<K, V>>,
    runtime: &Handle,
    leads: Vec<Lead<K, V>>,
    load: F,
) where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    F: FnOnce(Vec<K>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<HashMap<K, V>, E>> + Send + 'static,
    E: Send + Sync + 'static,
{
    let keys: Vec<K> = leads
        .iter()
        .map(|(ticket, _)| ticket.key().clone())
        .collect();
    let mut config = inner.config;
    // A bulk load has no single stale value to release its waiters with: only the hard limit.
    config.soft_load_timeout = None;
    let owner = inner.clone();
    let cache = inner.clone();
    task::spawn(
        runtime,
        // With a tier: one round trip for every key, one load of those it cannot answer.
        move || async move {
            // `load` is `FnOnce`: one call, after the tier has answered every key.
            let mut load = Some(load);
            let once = move |keys| load.take().expect("called once")(keys);
            let load = async move { cache.load_through_tier(keys, once, Calls::Once).await };
            bounded(load, &config, |_| {}).await
        },
        move |outcome| owner.finish_bulk(leads, outcome),
    );
}

type BulkOutcome<K, V> = Outcome<(Result<Found<K, V>, super::load::Cause>, std::time::Duration)>;

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn finish_bulk(&self, leads: Vec<Lead<K, V>>, outcome: BulkOutcome<K, V>) {
        let fail_safe = self.config.fail_safe.is_some();
        let mut values = match outcome {
            Ok((Ok(values), took)) => Ok((values, took)),
            Ok((Err(cause), _)) => Err(Ok(cause)),
            Err(failure) => Err(Err(failure)),
        };
        for (ticket, fallback) in leads {
            let keep_until = fallback.as_ref().map(|f| f.keep_until);
            let landing = match &mut values {
                Ok((values, took)) => {
                    let (value, ttl) = values
                        .remove(ticket.key())
                        .map_or((None, None), |loaded| (loaded.value, loaded.ttl));
                    Ok(Landing::Loaded {
                        value,
                        ttl,
                        took: *took,
                    })
                }
                Err(Ok(cause)) => Ok(Landing::Failed {
                    cause: cause.clone(),
                    late: None,
                    fallback: fallback.filter(|_| fail_safe).map(|f| f.value),
                }),
                Err(Err(failure)) => Err(failure.clone()),
            };
            self.finish_load(ticket, landing, keep_until);
        }
    }
}
