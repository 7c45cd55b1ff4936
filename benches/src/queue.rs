//! The OperationQueue workload and its peers: `ops` trivial operations (`i * 2`) through
//! `runners` runners, every result collected by the submitter.
//!
//! * herder's `OperationQueue` (no capacity limit, like the peers; and with a capacity of 1024),
//!   and `LocalOperationQueue` on a `LocalSet` (current-thread runtime only);
//! * thunderbird's `operation-queue` 1.x, its runners spawned with `tokio::spawn` (`send`
//!   feature), each operation handing its result back through a oneshot, as its users do;
//! * a tokio `Semaphore` with `runners` permits and one spawned task per operation, each taking a
//!   permit before it runs (the baseline a user would write by hand).
//!
//! Each run builds its queue, times the submissions and the collection of every result with
//! `tokio::time::Instant`, then tears the queue down outside the timed part.
//!
//! The workload is driven by `Runtime::block_on`, not spawned: operation-queue's queue is not
//! `Sync`, so a task that awaits `enqueue(&self)` is not `Send` and cannot be spawned on a
//! multi-thread runtime. Every peer is driven the same way.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

/// An implementation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueuePeer {
    /// herder `OperationQueue`, no capacity limit.
    Herder,
    /// herder `OperationQueue` with `capacity(1024)`: `submit` waits while 1024 are queued.
    HerderBounded,
    /// herder `LocalOperationQueue` on a `LocalSet`; current-thread runtime only.
    HerderLocal,
    /// thunderbird's operation-queue, `send` feature.
    OperationQueue,
    /// One spawned task per operation, gated by a `Semaphore`.
    Semaphore,
}

impl QueuePeer {
    /// The peers that run on any runtime, herder first (the baseline of the ratios).
    pub fn all() -> Vec<QueuePeer> {
        vec![
            QueuePeer::Herder,
            QueuePeer::HerderBounded,
            QueuePeer::OperationQueue,
            QueuePeer::Semaphore,
        ]
    }

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            QueuePeer::Herder => "herder OperationQueue",
            QueuePeer::HerderBounded => "herder OperationQueue, capacity 1024",
            QueuePeer::HerderLocal => "herder LocalOperationQueue (LocalSet)",
            QueuePeer::OperationQueue => "operation-queue 1.3",
            QueuePeer::Semaphore => "tokio Semaphore + spawn",
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
            QueuePeer::HerderBounded => herder(ops, runners, Some(1024)).await,
            QueuePeer::HerderLocal => {
                tokio::task::LocalSet::new()
                    .run_until(herder_local(ops, runners))
                    .await
            }
            QueuePeer::OperationQueue => operation_queue(ops, runners).await,
            QueuePeer::Semaphore => semaphore(ops, runners).await,
        }
    }
}

impl fmt::Display for QueuePeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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
    let elapsed = timed(ops, async {
        let mut handles = Vec::with_capacity(ops as usize);
        for i in 0..ops {
            handles.push(queue.submit(async move { i * 2 }).await.unwrap());
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

async fn herder_local(ops: u64, runners: usize) -> Duration {
    let queue = herder::LocalOperationQueue::new(runners);
    let elapsed = timed(ops, async {
        let mut handles = Vec::with_capacity(ops as usize);
        for i in 0..ops {
            handles.push(queue.submit(async move { i * 2 }).await.unwrap());
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

/// An operation for operation-queue: `perform(&self)` cannot consume the sender, hence the
/// mutex, which is what its users write.
#[derive(Debug)]
struct Double {
    i: u64,
    result: Mutex<Option<oneshot::Sender<u64>>>,
}

impl operation_queue::QueuedOperation for Double {
    fn perform(&self) -> impl Future<Output = ()> + Send {
        let sender = self.result.lock().unwrap().take();
        let value = self.i * 2;
        async move {
            if let Some(sender) = sender {
                let _ = sender.send(value);
            }
        }
    }
}

async fn operation_queue(ops: u64, runners: usize) -> Duration {
    let queue = operation_queue::OperationQueue::new(|runner| {
        drop(tokio::spawn(runner));
    });
    queue.start(runners as u32).expect("a new queue starts");
    let elapsed = timed(ops, async {
        let mut results = Vec::with_capacity(ops as usize);
        for i in 0..ops {
            let (tx, rx) = oneshot::channel();
            let op = Double {
                i,
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
    timed(ops, async {
        let mut tasks = Vec::with_capacity(ops as usize);
        for i in 0..ops {
            let permits = permits.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = permits.acquire().await.unwrap();
                i * 2
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
