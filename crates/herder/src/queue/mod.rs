//! [`OperationQueue`]: runs queued operations in FIFO order on N runners and hands each caller
//! its result; [`LocalOperationQueue`] does the same for operations that are not `Send`.
//!
//! What thunderbird's `operation-queue` offers (N runners performing queued operations in
//! order), with the parts its users write by hand built in: a typed handle per operation
//! (instead of a oneshot inside every operation), backpressure, cancellation of operations
//! whose caller gave up, panics that reach the caller and leave the runner alive, a per-operation
//! timeout, stats, and a shutdown that tells every caller what happened to its operation. A
//! queue can also hold back new operations while a [`Line`](crate::Line) recovers.
//!
//! Layout: `handle` ([`OperationQueue`], [`OperationHandle`]) and `local` (the `!Send` flavour)
//! are docs and one-line delegations to `shared`, the one front of both flavours; [`Builder`];
//! `core` (the jobs in a lock-free `fifo` with their count, capacity, waits, shutdown), `runner`
//! (the runner task and its guard), `future` (what a handle awaits), `job` (the type-erased
//! operation and the slot its result waits in), over `state` (the runners' lifecycle, a
//! `pub(crate)` state machine checked against a plain model by proptest); `loom_tests` explore
//! the parking and lifecycle protocols.

mod atomics;
mod builder;
mod core;
mod error;
mod fifo;
mod future;
mod handle;
mod job;
mod local;
#[cfg(all(test, herder_loom))]
mod loom_tests;
mod runner;
mod shared;
mod state;
mod stats;

pub use builder::{Builder, MAX_CAPACITY, MAX_RUNNERS};
pub use error::{OperationError, SubmitError, TrySubmitError};
pub use handle::{OperationHandle, OperationQueue};
pub use local::{LocalOperationHandle, LocalOperationQueue};
pub use stats::{OperationQueueStats, ShutdownReport};
