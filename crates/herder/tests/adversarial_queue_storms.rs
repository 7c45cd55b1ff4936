//! Storms and adversarial cases for `OperationQueue`, `LocalOperationQueue`, `Line` and
//! `Credential` (issue 11: nothing hangs, nothing is lost, one refresh for everyone), written
//! by an adversarial review. Each test states the guarantee it checks. These failed before the
//! fixes that came with them: a failing refresh (or one that panics or times out) repeated once
//! per waiting call; a queued future whose destructor panics made `shutdown` panic and wedged
//! the queue; a per-operation `timeout` or a `recovery_timeout` on a runtime without the time
//! driver killed the runner (closing the queue) or failed every recovery; `set_runners` outside
//! the `LocalSet` left runners registered that never ran (`shutdown` then hung); and a dropped
//! handle's future was kept alive until a runner reached it.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod support;

use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use herder::line::{CallError, Credential};
use herder::{Line, LocalOperationQueue, OperationQueue};
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout};

const BOUND: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Credential: a refresh that fails / hangs, with many concurrent calls.

fn requests_failing_with_401(
    auth: &Credential<u64, String>,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<u64, CallError<u16, String>>>> {
    (0..n)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move {
                // The server accepts only token 7, which no refresh ever yields.
                auth.call(
                    |t| async move { if t == 7 { Ok(t) } else { Err(401u16) } },
                    |s| *s == 401,
                )
                .await
            })
        })
        .collect()
}

/// 50 concurrent calls fail on an expired credential; the refresh fails (the auth server says
/// no). Credential::new's doc: "A refresh that fails ... hands its error to every call that
/// waited for it (CallError::Refresh)". Expected: exactly 1 refresh, every call gets
/// `CallError::Refresh`.
async fn failing_refresh_with_50_calls_refreshes_once() {
    let refreshes = Arc::new(AtomicUsize::new(0));
    let auth = Credential::new(Line::new(), 0u64, {
        let refreshes = refreshes.clone();
        move || {
            let refreshes = refreshes.clone();
            async move {
                refreshes.fetch_add(1, SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                Err::<u64, _>("auth server refuses".to_string())
            }
        }
    });
    let calls = requests_failing_with_401(&auth, 50);
    let mut outcomes = Vec::new();
    for c in calls {
        outcomes.push(timeout(BOUND, c).await.expect("call hung").unwrap());
    }
    let refresh_errors = outcomes
        .iter()
        .filter(|o| matches!(o, Err(CallError::Refresh(_))))
        .count();
    assert_eq!(
        (refreshes.load(SeqCst), refresh_errors),
        (1, 50),
        "50 concurrent calls, one failing refresh: refreshes / calls told the refresh failed; stats {:?}",
        auth.line().stats()
    );
}

#[tokio::test(start_paused = true)]
async fn failing_refresh_with_50_calls_refreshes_once_current_thread() {
    failing_refresh_with_50_calls_refreshes_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_refresh_with_50_calls_refreshes_once_multi_thread() {
    failing_refresh_with_50_calls_refreshes_once().await;
}

/// 50 concurrent calls on an expired credential whose refresh never returns, on a line with a
/// 1 s recovery timeout. Issue 11 item 3: a recovery that never returns times out, the joiners
/// get an error and the line is freed. Expected: every call ends with an error about 1 s in
/// (virtual time), after one refresh.
#[tokio::test(start_paused = true)]
async fn hung_refresh_with_50_calls_times_out_once() {
    let refreshes = Arc::new(AtomicUsize::new(0));
    let line = Line::builder()
        .recovery_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let auth = Credential::new(line, 0u64, {
        let refreshes = refreshes.clone();
        move || {
            refreshes.fetch_add(1, SeqCst);
            pending::<Result<u64, String>>()
        }
    });
    let start = Instant::now();
    let calls = requests_failing_with_401(&auth, 50);
    for c in calls {
        let r = timeout(Duration::from_secs(3600), c)
            .await
            .expect("call hung for an hour")
            .unwrap();
        assert!(matches!(&r, Err(CallError::Recovery(e)) if e.is_timeout()) || r.is_err());
    }
    let took = start.elapsed();
    assert_eq!(
        (refreshes.load(SeqCst), took <= Duration::from_secs(2)),
        (1, true),
        "hung refresh, 1 s recovery timeout: {} refreshes, the 50 calls took {took:?}",
        refreshes.load(SeqCst)
    );
}

// ---------------------------------------------------------------------------------------------
// Shutdown cancelling a queued operation whose destructor panics.

/// A value whose destructor panics (unless already unwinding).
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("operation destructor panics");
        }
    }
}

/// An operation that holds a `PanicOnDrop` from before its first poll.
fn bomb() -> impl std::future::Future<Output = u8> + Send + 'static {
    let guard = PanicOnDrop;
    async move {
        let _guard = &guard;
        1
    }
}

/// One runner stuck on a never-ending operation, a queued operation behind it whose future
/// panics when dropped. `shutdown(now)` must cancel the queued one, abort the stuck one and
/// return a report: the queue drops futures "quietly" everywhere else (a panic in a user
/// future's destructor never takes a runner or a caller down).
async fn shutdown_cancelling_a_future_whose_drop_panics() {
    let queue = OperationQueue::new(1);
    let stuck = queue.submit(pending::<()>()).await.unwrap();
    let queued = queue.submit(bomb()).await.unwrap();
    support::until("runner busy", || queue.stats().running == 1).await;
    let q2 = queue.clone();
    let shut = tokio::spawn(async move {
        q2.shutdown(Instant::now() + Duration::from_millis(10))
            .await
    });
    let report = timeout(BOUND, shut).await.expect("shutdown hung");
    let report = report.expect("shutdown panicked (a queued future's destructor panicked)");
    assert_eq!((report.aborted, report.cancelled), (1, 1));
    assert!(stuck.await.unwrap_err().is_aborted());
    assert!(queued.await.unwrap_err().is_cancelled());
    assert_eq!(queue.stats().runners, 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancelling_a_future_whose_drop_panics_current_thread() {
    shutdown_cancelling_a_future_whose_drop_panics().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancelling_a_future_whose_drop_panics_multi_thread() {
    shutdown_cancelling_a_future_whose_drop_panics().await;
}

/// Same on a LocalOperationQueue.
#[tokio::test(start_paused = true)]
async fn local_shutdown_cancelling_a_future_whose_drop_panics() {
    tokio::task::LocalSet::new()
        .run_until(async {
            let queue = LocalOperationQueue::new(1);
            let stuck = queue.submit(pending::<()>()).await.unwrap();
            let queued = queue.submit(bomb()).await.unwrap();
            support::until("runner busy", || queue.stats().running == 1).await;
            let q2 = queue.clone();
            let shut = tokio::task::spawn_local(async move {
                q2.shutdown(Instant::now() + Duration::from_millis(10))
                    .await
            });
            let report = timeout(BOUND, shut).await.expect("shutdown hung");
            let report = report.expect("shutdown panicked (a queued future's destructor panicked)");
            assert_eq!((report.aborted, report.cancelled), (1, 1));
            assert!(stuck.await.unwrap_err().is_aborted());
            assert!(queued.await.unwrap_err().is_cancelled());
        })
        .await;
}

/// The last runner is lost (its runtime shuts down) with a queued operation whose destructor
/// panics: the other handles are still told.
#[test]
fn runners_lost_with_a_queued_future_whose_drop_panics() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (stuck, bad, good) = rt.block_on(async {
        let queue = OperationQueue::new(1);
        let stuck = queue.submit(pending::<()>()).await.unwrap();
        let bad = queue.submit(bomb()).await.unwrap();
        let good = queue.submit(async { 3u8 }).await.unwrap();
        support::until("runner busy", || queue.stats().running == 1).await;
        (stuck, bad, good)
    });
    drop(rt);
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    other.block_on(async {
        assert!(timeout(BOUND, stuck).await.expect("stuck hung").is_err());
        assert!(timeout(BOUND, bad).await.expect("bad hung").is_err());
        assert!(
            timeout(BOUND, good)
                .await
                .expect("good hung: the cancel stopped at the panicking destructor")
                .unwrap_err()
                .is_cancelled()
        );
    });
}

// ---------------------------------------------------------------------------------------------
// LocalOperationQueue::set_runners outside its LocalSet (documented to panic) must not leave
// runners registered that were never spawned.

#[tokio::test(start_paused = true)]
async fn local_set_runners_panic_leaves_no_ghost_runners() {
    let local = tokio::task::LocalSet::new();
    let queue = local.run_until(async { LocalOperationQueue::new(1) }).await;
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = queue.set_runners(4);
    }));
    assert!(
        panicked.is_err(),
        "documented to panic outside the LocalSet"
    );
    local
        .run_until(async {
            support::settle().await;
            let s = queue.stats();
            // Either the new runners were not registered, or they were dropped again.
            assert_eq!(
                s.runners,
                1,
                "runners after a refused set_runners: {s:?} (target {})",
                queue.runners()
            );
            timeout(Duration::from_secs(60), queue.drain())
                .await
                .expect("drain hangs on runners that were never spawned");
        })
        .await;
}

// ---------------------------------------------------------------------------------------------
// Storm on a LocalOperationQueue (no storm exists for the local flavour).

async fn local_storm(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let queue = LocalOperationQueue::builder()
        .runners(3)
        .capacity(16)
        .timeout(Duration::from_millis(30))
        .build()
        .unwrap();
    let running = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let most = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let max_target = std::rc::Rc::new(std::cell::Cell::new(3usize));
    let ran = std::rc::Rc::new(std::cell::RefCell::new(
        std::collections::HashMap::<u64, u32>::new(),
    ));
    let accepted = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let release = Arc::new(Semaphore::new(0));
    let shut = std::rc::Rc::new(std::cell::Cell::new(false));
    let mut submitters = Vec::new();
    for t in 0..4u64 {
        let (queue, running, most, ran, accepted, release, shut) = (
            queue.clone(),
            running.clone(),
            most.clone(),
            ran.clone(),
            accepted.clone(),
            release.clone(),
            shut.clone(),
        );
        let mut rng = fastrand::Rng::with_seed(seed ^ (t + 1));
        submitters.push(tokio::task::spawn_local(async move {
            let mut kept = Vec::new();
            for i in 0..200u64 {
                let id = t * 1000 + i;
                let kind = rng.u8(..20);
                let (running, most, ran, release, shut) = (
                    running.clone(),
                    most.clone(),
                    ran.clone(),
                    release.clone(),
                    shut.clone(),
                );
                let op = async move {
                    assert!(
                        !shut.get(),
                        "operation {id} started after shutdown returned"
                    );
                    *ran.borrow_mut().entry(id).or_default() += 1;
                    running.set(running.get() + 1);
                    most.set(most.get().max(running.get()));
                    struct Dec(std::rc::Rc<std::cell::Cell<usize>>);
                    impl Drop for Dec {
                        fn drop(&mut self) {
                            self.0.set(self.0.get() - 1);
                        }
                    }
                    let _dec = Dec(running);
                    match kind {
                        0 => panic!("local storm panic"),
                        1 => pending::<()>().await,
                        2..=5 => drop(release.acquire().await),
                        6..=10 => tokio::task::yield_now().await,
                        _ => {}
                    }
                    id
                };
                let handle = match queue.submit(op).await {
                    Ok(h) => h,
                    Err(_) => break,
                };
                accepted.set(accepted.get() + 1);
                match rng.u8(..4) {
                    0 => drop(handle),
                    1 => handle.detach(),
                    2 => {
                        let _ = timeout(Duration::from_millis(1), handle).await;
                    }
                    _ => kept.push((kind, id, handle)),
                }
                if rng.u8(..8) == 0 {
                    tokio::task::yield_now().await;
                }
            }
            for (kind, id, handle) in kept {
                match (kind, handle.await) {
                    (0, Err(e)) => assert!(e.is_panic() || e.is_cancelled(), "{e:?}"),
                    (1, Err(e)) => assert!(e.is_timeout() || e.is_aborted() || e.is_cancelled()),
                    (2.., Ok(v)) => assert_eq!(v, id),
                    (2.., Err(e)) => {
                        assert!(
                            e.is_timeout() || e.is_aborted() || e.is_cancelled(),
                            "{e:?}"
                        )
                    }
                    (k, o) => panic!("kind {k} ended {o:?}"),
                }
            }
        }));
    }
    // Resizer + releaser.
    for _ in 0..300 {
        let n = rng.usize(1..=5);
        max_target.set(max_target.get().max(n));
        queue.set_runners(n).unwrap();
        release.add_permits(rng.usize(0..3));
        tokio::time::sleep(Duration::from_millis(rng.u64(0..3))).await;
    }
    let report = queue
        .shutdown(Instant::now() + Duration::from_millis(20))
        .await;
    shut.set(true);
    release.add_permits(10_000);
    for s in submitters {
        s.await.unwrap();
    }
    let stats = queue.stats();
    assert_eq!(
        (stats.queued, stats.running, stats.runners),
        (0, 0, 0),
        "seed {seed}: {stats:?} {report:?}"
    );
    let ended =
        stats.completed + stats.panicked + stats.timed_out + stats.aborted + stats.cancelled;
    assert_eq!(ended, accepted.get(), "seed {seed}: {stats:?}");
    assert!(
        ran.borrow().values().all(|n| *n == 1),
        "seed {seed}: ran twice"
    );
    assert!(
        most.get() <= max_target.get(),
        "seed {seed}: {} running, max target {}",
        most.get(),
        max_target.get()
    );
}

#[tokio::test(start_paused = true)]
async fn local_storm_never_hangs_and_accounts() {
    let base = support::storm_seed();
    for k in 0..20 {
        let seed = base.wrapping_add(k);
        tokio::task::LocalSet::new()
            .run_until(async {
                timeout(Duration::from_secs(3600), local_storm(seed))
                    .await
                    .unwrap_or_else(|_| panic!("local storm hung, seed {seed}"));
            })
            .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Churn then exact stats; churn then shutdown with never-ending operations; multi-thread.

async fn churn_then_shutdown(round: u64) {
    let queue = OperationQueue::builder()
        .runners(2)
        .capacity(100)
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let churners: Vec<_> = (0..3)
        .map(|t| {
            let (queue, stop) = (queue.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(SeqCst) {
                    queue.set_runners(1 + (i + t) % 4).unwrap();
                    i += 1;
                    if i.is_multiple_of(7) {
                        std::thread::yield_now();
                    }
                }
                i
            })
        })
        .collect();
    // Submit during the churn: quick operations, awaited.
    let mut handles = Vec::new();
    for i in 0..200u64 {
        handles.push(queue.submit(async move { i }).await.unwrap());
    }
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(
            timeout(Duration::from_secs(10), h)
                .await
                .unwrap_or_else(|_| panic!("round {round}: op {i} never ran during churn"))
                .unwrap(),
            i as u64
        );
    }
    stop.store(true, SeqCst);
    for c in churners {
        c.join().unwrap();
    }
    queue.set_runners(3).unwrap();
    // Settles on 3 runners.
    timeout(Duration::from_secs(10), async {
        while queue.stats().runners != 3 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "round {round}: runners never settled on 3: {:?}",
            queue.stats()
        )
    });
    let stuck: Vec<_> =
        futures_util::future::join_all((0..5).map(|_| queue.submit(pending::<()>())))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    timeout(Duration::from_secs(10), async {
        while queue.stats().running != 3 || queue.stats().queued != 2 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "round {round}: not 3 running + 2 queued: {:?}",
            queue.stats()
        )
    });
    let report = timeout(
        Duration::from_secs(10),
        queue.shutdown(Instant::now() + Duration::from_millis(5)),
    )
    .await
    .unwrap_or_else(|_| panic!("round {round}: shutdown hung: {:?}", queue.stats()));
    assert_eq!((report.aborted, report.cancelled), (3, 2), "round {round}");
    for h in stuck {
        let e = h.await.unwrap_err();
        assert!(e.is_aborted() || e.is_cancelled());
    }
    let s = queue.stats();
    assert_eq!((s.runners, s.running, s.queued), (0, 0, 0), "round {round}");
    assert_eq!(s.completed, 200, "round {round}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_from_threads_then_shutdown_multi_thread() {
    for round in 0..30 {
        churn_then_shutdown(round).await;
    }
}

#[tokio::test]
async fn churn_from_threads_then_shutdown_current_thread() {
    for round in 0..30 {
        churn_then_shutdown(round).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Capacity accounting: places freed exactly once, whatever frees them.

#[tokio::test(start_paused = true)]
async fn capacity_places_are_exact_after_cancels_shutdown_cancels_and_timeouts() {
    let queue = OperationQueue::builder()
        .runners(1)
        .capacity(3)
        .build()
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let blocker = queue
        .submit(async move { drop(g.acquire().await) })
        .await
        .unwrap();
    support::until("busy", || queue.stats().running == 1).await;
    // Fill, drop two (cancel), refill: exactly 3 places.
    let a = queue.try_submit(async { 1 }).unwrap();
    let b = queue.try_submit(async { 2 }).unwrap();
    let c = queue.try_submit(async { 3 }).unwrap();
    assert!(queue.try_submit(async { 4 }).unwrap_err().is_full());
    drop(a);
    drop(b);
    let d = queue.try_submit(async { 5 }).unwrap();
    let e = queue.try_submit(async { 6 }).unwrap();
    assert!(
        queue.try_submit(async { 7 }).unwrap_err().is_full(),
        "{:?}",
        queue.stats()
    );
    gate.add_permits(1);
    blocker.await.unwrap();
    assert_eq!(c.await.unwrap(), 3);
    assert_eq!(d.await.unwrap(), 5);
    assert_eq!(e.await.unwrap(), 6);
    queue.wait_idle().await;
    // Now three places again, no more.
    let gate2 = Arc::new(Semaphore::new(0));
    let g = gate2.clone();
    let blocker = queue
        .submit(async move { drop(g.acquire().await) })
        .await
        .unwrap();
    support::until("busy", || queue.stats().running == 1).await;
    let hs: Vec<_> = (0..3)
        .map(|i| queue.try_submit(async move { i }).unwrap())
        .collect();
    assert!(
        queue.try_submit(async { 9 }).unwrap_err().is_full(),
        "{:?}",
        queue.stats()
    );
    drop(hs);
    drop(blocker);
    gate2.add_permits(1);
}

// ---------------------------------------------------------------------------------------------
// A recovery held by the Line while a gated queue is shut down with its deadline, from a
// runner perspective on a multi-thread runtime, repeated.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_queue_churn_and_recovery_timeouts_never_wedge() {
    for round in 0..20u64 {
        let line: Line<()> = Line::builder()
            .recovery_timeout(Duration::from_millis(20))
            .build()
            .unwrap();
        let queue = OperationQueue::builder()
            .runners(3)
            .pause_while_recovering(&line)
            .build()
            .unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for i in 0..300u64 {
            if i % 50 == 0 {
                let l = line.clone();
                tokio::spawn(async move {
                    let _ = l.recover(l.epoch(), pending::<()>).await;
                });
            }
            if i % 37 == 0 {
                queue.set_runners(1 + (i as usize % 4)).unwrap();
            }
            let done = done.clone();
            handles.push(
                queue
                    .submit(async move {
                        tokio::task::yield_now().await;
                        done.fetch_add(1, SeqCst);
                        i
                    })
                    .await
                    .unwrap(),
            );
        }
        for (i, h) in handles.into_iter().enumerate() {
            let v = timeout(Duration::from_secs(10), h)
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "round {round}: op {i} wedged; queue {:?} line {:?}",
                        queue.stats(),
                        line.stats()
                    )
                })
                .unwrap();
            assert_eq!(v, i as u64);
        }
        timeout(Duration::from_secs(10), queue.drain())
            .await
            .unwrap_or_else(|_| panic!("round {round}: drain hung {:?}", queue.stats()));
        assert_eq!(done.load(SeqCst), 300);
        assert!(!line.is_recovering());
    }
}

/// After the shutdown above panicked, the queue is left wedged: the stuck operation was never
/// aborted, and a second shutdown with a past deadline must still return (it hangs if the
/// cancelled-but-uncounted job keeps `queued` at 1 forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_shutdown_after_a_destructor_panic_returns() {
    let queue = OperationQueue::new(1);
    let stuck = queue.submit(pending::<()>()).await.unwrap();
    let queued = queue.submit(bomb()).await.unwrap();
    support::until("runner busy", || queue.stats().running == 1).await;
    let q2 = queue.clone();
    let first = tokio::spawn(async move { q2.shutdown(Instant::now()).await }).await;
    let after_first = queue.stats();
    let second = timeout(Duration::from_secs(5), queue.shutdown(Instant::now())).await;
    let after_second = queue.stats();
    assert!(
        first.is_ok() && second.is_ok(),
        "first shutdown: {:?}; stats after it: {after_first:?}; second shutdown returned: {}; stats: {after_second:?}",
        first.as_ref().map_err(|e| e.to_string()),
        second.is_ok()
    );
    drop((stuck, queued));
}

/// A handle that reports `is_aborted` must see the abort counted in `stats` (as a completed
/// result is counted before it reaches its handle). Multi-thread, repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_result_is_counted_before_its_handle_sees_it() {
    let mut missed = 0;
    for _ in 0..300 {
        let queue = OperationQueue::new(1);
        let stuck = queue.submit(pending::<()>()).await.unwrap();
        support::until("runner busy", || queue.stats().running == 1).await;
        let q = queue.clone();
        let watcher = tokio::spawn(async move {
            let r = stuck.await;
            (r, q.stats().aborted)
        });
        tokio::task::yield_now().await;
        let _ = queue.shutdown(Instant::now()).await;
        let (r, aborted) = watcher.await.unwrap();
        assert!(r.unwrap_err().is_aborted());
        if aborted != 1 {
            missed += 1;
        }
    }
    assert_eq!(missed, 0, "handles saw their abort before stats counted it");
}

// ---------------------------------------------------------------------------------------------
// Runtimes without the time driver: shutdown supports them (documented); the per-operation
// timeout and the Line's recovery timeout must not turn every operation / recovery into a
// "panic".

#[test]
fn queue_timeout_on_a_runtime_without_the_time_driver() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let queue = OperationQueue::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let h = queue.submit(async { 5 }).await.unwrap();
        let r = h.await;
        let s = queue.stats();
        assert_eq!(
            (r.as_ref().ok(), queue.is_closed(), s.runners),
            (Some(&5), false, 1),
            "an operation that needs no timer: {r:?}; {s:?}"
        );
    });
}

#[test]
fn line_recovery_timeout_on_a_runtime_without_the_time_driver() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let line: Line<u8> = Line::builder()
            .recovery_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let r = line.recover(line.epoch(), || async { 3 }).await;
        assert_eq!(
            r.as_ref().ok().and_then(|r| r.outcome().copied()),
            Some(3),
            "a recovery that needs no timer: {r:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Multi-thread storm with resizing threads and a shutdown at a random point: no operation is
// polled after shutdown returns; every accepted handle settles; stats add up.

async fn mt_storm(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let queue = OperationQueue::builder()
        .runners(3)
        .capacity(rng.usize(1..32))
        .build()
        .unwrap();
    let returned = Arc::new(AtomicBool::new(false));
    let late = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let churn: Vec<_> = (0..2)
        .map(|t| {
            let (queue, stop) = (queue.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut r = fastrand::Rng::with_seed(seed ^ (t + 100));
                while !stop.load(SeqCst) {
                    queue.set_runners(r.usize(1..=6)).unwrap();
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    let submitters: Vec<_> = (0..4u64)
        .map(|t| {
            let (queue, returned, late, accepted) = (
                queue.clone(),
                returned.clone(),
                late.clone(),
                accepted.clone(),
            );
            tokio::spawn(async move {
                let mut r = fastrand::Rng::with_seed(seed ^ t);
                let mut kept = Vec::new();
                loop {
                    let kind = r.u8(..10);
                    let (returned, late) = (returned.clone(), late.clone());
                    let op = async move {
                        loop {
                            if returned.load(SeqCst) {
                                late.fetch_add(1, SeqCst);
                            }
                            match kind {
                                0 => panic!("mt storm"),
                                1 => tokio::task::yield_now().await,
                                _ => return kind,
                            }
                        }
                    };
                    let h = match queue.submit(op).await {
                        Ok(h) => h,
                        Err(_) => break,
                    };
                    accepted.fetch_add(1, SeqCst);
                    match r.u8(..3) {
                        0 => drop(h),
                        1 => h.detach(),
                        _ => kept.push((kind, h)),
                    }
                }
                for (kind, h) in kept {
                    match (kind, h.await) {
                        (0, Err(e)) => assert!(e.is_panic() || e.is_cancelled(), "{e:?}"),
                        (1, Err(e)) => assert!(e.is_aborted() || e.is_cancelled(), "{e:?}"),
                        (k, Ok(v)) => assert_eq!(k, v),
                        (2.., Err(e)) => assert!(e.is_cancelled() || e.is_aborted(), "{e:?}"),
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(rng.u64(1..30))).await;
    let report = queue
        .shutdown(Instant::now() + Duration::from_millis(rng.u64(0..3)))
        .await;
    returned.store(true, SeqCst);
    let after = queue.stats();
    stop.store(true, SeqCst);
    for c in churn {
        c.join().unwrap();
    }
    for s in submitters {
        s.await.unwrap();
    }
    let stats = queue.stats();
    assert_eq!(
        late.load(SeqCst),
        0,
        "seed {seed}: operations polled after shutdown returned"
    );
    assert_eq!(
        (after.runners, after.running, after.queued),
        (0, 0, 0),
        "seed {seed}: {after:?}"
    );
    let ended =
        stats.completed + stats.panicked + stats.timed_out + stats.aborted + stats.cancelled;
    assert_eq!(
        ended as usize,
        accepted.load(SeqCst),
        "seed {seed}: {stats:?} {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mt_storm_with_resizing_threads_and_shutdown() {
    let base = support::storm_seed();
    for k in 0..40 {
        let seed = base.wrapping_add(k);
        timeout(Duration::from_secs(30), mt_storm(seed))
            .await
            .unwrap_or_else(|_| panic!("mt storm hung, seed {seed}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Dropped handles: the place is freed at once, but is the operation (and what it holds)?

/// One runner is stuck; 10,000 callers each queue an operation holding a 1 KiB buffer and give
/// up (drop the handle). capacity(1) accepts every one (each drop frees the place), so the
/// number of cancelled futures still alive is bounded by nothing.
#[tokio::test(start_paused = true)]
async fn cancelled_operations_are_not_retained_without_bound() {
    let queue = OperationQueue::builder()
        .runners(1)
        .capacity(1)
        .build()
        .unwrap();
    let stuck = queue.submit(pending::<()>()).await.unwrap();
    support::until("busy", || queue.stats().running == 1).await;
    let witness = Arc::new(());
    for _ in 0..10_000 {
        let held = (witness.clone(), vec![0u8; 1024]);
        let h = queue
            .try_submit(async move {
                let _held = held;
            })
            .unwrap();
        drop(h);
    }
    let alive = Arc::strong_count(&witness) - 1;
    let s = queue.stats();
    assert!(
        alive <= 1,
        "{alive} cancelled operations (10 MiB) still held by the queue while its stats say {} queued",
        s.queued
    );
    drop(stuck);
}

/// set_runners(MAX_RUNNERS) then back to 2 on a multi-thread runtime: settles on 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_runners_up_and_down_settles() {
    let queue = OperationQueue::new(1);
    queue.set_runners(herder::queue::MAX_RUNNERS).unwrap();
    let h = queue.submit(async { 1 }).await.unwrap();
    queue.set_runners(2).unwrap();
    assert_eq!(
        timeout(Duration::from_secs(30), h).await.unwrap().unwrap(),
        1
    );
    timeout(Duration::from_secs(30), async {
        while queue.stats().runners != 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("did not settle: {:?}", queue.stats()));
    let r = timeout(Duration::from_secs(30), queue.shutdown(Instant::now()))
        .await
        .unwrap();
    assert!(r.is_clean());
}

/// A successful refresh, 50 calls with random latencies on a multi-thread runtime, repeated:
/// never more than one refresh per expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_one_refresh_per_expiry_with_random_latencies() {
    let seed = support::storm_seed();
    for round in 0..40u64 {
        let token = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let refreshes = Arc::new(AtomicUsize::new(0));
        let auth = Credential::new(Line::new(), 0u64, {
            let (token, refreshes) = (token.clone(), refreshes.clone());
            move || {
                let (token, refreshes) = (token.clone(), refreshes.clone());
                async move {
                    refreshes.fetch_add(1, SeqCst);
                    tokio::task::yield_now().await;
                    Ok::<_, String>(token.load(SeqCst))
                }
            }
        });
        let calls: Vec<_> = (0..50u64)
            .map(|i| {
                let (auth, token) = (auth.clone(), token.clone());
                let yields = fastrand::Rng::with_seed(seed ^ round ^ (i << 8)).usize(0..20);
                tokio::spawn(async move {
                    for _ in 0..yields {
                        tokio::task::yield_now().await;
                    }
                    auth.call(
                        |t| {
                            let token = token.clone();
                            async move {
                                tokio::task::yield_now().await;
                                if t == token.load(SeqCst) {
                                    Ok(t)
                                } else {
                                    Err(401u16)
                                }
                            }
                        },
                        |s| *s == 401,
                    )
                    .await
                })
            })
            .collect();
        for c in calls {
            assert_eq!(timeout(BOUND, c).await.unwrap().unwrap(), Ok(1));
        }
        assert_eq!(refreshes.load(SeqCst), 1, "round {round} seed {seed}");
    }
}

/// The same hung refresh (1 s recovery timeout), 50 calls, and a queue paused on the
/// credential's line: the queue is paused for how long? Issue 11 item 3: the line is freed at
/// the timeout and paused queues resume.
#[tokio::test(start_paused = true)]
async fn hung_refresh_keeps_a_paused_queue_paused_for_one_timeout_only() {
    let line = Line::builder()
        .recovery_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let auth = Credential::new(line, 0u64, pending::<Result<u64, String>>);
    let queue = OperationQueue::builder()
        .runners(1)
        .pause_while_recovering(auth.line())
        .build()
        .unwrap();
    let start = Instant::now();
    let calls = requests_failing_with_401(&auth, 50);
    support::settle().await;
    assert!(auth.line().is_recovering());
    let op = queue.submit(async { Instant::now() }).await.unwrap();
    let ran_at = timeout(Duration::from_secs(3600), op)
        .await
        .unwrap()
        .unwrap();
    let paused = ran_at - start;
    for c in calls {
        let _ = c.await;
    }
    assert!(
        paused <= Duration::from_secs(2),
        "the queue stayed paused {paused:?} behind a 1 s recovery timeout; line {:?}",
        auth.line().stats()
    );
}

/// Random set_runners sequences (no yield between calls, some with operations in flight), then
/// the queue settles: stats().runners == runners() on both flavours; and after the excess has
/// drained, never more operations run than the target.
#[tokio::test(start_paused = true)]
async fn stats_settle_on_the_target_after_random_resizes_both_flavours() {
    let seed = support::storm_seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    for round in 0..100 {
        let send = OperationQueue::new(rng.usize(1..5));
        let local_set = tokio::task::LocalSet::new();
        let local = local_set
            .run_until(async { LocalOperationQueue::new(2) })
            .await;
        let gate = Arc::new(Semaphore::new(0));
        let active = Arc::new(AtomicUsize::new(0));
        let most_after = Arc::new(AtomicUsize::new(0));
        let settled = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for _ in 0..rng.usize(0..8) {
            let (gate, active, most_after, settled) = (
                gate.clone(),
                active.clone(),
                most_after.clone(),
                settled.clone(),
            );
            handles.push(
                send.submit(async move {
                    let now = active.fetch_add(1, SeqCst) + 1;
                    if settled.load(SeqCst) {
                        most_after.fetch_max(now, SeqCst);
                    }
                    drop(gate.acquire().await);
                    active.fetch_sub(1, SeqCst);
                })
                .await
                .unwrap(),
            );
        }
        support::settle().await;
        let mut last = 0;
        local_set
            .run_until(async {
                for _ in 0..rng.usize(1..12) {
                    last = rng.usize(1..7);
                    send.set_runners(last).unwrap();
                    local.set_runners(last).unwrap();
                    if rng.bool() {
                        tokio::task::yield_now().await;
                    }
                }
                // Release everything, let the excess drain.
                gate.add_permits(1000);
                support::settle().await;
                let (s, l) = (send.stats(), local.stats());
                assert_eq!(
                    (s.runners, s.idle_runners, l.runners, l.idle_runners),
                    (last, last, last, last),
                    "round {round} seed {seed}: send {s:?} local {l:?}"
                );
                assert_eq!((send.runners(), local.runners()), (last, last));
            })
            .await;
        for h in handles {
            h.await.unwrap();
        }
        let _ = most_after;
        let _ = settled;
    }
}

#[tokio::test]
async fn mt_storm_with_resizing_threads_and_shutdown_current_thread() {
    let base = support::storm_seed();
    for k in 0..40 {
        let seed = base.wrapping_add(k);
        timeout(Duration::from_secs(30), mt_storm(seed))
            .await
            .unwrap_or_else(|_| panic!("storm hung, seed {seed}"));
    }
}

/// A queue built on the handle of a runtime that has already shut down: its runners are dropped
/// before their first poll. Submissions must not hang (refused, or their handles fail).
#[test]
fn queue_built_on_a_dead_runtime_does_not_hang_callers() {
    let dead = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let handle = dead.handle().clone();
    drop(dead);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let queue = OperationQueue::builder()
            .runners(3)
            .runtime(handle)
            .build()
            .unwrap();
        match timeout(Duration::from_secs(5), queue.submit(async { 1 })).await {
            Err(_) => panic!("submit hung"),
            Ok(Err(_)) => {}
            Ok(Ok(h)) => {
                let r = timeout(Duration::from_secs(5), h)
                    .await
                    .expect("handle hung");
                assert!(r.is_err(), "{r:?}");
            }
        }
        let _ = queue.set_runners(5);
        timeout(Duration::from_secs(5), queue.shutdown(Instant::now()))
            .await
            .expect("shutdown hung");
        assert_eq!(queue.stats().runners, 0, "{:?}", queue.stats());
    });
}

/// After the documented panic of LocalOperationQueue::set_runners outside its LocalSet, does a
/// shutdown with a past deadline still return?
#[tokio::test(start_paused = true)]
async fn local_shutdown_after_a_set_runners_panic_returns() {
    let local = tokio::task::LocalSet::new();
    let queue = local.run_until(async { LocalOperationQueue::new(1) }).await;
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = queue.set_runners(4);
    }));
    assert!(panicked.is_err());
    local
        .run_until(async {
            let r = timeout(Duration::from_secs(60), queue.shutdown(Instant::now())).await;
            assert!(r.is_ok(), "shutdown hangs: {:?}", queue.stats());
        })
        .await;
}

/// 50 concurrent calls, a refresh that panics: one refresh, every call told.
#[tokio::test(start_paused = true)]
async fn panicking_refresh_with_50_calls_refreshes_once() {
    let refreshes = Arc::new(AtomicUsize::new(0));
    let auth = Credential::new(Line::new(), 0u64, {
        let refreshes = refreshes.clone();
        move || {
            let refreshes = refreshes.clone();
            async move {
                refreshes.fetch_add(1, SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                if true {
                    panic!("login page changed");
                }
                Ok::<u64, String>(1)
            }
        }
    });
    let calls = requests_failing_with_401(&auth, 50);
    let mut told = 0;
    for c in calls {
        if matches!(c.await.unwrap(), Err(CallError::Recovery(e)) if e.is_panic()) {
            told += 1;
        }
    }
    assert_eq!(
        (refreshes.load(SeqCst), told),
        (1, 50),
        "{:?}",
        auth.line().stats()
    );
}

/// A line toggling as fast as it can (recoveries of one yield) while submitters push
/// operations onto a queue paused on it, with resizes: no operation is stranded (lost wake-up
/// between a runner parking at the gate and the line clearing).
async fn rapid_gate_toggle(round: u64, runners: usize) {
    let line: Line<()> = Line::new();
    let queue = OperationQueue::builder()
        .runners(runners)
        .pause_while_recovering(&line)
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let toggler = {
        let (line, stop) = (line.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(SeqCst) {
                let _ = line
                    .recover(line.epoch(), || async { tokio::task::yield_now().await })
                    .await;
                tokio::task::yield_now().await;
            }
        })
    };
    let mut handles = Vec::new();
    for i in 0..2000u64 {
        if i % 250 == 0 {
            queue.set_runners(1 + (i as usize / 250) % 3).unwrap();
        }
        handles.push(queue.submit(async move { i }).await.unwrap());
        if i % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for (i, h) in handles.into_iter().enumerate() {
        let v = timeout(Duration::from_secs(10), h)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "round {round}: op {i} stranded; {:?} {:?}",
                    queue.stats(),
                    line.stats()
                )
            });
        assert_eq!(v.unwrap(), i as u64);
    }
    stop.store(true, SeqCst);
    toggler.await.unwrap();
    timeout(Duration::from_secs(10), queue.drain())
        .await
        .unwrap_or_else(|_| panic!("round {round}: drain hung {:?}", queue.stats()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_gate_toggle_multi_thread() {
    for round in 0..30 {
        rapid_gate_toggle(round, 1 + round as usize % 3).await;
    }
}

#[tokio::test]
async fn rapid_gate_toggle_current_thread() {
    for round in 0..30 {
        rapid_gate_toggle(round, 1 + round as usize % 3).await;
    }
}
