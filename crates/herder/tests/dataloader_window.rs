//! DataLoader regressions of issue 10: the batching window on every thread, no lingering window
//! task, a loader that panics while building its future, the load timeout, settings.
//!
//! The multi-thread tests poll from the test body, which is the `block_on` thread (where the
//! lost wake-up lived); they count batches and fallback closes, never times.

mod support;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use futures_util::future::join_all;
use herder::{DataLoader, Loader};
use support::{BackendDown, Instant, Reply, gated, poll_once, settle};

/// Tasks alive on the current runtime (the test body itself is not one).
fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Issue 10 §1: the window task woke the opener before the opener had registered its waker, so
/// a lone load polled from the `block_on` thread waited out the 200 ms fallback timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_load_on_the_block_on_thread_is_not_closed_by_the_fallback_timer() {
    let backend = Instant::default();
    let loader = DataLoader::new(backend.clone());
    // Workers kept awake pick the window task up at once: that is when the wake was lost
    // (before the fix, about one load in a few hundred).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = tokio::spawn({
        let stop = stop.clone();
        async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::task::yield_now().await;
            }
        }
    });
    for key in 0..5000 {
        assert_eq!(loader.load(key).await.unwrap(), Some(key * 10));
        if loader.stats().unattended_windows > 0 {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.await.unwrap();
    let stats = loader.stats();
    assert_eq!(stats.unattended_windows, 0, "{stats:?}");
    assert_eq!(stats.batches, 5000);
}

/// Issue 10 §1: two dependent levels of 100 loads polled from the `block_on` thread land in
/// exactly two batches, every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_levels_from_the_block_on_thread_make_exactly_two_batches_every_round() {
    for round in 0..300 {
        let backend = Instant::default();
        let loader = DataLoader::new(backend.clone());
        let first = join_all((0..100).map(|k| loader.load(k))).await;
        let second = join_all(
            first
                .iter()
                .map(|v| loader.load(v.as_ref().unwrap().unwrap() + 1)),
        )
        .await;
        assert!(second.iter().all(Result::is_ok));
        assert_eq!(backend.calls(), 2, "round {round}: {:?}", backend.batches());
        assert_eq!(loader.stats().unattended_windows, 0, "round {round}");
    }
}

/// The same from a spawned task (a worker thread), and a `load_many` opener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_levels_on_a_worker_and_load_many_openers_make_exactly_two_batches() {
    for round in 0..300 {
        let backend = Instant::default();
        let loader = DataLoader::new(backend.clone());
        let calls = tokio::spawn({
            let loader = loader.clone();
            async move {
                let first = join_all((0..50).map(|k| loader.load_many([k, k + 50]))).await;
                let keys: Vec<u64> = first
                    .iter()
                    .map(|m| m.as_ref().unwrap().len() as u64)
                    .collect();
                let second = join_all(keys.iter().map(|k| loader.load(k + 1000))).await;
                assert!(second.iter().all(Result::is_ok));
            }
        });
        calls.await.unwrap();
        assert_eq!(backend.calls(), 2, "round {round}: {:?}", backend.batches());
        assert_eq!(loader.stats().unattended_windows, 0, "round {round}");
    }
}

/// Loads spread over spawned tasks batch while the runtime keeps running tasks that add keys;
/// with a memo each key reaches the loader once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_fan_out_with_a_memo_loads_each_key_once() {
    let backend = Instant::default();
    let loader = DataLoader::builder(backend.clone())
        .memo(true)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..20_000u64)
        .map(|i| {
            let loader = loader.clone();
            tokio::spawn(async move { loader.load(i % 2_000).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap().unwrap(), Some((i as u64 % 2_000) * 10));
    }
    let stats = loader.stats();
    assert_eq!(stats.batched_keys, 2_000);
    assert_eq!(stats.in_flight, 0);
}

/// Issue 10 §2: a call that both opened and filled its batch left the window task waiting
/// 200 ms for a look that never came.
#[tokio::test(start_paused = true)]
async fn a_call_that_opens_and_fills_a_batch_leaves_no_window_task_behind() {
    let backend = Instant::default();
    let single = DataLoader::builder(backend.clone())
        .max_batch_size(1)
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(single.load(1).await.unwrap(), Some(10));
    settle().await;
    assert_eq!(alive_tasks(), 0);

    let exact = DataLoader::builder(backend.clone())
        .max_batch_size(4)
        .build()
        .unwrap();
    assert_eq!(exact.load_many([1, 2, 3, 4]).await.unwrap().len(), 4);
    settle().await;
    assert_eq!(alive_tasks(), 0);

    // Neither waited for a timer: the paused clock never moved.
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(backend.calls(), 2);
    assert_eq!(
        single.stats().unattended_windows + exact.stats().unattended_windows,
        0
    );
}

/// No window task outlives its batch in the ordinary case either: a yield window has no task,
/// and the loader's one janitor (the fallback for parked openers) retires after 5 s in which no
/// window opened, without ever closing a window its opener closes.
#[tokio::test(start_paused = true)]
async fn window_tasks_end_with_their_batch() {
    let backend = Instant::default();
    let loader = DataLoader::builder(backend.clone())
        .max_batch_size(10)
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let values = join_all((0..25).map(|k| loader.load(k))).await;
    assert!(values.iter().all(Result::is_ok));
    settle().await;
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "no timer closed a window"
    );
    assert_eq!(backend.calls(), 3);
    assert_eq!(alive_tasks(), 1, "the janitor");
    // It stays through a short quiet spell (a load after it spawns nothing), and retires after
    // 5 s without a window.
    tokio::time::sleep(Duration::from_millis(4_900)).await;
    settle().await;
    assert_eq!(alive_tasks(), 1, "the janitor, through 4.9 s of quiet");
    tokio::time::sleep(Duration::from_millis(300)).await;
    settle().await;
    assert_eq!(alive_tasks(), 0);
    assert_eq!(loader.stats().unattended_windows, 0);
}

/// A loader whose `load` asserts before building its future, as a hand-written
/// `fn load(..) -> impl Future` does.
#[derive(Clone, Default)]
struct PanicsWhileBuilding(Instant);

impl Loader for PanicsWhileBuilding {
    type Key = u64;
    type Value = u64;
    type Error = BackendDown;

    fn load(
        &self,
        keys: &[u64],
    ) -> impl Future<Output = Result<HashMap<u64, u64>, BackendDown>> + Send {
        assert!(!keys.contains(&13), "13 is unlucky");
        self.0.load(keys)
    }
}

/// Issue 10 §3: the panic was raised outside the catch, reported as `Cancelled`, and the run
/// guard failed the batches queued behind it.
#[tokio::test(start_paused = true)]
async fn a_loader_that_panics_while_building_its_future_fails_its_own_batch_as_a_panic() {
    let backend = PanicsWhileBuilding::default();
    let loader = DataLoader::builder(backend.clone())
        .max_batch_size(1)
        .max_concurrent_batches(1)
        .build()
        .unwrap();
    // Three batches of one key; the unlucky one runs first, the others queue behind it.
    let (unlucky, one, two) = tokio::join!(loader.load(13), loader.load(1), loader.load(2));
    let err = unlucky.unwrap_err();
    assert!(err.is_panic(), "{err:?}");
    assert_eq!(err.panic_message(), Some("13 is unlucky"));
    assert_eq!(one.unwrap(), Some(10));
    assert_eq!(two.unwrap(), Some(20));
    let stats = loader.stats();
    assert_eq!((stats.batches, stats.panics, stats.cancelled), (3, 1, 0));
    assert_eq!(stats.in_flight, 0);
    assert_eq!(backend.0.batches(), vec![vec![1], vec![2]]);
}

/// Issue 10 §4: a loader that never returns kept its keys in flight forever; the next load of
/// the key joined the hung batch again.
#[tokio::test(start_paused = true)]
async fn a_hung_loader_times_out_frees_its_keys_and_drops_the_late_result() {
    let (backend, mut calls) = gated();
    let loader = DataLoader::builder(backend.clone())
        .load_timeout(Duration::from_secs(5))
        .memo(true)
        .build()
        .unwrap();
    let mut first = Box::pin(loader.load(1));
    let mut joined = Box::pin(loader.load(1));
    assert!(poll_once(&mut first).await);
    assert!(poll_once(&mut joined).await);
    let hung = calls.next().await;
    let (first, joined) = tokio::join!(first, joined);
    assert!(first.unwrap_err().is_timeout());
    let err = joined.unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(err.to_string(), "load timed out after 5s");
    assert_eq!(loader.stats().in_flight, 0);
    assert_eq!(loader.stats().timeouts, 1);
    // The late answer goes nowhere: the call was dropped at the timeout.
    hung.reply(Reply::Values);
    assert_eq!(loader.stats().memoized, 0);

    // The key is free: the next load asks the loader again.
    let again = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(1).await }
    });
    calls.next().await.reply(Reply::Values);
    assert_eq!(again.await.unwrap().unwrap(), Some(10));
    assert_eq!(*backend.count.lock().unwrap(), 2);
}

/// Issue 10 §4: with `max_concurrent_batches(n)`, n hung batches stalled every key; at the
/// timeout their slots go to the batches queued behind them.
#[tokio::test(start_paused = true)]
async fn hung_batches_free_their_slot_at_the_timeout() {
    let (backend, mut calls) = gated();
    let loader = DataLoader::builder(backend.clone())
        .load_timeout(Duration::from_secs(1))
        .max_batch_size(1)
        .max_concurrent_batches(1)
        .build()
        .unwrap();
    let hung = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(1).await }
    });
    let _hung_call = calls.next().await; // held, never answered
    let queued = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(2).await }
    });
    let next = calls.next().await; // only once the hung batch timed out
    assert_eq!(next.keys, vec![2]);
    assert!(hung.await.unwrap().unwrap_err().is_timeout());
    next.reply(Reply::Values);
    assert_eq!(queued.await.unwrap().unwrap(), Some(20));
    let stats = loader.stats();
    assert_eq!((stats.batches, stats.timeouts, stats.in_flight), (2, 1, 0));
}

#[test]
fn a_zero_load_timeout_is_refused_by_build() {
    let err = DataLoader::builder(Instant::default())
        .load_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid DataLoader setting: load_timeout must be greater than zero"
    );
}

/// Every duration and size the builder accepts works: none overflows later.
#[tokio::test(start_paused = true)]
async fn the_largest_settings_the_builder_accepts_do_not_overflow() {
    let backend = Instant::default();
    let largest = DataLoader::builder(backend.clone())
        .load_timeout(Duration::MAX)
        .max_batch_size(usize::MAX)
        .max_concurrent_batches(usize::MAX)
        .build()
        .unwrap();
    assert_eq!(largest.load(1).await.unwrap(), Some(10));
    assert_eq!(largest.load_many([2, 3]).await.unwrap().len(), 2);

    // A window of `Duration::MAX` is far away, not an overflow: the paused clock gets there.
    let forever = DataLoader::builder(backend.clone())
        .delay(Duration::MAX)
        .load_timeout(Duration::MAX)
        .build()
        .unwrap();
    assert_eq!(forever.load(4).await.unwrap(), Some(40));
    assert_eq!(backend.calls(), 3);
}

/// Records the thread each call ran on.
#[derive(Clone, Default)]
struct Threads(std::sync::Arc<std::sync::Mutex<Vec<std::thread::ThreadId>>>);

impl Loader for Threads {
    type Key = u64;
    type Value = u64;
    type Error = BackendDown;

    async fn load(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, BackendDown> {
        self.0.lock().unwrap().push(std::thread::current().id());
        Ok(keys.iter().map(|k| (*k, k * 10)).collect())
    }
}

/// Issue 10 §1, the window driven by its opener: on the `block_on` thread a lone load closes
/// its window and runs its batch from its own poll (a loader that answers at once needs no
/// task and no other thread), and the janitor never closes a window its opener closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_load_on_the_block_on_thread_runs_its_batch_in_its_own_poll() {
    let backend = Threads::default();
    let loader = DataLoader::new(backend.clone());
    for key in 0..1000 {
        assert_eq!(loader.load(key).await.unwrap(), Some(key * 10));
    }
    let here = std::thread::current().id();
    let threads = backend.0.lock().unwrap().clone();
    assert_eq!(threads.len(), 1000);
    assert!(
        threads.iter().all(|t| *t == here),
        "a batch ran on another thread"
    );
    assert_eq!(loader.stats().unattended_windows, 0);
}

/// A parked opener (polled once on the `block_on` thread of a multi-thread runtime, then left
/// alone) does not strand a caller on a worker: the loader's janitor closes its window. Real
/// clock, bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_opener_on_the_block_on_thread_is_closed_by_the_janitor() {
    let backend = Instant::default();
    let loader = DataLoader::new(backend.clone());
    let mut parked = Box::pin(loader.load(1));
    assert!(poll_once(&mut parked).await);
    let other = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(2).await }
    });
    let answer = tokio::time::timeout(Duration::from_secs(5), other)
        .await
        .expect("the janitor closed the window");
    assert_eq!(answer.unwrap().unwrap(), Some(20));
    assert_eq!(backend.batches(), vec![vec![1, 2]]);
    assert_eq!(loader.stats().unattended_windows, 1);
    assert_eq!(parked.await.unwrap(), Some(10));
}

/// A batch whose first poll (in the poll of the caller that closed its window) does not finish
/// goes on as its own task: that caller, parked and then dropped, holds nothing up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_its_opener_started_goes_on_without_the_opener() {
    let (backend, mut calls) = gated();
    let loader = DataLoader::new(backend);
    let mut opener = Box::pin(loader.load(1));
    let joiner = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(1).await }
    });
    // Polled until its window closed and its batch reached the loader, which holds it.
    let call = loop {
        assert!(poll_once(&mut opener).await);
        if let Some(call) = calls.try_next() {
            break call;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(call.keys, vec![1]);
    // The joiner has asked (and joined the batch) before the batch answers: on a busy machine
    // its task may not have run yet, and it would then load key 1 in a batch of its own.
    tokio::time::timeout(Duration::from_secs(5), async {
        while loader.stats().requests < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the joiner never asked");
    // The opener is never polled again: the batch, now its own task, answers the joiner.
    call.reply(Reply::Values);
    let answer = tokio::time::timeout(Duration::from_secs(5), joiner)
        .await
        .expect("the batch went on without its opener");
    assert_eq!(answer.unwrap().unwrap(), Some(10));
    drop(opener);
    assert_eq!(loader.stats().unattended_windows, 0);
    assert_eq!(loader.stats().in_flight, 0);
}

/// The janitor runs on the runtime of the load that started it. When that runtime goes, a
/// window opened on another runtime is not failed with it, and the next lookup starts a janitor
/// there: a parked opener on the second runtime still does not strand a caller. Real clock,
/// bounded.
#[test]
fn a_janitor_gone_with_its_runtime_is_replaced_and_fails_no_other_runtime_s_window() {
    let backend = Instant::default();
    let loader = DataLoader::new(backend.clone());
    let first = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // The first runtime's load starts the janitor there, and keeps its busy period going.
    first.block_on(async { assert_eq!(loader.load(1).await.unwrap(), Some(10)) });
    let second = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut parked = Box::pin(loader.load(2));
    second.block_on(async { assert!(poll_once(&mut parked).await) });
    // The janitor goes with the first runtime; the second runtime's window stays open.
    drop(first);
    assert_eq!(loader.stats().cancelled, 0);
    let answer = second.block_on(async {
        let other = tokio::spawn({
            let loader = loader.clone();
            async move { loader.load(3).await }
        });
        tokio::time::timeout(Duration::from_secs(5), other).await
    });
    assert_eq!(
        answer
            .expect("a new janitor closed the window")
            .unwrap()
            .unwrap(),
        Some(30)
    );
    assert_eq!(backend.batches(), vec![vec![1], vec![2, 3]]);
    assert_eq!(loader.stats().unattended_windows, 1);
    assert_eq!(second.block_on(parked).unwrap(), Some(20));
}

/// A spawned fan-out holds one `Load` per task: when the window's state in it grew by 16 bytes
/// (a runtime handle and a loader handle), 100,000 spawned loads touched 28% more pages and
/// took about 20% longer. The opener's window state holds neither (the future has the loader,
/// the poll the runtime).
#[test]
fn a_load_future_stays_small() {
    let size = std::mem::size_of::<herder::batch::Load<'static, Instant>>();
    // 88 bytes before issue 10's opener-driven window, 104 with the bloated state, 80 now.
    assert!(size <= 80, "Load is {size} bytes");
}
