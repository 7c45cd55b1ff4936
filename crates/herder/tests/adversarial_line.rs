//! Adversarial tests of `Line` and its `Credential` helper.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod support;

use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use herder::line::{CallError, Credential};
use herder::{Line, OperationQueue, Recovery};
use tokio::sync::Notify;
use tokio::time::{Instant, timeout};

const BOUND: Duration = Duration::from_secs(5);

/// Waits (bounded) until `n` calls have joined the recovery under way on `line`.
async fn joined<O: Clone + Send + 'static>(line: &Line<O>, n: u64) {
    timeout(BOUND, async {
        while line.stats().joined < n {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the joiners never joined");
}

// ---------------------------------------------------------------------------------------------
// 2. Settings.

#[tokio::test(start_paused = true)]
async fn recovery_timeout_zero_is_refused_and_max_never_fires() {
    assert!(
        Line::<u8>::builder()
            .recovery_timeout(Duration::ZERO)
            .build()
            .is_err()
    );
    let line: Line<u8> = Line::builder()
        .recovery_timeout(Duration::MAX)
        .build()
        .unwrap();
    let r = line
        .recover(line.epoch(), || async {
            tokio::time::sleep(Duration::from_secs(86_400)).await;
            4
        })
        .await
        .unwrap();
    assert_eq!(r, Recovery::Led(4));
    assert!(!line.is_recovering());
}

/// A recovery timeout the builder accepts, whose deadline is representable but within a
/// millisecond of the largest `Instant`: tokio's timer overflows rounding it up and panics in
/// the recovery's task, which the line reports as a panicking recovery.
#[tokio::test(start_paused = true)]
async fn recovery_timeout_near_instant_max_does_not_overflow_later() {
    let limit = support::near_max_after(Instant::now().into_std());
    let line: Line<u8> = Line::builder().recovery_timeout(limit).build().unwrap();
    let r = timeout(
        BOUND,
        line.recover(line.epoch(), || async {
            tokio::task::yield_now().await;
            4
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        r,
        Ok(Recovery::Led(4)),
        "an accepted timeout must not fail the recovery"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Recoveries that never return, panic, or lose their leader.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_recovery_times_out_for_everyone_and_the_gated_queue_resumes() {
    let line: Line<u32> = Line::builder()
        .recovery_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let queue = OperationQueue::builder()
        .runners(2)
        .pause_while_recovering(&line)
        .build()
        .unwrap();
    let started = Arc::new(Notify::new());
    let seen = line.epoch();
    let leader = tokio::spawn({
        let (line, started) = (line.clone(), started.clone());
        async move {
            line.recover(seen, move || async move {
                started.notify_one();
                pending::<u32>().await
            })
            .await
        }
    });
    timeout(BOUND, started.notified()).await.unwrap();
    let joiners: Vec<_> = (0..8)
        .map(|_| {
            let line = line.clone();
            tokio::spawn(async move { line.recover(seen, || async { unreachable!() }).await })
        })
        .collect();
    let gated = queue.submit(async { 11 }).await.unwrap();
    let r = timeout(BOUND, leader).await.expect("leader hung").unwrap();
    assert!(r.unwrap_err().is_timeout());
    for j in joiners {
        let r = timeout(BOUND, j).await.expect("joiner hung").unwrap();
        // A joiner may have arrived after the end: then it is told AlreadyDone.
        match r {
            Err(e) => assert!(e.is_timeout(), "{e:?}"),
            Ok(Recovery::AlreadyDone) => {}
            Ok(other) => panic!("joiner got {other:?}"),
        }
    }
    assert!(!line.is_recovering());
    assert_eq!(
        timeout(BOUND, gated)
            .await
            .expect("gated queue stuck")
            .unwrap(),
        11
    );
    // Usable afterwards.
    let r = line.recover(line.epoch(), || async { 3 }).await.unwrap();
    assert_eq!(r, Recovery::Led(3));
    let stats = line.stats();
    assert_eq!(stats.epoch, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_recovery_reaches_every_joiner_and_the_line_is_usable() {
    let line: Line<u32> = Line::new();
    let go = Arc::new(Notify::new());
    let started = Arc::new(Notify::new());
    let seen = line.epoch();
    let leader = tokio::spawn({
        let (line, go, started) = (line.clone(), go.clone(), started.clone());
        async move {
            line.recover(seen, move || async move {
                started.notify_one();
                go.notified().await;
                panic!("recovery boom")
            })
            .await
        }
    });
    timeout(BOUND, started.notified()).await.unwrap();
    let joiners: Vec<_> = (0..8)
        .map(|_| {
            let line = line.clone();
            tokio::spawn(async move { line.recover(seen, || async { unreachable!() }).await })
        })
        .collect();
    let queue = OperationQueue::builder()
        .pause_while_recovering(&line)
        .build()
        .unwrap();
    let gated = queue.submit(async { 5 }).await.unwrap();
    // The joiners join before the panic.
    joined(&line, 8).await;
    assert_eq!(
        queue.stats().completed,
        0,
        "an operation started while the line recovered"
    );
    go.notify_one();
    assert_eq!(
        timeout(BOUND, gated)
            .await
            .expect("gated queue stuck")
            .unwrap(),
        5
    );
    let e = timeout(BOUND, leader).await.unwrap().unwrap().unwrap_err();
    assert!(e.is_panic());
    assert_eq!(e.panic_message(), Some("recovery boom"));
    for j in joiners {
        let e = timeout(BOUND, j)
            .await
            .expect("joiner hung")
            .unwrap()
            .unwrap_err();
        assert!(e.is_panic(), "{e:?}");
    }
    assert!(!line.is_recovering());
    assert_eq!(
        line.recover(line.epoch(), || async { 9 }).await.unwrap(),
        Recovery::Led(9)
    );
}

/// The closure itself panics (before it returns the recovery's future).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_closure_panicking_before_its_future_is_caught() {
    let line: Line<u32> = Line::new();
    let r = timeout(
        BOUND,
        line.recover(line.epoch(), || -> std::future::Ready<u32> {
            panic!("builds badly")
        }),
    )
    .await
    .unwrap();
    assert!(r.unwrap_err().is_panic());
    assert!(!line.is_recovering());
    assert_eq!(
        line.recover(line.epoch(), || async { 1 }).await.unwrap(),
        Recovery::Led(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_leader_does_not_strand_joiners() {
    let line: Line<u32> = Line::new();
    let go = Arc::new(Notify::new());
    let started = Arc::new(Notify::new());
    let seen = line.epoch();
    let leader = tokio::spawn({
        let (line, go, started) = (line.clone(), go.clone(), started.clone());
        async move {
            line.recover(seen, move || async move {
                started.notify_one();
                go.notified().await;
                42
            })
            .await
        }
    });
    timeout(BOUND, started.notified()).await.unwrap();
    let joiner = tokio::spawn({
        let line = line.clone();
        async move { line.recover(seen, || async { unreachable!() }).await }
    });
    joined(&line, 1).await;
    leader.abort();
    assert!(
        timeout(BOUND, leader)
            .await
            .unwrap()
            .unwrap_err()
            .is_cancelled()
    );
    go.notify_one();
    let r = timeout(BOUND, joiner)
        .await
        .expect("joiner stranded")
        .unwrap();
    assert_eq!(r.unwrap(), Recovery::Joined(42));
    assert!(!line.is_recovering());
    assert_eq!(line.epoch().get(), 1);
}

/// Leaders dropped at every point (before first poll, mid-recovery) in a loop: the line never
/// stays "recovering" forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_leaders_at_random_points_never_wedges_the_line() {
    let line: Line<u32> = Line::builder()
        .recovery_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    for round in 0..50u32 {
        let seen = line.epoch();
        let fut = line.recover(seen, move || async move {
            if round % 3 == 0 {
                tokio::task::yield_now().await;
            }
            if round % 5 == 0 {
                panic!("round {round}");
            }
            round
        });
        if round % 2 == 0 {
            drop(fut);
        } else {
            let _ = timeout(Duration::from_micros(50), fut).await;
        }
        timeout(BOUND, line.wait_clear())
            .await
            .expect("line wedged");
    }
    assert!(!line.is_recovering());
}

// ---------------------------------------------------------------------------------------------
// 6. Credential.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_refreshes_once_for_many_concurrent_failures() {
    let token = Arc::new(AtomicU64::new(1));
    let refreshes = Arc::new(AtomicUsize::new(0));
    let auth = Credential::new(Line::new(), 0u64, {
        let (token, refreshes) = (token.clone(), refreshes.clone());
        move || {
            let (token, refreshes) = (token.clone(), refreshes.clone());
            async move {
                refreshes.fetch_add(1, SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, String>(token.load(SeqCst))
            }
        }
    });
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let (auth, token) = (auth.clone(), token.clone());
            tokio::spawn(async move {
                auth.call(
                    |t| {
                        let token = token.clone();
                        async move {
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
    assert_eq!(refreshes.load(SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_refresh_failing_or_panicking_reaches_callers_and_does_not_wedge() {
    let mode = Arc::new(AtomicUsize::new(0));
    let auth = Credential::new(
        Line::builder()
            .recovery_timeout(Duration::from_millis(100))
            .build()
            .unwrap(),
        0u64,
        {
            let mode = mode.clone();
            move || {
                let mode = mode.load(SeqCst);
                async move {
                    match mode {
                        0 => Err("refused".to_string()),
                        1 => panic!("refresh boom"),
                        2 => pending().await,
                        _ => Ok(7u64),
                    }
                }
            }
        },
    );
    let request = |t: u64| async move { if t == 7 { Ok(t) } else { Err(401u16) } };
    let r = timeout(BOUND, auth.call(request, |s| *s == 401))
        .await
        .unwrap();
    assert_eq!(r, Err(CallError::Refresh("refused".to_string())));
    mode.store(1, SeqCst);
    let r = timeout(BOUND, auth.call(request, |s| *s == 401))
        .await
        .unwrap();
    assert!(
        matches!(&r, Err(CallError::Recovery(e)) if e.is_panic()),
        "{r:?}"
    );
    mode.store(2, SeqCst);
    let r = timeout(BOUND, auth.call(request, |s| *s == 401))
        .await
        .unwrap();
    assert!(
        matches!(&r, Err(CallError::Recovery(e)) if e.is_timeout()),
        "{r:?}"
    );
    mode.store(3, SeqCst);
    let r = timeout(BOUND, auth.call(request, |s| *s == 401))
        .await
        .unwrap();
    assert_eq!(r, Ok(7));
    assert_eq!(auth.current(), 7);
    assert!(!auth.line().is_recovering());
}

#[tokio::test(start_paused = true)]
async fn credential_attempts_extremes() {
    // attempts(0) is documented to panic (not a builder, so no error to return).
    let made = std::panic::catch_unwind(|| {
        Credential::new(Line::new(), 0u64, || async { Ok::<_, ()>(1) }).attempts(0)
    });
    assert!(made.is_err(), "attempts(0) is documented to panic");
    // attempts(usize::MAX): refreshes until the request succeeds, no overflow.
    let n = Arc::new(AtomicU64::new(0));
    let auth = Credential::new(Line::new(), 0u64, {
        let n = n.clone();
        move || {
            let n = n.clone();
            async move { Ok::<_, ()>(n.fetch_add(1, SeqCst) + 1) }
        }
    })
    .attempts(usize::MAX);
    let r = auth
        .call(
            |t| async move { if t >= 50 { Ok(t) } else { Err(401u16) } },
            |s| *s == 401,
        )
        .await;
    assert_eq!(r, Ok(50));
    // attempts(1): never refreshes.
    let auth1 = auth.clone().attempts(1);
    let r = auth1
        .call(|_| async { Err::<u8, u16>(401) }, |s| *s == 401)
        .await;
    assert_eq!(r, Err(CallError::Request(401)));
    assert_eq!(auth.line().epoch().get(), 50);
}

/// A panic payload whose destructor panics too.
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("payload drop panics");
        }
    }
}

/// A recovery panics with a payload that panics when dropped: nobody hangs, the line is free
/// and usable afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_panic_payload_that_panics_on_drop_strands_nobody() {
    let line: Line<u32> = Line::new();
    let r = timeout(
        BOUND,
        line.recover(line.epoch(), || async {
            std::panic::panic_any(PanicOnDrop)
        }),
    )
    .await
    .expect("leader hung");
    assert!(r.is_err(), "{r:?}");
    timeout(BOUND, line.wait_clear())
        .await
        .expect("line wedged");
    assert!(!line.is_recovering());
    assert_eq!(
        line.recover(line.epoch(), || async { 1 }).await.unwrap(),
        Recovery::Led(1)
    );
}

/// The same recovery, as the leader sees it: the documented outcome of a panicking recovery is
/// a `TaskError` that `is_panic()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_panic_payload_that_panics_on_drop_is_reported_as_a_panic() {
    let line: Line<u32> = Line::new();
    let r = timeout(
        BOUND,
        line.recover(line.epoch(), || async {
            std::panic::panic_any(PanicOnDrop)
        }),
    )
    .await
    .unwrap();
    assert!(r.as_ref().is_err_and(|e| e.is_panic()), "{r:?}");
}

/// Starts a recovery on `line` that runs until `release` is notified; returns once it runs.
async fn hold_recovery(line: &Line<()>, release: Arc<Notify>) -> tokio::task::JoinHandle<()> {
    let started = Arc::new(Notify::new());
    let task = tokio::spawn({
        let (line, started) = (line.clone(), started.clone());
        async move {
            let _ = line
                .recover(line.epoch(), move || async move {
                    started.notify_one();
                    release.notified().await;
                })
                .await;
        }
    });
    timeout(BOUND, started.notified()).await.unwrap();
    assert!(line.is_recovering());
    task
}

/// A queue paused on two lines. The runner waits for the lines one after the other and does
/// not look at the first again after the second clears: if the first started a recovery while
/// the runner waited for the second, the operation starts during that recovery, which
/// `pause_while_recovering` promises never happens. On one thread, so that the runner is known
/// to be waiting at the gates at each step.
#[tokio::test]
async fn two_gating_lines_no_operation_starts_during_either_recovery() {
    let first: Line<()> = Line::new();
    let second: Line<()> = Line::new();
    let queue = OperationQueue::builder()
        .runners(1)
        .pause_while_recovering(&first)
        .pause_while_recovering(&second)
        .build()
        .unwrap();
    let release_second = Arc::new(Notify::new());
    let second_task = hold_recovery(&second, release_second.clone()).await;
    let started_during = Arc::new(AtomicUsize::new(usize::MAX));
    let op = queue
        .submit({
            let (first, started_during) = (first.clone(), started_during.clone());
            async move { started_during.store(first.is_recovering() as usize, SeqCst) }
        })
        .await
        .unwrap();
    // The runner runs (this task yields to it), passes the first (clear) gate and waits on the
    // second.
    support::settle().await;
    let release_first = Arc::new(Notify::new());
    let first_task = hold_recovery(&first, release_first.clone()).await;
    release_second.notify_one();
    timeout(BOUND, second_task).await.unwrap().unwrap();
    // The runner, woken by the second line's end, runs again. The first line still recovers:
    // the operation must not have started.
    support::settle().await;
    assert_eq!(
        started_during.load(SeqCst),
        usize::MAX,
        "the operation started while the first line was recovering"
    );
    release_first.notify_one();
    timeout(BOUND, first_task).await.unwrap().unwrap();
    timeout(BOUND, op).await.unwrap().unwrap();
    // It ran once both lines were clear.
    assert_eq!(started_during.load(SeqCst), 0);
}
