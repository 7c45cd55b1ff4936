//! [`SingleFlight`]: concurrent calls for one key share one execution (Go's `singleflight`).
//!
//! Unlike Go's, the work runs as its own task: the caller that started it may be cancelled
//! without failing the others, and the work still finishes (or, with
//! [`Builder::abort_unused`], stops once nobody waits). A panic reaches every waiter as a
//! [`TaskError`](crate::TaskError).

mod builder;
mod future;
mod handle;
mod stats;

pub use builder::Builder;
pub use future::Run;
pub use handle::SingleFlight;
pub use stats::SingleFlightStats;

/// The error of [`SingleFlight::run`]: the shared [`TaskError`](crate::TaskError) under the name
/// it had before herder had one error for failed work.
///
/// Every waiter of the failed flight receives a clone of the same error: the work panicked, or
/// its task was dropped before it finished (its runtime shut down).
///
/// ```
/// use herder::{RunError, SingleFlight};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let flights = SingleFlight::<&str, u32>::new();
/// let err: RunError = flights.run("key", || async { panic!("backend exploded") }).await.unwrap_err();
/// assert!(err.is_panic());
/// assert_eq!(err.panic_message(), Some("backend exploded"));
/// # }
/// ```
pub type RunError = crate::TaskError;
