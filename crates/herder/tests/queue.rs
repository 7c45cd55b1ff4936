//! OperationQueue behaviour: the ported behaviours of operation-queue's tests (start, stop, FIFO
//! order with one runner), the cap, panics, drops, backpressure, timeouts, resizing, drain and
//! shutdown, on current-thread (paused clock) and multi-thread runtimes. Operations wait on
//! semaphores the test opens; nothing waits on a sleep for ordering.

#[macro_use]
mod support;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herder::{Line, OperationQueue};
use support::{poll_once, until};
use tokio::sync::Semaphore;
use tokio::time::Instant;

on_both_runtimes!(
    started_runners_are_idle,
    operations_start_in_fifo_order_with_one_runner,
    the_concurrency_cap_is_never_exceeded,
    panics_reach_their_handles_and_the_queue_keeps_its_runners,
    a_dropped_handle_is_skipped,
    drain_awaits_queued_work,
    many_submitters_all_get_their_results,
    runners_can_be_added_and_removed_while_running,
    every_operation_s_future_is_dropped_exactly_once,
    a_waiting_handle_hears_that_a_shutdown_cancelled_its_operation,
);

/// Operations that wait for the test: each takes one permit of `gate` before it ends, and
/// records how many run at once.
#[derive(Clone)]
struct Gated {
    gate: Arc<Semaphore>,
    active: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    ended: Arc<Mutex<Vec<u32>>>,
}

impl Default for Gated {
    fn default() -> Self {
        Gated {
            gate: Arc::new(Semaphore::new(0)),
            active: Arc::default(),
            most: Arc::default(),
            ended: Arc::default(),
        }
    }
}

impl Gated {
    fn op(&self, id: u32) -> impl Future<Output = u32> + Send + 'static {
        let this = self.clone();
        async move {
            let now = this.active.fetch_add(1, SeqCst) + 1;
            this.most.fetch_max(now, SeqCst);
            this.gate.acquire().await.unwrap().forget();
            this.active.fetch_sub(1, SeqCst);
            this.ended.lock().unwrap().push(id);
            id
        }
    }

    fn open(&self, n: usize) {
        self.gate.add_permits(n);
    }

    fn ended(&self) -> Vec<u32> {
        self.ended.lock().unwrap().clone()
    }
}

// ---- ported from operation-queue's tests ----

/// operation-queue `start_queue`: a started queue has its runners, all idle.
async fn started_runners_are_idle() {
    let queue = OperationQueue::builder().runners(5).build().unwrap();
    let stats = queue.stats();
    assert_eq!(
        (stats.runners, stats.idle_runners, stats.running),
        (5, 5, 0)
    );
    queue.wait_idle().await;
    assert_eq!(queue.runners(), 5);
}

/// operation-queue `stop_queue`: a stopped queue refuses operations (handing them back here)
/// and its runners exit.
#[tokio::test(start_paused = true)]
async fn a_closed_queue_refuses_operations_and_its_runners_exit() {
    let queue = OperationQueue::builder().runners(5).build().unwrap();
    queue.close();
    assert!(queue.is_closed());
    let refused = queue.submit(async { "late" }).await.unwrap_err();
    assert_eq!(refused.into_operation().await, "late");
    let refused = queue.try_submit(async { "later" }).unwrap_err();
    assert!(refused.is_closed() && !refused.is_full());
    queue.drain().await;
    assert_eq!(queue.stats().runners, 0);
    assert_eq!(queue.stats().completed, 0);
}

/// operation-queue `operation_order`: with one runner, operations run one after the other in
/// the order they were queued (here also queued before the runner ever ran).
async fn operations_start_in_fifo_order_with_one_runner() {
    let queue = OperationQueue::builder().runners(1).build().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for id in 0..20u32 {
        let order = order.clone();
        let handle = queue
            .submit(async move {
                order.lock().unwrap().push(id);
                tokio::task::yield_now().await;
                id
            })
            .await
            .unwrap();
        handles.push(handle);
    }
    for (id, handle) in (0..20).zip(handles) {
        assert_eq!(handle.await.unwrap(), id);
    }
    assert_eq!(*order.lock().unwrap(), (0..20).collect::<Vec<_>>());
    queue.wait_idle().await;
    assert_eq!(queue.stats().idle_runners, 1);
}

// ---- the cap, panics, drops ----

async fn the_concurrency_cap_is_never_exceeded() {
    let queue = OperationQueue::builder().runners(3).build().unwrap();
    let ops = Gated::default();
    let mut handles = Vec::new();
    for id in 0..30 {
        handles.push(queue.submit(ops.op(id)).await.unwrap());
    }
    // Let one operation end at a time: every time, exactly three run.
    for left in (1..=30usize).rev() {
        let busy = left.min(3);
        until("the next operations start", || {
            let stats = queue.stats();
            ops.ended().len() == 30 - left
                && ops.active.load(SeqCst) == busy
                && (stats.running, stats.queued) == (busy, left - busy)
        })
        .await;
        ops.open(1);
    }
    for (id, handle) in (0..30).zip(handles) {
        assert_eq!(handle.await.unwrap(), id);
    }
    assert_eq!(ops.most.load(SeqCst), 3);
    assert_eq!(queue.stats().completed, 30);
}

/// A protocol parser that chokes on every response.
fn parse(i: usize) {
    panic!("bad response #{i}")
}

async fn panics_reach_their_handles_and_the_queue_keeps_its_runners() {
    let queue = OperationQueue::builder().runners(2).build().unwrap();
    let mut panics = Vec::new();
    for i in 0..10 {
        let panicking = queue.submit(async move { parse(i) }).await.unwrap();
        panics.push(panicking);
    }
    for (i, handle) in panics.into_iter().enumerate() {
        let err = handle.await.unwrap_err();
        assert!(err.is_panic());
        assert_eq!(
            err.panic_message(),
            Some(format!("bad response #{i}").as_str())
        );
    }
    let stats = queue.stats();
    assert_eq!((stats.panicked, stats.runners), (10, 2));
    // Both runners still work: two gated operations run at the same time.
    let ops = Gated::default();
    let a = queue.submit(ops.op(1)).await.unwrap();
    let b = queue.submit(ops.op(2)).await.unwrap();
    until("both run", || ops.active.load(SeqCst) == 2).await;
    ops.open(2);
    assert_eq!((a.await.unwrap(), b.await.unwrap()), (1, 2));
    assert_eq!(queue.stats().completed, 2);
}

async fn a_dropped_handle_is_skipped() {
    let queue = OperationQueue::builder().runners(1).build().unwrap();
    let ops = Gated::default();
    let first = queue.submit(ops.op(1)).await.unwrap();
    until("the first runs", || ops.active.load(SeqCst) == 1).await;
    let ran = Arc::new(AtomicBool::new(false));
    let dropped = queue
        .submit({
            let ran = ran.clone();
            async move { ran.store(true, SeqCst) }
        })
        .await
        .unwrap();
    let third = queue.submit(ops.op(3)).await.unwrap();
    assert_eq!(queue.stats().queued, 2);
    drop(dropped);
    assert_eq!(queue.stats().queued, 1);
    assert_eq!(queue.stats().cancelled, 1);
    ops.open(2);
    assert_eq!((first.await.unwrap(), third.await.unwrap()), (1, 3));
    assert!(!ran.load(SeqCst), "the operation of a dropped handle ran");
    assert_eq!(ops.ended(), vec![1, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_handle_dropped_after_its_operation_started_lets_it_finish() {
    let queue = OperationQueue::builder().runners(1).build().unwrap();
    let ops = Gated::default();
    let handle = queue.submit(ops.op(1)).await.unwrap();
    until("it runs", || ops.active.load(SeqCst) == 1).await;
    drop(handle);
    ops.open(1);
    queue.wait_idle().await;
    assert_eq!(ops.ended(), vec![1]);
    let stats = queue.stats();
    assert_eq!((stats.completed, stats.cancelled), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_detached_operation_runs_unobserved() {
    let queue = OperationQueue::new(1);
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    queue
        .submit(async move { flag.store(true, SeqCst) })
        .await
        .unwrap()
        .detach();
    queue.wait_idle().await;
    assert!(ran.load(SeqCst));
    assert_eq!(queue.stats().completed, 1);
}

// ---- backpressure ----

#[tokio::test(start_paused = true)]
async fn submit_waits_for_a_free_place_and_try_submit_hands_the_operation_back() {
    let queue = OperationQueue::builder()
        .runners(1)
        .capacity(2)
        .build()
        .unwrap();
    let ops = Gated::default();
    let running = queue.submit(ops.op(0)).await.unwrap();
    until("the runner is busy", || ops.active.load(SeqCst) == 1).await;
    // The running operation does not count: two more fit.
    let a = queue.submit(ops.op(1)).await.unwrap();
    let b = queue.try_submit(ops.op(2)).unwrap();
    let full = queue.try_submit(ops.op(3)).unwrap_err();
    assert!(full.is_full());
    let mut waiting = pin!(queue.submit(full.into_operation()));
    assert!(poll_once(&mut waiting).await, "submit did not wait");
    assert_eq!(queue.stats().queued, 2);
    ops.open(1); // operation 0 ends, the runner takes 1: a place frees up.
    let c = waiting.await.unwrap();
    ops.open(3);
    let outputs = [running.await, a.await, b.await, c.await];
    assert_eq!(outputs.map(Result::unwrap), [0, 1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_handle_frees_its_place() {
    let queue = OperationQueue::builder()
        .runners(1)
        .capacity(1)
        .build()
        .unwrap();
    let ops = Gated::default();
    let running = queue.submit(ops.op(0)).await.unwrap();
    until("the runner is busy", || ops.active.load(SeqCst) == 1).await;
    let queued = queue.submit(ops.op(1)).await.unwrap();
    let refused = queue.try_submit(ops.op(2)).unwrap_err();
    drop(queued);
    let accepted = queue.try_submit(refused.into_operation()).unwrap();
    ops.open(2);
    assert_eq!((running.await.unwrap(), accepted.await.unwrap()), (0, 2));
}

#[tokio::test(start_paused = true)]
async fn closing_refuses_the_callers_waiting_for_a_place() {
    let queue = OperationQueue::builder()
        .runners(1)
        .capacity(1)
        .build()
        .unwrap();
    let ops = Gated::default();
    let running = queue.submit(ops.op(0)).await.unwrap();
    until("the runner is busy", || ops.active.load(SeqCst) == 1).await;
    let queued = queue.submit(ops.op(1)).await.unwrap();
    let mut waiting = pin!(queue.submit(ops.op(2)));
    assert!(poll_once(&mut waiting).await);
    queue.close();
    let refused = waiting.await.unwrap_err();
    assert_eq!(refused.to_string(), "operation queue is closed");
    // What was queued still runs.
    ops.open(2);
    assert_eq!((running.await.unwrap(), queued.await.unwrap()), (0, 1));
}

// ---- timeout ----

#[tokio::test(start_paused = true)]
async fn a_slow_operation_times_out_and_the_next_one_runs() {
    let queue = OperationQueue::builder()
        .runners(1)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let start = Instant::now();
    // `async` blocks, so that each sleep's deadline is set when the operation starts.
    let slow = queue
        .submit(async { tokio::time::sleep(Duration::from_secs(5)).await })
        .await
        .unwrap();
    let quick = queue
        .submit(async { tokio::time::sleep(Duration::from_millis(900)).await })
        .await
        .unwrap();
    let err = slow.await.unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(err.to_string(), "operation timed out after 1s");
    // The timeout counts from the operation's start, not from when it was queued.
    quick.await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(1900));
    let stats = queue.stats();
    assert_eq!((stats.timed_out, stats.failed, stats.completed), (1, 1, 1));
}

// ---- drain, shutdown, wait_idle ----

async fn drain_awaits_queued_work() {
    let queue = OperationQueue::builder().runners(2).build().unwrap();
    let ops = Gated::default();
    let handles: Vec<_> = {
        let mut handles = Vec::new();
        for id in 0..6 {
            handles.push(queue.submit(ops.op(id)).await.unwrap());
        }
        handles
    };
    let mut drain = pin!(queue.drain());
    assert!(
        poll_once(&mut drain).await,
        "drain returned with work queued"
    );
    assert!(queue.is_closed());
    ops.open(6);
    drain.await;
    assert_eq!(queue.stats().runners, 0);
    assert_eq!(queue.stats().completed, 6);
    for (id, handle) in (0..6).zip(handles) {
        assert_eq!(handle.await.unwrap(), id);
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_what_it_can_then_cancels_and_aborts_the_rest() {
    let queue = OperationQueue::builder().runners(1).build().unwrap();
    let start = Instant::now();
    let quick = queue
        .submit(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            "quick"
        })
        .await
        .unwrap();
    let slow = queue
        .submit(async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            "slow"
        })
        .await
        .unwrap();
    let never: Vec<_> = {
        let mut never = Vec::new();
        for _ in 0..3 {
            never.push(queue.submit(async { "never" }).await.unwrap());
        }
        never
    };
    let report = queue.shutdown(start + Duration::from_millis(500)).await;
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert_eq!((report.cancelled, report.aborted), (3, 1));
    assert!(!report.is_clean());
    assert_eq!(quick.await.unwrap(), "quick");
    let err = slow.await.unwrap_err();
    assert!(err.is_aborted(), "{err:?}");
    for handle in never {
        let err = handle.await.unwrap_err();
        assert!(err.is_cancelled(), "{err:?}");
        assert_eq!(err.to_string(), "operation cancelled before it started");
    }
    let stats = queue.stats();
    assert_eq!(
        (
            stats.completed,
            stats.aborted,
            stats.cancelled,
            stats.runners
        ),
        (1, 1, 3, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_that_drains_in_time_is_clean() {
    let queue = OperationQueue::builder().runners(2).build().unwrap();
    let start = Instant::now();
    let handles: Vec<_> = {
        let mut handles = Vec::new();
        for i in 0..4u64 {
            let op = async move {
                tokio::time::sleep(Duration::from_millis(10 * i)).await;
                i
            };
            handles.push(queue.submit(op).await.unwrap());
        }
        handles
    };
    let report = queue.shutdown(start + Duration::from_secs(60)).await;
    assert!(report.is_clean());
    assert!(start.elapsed() < Duration::from_secs(1));
    for (i, handle) in (0..4).zip(handles) {
        assert_eq!(handle.await.unwrap(), i);
    }
}

#[tokio::test(start_paused = true)]
async fn wait_idle_waits_for_queued_and_running_operations() {
    let queue = OperationQueue::builder().runners(1).build().unwrap();
    let ops = Gated::default();
    for id in 0..3 {
        queue.submit(ops.op(id)).await.unwrap().detach();
    }
    let mut idle = pin!(queue.wait_idle());
    assert!(poll_once(&mut idle).await);
    ops.open(2);
    assert!(poll_once(&mut idle).await, "idle with one operation left");
    ops.open(1);
    idle.await;
    assert_eq!(queue.stats().completed, 3);
    // The queue is still open and usable afterwards.
    assert_eq!(queue.submit(async { 9 }).await.unwrap().await.unwrap(), 9);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_queue_handle_lets_queued_work_finish() {
    let queue = OperationQueue::builder().runners(1).build().unwrap();
    let ops = Gated::default();
    let a = queue.submit(ops.op(1)).await.unwrap();
    let b = queue.submit(ops.op(2)).await.unwrap();
    let other = queue.clone();
    drop(queue);
    assert!(!other.is_closed(), "a clone keeps the queue open");
    drop(other);
    ops.open(2);
    assert_eq!((a.await.unwrap(), b.await.unwrap()), (1, 2));
}

#[test]
fn runners_lost_with_their_runtime_fail_every_handle() {
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let queue = OperationQueue::builder()
        .runners(1)
        .runtime(first.handle().clone())
        .build()
        .unwrap();
    let ops = Gated::default();
    let (running, queued) = first.block_on(async {
        let running = queue.submit(ops.op(1)).await.unwrap();
        let queued = queue.submit(ops.op(2)).await.unwrap();
        until("the runner is busy", || ops.active.load(SeqCst) == 1).await;
        (running, queued)
    });
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        assert!(running.await.unwrap_err().is_aborted());
        assert!(queued.await.unwrap_err().is_cancelled());
    });
    let stats = queue.stats();
    assert_eq!(
        (stats.runners, stats.aborted, stats.cancelled, stats.queued),
        (0, 1, 1, 0)
    );
    // Nothing would run a new operation: the queue is closed, and says so instead of hanging.
    assert!(queue.is_closed());
    assert!(queue.try_submit(async { 3 }).unwrap_err().is_closed());
}

// ---- runners at run time, many submitters ----

async fn runners_can_be_added_and_removed_while_running() {
    let queue = OperationQueue::builder().runners(1).build().unwrap();
    let ops = Gated::default();
    let mut handles = Vec::new();
    for id in 0..12 {
        handles.push(queue.submit(ops.op(id)).await.unwrap());
    }
    until("one runs", || ops.active.load(SeqCst) == 1).await;
    queue.set_runners(4).unwrap();
    until("four run", || ops.active.load(SeqCst) == 4).await;
    assert_eq!(queue.stats().runners, 4);
    queue.set_runners(2).unwrap();
    assert_eq!(queue.runners(), 2);
    // The four running operations finish; only two start after them.
    ops.open(4);
    until("two run", || {
        ops.ended().len() == 4 && ops.active.load(SeqCst) == 2
    })
    .await;
    until("the runners in excess exit", || queue.stats().runners == 2).await;
    assert_eq!(queue.stats().running, 2);
    ops.open(8);
    for (id, handle) in (0..12).zip(handles) {
        assert_eq!(handle.await.unwrap(), id);
    }
    assert_eq!(ops.most.load(SeqCst), 4);
    assert!(queue.set_runners(0).is_err());
}

async fn many_submitters_all_get_their_results() {
    let queue = OperationQueue::builder()
        .runners(4)
        .capacity(16)
        .build()
        .unwrap();
    let active = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8u64)
        .map(|task| {
            let (queue, active, most) = (queue.clone(), active.clone(), most.clone());
            tokio::spawn(async move {
                let mut sum = 0;
                for i in 0..100u64 {
                    let (active, most) = (active.clone(), most.clone());
                    let handle = queue
                        .submit(async move {
                            most.fetch_max(active.fetch_add(1, SeqCst) + 1, SeqCst);
                            tokio::task::yield_now().await;
                            active.fetch_sub(1, SeqCst);
                            task * 1000 + i
                        })
                        .await
                        .unwrap();
                    sum += handle.await.unwrap();
                }
                sum
            })
        })
        .collect();
    for (task, handle) in (0..8u64).zip(tasks) {
        assert_eq!(handle.await.unwrap(), task * 100_000 + 4950);
    }
    assert!(most.load(SeqCst) <= 4);
    let stats = queue.stats();
    assert_eq!((stats.completed, stats.queued, stats.running), (800, 0, 0));
}

// ---- pausing on a line ----

#[tokio::test(start_paused = true)]
async fn no_operation_starts_while_a_line_recovers() {
    let auth: Line<u32> = Line::new();
    let queue = OperationQueue::builder()
        .runners(2)
        .pause_while_recovering(&auth)
        .build()
        .unwrap();
    let relogin = Arc::new(Semaphore::new(0));
    let recovery = tokio::spawn({
        let (auth, relogin) = (auth.clone(), relogin.clone());
        async move {
            let seen = auth.epoch();
            auth.recover(seen, move || async move {
                relogin.acquire().await.unwrap().forget();
                7
            })
            .await
        }
    });
    until("the recovery runs", || auth.is_recovering()).await;
    let started = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for i in 0..4 {
        let started = started.clone();
        let op = async move {
            started.fetch_add(1, SeqCst);
            i
        };
        handles.push(queue.submit(op).await.unwrap());
    }
    support::settle().await;
    assert_eq!(
        started.load(SeqCst),
        0,
        "an operation started during the recovery"
    );
    assert_eq!(queue.stats().queued, 4);
    relogin.add_permits(1);
    assert_eq!(recovery.await.unwrap().unwrap(), herder::Recovery::Led(7));
    for (i, handle) in (0..4).zip(handles) {
        assert_eq!(handle.await.unwrap(), i);
    }
    assert_eq!(started.load(SeqCst), 4);
}

// ---- settings ----

#[test]
fn invalid_settings_are_refused() {
    // Refused before any runtime is needed.
    let reason = |b: herder::queue::Builder<OperationQueue>| b.build().unwrap_err().to_string();
    assert_eq!(
        reason(OperationQueue::builder().runners(0)),
        "invalid OperationQueue setting: runners must be at least 1"
    );
    assert_eq!(
        reason(OperationQueue::builder().capacity(0)),
        "invalid OperationQueue setting: capacity must be at least 1"
    );
    assert_eq!(
        reason(OperationQueue::builder().timeout(Duration::ZERO)),
        "invalid OperationQueue setting: timeout must be more than zero"
    );
}

/// Regression (issue 11): `capacity(usize::MAX)` panicked in `build` (the semaphore's permit
/// limit) and `runners(usize::MAX)` with "capacity overflow". Every extreme is now refused with
/// a reason, or works.
#[test]
fn extreme_settings_are_refused_not_panics() {
    use herder::queue::{MAX_CAPACITY, MAX_RUNNERS};
    let reason = |b: herder::queue::Builder<OperationQueue>| b.build().unwrap_err().to_string();
    let local =
        |b: herder::queue::Builder<herder::LocalOperationQueue>| b.build().unwrap_err().to_string();
    let too_many = "invalid OperationQueue setting: runners must be at most herder::queue::MAX_RUNNERS (65536)";
    let too_large =
        "invalid OperationQueue setting: capacity must be at most herder::queue::MAX_CAPACITY";
    for runners in [usize::MAX, MAX_RUNNERS + 1] {
        assert_eq!(reason(OperationQueue::builder().runners(runners)), too_many);
        assert_eq!(
            local(herder::LocalOperationQueue::builder().runners(runners)),
            too_many
        );
    }
    for capacity in [usize::MAX, MAX_CAPACITY + 1] {
        assert_eq!(
            reason(OperationQueue::builder().capacity(capacity)),
            too_large
        );
        assert_eq!(
            local(herder::LocalOperationQueue::builder().capacity(capacity)),
            too_large
        );
    }
    assert_eq!(
        local(herder::LocalOperationQueue::builder().runners(0)),
        "invalid OperationQueue setting: runners must be at least 1"
    );
}

#[tokio::test(start_paused = true)]
async fn the_largest_accepted_settings_work() {
    use herder::queue::{MAX_CAPACITY, MAX_RUNNERS};
    // The largest capacity, and a timeout too far away to be represented: it never fires.
    let queue = OperationQueue::builder()
        .capacity(MAX_CAPACITY)
        .timeout(Duration::MAX)
        .build()
        .unwrap();
    let slow = queue
        .submit(tokio::time::sleep(Duration::from_secs(86_400 * 365)))
        .await
        .unwrap();
    slow.await.unwrap();
    assert_eq!(queue.stats().completed, 1);
    // `set_runners` applies the same rule as the builder.
    assert!(queue.set_runners(usize::MAX).is_err());
    assert!(queue.set_runners(MAX_RUNNERS + 1).is_err());
    assert_eq!(queue.runners(), 1);
    queue.set_runners(MAX_RUNNERS).unwrap();
    assert_eq!(queue.stats().runners, MAX_RUNNERS);
    let report = queue.shutdown(Instant::now()).await;
    assert_eq!((report.aborted, report.cancelled), (0, 0));
    assert_eq!(queue.stats().runners, 0);
}

// ---- the `!Send` flavour ----

mod local {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Duration;

    use herder::LocalOperationQueue;
    use tokio::sync::Semaphore;
    use tokio::task::LocalSet;
    use tokio::time::Instant;

    /// operation-queue's default use: operations holding `Rc`s, runners on a `LocalSet`.
    #[tokio::test(start_paused = true)]
    async fn operations_that_are_not_send_run_in_fifo_order() {
        LocalSet::new()
            .run_until(async {
                let queue = LocalOperationQueue::new(1);
                let log = Rc::new(RefCell::new(Vec::new()));
                let mut handles = Vec::new();
                for id in 0..10 {
                    let log = log.clone();
                    let op = async move {
                        log.borrow_mut().push(id);
                        tokio::task::yield_now().await;
                        Rc::new(id)
                    };
                    handles.push(queue.submit(op).await.unwrap());
                }
                for (id, handle) in (0..10).zip(handles) {
                    assert_eq!(*handle.await.unwrap(), id);
                }
                assert_eq!(*log.borrow(), (0..10).collect::<Vec<_>>());
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn panics_drops_and_the_cap_work_as_in_the_send_flavour() {
        LocalSet::new()
            .run_until(async {
                let queue = LocalOperationQueue::builder().runners(2).build().unwrap();
                let gate = Rc::new(Semaphore::new(0));
                let active = Rc::new(RefCell::new((0usize, 0usize)));
                let op = |id: u32| {
                    let (gate, active) = (gate.clone(), active.clone());
                    async move {
                        {
                            let mut a = active.borrow_mut();
                            a.0 += 1;
                            a.1 = a.1.max(a.0);
                        }
                        gate.acquire().await.unwrap().forget();
                        active.borrow_mut().0 -= 1;
                        id
                    }
                };
                let boom = queue.submit(async { panic!("local panic") }).await.unwrap();
                assert!(boom.await.unwrap_err().is_panic());
                let a = queue.submit(op(1)).await.unwrap();
                let b = queue.submit(op(2)).await.unwrap();
                let dropped = queue.submit(op(3)).await.unwrap();
                let c = queue.submit(op(4)).await.unwrap();
                drop(dropped);
                super::until("two run", || active.borrow().0 == 2).await;
                gate.add_permits(3);
                let outputs = [a.await, b.await, c.await].map(Result::unwrap);
                assert_eq!(outputs, [1, 2, 4]);
                assert_eq!(active.borrow().1, 2);
                let stats = queue.stats();
                assert_eq!(
                    (
                        stats.panicked,
                        stats.completed,
                        stats.cancelled,
                        stats.runners
                    ),
                    (1, 3, 1, 2)
                );
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_cancels_what_did_not_start() {
        LocalSet::new()
            .run_until(async {
                let queue = LocalOperationQueue::builder().runners(1).build().unwrap();
                let start = Instant::now();
                let slow = queue
                    .submit(async { tokio::time::sleep(Duration::from_secs(9)).await })
                    .await
                    .unwrap();
                let queued = queue.submit(async { Rc::new(()) }).await.unwrap();
                let report = queue.shutdown(start + Duration::from_secs(1)).await;
                assert_eq!((report.aborted, report.cancelled), (1, 1));
                assert!(slow.await.unwrap_err().is_aborted());
                assert!(queued.await.unwrap_err().is_cancelled());
                assert_eq!(queue.stats().runners, 0);
            })
            .await;
    }
}

// ---- runner lifecycle ----

on_both_runtimes!(shutdown_returns_after_concurrent_set_runners);

/// Regression (issue 11): a runner spawned by `set_runners` could exit before its abort handle
/// was recorded, and a new runner reusing its id then had its handle overwritten by the stale
/// one; `shutdown` then waited forever for a runner it could not abort. Three threads resize the
/// queue 300 times each, then three operations that never end are queued and the queue is shut
/// down at once: it returns, every operation accounted for.
async fn shutdown_returns_after_concurrent_set_runners() {
    let queue = OperationQueue::new(2);
    let churn: Vec<_> = (0..3)
        .map(|t| {
            let queue = queue.clone();
            tokio::task::spawn_blocking(move || {
                for i in 0..300 {
                    queue.set_runners(1 + (i + t) % 3).unwrap();
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    for thread in churn {
        thread.await.unwrap();
    }
    let handles: Vec<_> =
        futures_util::future::join_all((0..3).map(|_| queue.submit(std::future::pending::<()>())))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    // Let the runners take what they can.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let report = tokio::time::timeout(Duration::from_secs(10), queue.shutdown(Instant::now()))
        .await
        .expect("shutdown returns");
    assert_eq!(report.aborted + report.cancelled, 3);
    for handle in handles {
        let err = handle.await.unwrap_err();
        assert!(err.is_aborted() || err.is_cancelled());
    }
    assert_eq!(queue.stats().runners, 0);
}

/// Counts the futures dropped.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// Every way an operation can end (completed, panicked, cancelled by its dropped handle,
/// cancelled by a shutdown, aborted by a shutdown, detached) drops its future exactly once and
/// tells its handle, on both runtimes.
async fn every_operation_s_future_is_dropped_exactly_once() {
    let queue = OperationQueue::new(1);
    let drops = Arc::new(AtomicUsize::new(0));
    let guard = || DropCount(drops.clone());
    let blocker = Arc::new(Semaphore::new(0));
    let op = |kind: &'static str| {
        let guard = guard();
        let blocker = blocker.clone();
        async move {
            let _guard = guard;
            match kind {
                "panic" => panic!("boom"),
                "hang" => std::future::pending::<()>().await,
                "wait" => drop(blocker.acquire().await.unwrap()),
                _ => {}
            }
            kind
        }
    };
    let completed = queue.submit(op("ok")).await.unwrap();
    let panicked = queue.submit(op("panic")).await.unwrap();
    let detached = queue.submit(op("ok")).await.unwrap();
    detached.detach();
    assert_eq!(completed.await.unwrap(), "ok");
    assert!(panicked.await.unwrap_err().is_panic());
    queue.wait_idle().await;
    assert_eq!(drops.load(SeqCst), 3);
    // One runs and hangs; behind it, one handle is dropped and two wait for the shutdown.
    let hung = queue.submit(op("hang")).await.unwrap();
    let dropped = queue.submit(op("ok")).await.unwrap();
    let queued = queue.submit(op("ok")).await.unwrap();
    let also_queued = queue.submit(op("wait")).await.unwrap();
    until("the runner is busy", || queue.stats().running == 1).await;
    drop(dropped);
    assert_eq!(queue.stats().cancelled, 1);
    let report = queue
        .shutdown(Instant::now() + Duration::from_millis(10))
        .await;
    assert_eq!((report.aborted, report.cancelled), (1, 2));
    assert!(hung.await.unwrap_err().is_aborted());
    assert!(queued.await.unwrap_err().is_cancelled());
    assert!(also_queued.await.unwrap_err().is_cancelled());
    // Seven futures, seven drops: none leaked, none dropped twice.
    assert_eq!(drops.load(SeqCst), 7);
    let stats = queue.stats();
    assert_eq!(
        (
            stats.completed,
            stats.panicked,
            stats.aborted,
            stats.cancelled,
            stats.queued
        ),
        (2, 1, 1, 3, 0)
    );
}

/// A randomized storm on a multi-thread runtime: eight submitters queue operations that
/// complete, panic, time out or wait, and drop, detach or await their handles (some awaits
/// given up half-way) while another task resizes the queue; then, while they go on, a shutdown
/// with a deadline.
/// Nothing hangs, every future is dropped exactly once, every awaited handle gets the outcome
/// its operation had, and the stats account for every accepted operation. The seed is printed
/// on failure (`HERDER_STORM_SEED` replays it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_submissions_cancels_panics_and_resizes_keeps_every_account() {
    let seed = support::storm_seed();
    let queue = OperationQueue::builder()
        .runners(4)
        .capacity(64)
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Semaphore::new(0));
    let submitters: Vec<_> = (0..8u64)
        .map(|t| {
            let (queue, drops, release) = (queue.clone(), drops.clone(), release.clone());
            let (accepted, refused) = (accepted.clone(), refused.clone());
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(seed ^ t);
                let mut kept = Vec::new();
                for i in 0..300u64 {
                    // Mostly quick operations; a few panic (each prints its message), hang until
                    // the timeout, or wait for the test to release them.
                    let kind = match rng.u8(..40) {
                        0 => 0,
                        1 | 2 => 1,
                        3..=8 => 2,
                        9..=24 => 3,
                        _ => 6,
                    };
                    let guard = DropCount(drops.clone());
                    let release = release.clone();
                    let op = async move {
                        let _guard = guard;
                        match kind {
                            0 => panic!("storm panic"),
                            1 => std::future::pending::<()>().await,
                            2 => drop(release.acquire().await),
                            3..=5 => tokio::task::yield_now().await,
                            _ => {}
                        }
                        i
                    };
                    let Ok(handle) = queue.submit(op).await else {
                        // Closed: the operation came back in the error, and is dropped.
                        refused.fetch_add(1, SeqCst);
                        break;
                    };
                    accepted.fetch_add(1, SeqCst);
                    match rng.u8(..4) {
                        0 => drop(handle),
                        1 => handle.detach(),
                        2 => {
                            // An await given up after a moment: the handle is dropped.
                            let _ = tokio::time::timeout(Duration::from_micros(50), handle).await;
                        }
                        _ => kept.push((kind, i, handle)),
                    }
                }
                for (kind, i, handle) in kept {
                    match (kind, handle.await) {
                        (0, Err(err)) => assert!(err.is_panic() || err.is_cancelled(), "{err:?}"),
                        (1, Err(err)) => {
                            assert!(err.is_timeout() || err.is_aborted() || err.is_cancelled())
                        }
                        (2, Ok(v)) | (3.., Ok(v)) => assert_eq!(v, i),
                        (2.., Err(err)) => assert!(
                            err.is_timeout() || err.is_aborted() || err.is_cancelled(),
                            "{err:?}"
                        ),
                        (kind, outcome) => panic!("kind {kind} ended {outcome:?}"),
                    }
                }
            })
        })
        .collect();
    // Resizes and releases waiting operations until 1,500 operations were accepted.
    let resizer = {
        let (queue, release, accepted) = (queue.clone(), release.clone(), accepted.clone());
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed);
            while accepted.load(SeqCst) < 1_500 {
                queue.set_runners(rng.usize(1..=6)).unwrap();
                release.add_permits(rng.usize(0..3));
                tokio::task::yield_now().await;
            }
        })
    };
    // The shutdown comes while the submitters still submit and await: queued operations are
    // cancelled and running ones aborted under their feet.
    let run = async {
        resizer.await.unwrap();
        queue
            .shutdown(Instant::now() + Duration::from_millis(100))
            .await;
        for submitter in submitters {
            submitter.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("the storm hung (seed {seed})"));
    let accepted = accepted.load(SeqCst);
    let stats = queue.stats();
    let ended =
        stats.completed + stats.panicked + stats.timed_out + stats.aborted + stats.cancelled;
    assert_eq!(ended as usize, accepted, "seed {seed}: {stats:?}");
    assert_eq!(
        (stats.queued, stats.running, stats.runners),
        (0, 0, 0),
        "seed {seed}"
    );
    let refused = refused.load(SeqCst);
    eprintln!("storm: {accepted} accepted, {refused} refused, {stats:?}");
    assert_eq!(
        drops.load(SeqCst),
        accepted + refused,
        "seed {seed}: futures dropped"
    );
}

/// A handle already waiting (its waker registered) when a shutdown cancels its queued operation
/// is woken with the cancellation; it does not wait forever.
async fn a_waiting_handle_hears_that_a_shutdown_cancelled_its_operation() {
    let queue = OperationQueue::new(1);
    let stuck = queue.submit(std::future::pending::<()>()).await.unwrap();
    let mut queued = queue.submit(async { 1 }).await.unwrap();
    until("the runner is busy", || queue.stats().running == 1).await;
    assert!(
        poll_once(&mut queued).await,
        "queued behind the stuck operation"
    );
    let waiting = tokio::spawn(queued);
    let report = queue
        .shutdown(Instant::now() + Duration::from_millis(10))
        .await;
    assert_eq!((report.cancelled, report.aborted), (1, 1));
    let outcome = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting handle is woken")
        .unwrap();
    assert!(outcome.unwrap_err().is_cancelled());
    assert!(stuck.await.unwrap_err().is_aborted());
}
