//! Key → in-flight slot, in shards.
//!
//! [`Flights`] elects one leader per key; later callers for that key follow the leader's slot until
//! the flight finishes. Every flight carries an id (its generation): [`Flights::detach`] retires
//! the flight currently registered for a key, so that its result still reaches its waiters but the
//! caller's `store` step (the cache fill) is skipped and the next caller starts a fresh flight.
//!
//! Lock order: a shard lock may be held while a slot's cancel lock is taken, never the reverse,
//! and no slot lock is held while a shard lock is taken.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::Ordering;

use super::slot::{Outcome, Slot, Waiter};
use crate::sync::{Arc, AtomicU64, Mutex, lock};

struct Entry<T> {
    id: u64,
    slot: Arc<Slot<T>>,
}

type Shard<K, T> = Mutex<HashMap<K, Entry<T>>>;

/// A sharded map from key to the flight that is loading it.
pub(crate) struct Flights<K, T> {
    shards: Box<[Shard<K, T>]>,
    hasher: RandomState,
    next_id: AtomicU64,
}

/// The leader's right, and duty, to finish a flight (see [`Flights::finish`]).
pub(crate) struct Ticket<K, T> {
    key: K,
    id: u64,
    slot: Arc<Slot<T>>,
}

impl<K, T> fmt::Debug for Ticket<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Where a caller stands after [`Flights::join`].
pub(crate) enum Join<K, T, R> {
    /// No flight was registered: this caller must start the work and finish the ticket.
    Lead(Ticket<K, T>, Waiter<T>),
    /// A flight is under way; wait for it.
    Follow(Waiter<T>, FlightId),
    /// The recheck found the value (a flight finished between the caller's lookup and its join).
    Found(R),
}

/// Identifies one flight of one key, for [`Flights::leave`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlightId(u64);

impl<K, T> Ticket<K, T> {
    pub(crate) fn id(&self) -> FlightId {
        FlightId(self.id)
    }

    pub(crate) fn key(&self) -> &K {
        &self.key
    }

    /// The flight's slot, for a leader that answers its waiters before the flight ends (a soft
    /// timeout): completing it early releases them, and the later finish still runs its store step.
    pub(crate) fn slot(&self) -> &Arc<Slot<T>> {
        &self.slot
    }
}

impl<K: Hash + Eq + Clone, T: Clone> Flights<K, T> {
    /// A map with at least `shards` shards (rounded up to a power of two).
    pub(crate) fn new(shards: usize) -> Self {
        let shards = shards.max(1).next_power_of_two();
        Flights {
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            next_id: AtomicU64::new(1),
        }
    }

    /// A shard count suited to this machine: four per core.
    pub(crate) fn default_shards() -> usize {
        std::thread::available_parallelism().map_or(4, |n| n.get() * 4)
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Shard<K, T> {
        let hash = self.hasher.hash_one(key) as usize;
        &self.shards[hash & (self.shards.len() - 1)]
    }

    /// Joins the flight for `key`, or registers a new one whose ticket the caller must finish.
    ///
    /// `counted` callers are tracked for [`Flights::leave`] (primitives that abort unused work).
    /// `recheck` runs under the shard lock when no flight is registered; returning `Some` means a
    /// value appeared (a leader stores before it unregisters, under this same lock), so no flight
    /// is started.
    pub(crate) fn join<R>(
        &self,
        key: &K,
        counted: bool,
        recheck: impl FnOnce() -> Option<R>,
    ) -> Join<K, T, R> {
        let mut shard = lock(self.shard(key));
        if let Some(entry) = shard.get(key) {
            if counted {
                entry.slot.add_waiter();
            }
            return Join::Follow(Waiter::new(entry.slot.clone()), FlightId(entry.id));
        }
        if let Some(found) = recheck() {
            return Join::Found(found);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::new());
        if counted {
            slot.add_waiter();
        }
        shard.insert(
            key.clone(),
            Entry {
                id,
                slot: slot.clone(),
            },
        );
        drop(shard);
        let waiter = Waiter::new(slot.clone());
        Join::Lead(
            Ticket {
                key: key.clone(),
                id,
                slot,
            },
            waiter,
        )
    }

    /// Ends a flight: unregisters it if it is still the current flight of its key, runs `store`
    /// (under the shard lock, so no detach can slip in between) only in that case, then hands the
    /// outcome to every waiter. Returns whether the flight was current.
    pub(crate) fn finish(
        &self,
        ticket: Ticket<K, T>,
        outcome: Outcome<T>,
        store: impl FnOnce(&K, &Outcome<T>),
    ) -> bool {
        let current = {
            let mut shard = lock(self.shard(&ticket.key));
            let current = shard
                .get(&ticket.key)
                .is_some_and(|entry| entry.id == ticket.id);
            if current {
                // User code may run in `store` (a cache's weigher, `Clone` of the value, an
                // eviction's bookkeeping): if it panics, the flight still ends and its waiters
                // still get the outcome; only the store is lost.
                super::quietly(|| store(&ticket.key, &outcome));
                shard.remove(&ticket.key);
            }
            current
        };
        ticket.slot.complete(outcome);
        current
    }

    /// A counted waiter gives up. The last one to leave cancels the work and unregisters the
    /// flight atomically with respect to [`Flights::join`], so a newer caller starts fresh work
    /// instead of following a flight that is being torn down.
    pub(crate) fn leave(&self, key: &K, id: FlightId, slot: &Arc<Slot<T>>) {
        let mut shard = lock(self.shard(key));
        let registered = shard
            .get(key)
            .is_some_and(|entry| entry.id == id.0 && Arc::ptr_eq(&entry.slot, slot));
        let last = slot.remove_waiter();
        if !last {
            return;
        }
        if registered {
            shard.remove(key);
        }
        drop(shard);
        if !slot.is_done() {
            slot.cancel();
        }
    }

    /// Retires the flight registered for `key`, if any: its waiters still get its outcome, but
    /// its `store` step is skipped and the next caller starts a new flight. Returns whether a
    /// flight was retired.
    pub(crate) fn detach(&self, key: &K) -> bool {
        lock(self.shard(key)).remove(key).is_some()
    }

    /// Retires every registered flight; returns how many.
    pub(crate) fn detach_all(&self) -> usize {
        self.detach_all_then(|| ())
    }

    /// [`Flights::detach`], then `write` under the same shard lock: the store protocol of a
    /// write that must win over every load under way (an invalidation, an explicit insert).
    ///
    /// Every store step ([`Flights::finish`]) and every `recheck` ([`Flights::join`]) of `key`
    /// runs under this lock too, so the write is atomic with respect to them: a flight that
    /// started before it stores nothing, and a flight that starts after it sees what it wrote.
    pub(crate) fn detach_then<Q, R>(&self, key: &Q, write: impl FnOnce() -> R) -> R
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut shard = lock(self.shard(key));
        shard.remove(key);
        write()
    }

    /// Runs `write` under `key`'s shard lock without retiring its flight: a write that keeps
    /// the value (an idle deadline moved by a read), ordered with every other write of `key`.
    pub(crate) fn with_lock<Q, R>(&self, key: &Q, write: impl FnOnce() -> R) -> R
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let _shard = lock(self.shard(key));
        write()
    }

    /// [`Flights::detach_all`], then `write`, with every shard locked (in shard order, so two
    /// callers cannot deadlock; every other method holds one shard lock at a time). Returns how
    /// many flights were retired.
    pub(crate) fn detach_all_then(&self, write: impl FnOnce()) -> usize {
        let mut shards: Vec<_> = self.shards.iter().map(lock).collect();
        let retired = shards
            .iter_mut()
            .map(|shard| {
                let drained: Vec<_> = shard.drain().collect();
                drained.len()
            })
            .sum();
        write();
        drop(shards);
        retired
    }

    /// Flights registered right now.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }
}

impl<K, T> fmt::Debug for Flights<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flights")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}
