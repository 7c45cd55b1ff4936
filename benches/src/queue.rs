//! The OperationQueue workload and its peers: `ops` trivial operations through `runners`
//! runners. Each operation increments a shared counter, yields once to the runtime, and
//! increments it again (a request that awaits something); it returns `i * 2`.
//!
//! * herder's `OperationQueue`, no capacity limit (like the peers): with every handle awaited
//!   by the submitter, and with every handle detached (fire and forget); with a capacity of 1024
//!   (handles awaited); and `LocalOperationQueue` on a `LocalSet` (current-thread runtime only);
//! * thunderbird's `operation-queue` 1.x, its runners spawned with `tokio::spawn` (`send`
//!   feature): fire and forget, which is all it offers, and with each operation handing its
//!   result back through a oneshot, as its users write it to get results;
//! * a tokio `Semaphore` with `runners` permits and one spawned task per operation, each taking a
//!   permit before it runs (the baseline a user would write by hand).
//!
//! A fire-and-forget run ends when the counter reaches `2 * ops` (the operation that makes the
//! last increment wakes the submitter); a run with results ends when every result is collected
//! and checked. Each run builds its queue, times the submissions and the completion with
//! `tokio::time::Instant`, then tears the queue down outside the timed part.
//!
//! The workload is driven by `Runtime::block_on`, not spawned: operation-queue's queue is not
//! `Sync`, so a task that awaits `enqueue(&self)` is not `Send` and cannot be spawned on a
//! multi-thread runtime. Every peer is driven the same way.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::time::Instant;

/// An implementation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueuePeer {
    /// herder `OperationQueue`, no capacity limit, every handle awaited.
    Herder,
    /// herder `OperationQueue`, no capacity limit, every handle detached.
    HerderDetached,
    /// herder `OperationQueue` with `capacity(1024)`: `submit` waits while 1024 are queued.
    HerderBounded,
    /// herder `LocalOperationQueue` on a `LocalSet`; current-thread runtime only.
    HerderLocal,
    /// thunderbird's operation-queue, `send` feature, fire and forget.
    OperationQueue,
    /// thunderbird's operation-queue, each result sent back through a oneshot.
    OperationQueueOneshot,
    /// One spawned task per operation, gated by a `Semaphore`.
    Semaphore,
}

impl QueuePeer {
    /// The peers that run on any runtime; operation-queue (fire and forget) first: it is the
    /// baseline of the ratios.
    pub fn all() -> Vec<QueuePeer> {
        vec![
            QueuePeer::OperationQueue,
            QueuePeer::Herder,
            QueuePeer::HerderDetached,
            QueuePeer::HerderBounded,
            QueuePeer::OperationQueueOneshot,
            QueuePeer::Semaphore,
        ]
    }

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            QueuePeer::Herder => "herder OperationQueue, awaited handles",
            QueuePeer::HerderDetached => "herder OperationQueue, detached handles",
            QueuePeer::HerderBounded => "herder OperationQueue, capacity 1024, awaited handles",
            QueuePeer::HerderLocal => "herder LocalOperationQueue (LocalSet), awaited handles",
            QueuePeer::OperationQueue => "operation-queue 1.3",
            QueuePeer::OperationQueueOneshot => "operation-queue 1.3, results through oneshots",
            QueuePeer::Semaphore => "tokio Semaphore + spawn, awaited JoinHandles",
        }
    }

    /// Runs the workload once on the current runtime and returns the time it took.
    ///
    /// # Panics
    ///
    /// If a result is wrong or missing.
    pub async fn run(self, ops: u64, runners: usize) -> Duration {
        match self {
            QueuePeer::Herder => herder(ops, runners, None).await,
            QueuePeer::HerderDetached => herder_detached(ops, runners).await,
            QueuePeer::HerderBounded => herder(ops, runners, Some(1024)).await,
            QueuePeer::HerderLocal => {
                tokio::task::LocalSet::new()
                    .run_until(herder_local(ops, runners))
                    .await
            }
            QueuePeer::OperationQueue => operation_queue(ops, runners).await,
            QueuePeer::OperationQueueOneshot => operation_queue_oneshot(ops, runners).await,
            QueuePeer::Semaphore => semaphore(ops, runners).await,
        }
    }
}

impl fmt::Display for QueuePeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The counter every operation bumps twice, and the signal that the last bump happened.
#[derive(Clone)]
struct Progress {
    count: Arc<AtomicU64>,
    done: Arc<Notify>,
    target: u64,
}

impl Progress {
    fn new(ops: u64) -> Self {
        Progress {
            count: Arc::default(),
            done: Arc::new(Notify::new()),
            target: 2 * ops,
        }
    }

    /// One increment; the last one wakes the submitter.
    fn bump(&self) {
        if self.count.fetch_add(1, Relaxed) + 1 == self.target {
            self.done.notify_one();
        }
    }

    /// The operation: increment, one yield, increment; `i * 2`.
    fn op(&self, i: u64) -> impl Future<Output = u64> + Send + 'static {
        let this = self.clone();
        async move {
            this.bump();
            tokio::task::yield_now().await;
            this.bump();
            i * 2
        }
    }

    /// Waits for the last increment (`notify_one` keeps a permit if it comes first).
    async fn finished(&self) {
        self.done.notified().await;
        assert_eq!(self.count.load(Relaxed), self.target, "missing operations");
    }
}

/// The sum of `i * 2` over `0..ops`.
fn expected(ops: u64) -> u64 {
    ops * ops.saturating_sub(1)
}

/// Times `work` and checks its sum.
async fn timed(ops: u64, work: impl Future<Output = u64>) -> Duration {
    let start = Instant::now();
    let sum = work.await;
    let elapsed = start.elapsed();
    assert_eq!(sum, expected(ops), "wrong or missing results");
    elapsed
}

async fn herder(ops: u64, runners: usize, capacity: Option<usize>) -> Duration {
    let mut builder = herder::OperationQueue::builder().runners(runners);
    if let Some(capacity) = capacity {
        builder = builder.capacity(capacity);
    }
    let queue = builder.build().expect("valid settings");
    let progress = Progress::new(ops);
    let elapsed = timed(ops, async {
        let mut handles = Vec::with_capacity(ops as usize);
        for i in 0..ops {
            handles.push(queue.submit(progress.op(i)).await.unwrap());
        }
        let mut sum = 0;
        for handle in handles {
            sum += handle.await.unwrap();
        }
        sum
    })
    .await;
    queue.drain().await;
    elapsed
}

async fn herder_detached(ops: u64, runners: usize) -> Duration {
    let queue = herder::OperationQueue::new(runners);
    let progress = Progress::new(ops);
    let start = Instant::now();
    for i in 0..ops {
        queue.submit(progress.op(i)).await.unwrap().detach();
    }
    progress.finished().await;
    let elapsed = start.elapsed();
    queue.drain().await;
    elapsed
}

async fn herder_local(ops: u64, runners: usize) -> Duration {
    let queue = herder::LocalOperationQueue::new(runners);
    let progress = Progress::new(ops);
    let elapsed = timed(ops, async {
        let mut handles = Vec::with_capacity(ops as usize);
        for i in 0..ops {
            handles.push(queue.submit(progress.op(i)).await.unwrap());
        }
        let mut sum = 0;
        for handle in handles {
            sum += handle.await.unwrap();
        }
        sum
    })
    .await;
    queue.drain().await;
    elapsed
}

/// An operation for operation-queue, fire and forget: the same increments and yield.
#[derive(Debug)]
struct Bump {
    progress: Progress,
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Progress").finish_non_exhaustive()
    }
}

impl operation_queue::QueuedOperation for Bump {
    fn perform(&self) -> impl Future<Output = ()> + Send {
        let progress = self.progress.clone();
        async move {
            progress.bump();
            tokio::task::yield_now().await;
            progress.bump();
        }
    }
}

/// An operation for operation-queue that hands its result back: `perform(&self)` cannot consume
/// the sender, hence the mutex, which is what its users write.
#[derive(Debug)]
struct Double {
    i: u64,
    progress: Progress,
    result: Mutex<Option<oneshot::Sender<u64>>>,
}

impl operation_queue::QueuedOperation for Double {
    fn perform(&self) -> impl Future<Output = ()> + Send {
        let sender = self.result.lock().unwrap().take();
        let op = self.progress.op(self.i);
        async move {
            let value = op.await;
            if let Some(sender) = sender {
                let _ = sender.send(value);
            }
        }
    }
}

fn operation_queue_with(runners: usize) -> operation_queue::OperationQueue {
    let queue = operation_queue::OperationQueue::new(|runner| {
        drop(tokio::spawn(runner));
    });
    queue.start(runners as u32).expect("a new queue starts");
    queue
}

async fn operation_queue(ops: u64, runners: usize) -> Duration {
    let queue = operation_queue_with(runners);
    let progress = Progress::new(ops);
    let start = Instant::now();
    for _ in 0..ops {
        let op = Bump {
            progress: progress.clone(),
        };
        queue.enqueue(Box::new(op)).await.unwrap();
    }
    progress.finished().await;
    let elapsed = start.elapsed();
    queue.stop().await;
    elapsed
}

async fn operation_queue_oneshot(ops: u64, runners: usize) -> Duration {
    let queue = operation_queue_with(runners);
    let progress = Progress::new(ops);
    let elapsed = timed(ops, async {
        let mut results = Vec::with_capacity(ops as usize);
        for i in 0..ops {
            let (tx, rx) = oneshot::channel();
            let op = Double {
                i,
                progress: progress.clone(),
                result: Mutex::new(Some(tx)),
            };
            queue.enqueue(Box::new(op)).await.unwrap();
            results.push(rx);
        }
        let mut sum = 0;
        for rx in results {
            sum += rx.await.unwrap();
        }
        sum
    })
    .await;
    queue.stop().await;
    elapsed
}

async fn semaphore(ops: u64, runners: usize) -> Duration {
    let permits = Arc::new(Semaphore::new(runners));
    let progress = Progress::new(ops);
    timed(ops, async {
        let mut tasks = Vec::with_capacity(ops as usize);
        for i in 0..ops {
            let permits = permits.clone();
            let op = progress.op(i);
            tasks.push(tokio::spawn(async move {
                let _permit = permits.acquire().await.unwrap();
                op.await
            }));
        }
        let mut sum = 0;
        for task in tasks {
            sum += task.await.unwrap();
        }
        sum
    })
    .await
}

/// Submission alone: `ops` submissions, timed, to a queue whose runners cannot run meanwhile
/// (they belong to a current-thread runtime that is not driven until the submissions are done),
/// so that only the submitter's cost is measured: what `submit` costs a caller when the runners
/// are busy elsewhere. The queue then runs everything, untimed, and the results are checked.
/// `None` for the peers without a submission of their own (the `Semaphore` baseline spawns a
/// task per operation; `LocalOperationQueue` needs a `LocalSet`).
pub fn submit_only(peer: QueuePeer, ops: u64, runners: usize) -> Option<Duration> {
    let home = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let caller = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let progress = Progress::new(ops);
    match peer {
        QueuePeer::Herder | QueuePeer::HerderDetached | QueuePeer::HerderBounded => {
            let queue = home.block_on(async {
                let mut builder = herder::OperationQueue::builder().runners(runners);
                if peer == QueuePeer::HerderBounded {
                    // Room for every submission: the submitter never waits for the runners.
                    builder = builder.capacity(ops as usize);
                }
                builder.build().expect("valid settings")
            });
            let (elapsed, handles) = caller.block_on(async {
                let start = Instant::now();
                let mut handles = Vec::with_capacity(ops as usize);
                for i in 0..ops {
                    let handle = queue.submit(progress.op(i)).await.unwrap();
                    if peer == QueuePeer::HerderDetached {
                        handle.detach();
                    } else {
                        handles.push(handle);
                    }
                }
                (start.elapsed(), handles)
            });
            home.block_on(async {
                let mut sum = 0;
                for handle in handles {
                    sum += handle.await.unwrap();
                }
                progress.finished().await;
                if peer != QueuePeer::HerderDetached {
                    assert_eq!(sum, expected(ops), "wrong or missing results");
                }
                queue.drain().await;
            });
            Some(elapsed)
        }
        QueuePeer::OperationQueue => {
            let queue = home.block_on(async { operation_queue_with(runners) });
            let elapsed = caller.block_on(async {
                let start = Instant::now();
                for _ in 0..ops {
                    let op = Bump {
                        progress: progress.clone(),
                    };
                    queue.enqueue(Box::new(op)).await.unwrap();
                }
                start.elapsed()
            });
            home.block_on(async {
                progress.finished().await;
                queue.stop().await;
            });
            Some(elapsed)
        }
        QueuePeer::HerderLocal | QueuePeer::OperationQueueOneshot | QueuePeer::Semaphore => None,
    }
}
