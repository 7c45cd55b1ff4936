//! The failure modes of the peers that the README's comparison table states, checked against the
//! versions in `Cargo.lock` (if a peer fixes one, this test fails and the table must change),
//! next to herder's behaviour in the same scenario.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// async-graphql 7: a loader that panics takes down every caller of the batch with a panic
/// (the batch task dies, its result channel closes, and `load_one` unwraps the closed channel).
#[tokio::test]
async fn async_graphql_turns_a_loader_panic_into_caller_panics() {
    struct Panics;
    impl async_graphql::dataloader::Loader<u64> for Panics {
        type Value = u64;
        type Error = Arc<str>;
        async fn load(&self, _: &[u64]) -> Result<HashMap<u64, u64>, Self::Error> {
            panic!("loader bug")
        }
    }
    let loader = Arc::new(async_graphql::dataloader::DataLoader::new(
        Panics,
        tokio::spawn,
    ));
    let caller = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load_one(1).await }
    });
    assert!(caller.await.unwrap_err().is_panic());
}

#[tokio::test]
async fn herder_turns_a_loader_panic_into_an_error() {
    struct Panics;
    impl herder::Loader for Panics {
        type Key = u64;
        type Value = u64;
        type Error = std::convert::Infallible;
        async fn load(&self, _: &[u64]) -> Result<HashMap<u64, u64>, Self::Error> {
            panic!("loader bug")
        }
    }
    let loader = herder::DataLoader::new(Panics);
    let caller = tokio::spawn(async move { loader.load(1).await });
    assert!(caller.await.unwrap().unwrap_err().is_panic());
}

/// A batch function that parks until released and records which task runs it.
#[derive(Clone, Default)]
struct Parked {
    runner: Arc<Mutex<Option<tokio::task::Id>>>,
    keys: Arc<Mutex<Vec<u64>>>,
    entered: Arc<Notify>,
    release: Arc<Notify>,
}

impl dataloader::BatchFn<u64, u64> for Parked {
    async fn load(&mut self, keys: &[u64]) -> HashMap<u64, u64> {
        *self.runner.lock().unwrap() = tokio::task::try_id();
        *self.keys.lock().unwrap() = keys.to_vec();
        self.entered.notify_one();
        self.release.notified().await;
        keys.iter().map(|k| (*k, *k)).collect()
    }
}

/// dataloader 0.18 runs the batch inside whichever caller gets there first; cancelling that
/// caller mid-load leaves the other caller of the batch without its result, and it panics
/// (`expect("failed")` in `non_cached.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataloader_strands_the_batch_when_the_loading_caller_is_cancelled() {
    // The two callers must land in one batch; on a busy machine the second may come after the
    // first's batch started (then it has a batch of its own): such a round proves nothing and
    // is run again.
    for _ in 0..20 {
        let batch = Parked::default();
        let loader = dataloader::non_cached::Loader::new(batch.clone());
        let spawn = |key| {
            let loader = loader.clone();
            tokio::spawn(async move { loader.try_load(key).await })
        };
        let (a, b) = (spawn(1), spawn(2));
        batch.entered.notified().await;
        let mut keys = batch.keys.lock().unwrap().clone();
        keys.sort_unstable();
        if keys != [1, 2] {
            a.abort();
            b.abort();
            continue;
        }
        let runner = batch
            .runner
            .lock()
            .unwrap()
            .expect("the batch runs inside a caller task");
        let (running, other) = if a.id() == runner { (a, b) } else { (b, a) };
        running.abort();
        assert!(running.await.unwrap_err().is_cancelled());
        batch.release.notify_one();
        let outcome = other.await;
        assert!(matches!(&outcome, Err(e) if e.is_panic()), "{outcome:?}");
        return;
    }
    panic!("the two callers never landed in one batch in 20 rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herder_finishes_the_batch_when_the_caller_that_opened_it_is_cancelled() {
    /// Signals each load's start; every load waits until the test adds permits.
    #[derive(Clone)]
    struct Gate(Arc<Notify>, Arc<tokio::sync::Semaphore>);
    impl herder::Loader for Gate {
        type Key = u64;
        type Value = u64;
        type Error = std::convert::Infallible;
        async fn load(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, Self::Error> {
            self.0.notify_one();
            let _permit = self.1.acquire().await.unwrap();
            Ok(keys.iter().map(|k| (*k, *k)).collect())
        }
    }
    let gate = Gate(Arc::default(), Arc::new(tokio::sync::Semaphore::new(0)));
    let loader = herder::DataLoader::new(gate.clone());
    let spawn = |key| {
        let loader = loader.clone();
        tokio::spawn(async move { loader.load(key).await })
    };
    let (a, b) = (spawn(1), spawn(2));
    gate.0.notified().await;
    a.abort();
    gate.1.add_permits(2);
    assert_eq!(b.await.unwrap().unwrap(), Some(2));
}

/// async_singleflight 0.6: the work runs inside the leader's future, so cancelling the leader
/// drops the work, and a follower starts it again: two executions for one key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_singleflight_restarts_the_work_when_the_leader_is_cancelled() {
    let group = Arc::new(async_singleflight::Group::<String, u64, ()>::new());
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let entered = Arc::new(Notify::new());
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let call = |group: Arc<async_singleflight::Group<String, u64, ()>>| {
        let (runs, entered, release) = (runs.clone(), entered.clone(), release.clone());
        tokio::spawn(async move {
            group
                .work("key", async move {
                    runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    entered.notify_one();
                    let _permit = release.acquire().await.unwrap();
                    Ok(7)
                })
                .await
        })
    };
    let leader = call(group.clone());
    entered.notified().await;
    let follower = call(group.clone());
    tokio::task::yield_now().await;
    leader.abort();
    let _ = leader.await;
    release.add_permits(10);
    assert_eq!(follower.await.unwrap(), Ok(7));
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herder_keeps_the_work_when_the_leader_is_cancelled() {
    let flights = herder::SingleFlight::<&str, u64>::new();
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let entered = Arc::new(Notify::new());
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let call = |flights: herder::SingleFlight<&'static str, u64>| {
        let (runs, entered, release) = (runs.clone(), entered.clone(), release.clone());
        tokio::spawn(async move {
            flights
                .run("key", move || async move {
                    runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    entered.notify_one();
                    let _permit = release.acquire().await.unwrap();
                    7
                })
                .await
        })
    };
    let leader = call(flights.clone());
    entered.notified().await;
    let follower = call(flights.clone());
    while flights.stats().joined == 0 {
        tokio::task::yield_now().await;
    }
    leader.abort();
    let _ = leader.await;
    release.add_permits(10);
    assert_eq!(follower.await.unwrap().unwrap(), 7);
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
}
