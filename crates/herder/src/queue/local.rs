//! The queue for operations that are not `Send` (operation-queue's default use: Thunderbird's
//! protocol code, pinned to one thread). Same state machine and runner loop as
//! [`OperationQueue`](super::OperationQueue); the runners are spawned with
//! [`tokio::task::spawn_local`], so the queue lives inside a [`LocalSet`](tokio::task::LocalSet).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::builder::Builder;
use super::core::Config;
use super::error::{OperationError, SubmitError, TrySubmitError};
use super::future::Receipt;
use super::job::{Cell, Local, LocalJob, Outcome};
use super::runner::{RunnerGuard, Spawn, run};
use super::shared::{Rejected, Shared};
use super::stats::{OperationQueueStats, ShutdownReport};
use crate::error::BuildError;

/// [`OperationQueue`](super::OperationQueue) for operations that are not `Send`: same FIFO order,
/// runners, capacity, timeout, handles and shutdown, with runners spawned on the current
/// [`LocalSet`](tokio::task::LocalSet).
///
/// The queue and its handles are not `Send` either; clones share the queue.
///
/// ```
/// use herder::LocalOperationQueue;
/// use std::rc::Rc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// tokio::task::LocalSet::new().run_until(async {
///     let queue = LocalOperationQueue::builder().runners(2).build().unwrap();
///     let session = Rc::new("session-1".to_string()); // `Rc`: not `Send`
///     let handle = queue
///         .submit({
///             let session = session.clone();
///             async move { format!("{session}: NOOP") }
///         })
///         .await
///         .unwrap();
///     assert_eq!(handle.await.unwrap(), "session-1: NOOP");
/// }).await;
/// # }
/// ```
pub struct LocalOperationQueue {
    shared: Rc<Shared<LocalJob, OnLocalSet>>,
}

/// Runners of jobs that are not `Send` are tasks of the current `LocalSet`.
struct OnLocalSet;

impl Spawn<LocalJob> for OnLocalSet {
    fn spawn(&self, guard: RunnerGuard<LocalJob>, wake: Arc<Notify>) -> AbortHandle {
        tokio::task::spawn_local(run(guard, wake)).abort_handle()
    }
}

/// What an operation's handle reads its result through.
type LocalOutcome<T> = dyn Outcome<Value = T>;

fn erase<F: Future + 'static>(
    cell: Arc<Cell<F, Local>>,
) -> (Arc<LocalJob>, Arc<LocalOutcome<F::Output>>) {
    (cell.clone(), cell)
}

impl LocalOperationQueue {
    /// A queue with `runners` runners, no capacity limit and no timeout.
    ///
    /// # Panics
    ///
    /// If `runners` is 0 or more than [`MAX_RUNNERS`](super::MAX_RUNNERS) (the builder refuses
    /// these with an error instead), or when called outside a [`LocalSet`](tokio::task::LocalSet).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # tokio::task::LocalSet::new().run_until(async {
    /// let queue = herder::LocalOperationQueue::new(3);
    /// assert_eq!(queue.stats().runners, 3);
    /// # }).await;
    /// # }
    /// ```
    pub fn new(runners: usize) -> Self {
        match Self::builder().runners(runners).build() {
            Ok(queue) => queue,
            Err(err) => panic!("{err}"),
        }
    }

    /// A builder for the settings: runners, capacity, timeout, lines to pause on.
    pub fn builder() -> Builder<LocalOperationQueue> {
        Builder::new()
    }

    pub(super) fn from_config(config: Config) -> Self {
        LocalOperationQueue {
            shared: Rc::new(Shared::new(config, OnLocalSet)),
        }
    }

    /// Queues `operation`, waiting for a free place while the queue is full, and returns its
    /// handle. A closed queue hands the operation back. See
    /// [`OperationQueue::submit`](super::OperationQueue::submit).
    ///
    /// # Cancel safety
    ///
    /// If the returned future is dropped before it completes, the operation is dropped without
    /// being queued; the callers waiting behind this one keep their order.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # tokio::task::LocalSet::new().run_until(async {
    /// let queue = herder::LocalOperationQueue::new(1);
    /// let handle = queue.submit(async { std::rc::Rc::new(5) }).await.unwrap();
    /// assert_eq!(*handle.await.unwrap(), 5);
    /// # }).await;
    /// # }
    /// ```
    pub async fn submit<F>(
        &self,
        operation: F,
    ) -> Result<LocalOperationHandle<F::Output>, SubmitError<F>>
    where
        F: Future + 'static,
    {
        match self.shared.submit(operation, erase).await {
            Ok(receipt) => Ok(LocalOperationHandle { receipt }),
            Err(operation) => Err(SubmitError::new(operation)),
        }
    }

    /// Queues `operation` if there is a free place, without waiting; otherwise hands it back.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # tokio::task::LocalSet::new().run_until(async {
    /// let queue = herder::LocalOperationQueue::builder().capacity(1).build().unwrap();
    /// let first = queue.try_submit(async { 1 }).unwrap();
    /// assert!(queue.try_submit(async { 2 }).unwrap_err().is_full());
    /// assert_eq!(first.await.unwrap(), 1);
    /// # }).await;
    /// # }
    /// ```
    pub fn try_submit<F>(
        &self,
        operation: F,
    ) -> Result<LocalOperationHandle<F::Output>, TrySubmitError<F>>
    where
        F: Future + 'static,
    {
        match self.shared.try_submit(operation, erase) {
            Ok(receipt) => Ok(LocalOperationHandle { receipt }),
            Err(Rejected::Full(operation)) => Err(TrySubmitError::full(operation)),
            Err(Rejected::Closed(operation)) => Err(TrySubmitError::closed(operation)),
        }
    }

    /// Changes how many operations run at once; see
    /// [`OperationQueue::set_runners`](super::OperationQueue::set_runners).
    ///
    /// # Panics
    ///
    /// When runners must be added and this is called outside the queue's `LocalSet`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # tokio::task::LocalSet::new().run_until(async {
    /// let queue = herder::LocalOperationQueue::new(1);
    /// queue.set_runners(3).unwrap();
    /// assert_eq!(queue.stats().runners, 3);
    /// # }).await;
    /// # }
    /// ```
    pub fn set_runners(&self, runners: usize) -> Result<(), BuildError> {
        self.shared.set_runners(runners)
    }

    /// How many runners the queue is set to have.
    pub fn runners(&self) -> usize {
        self.shared.runners()
    }

    /// A snapshot of the queue.
    pub fn stats(&self) -> OperationQueueStats {
        self.shared.stats()
    }

    /// Waits until nothing is queued and nothing runs.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only watches the queue.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # tokio::task::LocalSet::new().run_until(async {
    /// let queue = herder::LocalOperationQueue::new(1);
    /// queue.submit(async {}).await.unwrap().detach();
    /// queue.wait_idle().await;
    /// assert_eq!(queue.stats().completed, 1);
    /// # }).await;
    /// # }
    /// ```
    pub async fn wait_idle(&self) {
        self.shared.wait_idle().await;
    }

    /// Refuses new operations from now on; what is queued still runs.
    pub fn close(&self) {
        self.shared.close();
    }

    /// `true` once the queue is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Closes the queue, then waits until every queued operation has run and the runners have
    /// exited.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the queue stays closed and its operations go on.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # tokio::task::LocalSet::new().run_until(async {
    /// let queue = herder::LocalOperationQueue::new(1);
    /// queue.submit(async {}).await.unwrap().detach();
    /// queue.drain().await;
    /// assert_eq!((queue.stats().completed, queue.stats().runners), (1, 0));
    /// # }).await;
    /// # }
    /// ```
    pub async fn drain(&self) {
        self.shared.drain().await;
    }

    /// Closes the queue and drains it until `deadline`, then cancels what is still queued and
    /// aborts what still runs; see [`OperationQueue::shutdown`](super::OperationQueue::shutdown).
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before the deadline, the queue stays closed and drains as
    /// [`close`](LocalOperationQueue::close) would; nothing is cancelled.
    ///
    /// ```
    /// use tokio::time::{Duration, Instant};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # tokio::task::LocalSet::new().run_until(async {
    /// let queue = herder::LocalOperationQueue::new(1);
    /// let stuck = queue.submit(std::future::pending::<()>()).await.unwrap();
    /// let report = queue.shutdown(Instant::now() + Duration::from_millis(10)).await;
    /// assert_eq!(report.aborted, 1);
    /// assert!(stuck.await.unwrap_err().is_aborted());
    /// # }).await;
    /// # }
    /// ```
    pub async fn shutdown(&self, deadline: Instant) -> ShutdownReport {
        self.shared.shutdown(deadline).await
    }
}

impl Clone for LocalOperationQueue {
    fn clone(&self) -> Self {
        LocalOperationQueue {
            shared: self.shared.clone(),
        }
    }
}

impl fmt::Debug for LocalOperationQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalOperationQueue")
            .field("name", &self.shared.name)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The handle of an operation queued on a [`LocalOperationQueue`]; see
/// [`OperationHandle`](super::OperationHandle).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # tokio::task::LocalSet::new().run_until(async {
/// let queue = herder::LocalOperationQueue::new(1);
/// let handle: herder::queue::LocalOperationHandle<u8> = queue.submit(async { 3 }).await.unwrap();
/// assert_eq!(handle.await.unwrap(), 3);
/// # }).await;
/// # }
/// ```
#[must_use = "dropping the handle of an operation that has not started removes it from the queue; use `detach` to let it run"]
pub struct LocalOperationHandle<T> {
    receipt: Receipt<LocalOutcome<T>, LocalJob>,
}

impl<T> LocalOperationHandle<T> {
    /// Lets the operation run without anyone awaiting its output.
    pub fn detach(self) {
        self.receipt.detach();
    }
}

impl<T> Future for LocalOperationHandle<T> {
    type Output = Result<T, OperationError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receipt).poll(cx)
    }
}

impl<T> fmt::Debug for LocalOperationHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalOperationHandle")
            .field("attached", &self.receipt.is_attached())
            .finish_non_exhaustive()
    }
}
