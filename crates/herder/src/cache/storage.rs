//! The storage under the cache: `quick_cache`'s sharded CLOCK-Pro, holding [`Entry`]s.
//!
//! quick_cache was picked by measurement (see `docs/BENCHMARKS.md`): full-key comparison, about 43
//! bytes of overhead per `u64 → u64` entry (its slab and table), and reads that scale with
//! threads. herder adds the timeline of
//! each entry and never evicts by itself: expired entries are dropped when read or pushed out by
//! quick_cache's eviction.

use std::borrow::Borrow;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use quick_cache::sync::Cache as Shards;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};

use super::entry::Entry;

/// The user's weigher: the weight of one value (at least 1 is charged).
pub(crate) type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u64 + Send + Sync>;

/// The weight quick_cache sees: the user's weigher, at least 1, at most one more than the
/// capacity (an entry that heavy is rejected either way, and sums of weights cannot overflow).
pub(crate) struct EntryWeighter<K, V> {
    weigher: Option<Weigher<K, V>>,
    heaviest: u64,
}

impl<K, V> Clone for EntryWeighter<K, V> {
    fn clone(&self) -> Self {
        EntryWeighter {
            weigher: self.weigher.clone(),
            heaviest: self.heaviest,
        }
    }
}

impl<K, V> Weighter<K, Entry<V>> for EntryWeighter<K, V> {
    fn weight(&self, key: &K, entry: &Entry<V>) -> u64 {
        match (&self.weigher, entry.value()) {
            (Some(weigher), Some(value)) => {
                // User code, called under the key's flight lock while a load stores its value:
                // a weigher that panics must not unwind through the store step (the flight's
                // waiters would never hear of it). Its entry weighs too much to be kept.
                let weight =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| weigher(key, value)))
                        .unwrap_or_else(|payload| {
                            crate::flight::quietly(move || drop(payload));
                            u64::MAX
                        });
                // quick_cache never evicts a weight-0 entry: everything costs at least 1.
                weight.clamp(1, self.heaviest)
            }
            _ => 1,
        }
    }
}

/// Hands what an insert pushed out back to the inserter: the entries evicted for capacity, and
/// the entry it replaced (which quick_cache releases through the same hook).
#[derive(Clone, Default)]
pub(crate) struct Evictions;

impl<K, V> Lifecycle<K, Entry<V>> for Evictions {
    type RequestState = Vec<(K, Entry<V>)>;

    fn on_evict(&self, evicted: &mut Self::RequestState, key: K, entry: Entry<V>) {
        evicted.push((key, entry));
    }
}

pub(crate) struct Storage<K, V> {
    shards: Shards<K, Entry<V>, EntryWeighter<K, V>, DefaultHashBuilder, Evictions>,
    /// Entries evicted for capacity (not replaced, expired or invalidated).
    evictions: AtomicU64,
    /// Keep the evicted entries for an eviction listener.
    record: bool,
}

impl<K: Eq + Hash + Clone, V: Clone> Storage<K, V> {
    pub(crate) fn new(
        capacity: u64,
        estimated_items: usize,
        weigher: Option<Weigher<K, V>>,
        record_evictions: bool,
    ) -> Self {
        // More shards than quick_cache's default (4 per core): two threads reading hot keys then
        // rarely share a shard lock's cache line (measured: 116 → 100 ns per read with a TTL and
        // 70 → 45 ns without, 2 threads, 10,000 keys). quick_cache lowers it for small caches.
        //
        // A weighted cache is one shard: quick_cache splits the capacity evenly between its
        // shards (rounding each share up), so with many shards an entry heavier than a share
        // would never be kept and the shares would add up to more than the capacity. With one,
        // an entry up to (nearly) the whole capacity is kept and the total never exceeds it.
        // (The capacity is capped at a quarter of `u64::MAX`, far beyond any memory, so that
        // quick_cache's sums of weights cannot overflow.)
        let capacity = capacity.min(u64::MAX / 4);
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let shards = match weigher {
            Some(_) => 1,
            None => (cores * 16).max(64),
        };
        let options = OptionsBuilder::new()
            .shards(shards)
            .estimated_items_capacity(estimated_items)
            .weight_capacity(capacity)
            .build()
            .expect("capacity checked by the builder");
        let shards = Shards::with_options(
            options,
            EntryWeighter {
                weigher,
                heaviest: capacity + 1,
            },
            DefaultHashBuilder::default(),
            Evictions,
        );
        Storage {
            shards,
            evictions: AtomicU64::new(0),
            record: record_evictions,
        }
    }

    pub(crate) fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<Entry<V>>
    where
        K: Borrow<Q>,
    {
        self.shards.get(key)
    }

    /// Reads without counting as a use for eviction (used for fail-safe fallbacks).
    pub(crate) fn peek<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<Entry<V>>
    where
        K: Borrow<Q>,
    {
        self.shards.peek(key)
    }

    /// Stores `entry`; returns the entries evicted for capacity (only when recording them for
    /// a listener): other keys' entries, and this one if it was too heavy to be admitted. The
    /// entry it replaced is no eviction.
    pub(crate) fn insert(&self, key: &K, entry: Entry<V>) -> Vec<(K, Entry<V>)> {
        let mut pushed = Vec::new();
        self.shards
            .insert_with_lifecycle(key.clone(), entry, &mut pushed);
        if pushed.is_empty() {
            return pushed;
        }
        // This key's entries, in order: the replaced one, then the new one if it was rejected.
        let mut own = 0usize;
        pushed.retain(|(other, _)| {
            let mine = other == key;
            own += usize::from(mine);
            !mine
        });
        if own > 0 && !self.shards.contains_key(key) {
            // Rejected: too heavy for its shard. Reported as evicted, without its value.
            self.evictions.fetch_add(1, Relaxed);
        }
        self.evictions.fetch_add(pushed.len() as u64, Relaxed);
        if !self.record {
            pushed.clear();
        }
        pushed
    }

    /// Removes `key`, returning what it held.
    pub(crate) fn remove<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<(K, Entry<V>)>
    where
        K: Borrow<Q>,
    {
        self.shards.remove(key)
    }

    /// Removes `key` only if `still` holds for its entry (an expired entry found by a reader).
    pub(crate) fn remove_if<Q: Hash + Eq + ?Sized>(
        &self,
        key: &Q,
        still: impl FnOnce(&Entry<V>) -> bool,
    ) -> Option<(K, Entry<V>)>
    where
        K: Borrow<Q>,
    {
        self.shards.remove_if(key, |entry| still(entry))
    }

    /// Every entry, cloned (see quick_cache's `iter` for what a concurrent write may do).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (K, Entry<V>)> + '_ {
        self.shards.iter()
    }

    pub(crate) fn clear(&self) {
        self.shards.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.len()
    }

    pub(crate) fn weight(&self) -> u64 {
        self.shards.weight()
    }

    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Relaxed)
    }
}

impl<K, V> fmt::Debug for Storage<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage").finish_non_exhaustive()
    }
}
