use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::flight::Failure;

/// Shared work that failed to finish: it panicked, was cancelled, or ran out of time.
///
/// herder runs shared work (a [`SingleFlight`](crate::SingleFlight) run, a
/// [`Line`](crate::Line) recovery, a [`DataLoader`](crate::DataLoader) batch, a
/// [`Cache`](crate::Cache) load, a queued operation) as a task of its own, so its end is told the
/// way tokio's `JoinError` tells a task's: one opaque error with `is_*()` questions. It is the
/// error of [`SingleFlight::run`](crate::SingleFlight::run) and
/// [`Line::recover`](crate::Line::recover) (also named [`RunError`](crate::RunError) and
/// [`RecoverError`](crate::RecoverError)), and [`LoadError`](crate::LoadError),
/// [`CacheError`](crate::CacheError) and [`OperationError`](crate::OperationError) hand it out
/// through their `task_error()` when the work, not the loader's own error, is to blame.
///
/// Every waiter of the failed work receives a clone of the same error. Its message names the
/// work: `shared work panicked: ...`, `recovery timed out after 5s`, `loader panicked: ...`.
///
/// ```
/// use herder::{SingleFlight, TaskError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let flights = SingleFlight::<&str, u32>::new();
/// let err: TaskError = flights.run("key", || async { panic!("backend exploded") }).await.unwrap_err();
/// assert!(err.is_panic() && !err.is_cancelled() && !err.is_timeout());
/// assert_eq!(err.panic_message(), Some("backend exploded"));
/// assert_eq!(err.timeout(), None);
/// assert_eq!(err.to_string(), "shared work panicked: backend exploded");
///
///
/// // `?` into `Box<dyn Error>` works as for any error.
/// async fn fetch(flights: &SingleFlight<&'static str, u32>) -> Result<u32, Box<dyn std::error::Error>> {
///     Ok(flights.run("key", || async { 7 }).await?)
/// }
/// assert_eq!(fetch(&flights).await.unwrap(), 7);
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TaskError {
    kind: Kind,
    origin: Origin,
}

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    Panicked(Arc<str>),
    Cancelled,
    TimedOut(Duration),
}

/// Which work failed, for the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A [`SingleFlight`](crate::SingleFlight) run.
    Flight,
    /// A [`Line`](crate::Line) recovery.
    Recovery,
    /// A [`DataLoader`](crate::DataLoader) batch or a [`Cache`](crate::Cache) load.
    Load,
    /// A queued operation, which had started.
    Operation,
}

impl TaskError {
    /// The flight core's failure of `origin`'s work.
    pub(crate) fn failed(origin: Origin, failure: Failure) -> Self {
        let kind = match failure {
            Failure::Panicked(message) => Kind::Panicked(message),
            Failure::Cancelled => Kind::Cancelled,
        };
        TaskError { kind, origin }
    }

    pub(crate) fn panicked(origin: Origin, message: Arc<str>) -> Self {
        TaskError {
            kind: Kind::Panicked(message),
            origin,
        }
    }

    pub(crate) fn cancelled(origin: Origin) -> Self {
        TaskError {
            kind: Kind::Cancelled,
            origin,
        }
    }

    pub(crate) fn timed_out(origin: Origin, after: Duration) -> Self {
        TaskError {
            kind: Kind::TimedOut(after),
            origin,
        }
    }

    /// `true` if the work panicked (while it ran, or while building its future).
    pub fn is_panic(&self) -> bool {
        matches!(self.kind, Kind::Panicked(_))
    }

    /// `true` if the work was stopped before it finished: its task was dropped (its runtime
    /// shut down), or, for a queued operation, a shutdown aborted it.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.kind, Kind::Cancelled)
    }

    /// `true` if the work, or the wait for it, ran past its time limit.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::TimedOut(_))
    }

    /// The panic message, when the work panicked: the payload when it was a string, else
    /// `"non-string panic payload"`.
    pub fn panic_message(&self) -> Option<&str> {
        match &self.kind {
            Kind::Panicked(message) => Some(message),
            _ => None,
        }
    }

    /// The time limit that passed, when the work timed out.
    pub fn timeout(&self) -> Option<Duration> {
        match self.kind {
            Kind::TimedOut(after) => Some(after),
            _ => None,
        }
    }
}

impl Origin {
    fn noun(self) -> &'static str {
        match self {
            Origin::Flight => "shared work",
            Origin::Recovery => "recovery",
            Origin::Load => "load",
            Origin::Operation => "operation",
        }
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut tuple = match &self.kind {
            Kind::Panicked(message) => {
                let mut t = f.debug_tuple("TaskError::Panicked");
                t.field(message);
                t
            }
            Kind::Cancelled => f.debug_tuple("TaskError::Cancelled"),
            Kind::TimedOut(after) => {
                let mut t = f.debug_tuple("TaskError::TimedOut");
                t.field(after);
                t
            }
        };
        tuple.field(&self.origin).finish()
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let noun = self.origin.noun();
        match (&self.kind, self.origin) {
            (Kind::Panicked(message), Origin::Load) => write!(f, "loader panicked: {message}"),
            (Kind::Panicked(message), _) => write!(f, "{noun} panicked: {message}"),
            (Kind::Cancelled, Origin::Operation) => {
                f.write_str("operation aborted before it finished")
            }
            (Kind::Cancelled, _) => write!(f, "{noun} was cancelled before it finished"),
            (Kind::TimedOut(after), _) => write!(f, "{noun} timed out after {after:?}"),
        }
    }
}

impl Error for TaskError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_work() {
        let cases = [
            (
                TaskError::panicked(Origin::Flight, "boom".into()),
                "shared work panicked: boom",
            ),
            (
                TaskError::failed(Origin::Recovery, Failure::Cancelled),
                "recovery was cancelled before it finished",
            ),
            (
                TaskError::timed_out(Origin::Load, Duration::from_secs(5)),
                "load timed out after 5s",
            ),
            (
                TaskError::failed(Origin::Load, Failure::Panicked("bad row".into())),
                "loader panicked: bad row",
            ),
            (
                TaskError::cancelled(Origin::Operation),
                "operation aborted before it finished",
            ),
        ];
        for (err, message) in cases {
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn accessors_agree_with_the_kind() {
        let timed_out = TaskError::timed_out(Origin::Operation, Duration::from_millis(10));
        assert!(timed_out.is_timeout() && !timed_out.is_panic() && !timed_out.is_cancelled());
        assert_eq!(timed_out.timeout(), Some(Duration::from_millis(10)));
        assert_eq!(timed_out.panic_message(), None);
        let cancelled = TaskError::failed(Origin::Flight, Failure::Cancelled);
        assert!(cancelled.is_cancelled() && !cancelled.is_timeout());
        assert_eq!(cancelled.timeout(), None);
        assert_eq!(format!("{cancelled:?}"), "TaskError::Cancelled(Flight)");
    }
}
