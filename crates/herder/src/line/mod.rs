//! [`Line`]: when many requests hit the same failure (an expired token), exactly one recovers;
//! the others wait for it and retry.
//!
//! thunderbird's `operation-queue` has a `Line` too: the first request to fail takes a token and
//! handles the failure, the others wait for the token to be released. It cannot tell a failure
//! that predates a finished recovery from a new one, so requests failing one after another with
//! the same stale credentials each re-authenticate. Here every request notes the line's
//! [`Epoch`] when it is sent, and a failure older than the last recovery is answered with
//! [`Recovery::AlreadyDone`]: retry.
//!
//! A recovery is a flight of the core (`crate::flight`): it runs as its own task, so a
//! cancelled leader does not stop it, and one outcome (or its panic, as a [`TaskError`](crate::TaskError))
//! reaches every caller that joined. `state` holds the epoch logic, explored by `loom_tests`.
//!
//! [`Credential`] is the common case ready-made: a credential that a request failing because
//! of it refreshes once for everyone, with N attempts and a predicate for the errors that call
//! for a refresh. [`Builder`] sets a recovery timeout.

mod builder;
mod credential;
mod handle;
mod state;
mod stats;

#[cfg(all(test, herder_loom))]
mod loom_tests;

pub use builder::Builder;
pub use credential::{CallError, Credential};
pub(crate) use handle::Gate;
pub use handle::{Epoch, Line, Recovery};
pub use stats::LineStats;

/// The error of [`Line::recover`]: the shared [`TaskError`](crate::TaskError) under the name it
/// had before herder had one error for failed work.
///
/// The leader and every caller that joined the recovery receive a clone of the same error: the
/// recovery panicked, ran past the line's [`recovery_timeout`](Builder::recovery_timeout), or its
/// task was dropped before it finished (its runtime shut down).
///
/// ```
/// use herder::{Line, RecoverError};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let line: Line<String> = Line::builder()
///     .recovery_timeout(Duration::from_secs(5))
///     .build()
///     .unwrap();
/// let err: RecoverError = line.recover(line.epoch(), || async { panic!("login form changed") }).await.unwrap_err();
/// assert!(err.is_panic());
/// assert_eq!(err.to_string(), "recovery panicked: login form changed");
///
/// let err = line.recover(line.epoch(), std::future::pending).await.unwrap_err();
/// assert!(err.is_timeout());
/// assert_eq!(err.timeout(), Some(Duration::from_secs(5)));
/// assert_eq!(err.to_string(), "recovery timed out after 5s");
/// assert!(!line.is_recovering());
/// # }
/// ```
pub type RecoverError = crate::TaskError;
