//! A scripted backend for the tests, in the spirit of `tower-test`'s mock: the test decides when
//! each loader call answers, fails or panics, and every call is recorded.
#![allow(dead_code, unreachable_pub, unused_macros)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use herder::Loader;
use tokio::sync::{mpsc, oneshot};

/// Runs each named test body on a current-thread runtime with a paused clock and on a multi-thread
/// runtime (where the clock cannot be paused; those bodies do not depend on time).
macro_rules! on_both_runtimes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(start_paused = true)]
            async fn current_thread() {
                super::$name().await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn multi_thread() {
                super::$name().await
            }
        }
    )*};
}

/// Loader error used by the scripts: deliberately not `Clone`, like `sqlx::Error`.
#[derive(Debug, PartialEq, Eq)]
pub struct BackendDown(pub String);

impl std::fmt::Display for BackendDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "backend down: {}", self.0)
    }
}

impl std::error::Error for BackendDown {}

/// Answers at once: every key `k` loads to `k * 10`, except the keys it is told to omit; it can
/// also add keys nobody asked for. Records every batch.
#[derive(Clone, Default)]
pub struct Instant {
    pub batches: Arc<Mutex<Vec<Vec<u64>>>>,
    pub omit: Arc<Vec<u64>>,
    pub extra: Arc<Vec<u64>>,
}

impl Instant {
    pub fn omitting(omit: Vec<u64>) -> Self {
        Instant {
            omit: Arc::new(omit),
            ..Self::default()
        }
    }

    pub fn adding(extra: Vec<u64>) -> Self {
        Instant {
            extra: Arc::new(extra),
            ..Self::default()
        }
    }

    pub fn batches(&self) -> Vec<Vec<u64>> {
        self.batches.lock().unwrap().clone()
    }

    pub fn calls(&self) -> usize {
        self.batches.lock().unwrap().len()
    }
}

impl Loader for Instant {
    type Key = u64;
    type Value = u64;
    type Error = BackendDown;

    async fn load(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, BackendDown> {
        self.batches.lock().unwrap().push(keys.to_vec());
        let mut out: HashMap<u64, u64> = keys
            .iter()
            .filter(|k| !self.omit.contains(k))
            .map(|k| (*k, k * 10))
            .collect();
        out.extend(self.extra.iter().map(|k| (*k, k * 10)));
        Ok(out)
    }
}

/// What the test tells a held loader call to do.
pub enum Reply {
    /// Answer `k * 10` for every key.
    Values,
    /// Answer this map.
    Map(HashMap<u64, u64>),
    Fail(&'static str),
    Panic(&'static str),
}

/// One loader call, held until the test replies.
pub struct Call {
    pub keys: Vec<u64>,
    reply: oneshot::Sender<Reply>,
}

impl Call {
    pub fn reply(self, reply: Reply) {
        // The call may have been dropped (aborted task); the test checks what it needs.
        let _ = self.reply.send(reply);
    }
}

/// A loader whose every call waits for the test's [`Reply`].
#[derive(Clone)]
pub struct Gated {
    calls: mpsc::UnboundedSender<Call>,
    pub count: Arc<Mutex<usize>>,
}

/// The test's end of a [`Gated`] loader.
pub struct Calls {
    rx: mpsc::UnboundedReceiver<Call>,
}

impl Calls {
    /// The next loader call, waiting for it.
    pub async fn next(&mut self) -> Call {
        self.rx.recv().await.expect("loader dropped")
    }

    /// The next loader call if one was already made.
    pub fn try_next(&mut self) -> Option<Call> {
        self.rx.try_recv().ok()
    }
}

pub fn gated() -> (Gated, Calls) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Gated {
            calls: tx,
            count: Arc::default(),
        },
        Calls { rx },
    )
}

impl Loader for Gated {
    type Key = u64;
    type Value = u64;
    type Error = BackendDown;

    async fn load(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, BackendDown> {
        *self.count.lock().unwrap() += 1;
        let (tx, rx) = oneshot::channel();
        self.calls
            .send(Call {
                keys: keys.to_vec(),
                reply: tx,
            })
            .expect("test ended");
        match rx.await.expect("test dropped the call") {
            Reply::Values => Ok(keys.iter().map(|k| (*k, k * 10)).collect()),
            Reply::Map(map) => Ok(map),
            Reply::Fail(why) => Err(BackendDown(why.to_owned())),
            Reply::Panic(why) => panic!("{why}"),
        }
    }
}

/// Polls `fut` once; `true` if it is still pending.
pub async fn poll_once<F: std::future::Future + Unpin>(fut: &mut F) -> bool {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *fut).poll(cx).is_pending()))
        .await
}

/// Lets every task that is ready run: yields enough rounds for spawned tasks (a batch window, a
/// load and its wake-ups) to reach their next await point.
pub async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

/// A gate a backend call waits at until the test lets it through, counting the calls that
/// reached it.
#[derive(Clone)]
pub struct Gate {
    permits: Arc<tokio::sync::Semaphore>,
    arrived: Arc<tokio::sync::Notify>,
    pub calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            permits: Arc::new(tokio::sync::Semaphore::new(0)),
            arrived: Arc::default(),
            calls: Arc::default(),
        }
    }
}

impl Gate {
    /// Called by the backend: counts the call, then waits for a pass.
    pub async fn pass(&self) {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.arrived.notify_one();
        self.permits.acquire().await.expect("gate closed").forget();
    }

    /// Waits until a backend call is at the gate (or has passed it since the last wait).
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }

    /// Lets `n` calls through.
    pub fn open(&self, n: usize) {
        self.permits.add_permits(n);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Yields until `done()` holds (other tasks, or the other worker, make progress meanwhile).
pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1_000_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("gave up waiting until {what}");
}

/// The seed of a randomized storm: `HERDER_STORM_SEED` replays a run, otherwise a fresh one.
/// Printed, so that a failure can be replayed.
pub fn storm_seed() -> u64 {
    let seed = std::env::var("HERDER_STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("storm seed {seed}");
    seed
}

/// The largest duration that can be added to `now` without overflow, less half a millisecond:
/// `now + d` is representable, `now + d + 1 ms` is not (tokio's timer rounds a deadline up by
/// almost a millisecond).
pub fn near_max_after(now: std::time::Instant) -> Duration {
    fn from_nanos(n: u128) -> Duration {
        Duration::new((n / 1_000_000_000) as u64, (n % 1_000_000_000) as u32)
    }
    let (mut lo, mut hi) = (0u128, Duration::MAX.as_nanos());
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if now.checked_add(from_nanos(mid)).is_some() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    from_nanos(lo) - Duration::from_micros(500)
}

/// Every operation a queue was given, by what became of it: the stats add up to the operations
/// submitted.
pub fn accounted(stats: &herder::queue::OperationQueueStats) -> u64 {
    stats.completed
        + stats.panicked
        + stats.timed_out
        + stats.aborted
        + stats.cancelled
        + stats.queued as u64
        + stats.running as u64
}

/// Polls `fut` to completion on the calling thread, parking it between polls (no runtime of
/// its own: a plain thread, maybe inside a runtime's context). Gives up after 30 s.
pub fn park_block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    let start = std::time::Instant::now();
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "park_block_on: not done"
        );
        std::thread::park_timeout(Duration::from_millis(10));
    }
}
