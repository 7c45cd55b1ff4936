//! SingleFlight behaviour, including the failure paths of the flight core: a cancelled, parked,
//! failing and panicking leader. Paused clock; ordering by oneshot handshakes.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use futures_util::future::join_all;
use herder::SingleFlight;
use support::poll_once;
use tokio::sync::{Notify, oneshot};

/// A remote call that counts itself and waits until the test opens its gate.
#[derive(Clone, Default)]
struct Remote {
    calls: Arc<AtomicUsize>,
    gate: Arc<Notify>,
}

impl Remote {
    fn call(
        &self,
        value: &'static str,
    ) -> impl FnOnce() -> futures_util::future::BoxFuture<'static, String> + Send + 'static {
        let remote = self.clone();
        move || {
            Box::pin(async move {
                remote.calls.fetch_add(1, SeqCst);
                remote.gate.notified().await;
                value.to_owned()
            })
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(SeqCst)
    }
}

/// The seed scenario: eight concurrent requests for two keys, two remote calls, and every caller
/// of a key sees the same value.
#[tokio::test(start_paused = true)]
async fn eight_requests_for_two_keys_make_two_remote_calls() {
    let flights = SingleFlight::new();
    let remote = Remote::default();
    let requests: Vec<_> = (0..8)
        .map(|i| {
            let flights = flights.clone();
            let key = if i % 2 == 0 { "user:1" } else { "user:2" };
            let call = remote.call(if i % 2 == 0 { "alice" } else { "bob" });
            tokio::spawn(async move { (key, flights.run(key, call).await.unwrap()) })
        })
        .collect();
    // Wait until both remote calls are in progress and all eight callers are registered.
    while remote.calls() < 2 || flights.stats().started + flights.stats().joined < 8 {
        tokio::task::yield_now().await;
    }
    remote.gate.notify_waiters();
    for request in requests {
        let (key, value) = request.await.unwrap();
        assert_eq!(value, if key == "user:1" { "alice" } else { "bob" });
    }
    assert_eq!(remote.calls(), 2);
    let stats = flights.stats();
    assert_eq!((stats.started, stats.joined, stats.in_flight), (2, 6, 0));
}

#[tokio::test(start_paused = true)]
async fn a_later_call_runs_the_work_again() {
    let flights = SingleFlight::new();
    let calls = Arc::new(AtomicUsize::new(0));
    for expected in 1..=3 {
        let calls = calls.clone();
        let n = flights
            .run("k", move || async move { calls.fetch_add(1, SeqCst) + 1 })
            .await;
        assert_eq!(n.unwrap(), expected);
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_reaches_every_waiter_as_an_error() {
    let flights = SingleFlight::<u8, u8>::new();
    let (go, wait) = oneshot::channel::<()>();
    let mut callers = vec![tokio::spawn({
        let flights = flights.clone();
        async move {
            flights
                .run(1, move || async move {
                    wait.await.unwrap();
                    panic!("remote returned garbage")
                })
                .await
        }
    })];
    for _ in 0..3 {
        let flights = flights.clone();
        callers.push(tokio::spawn(async move {
            flights.run(1, || async { unreachable!() }).await
        }));
    }
    while flights.stats().started + flights.stats().joined < 4 {
        tokio::task::yield_now().await;
    }
    go.send(()).unwrap();
    for caller in callers {
        let result = caller.await.unwrap();
        let err = result.unwrap_err();
        assert!(err.is_panic());
        assert_eq!(err.panic_message(), Some("remote returned garbage"));
    }
    assert_eq!(flights.stats().panicked, 1);
    assert_eq!(flights.in_flight(), 0);
    // The panic is not remembered.
    assert_eq!(flights.run(1, || async { 5 }).await.unwrap(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_panic_while_building_the_future_is_caught_too() {
    let flights = SingleFlight::<u8, u8>::new();
    let err = flights
        .run(1, || -> std::future::Ready<u8> { panic!("bad closure") })
        .await
        .unwrap_err();
    assert_eq!(err.panic_message(), Some("bad closure"));
    assert_eq!(flights.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failing_work_shares_its_error_with_one_call() {
    let flights = SingleFlight::<u8, Result<u8, Arc<String>>>::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let (go, wait) = oneshot::channel::<()>();
    let work = {
        let calls = calls.clone();
        move || async move {
            calls.fetch_add(1, SeqCst);
            wait.await.unwrap();
            Err(Arc::new("connection refused".to_owned()))
        }
    };
    let mut leader = Box::pin(flights.run(1, work));
    assert!(poll_once(&mut leader).await);
    let followers = join_all((0..9).map(|_| flights.run(1, || async { Ok(0) })));
    let mut followers = Box::pin(followers);
    assert!(poll_once(&mut followers).await);
    go.send(()).unwrap();
    let leader = leader.await.unwrap().unwrap_err();
    for follower in followers.await {
        assert!(Arc::ptr_eq(&follower.unwrap().unwrap_err(), &leader));
    }
    assert_eq!(calls.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_leader_does_not_stop_the_work_or_fail_the_followers() {
    let flights = SingleFlight::new();
    let remote = Remote::default();
    let mut leader = Box::pin(flights.run("k", remote.call("value")));
    assert!(poll_once(&mut leader).await);
    let mut follower = Box::pin(flights.run("k", remote.call("other")));
    assert!(poll_once(&mut follower).await);
    drop(leader);
    while remote.calls() == 0 {
        tokio::task::yield_now().await;
    }
    remote.gate.notify_waiters();
    assert_eq!(follower.await.unwrap(), "value");
    assert_eq!(remote.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_work_finishes_when_every_caller_has_gone() {
    let flights = SingleFlight::new();
    let (done_tx, done_rx) = oneshot::channel();
    let (go, wait) = oneshot::channel::<()>();
    let mut only = Box::pin(flights.run(1, move || async move {
        wait.await.unwrap();
        done_tx.send(()).unwrap();
        7
    }));
    assert!(poll_once(&mut only).await);
    drop(only);
    go.send(()).unwrap();
    done_rx.await.expect("the work was dropped with its caller");
    tokio::task::yield_now().await;
    assert_eq!(flights.in_flight(), 0);
}

/// moka #240's shape: the leader is polled once and then never again.
#[tokio::test(start_paused = true)]
async fn a_parked_leader_does_not_block_the_followers() {
    let flights = SingleFlight::new();
    let mut parked = Box::pin(flights.run("k", || async { 42 }));
    assert!(poll_once(&mut parked).await);
    // `parked` is kept alive but never polled again.
    assert_eq!(flights.run("k", || async { 0 }).await.unwrap(), 42);
    drop(parked);
}

/// Sets its flag when dropped: shows whether the work was aborted.
struct DropFlag(Arc<AtomicUsize>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn abort_unused_stops_the_work_once_no_caller_is_left() {
    let flights = SingleFlight::<u8, u8>::builder().abort_unused(true).build();
    let dropped = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(Notify::new());
    let work = {
        let dropped = dropped.clone();
        let started = started.clone();
        move || async move {
            let _flag = DropFlag(dropped);
            started.notify_one();
            std::future::pending::<u8>().await
        }
    };
    let mut a = Box::pin(flights.run(1, work));
    let mut b = Box::pin(flights.run(1, || async { unreachable!() }));
    assert!(poll_once(&mut a).await);
    assert!(poll_once(&mut b).await);
    started.notified().await;

    drop(a);
    tokio::task::yield_now().await;
    assert_eq!(
        dropped.load(SeqCst),
        0,
        "aborted while a caller was still waiting"
    );
    assert_eq!(flights.in_flight(), 1);

    drop(b);
    assert_eq!(
        flights.in_flight(),
        0,
        "the flight must be gone as soon as the last caller leaves"
    );
    while dropped.load(SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(flights.stats().cancelled, 1);

    // A newer caller starts fresh work rather than joining the aborted one.
    assert_eq!(flights.run(1, || async { 9 }).await.unwrap(), 9);
    assert_eq!(flights.stats().started, 2);
}

#[tokio::test(start_paused = true)]
async fn without_abort_unused_the_flight_outlives_its_callers() {
    let flights = SingleFlight::<u8, u8>::new();
    let (go, wait) = oneshot::channel::<()>();
    let mut a = Box::pin(flights.run(1, move || async move {
        wait.await.unwrap();
        3
    }));
    assert!(poll_once(&mut a).await);
    drop(a);
    // A new caller joins the flight that is still running.
    let mut b = Box::pin(flights.run(1, || async { 4 }));
    assert!(poll_once(&mut b).await);
    go.send(()).unwrap();
    assert_eq!(b.await.unwrap(), 3);
    assert_eq!(flights.stats().joined, 1);
}

#[tokio::test(start_paused = true)]
async fn forget_starts_new_work_while_old_callers_keep_the_old_output() {
    let flights = SingleFlight::new();
    let (go, wait) = oneshot::channel::<()>();
    let mut old = Box::pin(flights.run("cfg", move || async move {
        wait.await.unwrap();
        "old"
    }));
    assert!(poll_once(&mut old).await);
    assert!(flights.forget(&"cfg"));
    assert!(!flights.forget(&"cfg"));
    assert_eq!(flights.run("cfg", || async { "new" }).await.unwrap(), "new");
    go.send(()).unwrap();
    assert_eq!(old.await.unwrap(), "old");
    assert_eq!(flights.in_flight(), 0);
}

#[test]
fn a_flight_whose_runtime_shuts_down_fails_its_waiters() {
    let flights = SingleFlight::<u8, u8>::new();
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut waiting = Box::pin(flights.run(1, std::future::pending));
    first.block_on(async {
        assert!(poll_once(&mut waiting).await);
    });
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = second.block_on(waiting).unwrap_err();
    assert!(err.is_cancelled());
    assert_eq!(flights.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_on_many_threads_share_one_execution() {
    let flights = SingleFlight::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let flights = flights.clone();
            let calls = calls.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                flights
                    .run("hot", move || async move {
                        calls.fetch_add(1, SeqCst);
                        gate.notified().await;
                        1u32
                    })
                    .await
            })
        })
        .collect();
    while flights.stats().started + flights.stats().joined < 200 {
        tokio::task::yield_now().await;
    }
    // One execution, so one permit: stored if the work has not reached its wait yet.
    gate.notify_one();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 1);
    }
    assert_eq!(calls.load(SeqCst), 1);
    assert_eq!(flights.in_flight(), 0);
}
