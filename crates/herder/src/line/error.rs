use std::error::Error;
use std::fmt;
use std::time::Duration;

use crate::flight::Failure;

/// Why a [`Line`](super::Line) recovery gave no outcome: it panicked, it ran past the line's
/// [`recovery_timeout`](super::Builder::recovery_timeout), or its task was dropped before it
/// finished (its runtime shut down).
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
    kind: Kind,
}

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    Failed(Failure),
    TimedOut(Duration),
}

impl RecoverError {
    pub(crate) fn new(failure: Failure) -> Self {
        RecoverError {
            kind: Kind::Failed(failure),
        }
    }

    pub(crate) fn timed_out(after: Duration) -> Self {
        RecoverError {
            kind: Kind::TimedOut(after),
        }
    }

    /// `true` if the recovery panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.kind, Kind::Failed(Failure::Panicked(_)))
    }

    /// `true` if the task running the recovery was dropped before it finished, which happens
    /// when its runtime shuts down.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.kind, Kind::Failed(Failure::Cancelled))
    }

    /// `true` if the recovery ran past the line's
    /// [`recovery_timeout`](super::Builder::recovery_timeout) and was dropped.
    ///
    /// ```
    /// use herder::Line;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let line: Line<String> = Line::builder()
    ///     .recovery_timeout(Duration::from_secs(5))
    ///     .build()
    ///     .unwrap();
    /// let seen = line.epoch();
    /// let err = line.recover(seen, std::future::pending).await.unwrap_err();
    /// assert!(err.is_timeout());
    /// assert_eq!(err.to_string(), "recovery timed out after 5s");
    /// assert!(!line.is_recovering());
    /// # }
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::TimedOut(_))
    }

    /// The panic message, when the recovery panicked with a string payload.
    pub fn panic_message(&self) -> Option<&str> {
        match &self.kind {
            Kind::Failed(Failure::Panicked(message)) => Some(message),
            _ => None,
        }
    }
}

impl fmt::Debug for RecoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Failed(Failure::Panicked(message)) => f
                .debug_tuple("RecoverError::Panicked")
                .field(message)
                .finish(),
            Kind::Failed(Failure::Cancelled) => f.write_str("RecoverError::Cancelled"),
            Kind::TimedOut(after) => f
                .debug_tuple("RecoverError::TimedOut")
                .field(after)
                .finish(),
        }
    }
}

impl fmt::Display for RecoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Failed(Failure::Panicked(message)) => write!(f, "recovery panicked: {message}"),
            Kind::Failed(Failure::Cancelled) => {
                f.write_str("recovery was cancelled before it finished")
            }
            Kind::TimedOut(after) => write!(f, "recovery timed out after {after:?}"),
        }
    }
}

impl Error for RecoverError {}
