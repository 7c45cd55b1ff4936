//! The memo of a loader built with [`memo(true)`](super::Builder::memo): key → value (or
//! absence), in shards, so that a load of a memoized key is answered without the loader's lock.
//!
//! # Who locks what
//!
//! * Readers (`Memo::hit`, the fast path of `load` and `load_many`) take one shard's lock and
//!   nothing else. A miss then goes to the loader's state lock, where `State::find` looks again
//!   (a batch may have finished in between).
//! * Writers (`State::finished` memoizing, `prime`, `clear`, `clear_all`) run under the
//!   loader's state lock and take the shard locks inside it, one at a time: lock order state →
//!   shard, never the reverse, and no shard lock is held while another is taken.
//!
//! So every write of one key is linearized at its shard lock: after `clear(k)` returns, no load
//! started afterwards sees the old value; after `prime(k, v)` returns, every load started
//! afterwards sees `v` (or a later write). A write that touches several shards (`clear_all`, a
//! batch memoizing its keys) goes shard by shard: a load concurrent with it may find one key
//! already written and another not yet (a miss then waits at the state lock, which the writer
//! holds until it is done with every shard; a hit in a shard not yet written answers the value
//! from before). Once the write has returned, every load sees all of it.
//!
//! # Counting
//!
//! Hits on the fast path are counted in their shard, under its lock (no atomic operation);
//! `State::stats` adds them up under the state lock, so the stats stay exact. Lookups under the
//! state lock are counted by the state, as before.

use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::OnceLock;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use crate::sync::{Mutex, lock};

/// A shard on cache lines of its own, so that two shards never share one.
#[repr(align(128))]
struct Shard<K, V>(Mutex<Entries<K, V>>);

struct Entries<K, V> {
    /// Keys and values, found by the hash [`Memo::locate`] computed (outside the lock).
    table: HashTable<(K, Option<V>)>,
    /// Hits on the fast path ([`Memo::hit`]).
    hits: u64,
}

/// The memo, in shards (see the module docs).
pub(crate) struct Memo<K, V> {
    shards: Box<[Shard<K, V>]>,
    /// One hash per lookup (SipHash, as `std`'s `HashMap`: keys may come from clients),
    /// computed before any lock: its bits from 40 up (below the 7 top bits the table keeps as
    /// tags, above the low bits it indexes with) pick the shard, and the shard's table probes
    /// with the same hash.
    hasher: RandomState,
    /// The shards less one.
    mask: u64,
}

/// The number of shards: four per core, a power of two from 4 to 64 (a request-scoped loader
/// allocates them all, 128 bytes each, with every request), computed once per process
/// (`available_parallelism` reads the cgroup files: far too slow for every loader).
fn shard_count() -> usize {
    if cfg!(herder_loom) {
        return 2;
    }
    static SHARDS: OnceLock<usize> = OnceLock::new();
    *SHARDS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores * 4).next_power_of_two().clamp(4, 64)
    })
}

impl<K: Hash + Eq, V: Clone> Memo<K, V> {
    pub(crate) fn new() -> Self {
        let shards = shard_count();
        Memo {
            shards: (0..shards)
                .map(|_| {
                    Shard(Mutex::new(Entries {
                        table: HashTable::new(),
                        hits: 0,
                    }))
                })
                .collect(),
            hasher: RandomState::new(),
            mask: shards as u64 - 1,
        }
    }

    /// `key`'s hash, and its shard.
    fn locate(&self, key: &K) -> (u64, &Mutex<Entries<K, V>>) {
        let hash = self.hasher.hash_one(key);
        (hash, &self.shards[((hash >> 40) & self.mask) as usize].0)
    }

    fn rehash(&self) -> impl Fn(&(K, Option<V>)) -> u64 + '_ {
        |(key, _)| self.hasher.hash_one(key)
    }

    /// The fast path: `key`'s memoized value (`Some(None)`: memoized as absent), counted as a
    /// request answered by the memo; `None` if `key` is not memoized (uncounted: the caller
    /// goes on to the state lock, where it is counted).
    pub(crate) fn hit(&self, key: &K) -> Option<Option<V>> {
        self.lookup(key, 1)
    }

    /// `key`'s memoized value, uncounted (the state counts lookups under its lock).
    pub(crate) fn get(&self, key: &K) -> Option<Option<V>> {
        self.lookup(key, 0)
    }

    /// `key`'s memoized value; a hit adds `count` to the shard's hits.
    fn lookup(&self, key: &K, count: u64) -> Option<Option<V>> {
        let (hash, shard) = self.locate(key);
        let mut entries = lock(shard);
        let value = entries.table.find(hash, |(k, _)| k == key)?.1.clone();
        entries.hits += count;
        Some(value)
    }

    /// Stores `value` for `key`, replacing what was there. Under the state lock.
    pub(crate) fn insert(&self, key: K, value: Option<V>) {
        let (hash, shard) = self.locate(&key);
        let mut entries = lock(shard);
        match entries.table.entry(hash, |(k, _)| *k == key, self.rehash()) {
            Entry::Occupied(mut entry) => entry.get_mut().1 = value,
            Entry::Vacant(entry) => {
                entry.insert((key, value));
            }
        }
    }

    /// Stores `value()` for `key` unless `key` already has a value. Under the state lock.
    pub(crate) fn insert_if_absent(&self, key: K, value: impl FnOnce() -> Option<V>) {
        let (hash, shard) = self.locate(&key);
        let mut entries = lock(shard);
        if let Entry::Vacant(entry) = entries.table.entry(hash, |(k, _)| *k == key, self.rehash()) {
            entry.insert((key, value()));
        }
    }

    /// Forgets `key`. Under the state lock.
    pub(crate) fn remove(&self, key: &K) {
        let (hash, shard) = self.locate(key);
        let mut entries = lock(shard);
        if let Ok(entry) = entries.table.find_entry(hash, |(k, _)| k == key) {
            entry.remove();
        }
    }

    /// Forgets every key, shard by shard. Under the state lock (see the module docs).
    pub(crate) fn clear(&self) {
        for shard in &self.shards {
            lock(&shard.0).table.clear();
        }
    }

    /// The keys memoized, and the hits counted on the fast path.
    pub(crate) fn counts(&self) -> (usize, u64) {
        self.shards.iter().fold((0, 0), |(len, hits), shard| {
            let entries = lock(&shard.0);
            (len + entries.table.len(), hits + entries.hits)
        })
    }
}
