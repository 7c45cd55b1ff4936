use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// Why an operation gave no output: it panicked, ran past the queue's timeout, was cancelled
/// before it started, or was aborted while it ran.
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
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct OperationError {
    repr: Repr,
}

#[derive(Clone, PartialEq, Eq)]
enum Repr {
    Panicked(Arc<str>),
    TimedOut,
    Cancelled,
    Aborted,
}

impl OperationError {
    pub(crate) fn panicked(message: Arc<str>) -> Self {
        OperationError {
            repr: Repr::Panicked(message),
        }
    }

    pub(crate) fn timed_out() -> Self {
        OperationError {
            repr: Repr::TimedOut,
        }
    }

    pub(crate) fn cancelled() -> Self {
        OperationError {
            repr: Repr::Cancelled,
        }
    }

    pub(crate) fn aborted() -> Self {
        OperationError {
            repr: Repr::Aborted,
        }
    }

    /// `true` if the operation panicked. The runner that ran it carries on.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panicked(_))
    }

    /// The panic message, when the operation panicked with a string payload.
    pub fn panic_message(&self) -> Option<&str> {
        match &self.repr {
            Repr::Panicked(message) => Some(message),
            _ => None,
        }
    }

    /// `true` if the operation ran longer than the queue's
    /// [`timeout`](super::Builder::timeout) and was stopped.
    pub fn is_timeout(&self) -> bool {
        matches!(self.repr, Repr::TimedOut)
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
        matches!(self.repr, Repr::Aborted)
    }
}

impl fmt::Debug for OperationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Panicked(message) => f
                .debug_tuple("OperationError::Panicked")
                .field(message)
                .finish(),
            Repr::TimedOut => f.write_str("OperationError::TimedOut"),
            Repr::Cancelled => f.write_str("OperationError::Cancelled"),
            Repr::Aborted => f.write_str("OperationError::Aborted"),
        }
    }
}

impl fmt::Display for OperationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Panicked(message) => write!(f, "operation panicked: {message}"),
            Repr::TimedOut => f.write_str("operation timed out"),
            Repr::Cancelled => f.write_str("operation cancelled before it started"),
            Repr::Aborted => f.write_str("operation aborted before it finished"),
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
