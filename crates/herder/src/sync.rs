//! Synchronisation primitives used by the state machines, swapped for loom's under `--cfg herder_loom`
//! (the same shim as `tokio-util/src/loom.rs`). The flight core, the line and the DataLoader's batch
//! window go through this module: it is what the loom models (`flight/loom_tests.rs`,
//! `line/loom_tests.rs`, `batch/loom_tests.rs`) explore.

#[cfg(herder_loom)]
pub(crate) use loom::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicU64, AtomicUsize},
};
#[cfg(not(herder_loom))]
pub(crate) use std::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicU64, AtomicUsize},
};

/// Locks `mutex`, ignoring poisoning.
///
/// Poisoning cannot leave our state half-updated: no code of ours panics while holding a lock, and
/// the only foreign code that runs under one (`Hash`, `Eq` and `Clone` of user types) only reads.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
