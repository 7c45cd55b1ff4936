//! [`OperationQueue`]: runs queued operations in FIFO order on N runners and hands each caller
//! its result; [`LocalOperationQueue`] does the same for operations that are not `Send`.
//!
//! What thunderbird's `operation-queue` offers (N runners performing queued operations in
//! order), with the parts its users write by hand built in: a typed handle per operation
//! (instead of a oneshot inside every operation), backpressure, removal of operations whose
//! caller gave up, panics that reach the caller and leave the runner alive, a per-operation
//! timeout, stats, and a shutdown that tells every caller what happened to its operation. A
//! queue can also hold back new operations while a [`Line`](crate::Line) recovers.
//!
//! Layout: `handle` ([`OperationQueue`], [`OperationHandle`]), `local` (the `!Send` flavour),
//! [`Builder`], `engine` (the shared runner loop and waits) over `state` (the `pub(crate)` state
//! machine, checked against a plain model by proptest), `job` (the type-erased operation).

mod builder;
mod engine;
mod error;
mod handle;
mod job;
mod local;
mod state;
mod stats;

pub use builder::Builder;
pub use error::{OperationError, SubmitError, TrySubmitError};
pub use handle::{OperationHandle, OperationQueue};
pub use local::{LocalOperationHandle, LocalOperationQueue};
pub use stats::{OperationQueueStats, ShutdownReport};
