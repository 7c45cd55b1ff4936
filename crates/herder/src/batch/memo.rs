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
//! So every write is linearized at its shard lock, and a write that touches several shards
//! (`clear_all`, a batch memoizing its keys) is linearized at the state lock: a reader that
//! finds a key already gone (or not yet there) falls back to the state lock, which the writer
//! holds until it is done with every shard. After `clear(k)` returns, no load started afterwards
//! sees the old value; after `prime(k, v)` returns, every load started afterwards sees `v` (or a
//! later write).
//!
//! # Counting
//!
//! Hits on the fast path are counted in their shard, under its lock (no atomic operation);
//! `State::stats` adds them up under the state lock, so the stats stay exact. Lookups under the
//! state lock are counted by the state, as before.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use crate::sync::{Mutex, lock};

/// A shard on cache lines of its own, so that two shards never share one.
#[repr(align(128))]
struct Shard<K, V>(Mutex<Entries<K, V>>);

struct Entries<K, V> {
    map: HashMap<K, Option<V>>,
    /// Hits on the fast path ([`Memo::hit`]).
    hits: u64,
}

/// The memo, in shards (see the module docs).
pub(crate) struct Memo<K, V> {
    shards: Box<[Shard<K, V>]>,
    /// `64 - log2(shards)`: a key's shard is the top bits of its shard hash.
    shift: u32,
}

/// The number of shards: four per core, a power of two (at least 4), computed once per
/// process (`available_parallelism` reads the cgroup files: far too slow for every
/// request-scoped loader).
fn shard_count() -> usize {
    if cfg!(herder_loom) {
        return 2;
    }
    static SHARDS: OnceLock<usize> = OnceLock::new();
    *SHARDS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores * 4).next_power_of_two().max(4)
    })
}

/// Picks a key's shard: an FxHash-style multiply over what the key's `Hash` writes, a few
/// cycles for an integer key (the inner map's SipHash, which resists collision attacks, is
/// the expensive one: this one only spreads keys over shards). An adversary who steers keys to
/// one shard gains contention on that shard, nothing more.
#[derive(Default)]
struct ShardHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl ShardHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for ShardHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl<K: Hash + Eq, V: Clone> Memo<K, V> {
    pub(crate) fn new() -> Self {
        let shards = shard_count();
        Memo {
            shards: (0..shards)
                .map(|_| {
                    Shard(Mutex::new(Entries {
                        map: HashMap::new(),
                        hits: 0,
                    }))
                })
                .collect(),
            shift: 64 - shards.trailing_zeros(),
        }
    }

    fn shard(&self, key: &K) -> &Mutex<Entries<K, V>> {
        let mut hasher = ShardHasher::default();
        key.hash(&mut hasher);
        // `shift` is 64 with one shard: `checked_shr` gives shard 0 then.
        let index = hasher.finish().checked_shr(self.shift).unwrap_or(0) as usize;
        &self.shards[index].0
    }

    /// The fast path: `key`'s memoized value (`Some(None)`: memoized as absent), counted as a
    /// request answered by the memo; `None` if `key` is not memoized (uncounted: the caller
    /// goes on to the state lock, where it is counted).
    pub(crate) fn hit(&self, key: &K) -> Option<Option<V>> {
        let mut entries = lock(self.shard(key));
        let value = entries.map.get(key)?.clone();
        entries.hits += 1;
        Some(value)
    }

    /// `key`'s memoized value, uncounted (the state counts lookups under its lock).
    pub(crate) fn get(&self, key: &K) -> Option<Option<V>> {
        lock(self.shard(key)).map.get(key).cloned()
    }

    /// Stores `value` for `key`, replacing what was there. Under the state lock.
    pub(crate) fn insert(&self, key: K, value: Option<V>) {
        lock(self.shard(&key)).map.insert(key, value);
    }

    /// Stores `value()` for `key` unless `key` already has a value. Under the state lock.
    pub(crate) fn insert_if_absent(&self, key: K, value: impl FnOnce() -> Option<V>) {
        lock(self.shard(&key)).map.entry(key).or_insert_with(value);
    }

    /// Forgets `key`. Under the state lock.
    pub(crate) fn remove(&self, key: &K) {
        lock(self.shard(key)).map.remove(key);
    }

    /// Forgets every key, shard by shard. Under the state lock (see the module docs).
    pub(crate) fn clear(&self) {
        for shard in &self.shards {
            lock(&shard.0).map.clear();
        }
    }

    /// The keys memoized, and the hits counted on the fast path.
    pub(crate) fn counts(&self) -> (usize, u64) {
        self.shards.iter().fold((0, 0), |(len, hits), shard| {
            let entries = lock(&shard.0);
            (len + entries.map.len(), hits + entries.hits)
        })
    }
}
