use std::error::Error;
use std::fmt;

use crate::flight::Failure;

/// Why a [`Line`](super::Line) recovery gave no outcome: it panicked, or its task was dropped
/// before it finished (its runtime shut down).
///
/// The leader and every caller that joined the recovery receive a clone of the same error.
///
/// ```
/// use herder::Line;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let line: Line<String> = Line::new();
/// let seen = line.epoch();
/// let err = line.recover(seen, || async { panic!("login form changed") }).await.unwrap_err();
/// assert!(err.is_panic());
/// assert_eq!(err.to_string(), "recovery panicked: login form changed");
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RecoverError {
    failure: Failure,
}

impl RecoverError {
    pub(crate) fn new(failure: Failure) -> Self {
        RecoverError { failure }
    }

    /// `true` if the recovery panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.failure, Failure::Panicked(_))
    }

    /// `true` if the task running the recovery was dropped before it finished, which happens
    /// when its runtime shuts down.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.failure, Failure::Cancelled)
    }

    /// The panic message, when the recovery panicked with a string payload.
    pub fn panic_message(&self) -> Option<&str> {
        match &self.failure {
            Failure::Panicked(message) => Some(message),
            Failure::Cancelled => None,
        }
    }
}

impl fmt::Debug for RecoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            Failure::Panicked(message) => f
                .debug_tuple("RecoverError::Panicked")
                .field(message)
                .finish(),
            Failure::Cancelled => f.write_str("RecoverError::Cancelled"),
        }
    }
}

impl fmt::Display for RecoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            Failure::Panicked(message) => write!(f, "recovery panicked: {message}"),
            Failure::Cancelled => f.write_str("recovery was cancelled before it finished"),
        }
    }
}

impl Error for RecoverError {}
