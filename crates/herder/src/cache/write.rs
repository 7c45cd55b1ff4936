//! The store protocol: every write of a key, whoever makes it, runs under the key's flight lock.
//!
//! A load stores its result in [`Flights::finish`](crate::flight::Flights::finish), under the
//! shard lock of its key, and only if its flight is still the key's current one. A flight's
//! fallback (the stale value fail-safe may serve) is read in the `recheck` of
//! [`Flights::join`](crate::flight::Flights::join), under the same lock. The writes here
//! (invalidate, insert, a remote eviction, clearing everything) retire the current flight and
//! change the storage in one step under that lock. So, for one key, the three are ordered, and:
//!
//! * a load that began before a write never stores after it (its flight is retired);
//! * a flight registered after a write never falls back on a value the write removed;
//! * a read that starts after a write returns sees the write, or a value loaded after it.
//!
//! That is the in-process half of "an invalidation is final"; the tier keeps the other half
//! (see [`Tier`](super::Tier)).

use std::hash::Hash;

use super::entry::Entry;
use super::handle::Inner;

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Removes `key` and retires its load under way.
    pub(crate) fn remove_key(&self, key: &K) {
        self.flights.detach_then(key, || {
            self.storage.remove(key);
        });
    }

    /// Stores `entry` for `key` and retires its load under way, which then cannot overwrite it.
    pub(crate) fn put(&self, key: K, entry: Entry<V>) {
        self.flights.detach_then(&key.clone(), || {
            self.storage.insert(key, entry);
        });
    }

    /// Removes every key and retires every load under way.
    pub(crate) fn remove_all(&self) {
        self.flights.detach_all_then(|| {
            self.storage.clear();
        });
    }
}
