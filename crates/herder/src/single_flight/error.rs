use std::error::Error;
use std::fmt;

use crate::flight::Failure;

/// Why a [`SingleFlight`](super::SingleFlight) run gave no output: the work panicked, or its task
/// was dropped before it finished (the runtime shut down).
///
/// Every waiter of the failed flight receives a clone of the same error.
///
/// ```
/// use herder::SingleFlight;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let flights = SingleFlight::<&str, u32>::new();
/// let err = flights.run("key", || async { panic!("backend exploded") }).await.unwrap_err();
/// assert!(err.is_panic());
/// assert_eq!(err.panic_message(), Some("backend exploded"));
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RunError {
    failure: Failure,
}

impl RunError {
    pub(crate) fn new(failure: Failure) -> Self {
        RunError { failure }
    }

    /// `true` if the work panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.failure, Failure::Panicked(_))
    }

    /// `true` if the task running the work was dropped before it finished, which happens when
    /// its runtime shuts down.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.failure, Failure::Cancelled)
    }

    /// The panic message, when the work panicked with a string payload.
    pub fn panic_message(&self) -> Option<&str> {
        match &self.failure {
            Failure::Panicked(message) => Some(message),
            Failure::Cancelled => None,
        }
    }
}

impl fmt::Debug for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            Failure::Panicked(message) => {
                f.debug_tuple("RunError::Panicked").field(message).finish()
            }
            Failure::Cancelled => f.write_str("RunError::Cancelled"),
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            Failure::Panicked(message) => write!(f, "shared work panicked: {message}"),
            Failure::Cancelled => f.write_str("shared work was cancelled before it finished"),
        }
    }
}

impl Error for RunError {}
