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

use std::borrow::Borrow;
use std::hash::Hash;
use std::time::Duration;

use super::entry::{Entry, Freshness};
use super::handle::Inner;
use super::listener::{RemovalCause, Removed};

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Removes `key` and retires its load under way; returns the value it held, if it was
    /// still served (fresh or stale).
    pub(crate) fn remove_key<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut removed = Removed::new(&self.listener);
        let (key, entry) = self.flights.detach_then(key, || self.storage.remove(key))?;
        let now = self.clock.now();
        let served = matches!(
            entry.freshness(now, &self.config),
            Freshness::Fresh { .. } | Freshness::Stale
        );
        if !removed.wanted() {
            return entry.into_value().filter(|_| served);
        }
        let value = entry.value().filter(|_| served).cloned();
        removed.entry(key, entry, RemovalCause::Explicit, now, &self.config);
        value
    }

    /// Stores `entry` for `key` and retires its load under way, which then cannot overwrite it.
    pub(crate) fn put(&self, key: K, entry: Entry<V>) {
        let mut removed = Removed::new(&self.listener);
        self.flights.detach_then(&key, || {
            self.store_entry(&key, entry, &mut removed);
        });
    }

    /// Stores `entry` (the caller holds the key's flight lock), recording the value it replaced
    /// and the entries evicted to make room.
    pub(crate) fn store_entry(&self, key: &K, entry: Entry<V>, removed: &mut Removed<K, V>) {
        let old = if removed.wanted() {
            self.storage.peek(key)
        } else {
            None
        };
        let evicted = self.storage.insert(key, entry);
        if !removed.wanted() {
            return;
        }
        let now = self.clock.now();
        if let Some(old) = old {
            removed.entry(key.clone(), old, RemovalCause::Replaced, now, &self.config);
        }
        for (other, entry) in evicted {
            removed.entry(other, entry, RemovalCause::Size, now, &self.config);
        }
    }

    /// Removes every key and retires every load under way.
    pub(crate) fn remove_all(&self) {
        let mut removed = Removed::new(&self.listener);
        self.flights.detach_all_then(|| {
            if removed.wanted() {
                let now = self.clock.now();
                for (key, entry) in self.storage.iter() {
                    removed.entry(key, entry, RemovalCause::Explicit, now, &self.config);
                }
            }
            self.storage.clear();
        });
    }

    /// Stores `value` (or a cached absence) as an explicit write: the tier's copies go first,
    /// then the local entry is replaced and the load under way retired, in one step.
    pub(crate) fn insert(&self, key: K, value: Option<V>, ttl: Option<Duration>) {
        // Other instances' copies are now stale: drop them (and the shared one).
        if let Some(tier) = &self.tier {
            tier.invalidate(&key);
        }
        let entry = Entry::new(value, ttl, self.clock.now(), Duration::ZERO, &self.config);
        self.put(key, entry);
    }

    /// Invalidates `key` here and, through the tier, everywhere; returns the value it held here.
    pub(crate) fn invalidate<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        // The tier first: from here on this instance does not read `key` from it until the
        // shared copy is gone, so a load that starts after the local removal cannot bring the
        // old value back from the tier.
        if let Some(tier) = &self.tier {
            tier.invalidate(&key.to_owned());
        }
        #[cfg(feature = "metrics")]
        self.metrics.invalidated();
        self.remove_key(key)
    }

    /// [`Inner::invalidate`] for every key.
    pub(crate) fn invalidate_all(&self) {
        if let Some(tier) = &self.tier {
            tier.invalidate_all();
        }
        #[cfg(feature = "metrics")]
        self.metrics.invalidated();
        self.remove_all();
    }

    /// A read of `key` within its idle time: moves its deadline to `deadline`, unless the entry
    /// changed since it was read as one expiring at `seen` (then the newer write stands).
    pub(crate) fn touch<Q>(&self, key: &Q, seen: u64, deadline: u64)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut removed = Removed::new(&self.listener);
        self.flights.with_lock(key, || {
            let taken = self.storage.remove_if(key, |entry| {
                entry.fresh_until == seen && !entry.is_degraded()
            });
            if let Some((key, entry)) = taken {
                let evicted = self.storage.insert(&key, entry.with_deadline(deadline));
                if removed.wanted() {
                    let now = self.clock.now();
                    for (other, entry) in evicted {
                        removed.entry(other, entry, RemovalCause::Size, now, &self.config);
                    }
                }
            }
        });
    }
}
