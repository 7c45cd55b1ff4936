use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Origin, TaskError};

/// Why an operation gave no output: it was cancelled before it started, or, once started, it
/// failed to finish (a [`TaskError`]: it panicked, ran past the queue's timeout, or was aborted).
///
/// Read from the operation's handle.
///
/// ```
/// use herder::OperationQueue;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let queue = OperationQueue::builder().runners(1).build().unwrap();
/// let handle = queue.submit(async { panic!("protocol violation") }).await.unwrap();
/// let err: herder::OperationError = handle.await.unwrap_err();
/// assert!(err.is_panic());
/// assert_eq!(err.panic_message(), Some("protocol violation"));
/// assert_eq!(err.to_string(), "operation panicked: protocol violation");
/// assert!(err.task_error().unwrap().is_panic());
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct OperationError {
    repr: Repr,
}

#[derive(Clone, PartialEq, Eq)]
enum Repr {
    /// It had started: it panicked, timed out, or was aborted (a cancelled task).
    Started(TaskError),
    /// It never started.
    Cancelled,
}

impl OperationError {
    pub(crate) fn panicked(message: Arc<str>) -> Self {
        OperationError {
            repr: Repr::Started(TaskError::panicked(Origin::Operation, message)),
        }
    }

    pub(crate) fn timed_out(after: Duration) -> Self {
        OperationError {
            repr: Repr::Started(TaskError::timed_out(Origin::Operation, after)),
        }
    }

    pub(crate) fn cancelled() -> Self {
        OperationError {
            repr: Repr::Cancelled,
        }
    }

    pub(crate) fn aborted() -> Self {
        OperationError {
            repr: Repr::Started(TaskError::cancelled(Origin::Operation)),
        }
    }

    /// How the operation failed to finish once it had started: it panicked, timed out, or was
    /// aborted (which the [`TaskError`] calls [`is_cancelled`](TaskError::is_cancelled)).
    /// `None` if it never started.
    pub fn task_error(&self) -> Option<&TaskError> {
        match &self.repr {
            Repr::Started(error) => Some(error),
            Repr::Cancelled => None,
        }
    }

    /// `true` if the operation panicked. The runner that ran it carries on.
    pub fn is_panic(&self) -> bool {
        self.task_error().is_some_and(TaskError::is_panic)
    }

    /// The panic message, when the operation panicked with a string payload.
    pub fn panic_message(&self) -> Option<&str> {
        self.task_error().and_then(TaskError::panic_message)
    }

    /// `true` if the operation ran longer than the queue's
    /// [`timeout`](super::Builder::timeout) and was stopped.
    pub fn is_timeout(&self) -> bool {
        self.task_error().is_some_and(TaskError::is_timeout)
    }

    /// `true` if the operation never started: a [`shutdown`](super::OperationQueue::shutdown)
    /// reached its deadline while it was still queued, or every runner was lost (their runtime
    /// shut down; the queue is then closed).
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Cancelled)
    }

    /// `true` if the operation had started and was stopped before it finished: a
    /// [`shutdown`](super::OperationQueue::shutdown) reached its deadline, or the runtime that
    /// ran it shut down.
    pub fn is_aborted(&self) -> bool {
        self.task_error().is_some_and(TaskError::is_cancelled)
    }
}

impl fmt::Debug for OperationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Started(error) => f.debug_tuple("OperationError").field(error).finish(),
            Repr::Cancelled => f.write_str("OperationError::Cancelled"),
        }
    }
}

impl fmt::Display for OperationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Started(error) => fmt::Display::fmt(error, f),
            Repr::Cancelled => f.write_str("operation cancelled before it started"),
        }
    }
}

impl Error for OperationError {}

/// [`submit`](super::OperationQueue::submit) was refused because the queue is closed; the
/// operation is handed back.
///
/// ```
/// use herder::OperationQueue;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let queue = OperationQueue::builder().runners(1).build().unwrap();
/// queue.close();
/// let err = queue.submit(async { 7 }).await.unwrap_err();
/// assert_eq!(err.to_string(), "operation queue is closed");
/// assert_eq!(err.into_operation().await, 7);
/// # }
/// ```
pub struct SubmitError<F> {
    operation: F,
}

impl<F> SubmitError<F> {
    pub(crate) fn new(operation: F) -> Self {
        SubmitError { operation }
    }

    /// The operation that was not queued.
    pub fn into_operation(self) -> F {
        self.operation
    }
}

impl<F> fmt::Debug for SubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubmitError(..)")
    }
}

impl<F> fmt::Display for SubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("operation queue is closed")
    }
}

impl<F> Error for SubmitError<F> {}

/// [`try_submit`](super::OperationQueue::try_submit) was refused because the queue is full or
/// closed; the operation is handed back.
///
/// ```
/// use herder::OperationQueue;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let queue = OperationQueue::builder().runners(1).capacity(1).build().unwrap();
/// let first = queue.try_submit(async { 1 }).unwrap(); // queued: the runner has not run yet
/// let err = queue.try_submit(async { 2 }).unwrap_err();
/// assert!(err.is_full());
/// assert_eq!(err.to_string(), "operation queue is full");
/// let second = err.into_operation();
/// assert_eq!(first.await.unwrap(), 1);
/// assert_eq!(queue.try_submit(second).unwrap().await.unwrap(), 2);
/// # }
/// ```
pub struct TrySubmitError<F> {
    operation: F,
    closed: bool,
}

impl<F> TrySubmitError<F> {
    pub(crate) fn full(operation: F) -> Self {
        TrySubmitError {
            operation,
            closed: false,
        }
    }

    pub(crate) fn closed(operation: F) -> Self {
        TrySubmitError {
            operation,
            closed: true,
        }
    }

    /// `true` if the queue held as many operations as its capacity allows.
    pub fn is_full(&self) -> bool {
        !self.closed
    }

    /// `true` if the queue was closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The operation that was not queued.
    pub fn into_operation(self) -> F {
        self.operation
    }
}

impl<F> fmt::Debug for TrySubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.closed {
            f.write_str("TrySubmitError::Closed(..)")
        } else {
            f.write_str("TrySubmitError::Full(..)")
        }
    }
}

impl<F> fmt::Display for TrySubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.closed {
            f.write_str("operation queue is closed")
        } else {
            f.write_str("operation queue is full")
        }
    }
}

impl<F> Error for TrySubmitError<F> {}
