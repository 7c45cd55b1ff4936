//! Adversarial tests of `SingleFlight`: one execution per key under a crowd, a cancelled,
//! panicking or parked leader, `forget`, `abort_unused`, and a key reused right after completion.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use herder::SingleFlight;
use support::{Gate, until};

const BOUND: Duration = Duration::from_secs(3);

async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(BOUND, fut).await {
        Ok(value) => value,
        Err(_) => panic!("hung: {what}"),
    }
}

/// Sets a flag when dropped: tells whether the work future was dropped (aborted) unfinished.
struct Dropped(Arc<AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_shares_one_execution() {
    let flights: SingleFlight<u32, u32> = SingleFlight::new();
    let gate = Gate::default();
    let runs: Vec<_> = (0..100)
        .map(|_| {
            let (flights, gate) = (flights.clone(), gate.clone());
            tokio::spawn(async move {
                flights
                    .run(1, move || async move {
                        gate.pass().await;
                        42
                    })
                    .await
            })
        })
        .collect();
    until("every caller joined", || {
        let s = flights.stats();
        s.started + s.joined == 100
    })
    .await;
    gate.open(100);
    for run in runs {
        assert_eq!(bounded("run", run).await.unwrap().unwrap(), 42);
    }
    let stats = flights.stats();
    assert_eq!((gate.calls(), stats.started, stats.joined), (1, 1, 99));
    assert_eq!(flights.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_or_parked_leader_strands_nobody() {
    let flights: SingleFlight<u32, u32> = SingleFlight::new();
    let gate = Gate::default();
    let leader = tokio::spawn({
        let (flights, gate) = (flights.clone(), gate.clone());
        async move {
            flights
                .run(1, move || async move {
                    gate.pass().await;
                    7
                })
                .await
        }
    });
    until("the work runs", || gate.calls() == 1).await;
    // A parked caller: joined, never polled again.
    let mut parked = Box::pin(flights.run(1, || async { unreachable!("joined") }));
    assert!(support::poll_once(&mut parked).await);
    let follower = tokio::spawn({
        let flights = flights.clone();
        async move { flights.run(1, || async { unreachable!("joined") }).await }
    });
    until("both joined", || flights.stats().joined == 2).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    gate.open(1);
    assert_eq!(bounded("follower", follower).await.unwrap().unwrap(), 7);
    assert_eq!(bounded("parked", parked).await.unwrap(), 7);
    assert_eq!(gate.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_reaches_every_caller_and_the_next_call_runs_again() {
    let flights: SingleFlight<u32, u32> = SingleFlight::new();
    let gate = Gate::default();
    let leader = tokio::spawn({
        let (flights, gate) = (flights.clone(), gate.clone());
        async move {
            flights
                .run(1, move || async move {
                    gate.pass().await;
                    panic!("work exploded");
                })
                .await
        }
    });
    until("the work runs", || gate.calls() == 1).await;
    let follower = tokio::spawn({
        let flights = flights.clone();
        async move { flights.run(1, || async { unreachable!("joined") }).await }
    });
    until("joined", || flights.stats().joined == 1).await;
    gate.open(1);
    for run in [leader, follower] {
        let err = bounded("run", run).await.unwrap().unwrap_err();
        assert_eq!(err.panic_message(), Some("work exploded"));
    }
    assert_eq!(flights.stats().panicked, 1);
    assert_eq!(flights.in_flight(), 0);
    assert_eq!(flights.run(1, || async { 8 }).await.unwrap(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_starts_new_work_and_the_old_callers_keep_theirs() {
    let flights: SingleFlight<u32, u32> = SingleFlight::builder().abort_unused(true).build();
    let gate = Gate::default();
    let dropped = Arc::new(AtomicUsize::new(0));
    let old = tokio::spawn({
        let (flights, gate, dropped) = (flights.clone(), gate.clone(), dropped.clone());
        async move {
            flights
                .run(1, move || async move {
                    let _guard = Dropped(dropped);
                    gate.pass().await;
                    1
                })
                .await
        }
    });
    until("the old work runs", || gate.calls() == 1).await;
    assert!(flights.forget(&1));
    assert!(!flights.forget(&1), "nothing left to forget");
    let new = tokio::spawn({
        let (flights, gate) = (flights.clone(), gate.clone());
        async move {
            flights
                .run(1, move || async move {
                    gate.pass().await;
                    2
                })
                .await
        }
    });
    until("the new work runs", || gate.calls() == 2).await;
    // The old flight's last caller leaves: its work is aborted, the new one is untouched.
    old.abort();
    let _ = old.await;
    until("the old work is aborted", || dropped.load(SeqCst) == 1).await;
    gate.open(1);
    assert_eq!(bounded("new", new).await.unwrap().unwrap(), 2);
    let stats = flights.stats();
    assert_eq!((stats.started, stats.cancelled), (2, 1), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_unused_stops_work_nobody_waits_for_and_the_next_caller_starts_fresh() {
    let flights: SingleFlight<u32, u32> = SingleFlight::builder().abort_unused(true).build();
    let gate = Gate::default();
    let dropped = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..3)
        .map(|_| {
            let (flights, gate, dropped) = (flights.clone(), gate.clone(), dropped.clone());
            tokio::spawn(async move {
                flights
                    .run(1, move || async move {
                        let _guard = Dropped(dropped);
                        gate.pass().await;
                        1
                    })
                    .await
            })
        })
        .collect();
    until("all joined", || {
        let s = flights.stats();
        s.started + s.joined == 3 && gate.calls() == 1
    })
    .await;
    for caller in callers {
        caller.abort();
        let _ = caller.await;
    }
    until("the work is aborted", || dropped.load(SeqCst) == 1).await;
    until("the flight is gone", || flights.in_flight() == 0).await;
    assert_eq!(flights.stats().cancelled, 1);
    gate.open(1);
    assert_eq!(
        bounded("fresh", flights.run(1, || async { 9 }))
            .await
            .unwrap(),
        9
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_right_after_completion_runs_again() {
    let flights: SingleFlight<u32, u32> = SingleFlight::new();
    let calls = Arc::new(AtomicUsize::new(0));
    for round in 0..200u32 {
        let calls = calls.clone();
        let v = bounded(
            "run",
            flights.run(1, move || async move {
                calls.fetch_add(1, SeqCst);
                round
            }),
        )
        .await
        .unwrap();
        assert_eq!(v, round, "a finished flight answered a later call");
    }
    assert_eq!(calls.load(SeqCst), 200);
    assert_eq!(flights.stats().started, 200);
}
