/// What became of the jobs that left the queue, as read for a snapshot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) completed: u64,
    pub(crate) panicked: u64,
    pub(crate) timed_out: u64,
    pub(crate) aborted: u64,
    pub(crate) cancelled: u64,
}

/// A snapshot of an operation queue, read with
/// [`OperationQueue::stats`](super::OperationQueue::stats).
///
/// Every operation that was queued ends up in exactly one of `completed`, `panicked`,
/// `timed_out`, `aborted` and `cancelled`, or is still `queued` or `running`.
///
/// ```
/// use herder::OperationQueue;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let queue = OperationQueue::builder().runners(2).build().unwrap();
/// queue.submit(async {}).await.unwrap().await.unwrap();
/// let stats = queue.stats();
/// assert_eq!((stats.runners, stats.completed, stats.queued, stats.running), (2, 1, 0, 0));
/// # }
/// ```
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperationQueueStats {
    /// Operations waiting for a runner.
    pub queued: usize,
    /// Operations running.
    pub running: usize,
    /// Live runners. Differs from the target ([`OperationQueue::runners`](super::OperationQueue::runners))
    /// while runners in excess finish their operation, and once the queue is drained.
    pub runners: usize,
    /// Live runners not running an operation (`runners - running`).
    pub idle_runners: usize,
    /// Operations that ran to the end and handed over their output (whatever it is: an
    /// operation that returns `Err` has completed).
    pub completed: u64,
    /// Operations that started and gave no output other than by panicking: `timed_out + aborted`.
    pub failed: u64,
    /// Operations stopped by the per-operation timeout.
    pub timed_out: u64,
    /// Operations stopped while running by a shutdown's deadline (or with their runtime).
    pub aborted: u64,
    /// Operations that panicked.
    pub panicked: u64,
    /// Operations removed before they started: their handle was dropped, or a shutdown's
    /// deadline passed while they were queued.
    pub cancelled: u64,
}

impl OperationQueueStats {
    pub(crate) fn new(queued: usize, running: usize, runners: usize, counters: Counters) -> Self {
        OperationQueueStats {
            queued,
            running,
            runners,
            idle_runners: runners.saturating_sub(running),
            completed: counters.completed,
            failed: counters.timed_out + counters.aborted,
            timed_out: counters.timed_out,
            aborted: counters.aborted,
            panicked: counters.panicked,
            cancelled: counters.cancelled,
        }
    }
}

/// What a [`shutdown`](super::OperationQueue::shutdown) had to stop. When shutdowns run
/// concurrently, each operation is counted in one report only: the one that cancelled it, or for
/// running operations the first shutdown to abort the runners.
///
/// ```
/// use herder::OperationQueue;
/// use tokio::time::{Duration, Instant};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let queue = OperationQueue::builder().runners(1).build().unwrap();
/// queue.submit(async {}).await.unwrap().detach();
/// let report = queue.shutdown(Instant::now() + Duration::from_secs(1)).await;
/// assert!(report.is_clean());
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Queued operations that never started; their handles report
    /// [`is_cancelled`](super::OperationError::is_cancelled).
    pub cancelled: usize,
    /// Running operations that were stopped; their handles report
    /// [`is_aborted`](super::OperationError::is_aborted).
    pub aborted: usize,
}

impl ShutdownReport {
    /// `true` if everything queued finished before the deadline.
    pub fn is_clean(&self) -> bool {
        self.cancelled == 0 && self.aborted == 0
    }
}
