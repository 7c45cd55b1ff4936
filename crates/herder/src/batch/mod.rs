//! [`DataLoader`]: batches the keys asked for in one short window into one [`Loader`] call.
//!
//! Layout: [`Loader`] (the batch function users write), [`DataLoader`] (the handle),
//! [`Builder`] (settings), `state` (the `pub(crate)` scheduler state machine: which batch a key
//! goes to, when a batch closes and runs), `memo` (the memo of `memo(true)`, in shards that a
//! load reads without the loader's lock), `dispatch` (how a batch starts, and the tasks that
//! carry batches: run tasks, delay windows' tasks, the janitor that closes the windows of parked
//! openers), `future` (the `Load` / `LoadMany` futures, which drive a yield window from the
//! caller's task, close it and start its batch) and `window` (the close signal of a delay
//! window's task). With a [`Cache`](crate::Cache)
//! in front, this module reaches the cache only through the cache's front
//! (`crate::cache::CacheFront`: consult a key, finish or abandon the flights a batch leads, load
//! through the tier, insert, invalidate), never its internals.
//!
//! # In-flight dedup, and the flight core
//!
//! Batches rest on the flight core's slots: each batch is one slot (`flight::Slot`) that
//! its callers await, run under guards that fail it as cancelled if it is dropped unfinished
//! (first polled in the poll that closed its window, then as its own task if that poll did not
//! finish it, `dispatch`); a loader's value, error or panic reaches every caller as one shared
//! outcome. With a cache in front, the per-key dedup across every reader of the cache (a
//! `get_with`, another loader) *is* the core's `flight::Flights` map: a
//! batch leads the cache's flight of each key it loads, and the others follow it.
//!
//! The loader's own index of keys in flight (`State`'s `index`: key → batch slot and position)
//! is not a `Flights` map, for three reasons:
//!
//! 1. **One slot per batch, not per key.** `Flights` gives each key its own slot, ticket and
//!    waiter list, completed one by one. A batch of n keys would cost n allocations and n
//!    completions on its hot path, where today it costs one slot whose outcome (the values in
//!    the batch's key order, or the loader's error) every caller reads at its key's position,
//!    without hashing.
//! 2. **One decision, one lock.** Whether a key joins a batch, which batch it joins (open,
//!    queued or running), the memo, and the window's bookkeeping (a key added counts as
//!    "the batch grew") are decided together under the loader's lock. (The memo is also read
//!    without it, for a key it answers: a lookup that finds nothing there takes the lock and
//!    looks again. It is written only under the lock: see `memo`.) A `Flights` map has its
//!    own shard locks: the two would have to be taken in an order, per key, and a key could be
//!    registered in one and not yet in the other.
//! 3. **Batch-level semantics.** A key of a batch that has not started loading is joined even
//!    after `clear` (that load is fresh), and with a cache in front only such pending batches are
//!    joined through the index (a running one defers to the cache's flight, which an
//!    invalidation retires). That state is the batch's, not the key's.
//!
//! The index keeps the core's contract: its entries are removed when their batch finishes or is
//! abandoned (nothing leaks), `clear` retires a key's entry while its callers keep the batch's
//! outcome (a generation: `State::finished` memoizes only for entries still pointing at their
//! batch), and no lock is held across an `.await`.

mod builder;
mod dispatch;
mod error;
mod future;
mod handle;
mod loader;
mod memo;
mod state;
mod stats;
mod window;

#[cfg(all(test, herder_loom))]
mod loom_tests;

pub use builder::Builder;
pub use error::LoadError;
pub use future::{Load, LoadMany};
pub use handle::DataLoader;
pub use loader::Loader;
pub use stats::DataLoaderStats;
