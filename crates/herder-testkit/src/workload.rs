//! A randomized read/write workload over a set of cache instances, recorded in a
//! [`History`](crate::History) for the contract check.
//!
//! The workload knows nothing of herder: each instance is a [`Node`] that the test implements
//! over its `Cache`, `DataLoader` or whatever it checks. Readers call [`Node::read`] on random
//! keys of every instance (and sometimes give up waiting, which drops the read mid-flight);
//! writers lock a random row, bump its version, invalidate (or insert) it through a random
//! instance, and record when that returned.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use crate::{Database, History};

/// A read in progress: the version of the value it got, or `None` if it failed (error, panic,
/// not found).
pub type ReadFuture = Pin<Box<dyn Future<Output = Option<u64>> + Send + 'static>>;

/// One cache instance, as the workload drives it.
pub trait Node: Send + Sync + 'static {
    /// Reads `key` through one of the instance's read paths, chosen with `rng`. A read that
    /// panics counts as failed.
    fn read(&self, key: u64, rng: &mut fastrand::Rng) -> ReadFuture;

    /// Invalidates `key` (the row was just bumped).
    fn invalidate(&self, key: u64);

    /// Invalidates every key.
    fn invalidate_all(&self);

    /// Stores `version` as `key`'s fresh value (the row was just bumped to it). By default,
    /// invalidates instead.
    fn insert(&self, key: u64, version: u64) {
        let _ = version;
        self.invalidate(key);
    }
}

/// The shape of a [`Workload`] run.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// The RNG seed (print it; a failure is replayed with it).
    pub seed: u64,
    /// How long readers and writers run.
    pub duration: Duration,
    /// Concurrent readers per instance.
    pub readers: usize,
    /// Concurrent writers.
    pub writers: usize,
    /// A writer's pause between writes, at most (uniform from 0).
    pub write_pause: Duration,
    /// A reader's pause between reads, at most (uniform from 0; zero yields only).
    pub read_pause: Duration,
    /// Per cent of reads given up after a short random wait.
    pub cancel_percent: u8,
    /// Per cent of writes that `insert` the new version instead of invalidating.
    pub insert_percent: u8,
    /// Per cent of writes that invalidate every key.
    pub invalidate_all_percent: u8,
}

impl Workload {
    /// A short run: `duration`, 4 readers per instance, 2 writers, 10% cancels, 10% inserts,
    /// 1% `invalidate_all`.
    pub fn new(seed: u64, duration: Duration) -> Self {
        Workload {
            seed,
            duration,
            readers: 4,
            writers: 2,
            write_pause: Duration::from_millis(4),
            read_pause: Duration::ZERO,
            cancel_percent: 10,
            insert_percent: 10,
            invalidate_all_percent: 1,
        }
    }

    /// Runs readers and writers on the current Tokio runtime for `duration`, recording into
    /// `history`.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, or with no nodes.
    pub async fn run(self, nodes: &[Arc<dyn Node>], db: &Arc<Database>, history: &Arc<History>) {
        assert!(!nodes.is_empty(), "a workload needs at least one node");
        let stop = Arc::new(AtomicBool::new(false));
        let mut seeds = fastrand::Rng::with_seed(self.seed);
        let mut tasks = Vec::new();
        for (instance, node) in nodes.iter().enumerate() {
            for _ in 0..self.readers {
                tasks.push(tokio::spawn(reader(
                    self,
                    instance,
                    node.clone(),
                    db.keys(),
                    history.clone(),
                    stop.clone(),
                    fastrand::Rng::with_seed(seeds.u64(..)),
                )));
            }
        }
        for _ in 0..self.writers {
            tasks.push(tokio::spawn(writer(
                self,
                nodes.to_vec(),
                db.clone(),
                history.clone(),
                stop.clone(),
                fastrand::Rng::with_seed(seeds.u64(..)),
            )));
        }
        tokio::time::sleep(self.duration).await;
        stop.store(true, SeqCst);
        for task in tasks {
            task.await.expect("a workload task panicked");
        }
    }
}

/// Keys are drawn with a skew: half the reads go to the first eighth of the keys, so that
/// reads, loads and invalidations of a key overlap.
fn pick_key(rng: &mut fastrand::Rng, keys: u64) -> u64 {
    if rng.bool() {
        rng.u64(..(keys / 8).max(1))
    } else {
        rng.u64(..keys)
    }
}

fn pause(rng: &mut fastrand::Rng, most: Duration) -> Duration {
    Duration::from_micros(rng.u64(..=most.as_micros() as u64))
}

async fn reader(
    workload: Workload,
    instance: usize,
    node: Arc<dyn Node>,
    keys: u64,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    mut rng: fastrand::Rng,
) {
    while !stop.load(SeqCst) {
        let key = pick_key(&mut rng, keys);
        let cancel = rng.u8(..100) < workload.cancel_percent;
        let give_up = Duration::from_micros(rng.u64(..2_000));
        let start = Instant::now();
        let read = CatchUnwind(node.read(key, &mut rng));
        let got = if cancel {
            tokio::time::timeout(give_up, read).await.ok().flatten()
        } else {
            read.await
        };
        let end = Instant::now();
        match got {
            Some(version) => history.read(instance, key, start, end, version),
            None => history.failed_read(),
        }
        if workload.read_pause.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(pause(&mut rng, workload.read_pause)).await;
        }
    }
}

/// A read that panics (`get_with` joined a load that failed, say) is a failed read.
struct CatchUnwind(ReadFuture);

impl Future for CatchUnwind {
    type Output = Option<u64>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<u64>> {
        let read = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(_) => std::task::Poll::Ready(None),
        }
    }
}

async fn writer(
    workload: Workload,
    nodes: Vec<Arc<dyn Node>>,
    db: Arc<Database>,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    mut rng: fastrand::Rng,
) {
    while !stop.load(SeqCst) {
        let key = pick_key(&mut rng, db.keys());
        let instance = rng.usize(..nodes.len());
        let node = &nodes[instance];
        let roll = rng.u8(..100);
        {
            let mut row = db.lock(key);
            let version = row.bump();
            if roll < workload.invalidate_all_percent {
                node.invalidate_all();
            } else if roll < workload.invalidate_all_percent + workload.insert_percent {
                node.insert(key, version);
            } else {
                node.invalidate(key);
            }
            history.write(key, version, instance, Instant::now());
        }
        tokio::time::sleep(pause(&mut rng, workload.write_pause)).await;
    }
}
