//! Adversarial tests of `OperationQueue` / `LocalOperationQueue`: settings at the edges,
//! shutdown under storms, exact stats, handles.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod support;

use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use herder::{Line, LocalOperationQueue, OperationQueue};
use tokio::sync::Notify;
use tokio::time::{Instant, timeout};

/// The real-time bound on anything that could hang.
const BOUND: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// 2. Extreme settings.

#[tokio::test]
async fn extreme_settings_are_refused_with_an_error_not_a_panic() {
    let refused = |b: herder::queue::Builder<OperationQueue>| b.build().unwrap_err().to_string();
    assert!(refused(OperationQueue::builder().capacity(0)).contains("capacity"));
    assert!(refused(OperationQueue::builder().capacity(usize::MAX)).contains("capacity"));
    assert!(refused(OperationQueue::builder().runners(0)).contains("runners"));
    assert!(refused(OperationQueue::builder().runners(usize::MAX)).contains("runners"));
    assert!(refused(OperationQueue::builder().timeout(Duration::ZERO)).contains("timeout"));
    // At the limits: accepted.
    let queue = OperationQueue::builder()
        .capacity(herder::queue::MAX_CAPACITY)
        .runners(herder::queue::MAX_RUNNERS)
        .build()
        .unwrap();
    assert_eq!(queue.runners(), herder::queue::MAX_RUNNERS);
    assert!(queue.set_runners(0).is_err());
    assert!(queue.set_runners(usize::MAX).is_err());
    assert!(queue.set_runners(herder::queue::MAX_RUNNERS + 1).is_err());
    assert_eq!(queue.runners(), herder::queue::MAX_RUNNERS);
    queue.set_runners(1).unwrap();
    let h = queue.submit(async { 3 }).await.unwrap();
    assert_eq!(timeout(BOUND, h).await.unwrap().unwrap(), 3);
    let report = timeout(
        BOUND,
        queue.shutdown(Instant::now() + Duration::from_secs(1)),
    )
    .await
    .unwrap();
    assert!(report.is_clean());
    assert_eq!(queue.stats().runners, 0);

    // The local flavour refuses the same.
    tokio::task::LocalSet::new()
        .run_until(async {
            assert!(LocalOperationQueue::builder().capacity(0).build().is_err());
            assert!(
                LocalOperationQueue::builder()
                    .capacity(usize::MAX)
                    .build()
                    .is_err()
            );
            assert!(LocalOperationQueue::builder().runners(0).build().is_err());
            assert!(
                LocalOperationQueue::builder()
                    .runners(usize::MAX)
                    .build()
                    .is_err()
            );
            assert!(
                LocalOperationQueue::builder()
                    .timeout(Duration::ZERO)
                    .build()
                    .is_err()
            );
            let q = LocalOperationQueue::new(1);
            assert!(q.set_runners(usize::MAX).is_err());
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn timeout_duration_max_is_accepted_and_never_fires() {
    let queue = OperationQueue::builder()
        .timeout(Duration::MAX)
        .build()
        .unwrap();
    let h = queue
        .submit(async {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            5
        })
        .await
        .unwrap();
    assert_eq!(h.await.unwrap(), 5);
    assert_eq!(queue.stats().completed, 1);
}

/// A timeout the builder accepts (`> 0`), whose deadline `now + timeout` is representable but
/// lies within a millisecond of the largest `Instant`: tokio's timer rounds the deadline up by
/// 999_999 ns (`deadline_to_tick`), which overflows and panics inside the runner's poll. The
/// queue catches the panic and blames the operation.
#[tokio::test(start_paused = true)]
async fn timeout_near_instant_max_does_not_overflow_later() {
    let limit = support::near_max_after(Instant::now().into_std());
    let queue = OperationQueue::builder().timeout(limit).build().unwrap();
    let h = queue
        .submit(async {
            tokio::task::yield_now().await;
            7
        })
        .await
        .unwrap();
    let result = timeout(BOUND, h).await.unwrap();
    assert_eq!(
        result.as_ref().ok(),
        Some(&7),
        "an accepted timeout must not make the operation fail: {result:?}"
    );
    assert_eq!(queue.stats().panicked, 0);
}

// ---------------------------------------------------------------------------------------------
// 5. Handles.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_queued_handle_frees_its_place_at_once() {
    let queue = OperationQueue::builder()
        .runners(1)
        .capacity(1)
        .build()
        .unwrap();
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let blocker = {
        let (started, release) = (started.clone(), release.clone());
        queue
            .submit(async move {
                started.notify_one();
                release.notified().await;
                1
            })
            .await
            .unwrap()
    };
    timeout(BOUND, started.notified()).await.unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let queued = {
        let ran = ran.clone();
        queue
            .try_submit(async move { ran.store(true, SeqCst) })
            .unwrap()
    };
    let full = queue.try_submit(async { 2 }).unwrap_err();
    assert!(full.is_full());
    let op = full.into_operation();
    drop(queued);
    // The place is free right away, while the runner is still busy.
    let second = queue
        .try_submit(op)
        .expect("place freed by the dropped handle");
    assert_eq!(queue.stats().cancelled, 1);
    release.notify_one();
    assert_eq!(timeout(BOUND, blocker).await.unwrap().unwrap(), 1);
    assert_eq!(timeout(BOUND, second).await.unwrap().unwrap(), 2);
    assert!(!ran.load(SeqCst), "a cancelled operation must never run");
    queue.close();
    let closed = queue.try_submit(async { 9 }).unwrap_err();
    assert!(closed.is_closed());
    assert_eq!(closed.into_operation().await, 9);
    let closed = queue.submit(async { 10 }).await.unwrap_err();
    assert_eq!(closed.into_operation().await, 10);
    timeout(BOUND, queue.drain()).await.unwrap();
    let stats = queue.stats();
    assert_eq!((stats.completed, stats.cancelled), (2, 1));
}

/// A caller waiting in `submit` for a place is refused (op handed back) when the queue closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_waiting_for_a_place_is_refused_by_close_and_by_shutdown() {
    let queue = OperationQueue::builder()
        .runners(1)
        .capacity(1)
        .build()
        .unwrap();
    let stuck = queue.submit(pending::<u8>()).await.unwrap();
    // Wait until the runner has taken it, then fill the single place.
    timeout(BOUND, async {
        while queue.stats().running == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    let queued = queue.submit(async { 1u8 }).await.unwrap();
    // Polled once, this submission waits for the single place.
    let mut waiting = Box::pin(queue.submit(async { 2u8 }));
    assert!(support::poll_once(&mut waiting).await);
    let report = timeout(
        BOUND,
        queue.shutdown(Instant::now() + Duration::from_millis(50)),
    )
    .await
    .unwrap();
    assert_eq!((report.aborted, report.cancelled), (1, 1));
    let refused = timeout(BOUND, waiting).await.unwrap();
    assert_eq!(refused.map(|_| ()).unwrap_err().into_operation().await, 2);
    assert!(
        timeout(BOUND, stuck)
            .await
            .unwrap()
            .unwrap_err()
            .is_aborted()
    );
    assert!(
        timeout(BOUND, queued)
            .await
            .unwrap()
            .unwrap_err()
            .is_cancelled()
    );
    let s = queue.stats();
    assert_eq!(support::accounted(&s), 2);
}

// ---------------------------------------------------------------------------------------------
// 1 + 4. Shutdown never hangs, stats add up, under storms.

/// Several OS threads change the runner count in a loop while a task submits a mix of
/// operations (quick, panicking, never-ending, sleeping), dropping, detaching or keeping their
/// handles; then `close`, `drain` (bounded) and `shutdown` race. Shutdown must return, every
/// kept handle must resolve, and the counts must add up to what was submitted.
async fn storm(with_timeout: bool, seed: u64) {
    let mut builder = OperationQueue::builder().runners(3).capacity(32);
    if with_timeout {
        builder = builder.timeout(Duration::from_millis(30));
    }
    let queue = builder.build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let churners: Vec<_> = (0..3)
        .map(|t| {
            let (queue, stop) = (queue.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = t as usize;
                while !stop.load(SeqCst) {
                    n = n.wrapping_mul(31).wrapping_add(7);
                    queue.set_runners(1 + n % 6).unwrap();
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    let submitted = Arc::new(AtomicU64::new(0));
    // Samples the stats meanwhile: never a wrapped (huge) queued count, never more running
    // than the most runners the churn can ask for (6) plus those still finishing.
    let sampler = tokio::spawn({
        let (queue, stop, submitted) = (queue.clone(), stop.clone(), submitted.clone());
        async move {
            while !stop.load(SeqCst) {
                let s = queue.stats();
                let most = submitted.load(SeqCst);
                assert!(
                    s.queued as u64 <= most + 1,
                    "queued {} of {most} submitted: {s:?}",
                    s.queued
                );
                assert!(s.running <= s.runners, "{s:?}");
                assert!(support::accounted(&s) <= most + 1, "{s:?}");
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    });
    let rng = fastrand_like(seed);
    let mut kept = Vec::new();
    let mut gave_up = false;
    for i in 0..400u64 {
        let kind = rng(i) % 6;
        let op = async move {
            match kind {
                0 => tokio::task::yield_now().await,
                1 => panic!("op {i} panics"),
                2 => pending::<()>().await,
                3 => tokio::time::sleep(Duration::from_millis(1)).await,
                _ => {}
            }
            i
        };
        // `try_submit`, retried a while: every runner may be stuck on a never-ending op.
        let mut op = Some(op);
        let mut handle = None;
        // Once every runner is stuck, give up at once instead of waiting again for each op.
        let tries = if gave_up { 1 } else { 3 };
        for _ in 0..tries {
            match queue.try_submit(op.take().unwrap()) {
                Ok(h) => {
                    handle = Some(h);
                    break;
                }
                Err(e) if e.is_closed() => break,
                Err(e) => {
                    op = Some(e.into_operation());
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        gave_up = handle.is_none();
        let Some(handle) = handle else { continue };
        submitted.fetch_add(1, SeqCst);
        match rng(i + 1000) % 3 {
            0 => drop(handle),
            1 => handle.detach(),
            _ => kept.push((kind, handle)),
        }
        if i == 200 {
            queue.close();
        }
        if i == 250 {
            // A drain that is given up on must leave things consistent.
            let _ = timeout(Duration::from_millis(5), queue.drain()).await;
        }
    }
    let q2 = queue.clone();
    let other = tokio::spawn(async move {
        q2.shutdown(Instant::now() + Duration::from_millis(150))
            .await
    });
    let report = timeout(
        BOUND,
        queue.shutdown(Instant::now() + Duration::from_millis(100)),
    )
    .await
    .expect("shutdown hung");
    let _ = timeout(BOUND, other)
        .await
        .expect("second shutdown hung")
        .unwrap();
    let _ = report;
    stop.store(true, SeqCst);
    for c in churners {
        c.join().unwrap();
    }
    timeout(BOUND, sampler)
        .await
        .unwrap()
        .expect("stats sampler saw inconsistent stats");
    for (kind, handle) in kept {
        let r = timeout(BOUND, handle)
            .await
            .expect("handle hung after shutdown");
        match (kind, r) {
            (1, Err(e)) => assert!(e.is_panic() || e.is_cancelled(), "{e:?}"),
            (1, Ok(v)) => panic!("a panicking op returned {v}"),
            (2, Err(e)) => assert!(
                e.is_timeout() || e.is_aborted() || e.is_cancelled(),
                "{e:?}"
            ),
            (2, Ok(v)) => panic!("a never-ending op returned {v}"),
            (_, Ok(_)) => {}
            (_, Err(e)) => assert!(
                e.is_cancelled() || e.is_aborted() || e.is_timeout(),
                "{e:?}"
            ),
        }
    }
    let s = queue.stats();
    assert_eq!((s.queued, s.running, s.runners), (0, 0, 0), "{s:?}");
    assert_eq!(support::accounted(&s), submitted.load(SeqCst), "{s:?}");
    assert!(
        s.completed > 0 && s.panicked > 0 && s.cancelled > 0 && s.timed_out + s.aborted > 0,
        "the storm did not reach every ending: {s:?}"
    );
}

/// A tiny deterministic pseudo-random function of an index.
fn fastrand_like(seed: u64) -> impl Fn(u64) -> u64 {
    move |i| {
        let mut x = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_storm_without_timeout_never_hangs_and_stats_add_up() {
    for seed in 0..2 {
        storm(false, seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_storm_with_timeout_never_hangs_and_stats_add_up() {
    for seed in 10..12 {
        storm(true, seed).await;
    }
}

/// Two shutdowns racing over the same single never-ending operation: between them, they must
/// not report more aborted operations than there were.
#[tokio::test(start_paused = true)]
async fn concurrent_shutdowns_do_not_double_count() {
    let queue = OperationQueue::new(1);
    let stuck = queue.submit(pending::<()>()).await.unwrap();
    let behind = queue.submit(async {}).await.unwrap();
    tokio::task::yield_now().await;
    let deadline = Instant::now() + Duration::from_millis(50);
    let (a, b) = tokio::join!(queue.shutdown(deadline), queue.shutdown(deadline));
    assert!(stuck.await.unwrap_err().is_aborted());
    assert!(behind.await.unwrap_err().is_cancelled());
    let s = queue.stats();
    assert_eq!((s.aborted, s.cancelled), (1, 1));
    assert_eq!(
        (a.aborted + b.aborted, a.cancelled + b.cancelled),
        (1, 1),
        "reports {a:?} and {b:?} for one aborted and one cancelled operation"
    );
}

/// Runners held back by a line whose recovery never ends: shutdown still returns at its
/// deadline, the queued operations cancelled. On one thread, so that the runners are known to
/// be parked at the gate when the shutdown starts.
#[tokio::test]
async fn shutdown_returns_while_a_gating_recovery_never_ends() {
    let line: Line<()> = Line::new();
    let queue = OperationQueue::builder()
        .runners(2)
        .pause_while_recovering(&line)
        .build()
        .unwrap();
    let recovering = Arc::new(Notify::new());
    let leader = tokio::spawn({
        let (line, recovering) = (line.clone(), recovering.clone());
        async move {
            line.recover(line.epoch(), move || async move {
                recovering.notify_one();
                pending::<()>().await
            })
            .await
        }
    });
    timeout(BOUND, recovering.notified()).await.unwrap();
    assert!(line.is_recovering());
    let mut handles = Vec::new();
    for i in 0..10 {
        handles.push(queue.submit(async move { i }).await.unwrap());
    }
    // The runners run (this task yields to them), meet the gate and park.
    support::settle().await;
    assert_eq!(queue.stats().queued, 10);
    let report = timeout(
        BOUND,
        queue.shutdown(Instant::now() + Duration::from_millis(50)),
    )
    .await
    .expect("shutdown hung behind a recovering line");
    let mut settled = 0;
    for h in handles {
        match timeout(BOUND, h).await.unwrap() {
            Ok(_) => settled += 1,
            Err(e) => assert!(e.is_cancelled(), "{e:?}"),
        }
    }
    // At most the runners' jobs could have run (they could not: the gate was shut from the start).
    assert_eq!(settled, 0);
    assert_eq!(report.cancelled, 10);
    let s = queue.stats();
    assert_eq!(
        (s.runners, s.cancelled, support::accounted(&s)),
        (0, 10, 10)
    );
    leader.abort();
}

/// Set_runners from several threads while operations flow: every operation completes (no
/// lost wake-up parks the queue) and the count of runners settles on the last target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_runners_churn_loses_no_operation() {
    let queue = OperationQueue::new(2);
    let stop = Arc::new(AtomicBool::new(false));
    let churners: Vec<_> = (0..3)
        .map(|t| {
            let (queue, stop) = (queue.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = t;
                while !stop.load(SeqCst) {
                    n = (n * 7 + 3) % 5;
                    queue.set_runners(1 + n).unwrap();
                }
            })
        })
        .collect();
    let mut handles = Vec::new();
    for i in 0..2000u32 {
        handles.push(
            queue
                .submit(async move {
                    if i % 3 == 0 {
                        tokio::task::yield_now().await;
                    }
                    i
                })
                .await
                .unwrap(),
        );
    }
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(
            timeout(BOUND, h).await.expect("operation lost").unwrap(),
            i as u32
        );
    }
    stop.store(true, SeqCst);
    for c in churners {
        c.join().unwrap();
    }
    queue.set_runners(3).unwrap();
    timeout(BOUND, async {
        while queue.stats().runners != 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("runners did not settle on the target");
    timeout(BOUND, queue.wait_idle()).await.unwrap();
    let s = queue.stats();
    assert_eq!((s.completed, support::accounted(&s)), (2000, 2000));
}

/// Dropping every clone of the queue while operations are queued: they still run, and a
/// never-ending one does not keep the queued ones from running on other runners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_queue_runs_what_is_queued() {
    let queue = OperationQueue::new(2);
    let stuck = queue.submit(pending::<u32>()).await.unwrap();
    let mut handles = Vec::new();
    for i in 0..50u32 {
        handles.push(queue.submit(async move { i }).await.unwrap());
    }
    drop(queue);
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(timeout(BOUND, h).await.unwrap().unwrap(), i as u32);
    }
    drop(stuck);
}

/// The local flavour: shutdown aborts a never-ending operation, cancels the rest, and the
/// counts add up, with a panicking operation and a dropped handle in the mix.
#[tokio::test(start_paused = true)]
async fn local_queue_shutdown_aborts_and_counts() {
    tokio::task::LocalSet::new()
        .run_until(async {
            let queue = LocalOperationQueue::builder().runners(2).build().unwrap();
            let rc = std::rc::Rc::new(5u32);
            let a = queue.submit(pending::<u32>()).await.unwrap();
            let b = queue.submit(async { panic!("local boom") }).await.unwrap();
            let c = {
                let rc = rc.clone();
                queue.submit(async move { *rc }).await.unwrap()
            };
            let d = queue.submit(pending::<u32>()).await.unwrap();
            let e = queue.submit(async { 1u32 }).await.unwrap();
            drop(e);
            let report = queue
                .shutdown(Instant::now() + Duration::from_millis(100))
                .await;
            let a: Result<u32, _> = a.await;
            assert!(a.unwrap_err().is_aborted());
            let b: Result<(), _> = b.await;
            assert!(b.unwrap_err().is_panic());
            assert_eq!(c.await.unwrap(), 5);
            assert!(d.await.unwrap_err().is_aborted());
            assert_eq!((report.aborted, report.cancelled), (2, 0));
            let s = queue.stats();
            assert_eq!(
                (s.completed, s.panicked, s.aborted, s.cancelled, s.runners),
                (1, 1, 2, 1, 0)
            );
            assert_eq!(support::accounted(&s), 5);
        })
        .await;
}

// ---------------------------------------------------------------------------------------------
// More attacks.

/// A panic payload whose destructor panics too.
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("payload drop panics");
        }
    }
}

/// An operation panics with a payload that panics when dropped. The queue promises that a
/// panic reaches the handle and "the runner carries on". The runner drops the payload outside
/// its `catch_unwind` (`panic_message` takes it by value), so the second panic unwinds the
/// runner task: the runner is lost, and with one runner the queue closes and cancels what is
/// queued behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_payload_that_panics_on_drop_does_not_kill_the_runner() {
    let queue = OperationQueue::new(1);
    let bad = queue
        .submit(async { std::panic::panic_any(PanicOnDrop) })
        .await
        .unwrap();
    let behind = queue.submit(async { 2 }).await.unwrap();
    let bad: Result<(), _> = timeout(BOUND, bad).await.unwrap();
    let behind = timeout(BOUND, behind).await.unwrap();
    assert!(bad.as_ref().is_err_and(|e| e.is_panic()), "{bad:?}");
    assert_eq!(
        behind,
        Ok(2),
        "the operation behind the panic must still run"
    );
    assert!(!queue.is_closed());
    assert_eq!(queue.stats().runners, 1);
}

/// An idle queue gated on a line whose recovery never ends (no recovery timeout): `drain` has
/// nothing to wait for (nothing queued, nothing running), yet the runners, woken by the close,
/// go back to waiting for the line before they look at the queue, so they never exit and
/// `drain` never returns; `shutdown` only returns at its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_of_an_empty_queue_returns_while_a_gating_recovery_runs() {
    let line: Line<()> = Line::new();
    let queue = OperationQueue::builder()
        .runners(2)
        .pause_while_recovering(&line)
        .build()
        .unwrap();
    // The runners are idle (parked) before the recovery starts.
    queue.submit(async {}).await.unwrap().await.unwrap();
    let recovering = Arc::new(Notify::new());
    let leader = tokio::spawn({
        let (line, recovering) = (line.clone(), recovering.clone());
        async move {
            line.recover(line.epoch(), move || async move {
                recovering.notify_one();
                pending::<()>().await
            })
            .await
        }
    });
    timeout(BOUND, recovering.notified()).await.unwrap();
    let s = queue.stats();
    assert_eq!((s.queued, s.running), (0, 0));
    let drained = timeout(Duration::from_secs(1), queue.drain()).await;
    leader.abort();
    assert!(
        drained.is_ok(),
        "drain of an empty queue waited for the line: {:?}",
        queue.stats()
    );
}

/// The runtime the runners live on is dropped: every handle resolves (aborted / cancelled),
/// the queue closes, and shutdown returns at once.
#[test]
fn runtime_dropped_under_the_queue() {
    let rt1 = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let rt2 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let queue = OperationQueue::builder()
        .runners(1)
        .runtime(rt1.handle().clone())
        .build()
        .unwrap();
    let (stuck, behind) = rt2.block_on(async {
        let stuck = queue.submit(pending::<u8>()).await.unwrap();
        let behind = queue.submit(async { 1u8 }).await.unwrap();
        // Let the runner take the first.
        timeout(BOUND, async {
            while queue.stats().running == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap();
        (stuck, behind)
    });
    drop(rt1);
    rt2.block_on(async {
        assert!(
            timeout(BOUND, stuck)
                .await
                .unwrap()
                .unwrap_err()
                .is_aborted()
        );
        assert!(
            timeout(BOUND, behind)
                .await
                .unwrap()
                .unwrap_err()
                .is_cancelled()
        );
        assert!(queue.is_closed());
        assert!(queue.submit(async { 3u8 }).await.is_err());
        // Growing the queue on a dead runtime spawns nothing that could hang.
        let _ = queue.set_runners(4);
        let report = timeout(
            BOUND,
            queue.shutdown(Instant::now() + Duration::from_secs(1)),
        )
        .await
        .expect("shutdown hung on a queue whose runtime is gone");
        assert!(report.is_clean());
        let s = queue.stats();
        assert_eq!(
            (s.aborted, s.cancelled, s.runners, support::accounted(&s)),
            (1, 1, 0, 2)
        );
    });
}

/// The `LocalSet` the runners live on is dropped without a shutdown: handles still resolve.
#[tokio::test(start_paused = true)]
async fn local_set_dropped_under_a_local_queue() {
    let local = tokio::task::LocalSet::new();
    let (queue, stuck, behind) = local
        .run_until(async {
            let queue = LocalOperationQueue::new(1);
            let stuck = queue.submit(pending::<u8>()).await.unwrap();
            let behind = queue.submit(async { 1u8 }).await.unwrap();
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            (queue, stuck, behind)
        })
        .await;
    drop(local);
    assert!(
        timeout(BOUND, stuck)
            .await
            .unwrap()
            .unwrap_err()
            .is_aborted()
    );
    assert!(
        timeout(BOUND, behind)
            .await
            .unwrap()
            .unwrap_err()
            .is_cancelled()
    );
    let s = queue.stats();
    assert_eq!((s.runners, support::accounted(&s)), (0, 2));
}

/// A queue on a runtime built without the time driver, with no timeout setting. Submitting and
/// awaiting work fine; `shutdown` (whose docs list no panic) calls `tokio::time::timeout_at` and
/// panics in the caller's task ("timers are disabled").
#[test]
fn shutdown_on_a_runtime_without_the_time_driver() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let queue = OperationQueue::new(1);
        assert_eq!(queue.submit(async { 1 }).await.unwrap().await.unwrap(), 1);
        let deadline = Instant::now() + Duration::from_secs(1);
        let q = queue.clone();
        let r = tokio::spawn(async move { q.shutdown(deadline).await }).await;
        assert!(r.is_ok(), "shutdown panicked: {r:?}");
    });
}
