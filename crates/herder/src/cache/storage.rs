//! The storage under the cache: `quick_cache`'s sharded CLOCK-Pro, holding [`Entry`]s.
//!
//! quick_cache was picked by measurement (see `docs/BENCHMARKS.md`): full-key comparison, about 21
//! bytes of overhead per entry, and reads that scale with threads. herder adds the timeline of
//! each entry and never evicts by itself: expired entries are dropped when read or pushed out by
//! quick_cache's eviction.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use quick_cache::sync::Cache as Shards;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};

use super::entry::Entry;

/// The user's weigher: the weight of one value (at least 1 is charged).
pub(crate) type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u64 + Send + Sync>;

pub(crate) struct EntryWeighter<K, V>(Option<Weigher<K, V>>);

impl<K, V> Clone for EntryWeighter<K, V> {
    fn clone(&self) -> Self {
        EntryWeighter(self.0.clone())
    }
}

impl<K, V> Weighter<K, Entry<V>> for EntryWeighter<K, V> {
    fn weight(&self, key: &K, entry: &Entry<V>) -> u64 {
        // quick_cache never evicts a weight-0 entry: everything costs at least 1.
        match (&self.0, &entry.value) {
            (Some(weigher), Some(value)) => weigher(key, value).max(1),
            _ => 1,
        }
    }
}

/// Counts evictions (capacity pressure, not expiry or invalidation).
#[derive(Clone, Default)]
pub(crate) struct Evictions(Arc<AtomicU64>);

impl<K, V> Lifecycle<K, Entry<V>> for Evictions {
    type RequestState = ();

    fn on_evict(&self, _: &mut (), _: K, _: Entry<V>) {
        self.0.fetch_add(1, Relaxed);
    }
}

pub(crate) struct Storage<K, V> {
    shards: Shards<K, Entry<V>, EntryWeighter<K, V>, DefaultHashBuilder, Evictions>,
    evictions: Evictions,
}

impl<K: Eq + Hash + Clone, V: Clone> Storage<K, V> {
    pub(crate) fn new(
        capacity: u64,
        estimated_items: usize,
        weigher: Option<Weigher<K, V>>,
    ) -> Self {
        // More shards than quick_cache's default (4 per core): two threads reading hot keys then
        // rarely share a shard lock's cache line (measured: 116 → 100 ns per read with a TTL and
        // 70 → 45 ns without, 2 threads, 10,000 keys). quick_cache lowers it for small caches.
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let shards = (cores * 16).max(64);
        let options = OptionsBuilder::new()
            .shards(shards)
            .estimated_items_capacity(estimated_items)
            .weight_capacity(capacity)
            .build()
            .expect("capacity checked by the builder");
        let evictions = Evictions::default();
        let shards = Shards::with_options(
            options,
            EntryWeighter(weigher),
            DefaultHashBuilder::default(),
            evictions.clone(),
        );
        Storage { shards, evictions }
    }

    pub(crate) fn get(&self, key: &K) -> Option<Entry<V>> {
        self.shards.get(key)
    }

    /// Reads without counting as a use for eviction (used for fail-safe fallbacks).
    pub(crate) fn peek(&self, key: &K) -> Option<Entry<V>> {
        self.shards.peek(key)
    }

    pub(crate) fn insert(&self, key: K, entry: Entry<V>) {
        self.shards.insert(key, entry);
    }

    pub(crate) fn remove(&self, key: &K) {
        self.shards.remove(key);
    }

    /// Removes `key` only if `still` holds for its entry (an expired entry found by a reader).
    pub(crate) fn remove_if(&self, key: &K, still: impl FnOnce(&Entry<V>) -> bool) {
        self.shards.remove_if(key, |entry| still(entry));
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
        self.evictions.0.load(Relaxed)
    }
}

impl<K, V> fmt::Debug for Storage<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage").finish_non_exhaustive()
    }
}
