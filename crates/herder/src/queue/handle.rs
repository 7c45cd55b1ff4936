use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::builder::Builder;
use super::core::Config;
use super::error::{OperationError, SubmitError, TrySubmitError};
use super::future::Receipt;
use super::job::{Cell, Outcome, SendJob, Sendable};
use super::runner::{RunnerGuard, Spawn, run};
use super::shared::{Rejected, Shared};
use super::stats::{OperationQueueStats, ShutdownReport};
use crate::error::BuildError;

/// Runs queued operations in FIFO order on at most N runners, and hands each caller its result.
///
/// An operation is any `Future + Send + 'static`. [`submit`](OperationQueue::submit) queues it
/// (waiting for a free place if the queue has a [`capacity`](Builder::capacity)) and returns an
/// [`OperationHandle`]; awaiting the handle gives the operation's output. Operations start in the
/// order they were queued, at most [`runners`](Builder::runners) at a time.
///
/// * A handle dropped before its operation started cancels the operation: it never runs, and
///   its place is free at once, and its future is dropped then, with what it holds.
/// * A panic reaches the operation's handle as an [`OperationError`]; the runner carries on, so
///   the queue keeps its N runners.
/// * [`close`](OperationQueue::close), [`drain`](OperationQueue::drain) and
///   [`shutdown`](OperationQueue::shutdown) stop it gracefully; dropping the last clone closes it
///   (what is queued still runs).
///
/// The handle is cheap to clone; clones share the queue. For operations that are not `Send`,
/// use [`LocalOperationQueue`](super::LocalOperationQueue).
///
/// ```
/// use herder::OperationQueue;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // An IMAP-style connection: at most 2 commands in flight, in order.
/// let queue = OperationQueue::builder().runners(2).build().unwrap();
/// let mut handles = Vec::new();
/// for uid in 1..=5u32 {
///     handles.push(queue.submit(async move { format!("FETCH {uid}") }).await.unwrap());
/// }
/// for (uid, handle) in (1..=5).zip(handles) {
///     assert_eq!(handle.await.unwrap(), format!("FETCH {uid}"));
/// }
/// assert_eq!(queue.stats().completed, 5);
/// # }
/// ```
pub struct OperationQueue {
    shared: Arc<Shared<SendJob, Handle>>,
}

/// Runners of `Send` jobs are tasks of the queue's runtime.
impl Spawn<SendJob> for Handle {
    fn spawn(&self, guard: RunnerGuard<SendJob>, wake: Arc<Notify>) -> AbortHandle {
        Handle::spawn(self, run(guard, wake)).abort_handle()
    }
}

/// What an operation's handle reads its result through.
type SendOutcome<T> = dyn Outcome<Value = T> + Send + Sync;

fn erase<F>(cell: Arc<Cell<F, Sendable>>) -> (Arc<SendJob>, Arc<SendOutcome<F::Output>>)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    (cell.clone(), cell)
}

impl OperationQueue {
    /// A queue with `runners` runners, no capacity limit and no timeout.
    ///
    /// # Panics
    ///
    /// If `runners` is 0 or more than [`MAX_RUNNERS`](super::MAX_RUNNERS) (the builder refuses
    /// these with an error instead), or when called outside a Tokio runtime.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let queue = herder::OperationQueue::new(3);
    /// assert_eq!(queue.stats().runners, 3);
    /// # }
    /// ```
    pub fn new(runners: usize) -> Self {
        match Self::builder().runners(runners).build() {
            Ok(queue) => queue,
            Err(err) => panic!("{err}"),
        }
    }

    /// A builder for the settings: runners, capacity, timeout, lines to pause on.
    pub fn builder() -> Builder<OperationQueue> {
        Builder::new()
    }

    pub(super) fn from_config(config: Config, runtime: Handle) -> Self {
        #[cfg_attr(not(feature = "metrics"), expect(unused_mut))]
        let mut shared = Shared::new(config, runtime);
        #[cfg(feature = "metrics")]
        {
            let metrics = crate::metrics::QueueMetrics::new(shared.name.as_ref());
            shared.record(metrics);
        }
        let shared = Arc::new(shared);
        #[cfg(feature = "metrics")]
        crate::metrics::register(Arc::downgrade(&shared) as _);
        OperationQueue { shared }
    }

    /// Queues `operation`, waiting for a free place while the queue is full, and returns its
    /// handle. A closed queue hands the operation back in the error.
    ///
    /// The operation starts once every operation queued before it has started and a runner is
    /// free. It runs as a task of the queue, not of the caller: awaiting the handle only
    /// collects its output.
    ///
    /// Like tokio's channels, `submit` spends the task's cooperative budget: a task submitting
    /// in a loop yields to the runtime now and then even while the queue has room, so that
    /// runners sharing its thread get to run.
    ///
    /// # Cancel safety
    ///
    /// If the returned future is dropped before it completes, the operation is dropped without
    /// being queued, and the callers waiting behind this one for a place keep their order
    /// (places are granted first come, first served).
    ///
    /// ```
    /// use herder::OperationQueue;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let queue = OperationQueue::builder().runners(1).capacity(1).build().unwrap();
    /// let a = queue.submit(async { "a" }).await.unwrap();
    /// // The queue is full: this waits until the runner has taken `a`.
    /// let b = queue.submit(async { "b" }).await.unwrap();
    /// assert_eq!((a.await.unwrap(), b.await.unwrap()), ("a", "b"));
    /// # }
    /// ```
    pub async fn submit<F>(
        &self,
        operation: F,
    ) -> Result<OperationHandle<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.shared.submit(operation, erase).await {
            Ok(receipt) => Ok(OperationHandle { receipt }),
            Err(operation) => Err(SubmitError::new(operation)),
        }
    }

    /// Queues `operation` if there is a free place, without waiting; otherwise hands it back,
    /// telling whether the queue was full or closed.
    ///
    /// ```
    /// use herder::OperationQueue;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let queue = OperationQueue::new(1);
    /// let handle = queue.try_submit(async { 40 + 2 }).unwrap();
    /// assert_eq!(handle.await.unwrap(), 42);
    /// queue.close();
    /// assert!(queue.try_submit(async { 0 }).unwrap_err().is_closed());
    /// # }
    /// ```
    pub fn try_submit<F>(
        &self,
        operation: F,
    ) -> Result<OperationHandle<F::Output>, TrySubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.shared.try_submit(operation, erase) {
            Ok(receipt) => Ok(OperationHandle { receipt }),
            Err(Rejected::Full(operation)) => Err(TrySubmitError::full(operation)),
            Err(Rejected::Closed(operation)) => Err(TrySubmitError::closed(operation)),
        }
    }

    /// Changes how many operations run at once. New runners start at once; when the count goes
    /// down, running operations finish and the runners in excess exit as they come free.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let queue = herder::OperationQueue::new(2);
    /// queue.set_runners(8).unwrap();
    /// assert_eq!((queue.runners(), queue.stats().runners), (8, 8));
    /// assert!(queue.set_runners(0).is_err());
    /// # }
    /// ```
    pub fn set_runners(&self, runners: usize) -> Result<(), BuildError> {
        self.shared.set_runners(runners)
    }

    /// How many runners the queue is set to have.
    pub fn runners(&self) -> usize {
        self.shared.runners()
    }

    /// A snapshot of the queue: queued, running, runners, and what became of every operation.
    pub fn stats(&self) -> OperationQueueStats {
        self.shared.stats()
    }

    /// Waits until nothing is queued and nothing runs. Returns at once if that is already so.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only watches the queue.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let queue = herder::OperationQueue::new(2);
    /// for _ in 0..10 {
    ///     queue.submit(async { tokio::task::yield_now().await }).await.unwrap().detach();
    /// }
    /// queue.wait_idle().await;
    /// assert_eq!(queue.stats().completed, 10);
    /// # }
    /// ```
    pub async fn wait_idle(&self) {
        self.shared.wait_idle().await;
    }

    /// Refuses new operations from now on: `submit` and `try_submit` hand them back, and callers
    /// waiting for a place are refused. What is already queued still runs.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let queue = herder::OperationQueue::new(1);
    /// queue.close();
    /// assert!(queue.is_closed());
    /// assert!(queue.submit(async {}).await.is_err());
    /// # }
    /// ```
    pub fn close(&self) {
        self.shared.close();
    }

    /// `true` once the queue is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Closes the queue (if it is not already), then waits until every queued operation has run
    /// and the runners have exited.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the queue stays closed and its operations go on.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let queue = herder::OperationQueue::new(1);
    /// let done = queue.submit(async { "sent" }).await.unwrap();
    /// queue.drain().await;
    /// assert_eq!(queue.stats().runners, 0);
    /// assert_eq!(done.await.unwrap(), "sent");
    /// # }
    /// ```
    pub async fn drain(&self) {
        self.shared.drain().await;
    }

    /// Closes the queue and drains it until `deadline`; then cancels the operations still
    /// queued and aborts those still running. Every handle tells what happened to its operation
    /// (its output, or [`is_cancelled`](OperationError::is_cancelled) /
    /// [`is_aborted`](OperationError::is_aborted)); the report counts what had to be stopped.
    /// On a runtime built without the time driver (no `enable_time`), or outside any runtime,
    /// the deadline is kept by a timer thread shared by the process (`futures-timer`'s) instead
    /// of tokio's timer. (herder finds out that a runtime has no time driver by catching the
    /// panic tokio raises when a timer is made, once per runtime: a program whose panic hook
    /// ends the process must build its runtimes with the time driver.)
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before the deadline, the queue stays closed and drains as
    /// [`close`](OperationQueue::close) would; nothing is cancelled.
    ///
    /// ```
    /// use std::future::pending;
    /// use tokio::time::{Duration, Instant};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let queue = herder::OperationQueue::new(1);
    /// let stuck = queue.submit(pending::<()>()).await.unwrap();
    /// let behind = queue.submit(async {}).await.unwrap();
    /// let report = queue.shutdown(Instant::now() + Duration::from_millis(50)).await;
    /// assert_eq!((report.aborted, report.cancelled), (1, 1));
    /// assert!(stuck.await.unwrap_err().is_aborted());
    /// assert!(behind.await.unwrap_err().is_cancelled());
    /// # }
    /// ```
    pub async fn shutdown(&self, deadline: Instant) -> ShutdownReport {
        self.shared.shutdown(deadline).await
    }
}

impl Clone for OperationQueue {
    fn clone(&self) -> Self {
        OperationQueue {
            shared: self.shared.clone(),
        }
    }
}

#[cfg(feature = "metrics")]
impl crate::metrics::Source for Shared<SendJob, Handle> {
    fn publish(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.publish(&self.stats());
        }
    }
}

impl fmt::Debug for OperationQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperationQueue")
            .field("name", &self.shared.name)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The handle of a queued operation: awaiting it gives the operation's output, or why there is
/// none.
///
/// Dropping it before the operation started cancels the operation (it never runs, its place is
/// free at once, and its future is dropped then, with what it holds); dropping it
/// later lets the operation finish unobserved. [`detach`](OperationHandle::detach) keeps the
/// operation queued without anyone awaiting it (fire and forget).
///
/// ```
/// use herder::OperationQueue;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let queue = OperationQueue::new(1);
/// let kept = queue.submit(async { 1 }).await.unwrap();
/// let dropped = queue.submit(async { unreachable!("never runs") }).await.unwrap();
/// drop(dropped);
/// assert_eq!(kept.await.unwrap(), 1);
/// assert_eq!(queue.stats().cancelled, 1);
/// # }
/// ```
#[must_use = "dropping the handle of an operation that has not started removes it from the queue; use `detach` to let it run"]
pub struct OperationHandle<T> {
    receipt: Receipt<SendOutcome<T>, SendJob>,
}

impl<T> OperationHandle<T> {
    /// Lets the operation run without anyone awaiting its output.
    pub fn detach(self) {
        self.receipt.detach();
    }
}

impl<T> Future for OperationHandle<T> {
    type Output = Result<T, OperationError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receipt).poll(cx)
    }
}

impl<T> fmt::Debug for OperationHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperationHandle")
            .field("attached", &self.receipt.is_attached())
            .finish_non_exhaustive()
    }
}
