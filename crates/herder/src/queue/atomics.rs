//! The atomics of the queue's core, swapped for loom's under `--cfg herder_loom` (as
//! `crate::sync` does for the other primitives).

#[cfg(herder_loom)]
pub(crate) use loom::sync::atomic::{
    AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::Release, Ordering::SeqCst, fence,
};
#[cfg(not(herder_loom))]
pub(crate) use std::sync::atomic::{
    AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::Release, Ordering::SeqCst, fence,
};
