//! Adversarial tests of `DataLoader`: wake-ups from any thread, load timeouts, panics while
//! building the loader's future, settings at the edges, final invalidation, odd loader maps.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod support;

use std::collections::{HashMap, HashSet};
use std::future::{Future, pending};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use herder::{Cache, DataLoader, Loader};
use tokio::sync::Notify;
use tokio::time::{Instant, timeout};

const BOUND: Duration = Duration::from_secs(5);

/// A loader the test steers. Key `k` loads to `k * 1000 + version` (the version read when the
/// batch starts, like a row read from a database); keys ending in 99 are left out of the map and
/// the key 1_000_000, which nobody asks for, is always added. Keys in `hang` make their batch
/// never return; keys in `block` make it wait for `release` (after telling `started`), keys in
/// `build_panic` make `load` panic before it returns its future
/// and 666 fails the batch (10_013 panics inside the future).
#[derive(Clone, Default)]
struct Ctl {
    calls: Arc<Mutex<Vec<Vec<u64>>>>,
    version: Arc<AtomicU64>,
    hang: Arc<Mutex<HashSet<u64>>>,
    block: Arc<Mutex<HashSet<u64>>>,
    build_panic: Arc<Mutex<HashSet<u64>>>,
    started: Arc<Notify>,
    release: Arc<Notify>,
    yield_first: bool,
}

impl Ctl {
    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
    fn any_in(set: &Mutex<HashSet<u64>>, keys: &[u64]) -> bool {
        let set = set.lock().unwrap();
        keys.iter().any(|k| set.contains(k))
    }
}

impl Loader for Ctl {
    type Key = u64;
    type Value = u64;
    type Error = String;

    fn load(&self, keys: &[u64]) -> impl Future<Output = Result<HashMap<u64, u64>, String>> + Send {
        self.calls.lock().unwrap().push(keys.to_vec());
        if Self::any_in(&self.build_panic, keys) {
            panic!("panic while building the load");
        }
        let keys = keys.to_vec();
        let me = self.clone();
        async move {
            if me.yield_first {
                tokio::task::yield_now().await;
            }
            let version = me.version.load(SeqCst);
            if Self::any_in(&me.hang, &keys) {
                pending::<()>().await;
            }
            if Self::any_in(&me.block, &keys) {
                me.started.notify_one();
                me.release.notified().await;
            }
            if keys.contains(&666) {
                return Err("bad key 666".to_string());
            }
            if keys.contains(&10_013) {
                panic!("panic inside the load");
            }
            Ok(keys
                .iter()
                .filter(|k| **k % 100 != 99)
                .map(|k| (*k, k * 1000 + version))
                .chain([(1_000_000, 0)])
                .collect())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 7. No lost wake-ups, whatever thread polls.

/// Loads joined on the `block_on` thread of a hand-built multi-thread runtime: every round is
/// one batch, dispatched by its opener (no window left to the 100-200 ms fallback), and the
/// rounds finish far sooner than the fallback would allow.
#[test]
fn block_on_thread_rounds_batch_without_the_fallback() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ctl = Ctl::default();
    let loader = DataLoader::new(ctl.clone());
    let rounds = 60u64;
    let began = std::time::Instant::now();
    rt.block_on(async {
        for r in 0..rounds {
            let (a, b, c) = timeout(BOUND, async {
                tokio::join!(
                    loader.load(100 * r),
                    loader.load(100 * r + 1),
                    loader.load(100 * r + 2)
                )
            })
            .await
            .expect("round hung");
            assert_eq!(a.unwrap(), Some(100 * r * 1000));
            assert_eq!(b.unwrap(), Some((100 * r + 1) * 1000));
            assert_eq!(c.unwrap(), Some((100 * r + 2) * 1000));
        }
    });
    let took = began.elapsed();
    let s = loader.stats();
    assert_eq!(s.batches, rounds, "{s:?}");
    assert_eq!(s.unattended_windows, 0, "{s:?}");
    // The fallback would take at least 100 ms a round.
    assert!(
        took < Duration::from_millis(100) * rounds as u32 / 2,
        "{took:?}"
    );

    // Tasks spawned from the block_on thread (they go through the global queue).
    let loader = Arc::new(DataLoader::new(Ctl::default()));
    rt.block_on(async {
        let tasks: Vec<_> = (0..200u64)
            .map(|k| {
                let loader = loader.clone();
                tokio::spawn(async move { loader.load(k).await })
            })
            .collect();
        for (k, t) in tasks.into_iter().enumerate() {
            let v = timeout(BOUND, t)
                .await
                .expect("spawned load hung")
                .unwrap()
                .unwrap();
            assert_eq!(
                v,
                if k % 100 == 99 {
                    None
                } else {
                    Some(k as u64 * 1000)
                }
            );
        }
    });
    let s = loader.stats();
    assert_eq!(s.unattended_windows, 0, "{s:?}");
    assert_eq!(s.batched_keys, 200, "{s:?}");
}

#[test]
fn loads_polled_from_a_foreign_thread_in_the_runtime_context_complete() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    let loader = Arc::new(DataLoader::new(Ctl {
        yield_first: true,
        ..Ctl::default()
    }));
    let (tx, rx) = std::sync::mpsc::channel();
    let l2 = loader.clone();
    std::thread::spawn(move || {
        let _enter = handle.enter();
        for r in 0..20u64 {
            let (a, b) = support::park_block_on(futures_util::future::join(
                l2.load(2 * r),
                l2.load(2 * r + 1),
            ));
            tx.send((r, a.unwrap(), b.unwrap())).unwrap();
        }
    });
    for r in 0..20u64 {
        let (got, a, b) = rx
            .recv_timeout(BOUND)
            .expect("a load polled from a foreign thread hung");
        assert_eq!(
            (got, a, b),
            (r, Some(2 * r * 1000), Some((2 * r + 1) * 1000))
        );
    }
    let s = loader.stats();
    assert_eq!((s.batches, s.unattended_windows), (20, 0), "{s:?}");
    drop(rt);
}

/// The opener of a yield window is dropped after a second load joined its window: the second
/// load completes, in the same batch, without the fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_opener_hands_its_window_on() {
    let ctl = Ctl::default();
    let loader = DataLoader::new(ctl.clone());
    let mut opener = Box::pin(loader.load(1));
    let mut joiner = Box::pin(loader.load(2));
    assert!(
        std::future::poll_fn(|cx| Poll::Ready(opener.as_mut().poll(cx)))
            .await
            .is_pending()
    );
    assert!(
        std::future::poll_fn(|cx| Poll::Ready(joiner.as_mut().poll(cx)))
            .await
            .is_pending()
    );
    drop(opener);
    assert_eq!(timeout(BOUND, joiner).await.unwrap().unwrap(), Some(2000));
    let s = loader.stats();
    assert_eq!((s.batches, s.unattended_windows), (1, 0), "{s:?}");
    assert_eq!(ctl.calls.lock().unwrap()[0], vec![1, 2]);
}

// ---------------------------------------------------------------------------------------------
// 8. load_timeout.

#[tokio::test(start_paused = true)]
async fn hung_loader_times_out_frees_its_keys_and_its_slot() {
    let ctl = Ctl::default();
    ctl.hang.lock().unwrap().insert(1);
    let loader = DataLoader::builder(ctl.clone())
        .max_batch_size(1)
        .max_concurrent_batches(1)
        .load_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    // Key 1 hangs and holds the only slot; key 2 waits behind it.
    let (a, b, c) = tokio::join!(loader.load(1), loader.load(2), loader.load(1));
    assert!(a.unwrap_err().is_timeout());
    assert!(c.unwrap_err().is_timeout());
    assert_eq!(b.unwrap(), Some(2000));
    let s = loader.stats();
    assert_eq!((s.timeouts, s.in_flight), (1, 0), "{s:?}");
    // Key 1 is free: a later load calls the loader again.
    ctl.hang.lock().unwrap().clear();
    assert_eq!(loader.load(1).await.unwrap(), Some(1000));
    assert_eq!(ctl.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn many_hung_batches_with_a_concurrency_limit_do_not_stall_other_keys_forever() {
    let ctl = Ctl::default();
    ctl.hang.lock().unwrap().extend(0..10);
    let loader = DataLoader::builder(ctl.clone())
        .max_batch_size(1)
        .max_concurrent_batches(2)
        .load_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let began = Instant::now();
    let hung = futures_util::future::join_all((0..10).map(|k| loader.load(k)));
    let fine = futures_util::future::join_all((10..14).map(|k| loader.load(k)));
    let (hung, fine) = timeout(Duration::from_secs(60), async { tokio::join!(hung, fine) })
        .await
        .expect("stalled");
    assert!(hung.iter().all(|r| r.as_ref().unwrap_err().is_timeout()));
    assert!(fine.iter().all(|r| r.is_ok()));
    // 10 hung batches, 2 at a time, 1 s each: 5 s of (paused) time, then the rest.
    assert!(
        began.elapsed() <= Duration::from_secs(6),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(loader.stats().timeouts, 10);
}

/// A load timeout the builder accepts whose deadline is representable but within a
/// millisecond of the largest `Instant`: tokio's timer overflows rounding it up. The timeout
/// wraps the caught load, so the panic escapes the batch: into the task of the load that
/// opened it (the batch is first polled there).
#[tokio::test(start_paused = true)]
async fn load_timeout_near_instant_max_does_not_overflow_later() {
    let limit = support::near_max_after(Instant::now().into_std());
    let loader = Arc::new(
        DataLoader::builder(Ctl {
            yield_first: true,
            ..Ctl::default()
        })
        .load_timeout(limit)
        .build()
        .unwrap(),
    );
    let task = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(5).await }
    });
    let joined = timeout(BOUND, task).await.unwrap();
    assert!(
        matches!(&joined, Ok(Ok(Some(5000)))),
        "an accepted load_timeout must not fail the load: {joined:?}"
    );
}

/// A delay the builder accepts whose deadline is within a millisecond of the largest
/// `Instant`: the load waits for it (no overflow in the window's timer).
#[tokio::test(start_paused = true)]
async fn delay_near_instant_max_does_not_overflow_later() {
    let limit = support::near_max_after(Instant::now().into_std());
    let loader = DataLoader::builder(Ctl::default())
        .delay(limit)
        .build()
        .unwrap();
    // Nothing fills the batch: it must still be waiting for its delay one (paused) hour later.
    let r = timeout(Duration::from_secs(3600), loader.load(5)).await;
    assert!(r.is_err(), "the load ended before its delay: {r:?}");
}

// ---------------------------------------------------------------------------------------------
// 9. Panics.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_while_building_the_load_fails_its_batch_only() {
    let ctl = Ctl::default();
    ctl.build_panic.lock().unwrap().insert(7);
    let loader = DataLoader::builder(ctl.clone())
        .max_batch_size(2)
        .build()
        .unwrap();
    // [7, 8] panics while building; [9, 10] is another batch.
    let (a, b, c, d) = timeout(BOUND, async {
        tokio::join!(
            loader.load(7),
            loader.load(8),
            loader.load(9),
            loader.load(10)
        )
    })
    .await
    .unwrap();
    let (a, b) = (a.unwrap_err(), b.unwrap_err());
    assert!(a.is_panic() && b.is_panic(), "{a:?} {b:?}");
    assert_eq!(a.panic_message(), Some("panic while building the load"));
    assert_eq!((c.unwrap(), d.unwrap()), (Some(9000), Some(10_000)));
    let s = loader.stats();
    assert_eq!((s.panics, s.batches, s.in_flight), (1, 2, 0), "{s:?}");
    // Not memoized, not stuck: the keys load again.
    ctl.build_panic.lock().unwrap().clear();
    assert_eq!(loader.load(7).await.unwrap(), Some(7000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_inside_the_load_fails_its_batch_only() {
    let loader = DataLoader::builder(Ctl::default())
        .max_batch_size(2)
        .build()
        .unwrap();
    let (a, b, c) = timeout(BOUND, async {
        tokio::join!(loader.load(10_013), loader.load(14), loader.load(15))
    })
    .await
    .unwrap();
    assert!(a.unwrap_err().is_panic());
    assert!(b.unwrap_err().is_panic());
    assert_eq!(c.unwrap(), Some(15_000));
}

// ---------------------------------------------------------------------------------------------
// 10. Settings.

#[tokio::test(start_paused = true)]
async fn settings_at_the_edges() {
    assert!(
        DataLoader::builder(Ctl::default())
            .max_batch_size(0)
            .build()
            .is_err()
    );
    assert!(
        DataLoader::builder(Ctl::default())
            .max_concurrent_batches(0)
            .build()
            .is_err()
    );
    assert!(
        DataLoader::builder(Ctl::default())
            .load_timeout(Duration::ZERO)
            .build()
            .is_err()
    );
    let loader = DataLoader::builder(Ctl {
        yield_first: true,
        ..Ctl::default()
    })
    .max_batch_size(usize::MAX)
    .max_concurrent_batches(usize::MAX)
    .load_timeout(Duration::MAX)
    .memo(true)
    .build()
    .unwrap();
    let v = timeout(BOUND, loader.load_many(0..500u64))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.len(), 495);
    assert_eq!(loader.stats().batches, 1);
    // A delay of Duration::MAX with a batch that fills up: dispatched at once.
    let loader = DataLoader::builder(Ctl::default())
        .delay(Duration::MAX)
        .max_batch_size(2)
        .build()
        .unwrap();
    let (a, b) = timeout(BOUND, async {
        tokio::join!(loader.load(1), loader.load(2))
    })
    .await
    .unwrap();
    assert_eq!((a.unwrap(), b.unwrap()), (Some(1000), Some(2000)));
}

// ---------------------------------------------------------------------------------------------
// 11. Invalidation is final.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_during_a_load_keeps_its_stale_value_out_of_the_memo() {
    for clear_all in [false, true] {
        let ctl = Ctl::default();
        ctl.block.lock().unwrap().insert(1);
        let loader = Arc::new(DataLoader::builder(ctl.clone()).memo(true).build().unwrap());
        let first = tokio::spawn({
            let loader = loader.clone();
            async move { loader.load(1).await }
        });
        timeout(BOUND, ctl.started.notified()).await.unwrap();
        // The load has read version 0. The row changes, and the loader is told.
        ctl.version.store(1, SeqCst);
        if clear_all {
            loader.clear_all();
        } else {
            loader.clear(&1);
        }
        ctl.block.lock().unwrap().clear();
        ctl.release.notify_one();
        assert_eq!(
            timeout(BOUND, first).await.unwrap().unwrap().unwrap(),
            Some(1000)
        );
        // Loads after the clear never see version 0.
        assert_eq!(loader.load(1).await.unwrap(), Some(1001));
        assert_eq!(ctl.calls(), 2);
        assert_eq!(loader.load(1).await.unwrap(), Some(1001));
        assert_eq!(ctl.calls(), 2, "the fresh value is memoized");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_started_after_clear_during_a_load_is_fresh_and_the_old_batch_does_not_win() {
    let ctl = Ctl::default();
    ctl.block.lock().unwrap().insert(1);
    let loader = Arc::new(
        DataLoader::builder(ctl.clone())
            .memo(true)
            .max_concurrent_batches(1)
            .build()
            .unwrap(),
    );
    let old = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(1).await }
    });
    timeout(BOUND, ctl.started.notified()).await.unwrap();
    ctl.version.store(1, SeqCst);
    loader.clear(&1);
    // A new load of 1 queues behind the old batch (one slot).
    let fresh = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(1).await }
    });
    support::until("the fresh load is asked", || loader.stats().requests == 2).await;
    ctl.block.lock().unwrap().clear();
    ctl.release.notify_one();
    assert_eq!(
        timeout(BOUND, old).await.unwrap().unwrap().unwrap(),
        Some(1000)
    );
    assert_eq!(
        timeout(BOUND, fresh).await.unwrap().unwrap().unwrap(),
        Some(1001)
    );
    assert_eq!(loader.load(1).await.unwrap(), Some(1001));
    assert_eq!(ctl.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prime_during_a_load_wins() {
    let ctl = Ctl::default();
    ctl.block.lock().unwrap().insert(1);
    let loader = Arc::new(DataLoader::builder(ctl.clone()).memo(true).build().unwrap());
    let first = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(1).await }
    });
    timeout(BOUND, ctl.started.notified()).await.unwrap();
    loader.prime(1, 77);
    ctl.release.notify_one();
    assert_eq!(
        timeout(BOUND, first).await.unwrap().unwrap().unwrap(),
        Some(1000)
    );
    assert_eq!(loader.load(1).await.unwrap(), Some(77));
    assert_eq!(ctl.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_cache_clear_during_a_load_keeps_the_stale_value_out_and_prime_fills_it() {
    for clear_all in [false, true] {
        let ctl = Ctl::default();
        ctl.block.lock().unwrap().insert(1);
        let cache: Cache<u64, u64> = Cache::new(1000);
        let loader = Arc::new(
            DataLoader::builder(ctl.clone())
                .cache(cache.clone())
                .build()
                .unwrap(),
        );
        let first = tokio::spawn({
            let loader = loader.clone();
            async move { loader.load(1).await }
        });
        timeout(BOUND, ctl.started.notified()).await.unwrap();
        ctl.version.store(1, SeqCst);
        if clear_all {
            loader.clear_all();
        } else {
            loader.clear(&1);
        }
        ctl.block.lock().unwrap().clear();
        ctl.release.notify_one();
        assert_eq!(
            timeout(BOUND, first).await.unwrap().unwrap().unwrap(),
            Some(1000)
        );
        assert_eq!(
            cache.get(&1),
            None,
            "the stale value reached the cache after the clear"
        );
        assert_eq!(loader.load(1).await.unwrap(), Some(1001));
        assert_eq!(cache.get(&1), Some(1001));
        loader.prime(2, 22);
        assert_eq!(cache.get(&2), Some(22));
        assert_eq!(loader.load(2).await.unwrap(), Some(22));
        assert_eq!(ctl.calls(), 2);
    }
}

// ---------------------------------------------------------------------------------------------
// 12. Odd loader maps and errors.

#[tokio::test(start_paused = true)]
async fn omitted_extra_keys_and_errors() {
    let ctl = Ctl::default();
    let loader = DataLoader::builder(ctl.clone())
        .max_batch_size(2)
        .build()
        .unwrap();
    let (a, b, many) = tokio::join!(
        loader.load(199),
        loader.load(5),
        loader.load_many([1, 99, 2])
    );
    assert_eq!(a.unwrap(), None);
    assert_eq!(b.unwrap(), Some(5000));
    let many = many.unwrap();
    assert_eq!(many.len(), 2);
    assert!(!many.contains_key(&1_000_000) && !many.contains_key(&99));
    // An error reaches every caller of its batch, and only them.
    let (e1, e2, ok) = tokio::join!(
        loader.load(666),
        loader.load(3),
        loader.load_many([20, 21, 22])
    );
    let e1 = e1.unwrap_err();
    assert_eq!(e1.loader_error().map(String::as_str), Some("bad key 666"));
    assert!(e2.unwrap_err().loader_error().is_some());
    assert_eq!(ok.unwrap().len(), 3);
    // load_many over a failing batch fails as a whole, without hanging.
    let r = timeout(BOUND, loader.load_many([8, 666, 9, 10, 11]))
        .await
        .unwrap();
    assert!(r.unwrap_err().loader_error().is_some());
    let s = loader.stats();
    assert_eq!(s.in_flight, 0, "{s:?}");
}

// ---------------------------------------------------------------------------------------------
// More attacks.

struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("payload drop panics");
        }
    }
}

#[derive(Clone)]
struct BadPanic;

impl Loader for BadPanic {
    type Key = u64;
    type Value = u64;
    type Error = String;

    async fn load(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, String> {
        if keys.contains(&1) {
            std::panic::panic_any(PanicOnDrop);
        }
        Ok(keys.iter().map(|k| (*k, *k)).collect())
    }
}

/// A loader panics with a payload whose destructor panics. The batch is supposed to fail its
/// own waiters with `is_panic()`; the payload is dropped outside the catch, so the second panic
/// escapes into whichever task polls the batch (here: the caller that opened it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_panic_payload_that_panics_on_drop_is_contained() {
    let loader = Arc::new(DataLoader::new(BadPanic));
    let task = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(1).await.map_err(|e| e.is_panic()) }
    });
    let joined = timeout(BOUND, task).await.unwrap();
    assert!(matches!(joined, Ok(Err(true))), "{joined:?}");
    assert_eq!(
        timeout(BOUND, loader.load(2)).await.unwrap().unwrap(),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_while_building_frees_the_only_batch_slot() {
    let ctl = Ctl::default();
    ctl.build_panic.lock().unwrap().insert(7);
    let loader = DataLoader::builder(ctl.clone())
        .max_batch_size(1)
        .max_concurrent_batches(1)
        .build()
        .unwrap();
    let (a, b, c) = timeout(BOUND, async {
        tokio::join!(loader.load(7), loader.load(8), loader.load(9))
    })
    .await
    .expect("the panicking batch kept its slot");
    assert!(a.unwrap_err().is_panic());
    assert_eq!((b.unwrap(), c.unwrap()), (Some(8000), Some(9000)));
    assert_eq!(loader.stats().in_flight, 0);
}

/// With a cache in front: `prime` during a load of the same key wins over the load's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_cache_prime_during_a_load_wins() {
    let ctl = Ctl::default();
    ctl.block.lock().unwrap().insert(1);
    let cache: Cache<u64, u64> = Cache::new(1000);
    let loader = Arc::new(
        DataLoader::builder(ctl.clone())
            .cache(cache.clone())
            .build()
            .unwrap(),
    );
    let first = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(1).await }
    });
    timeout(BOUND, ctl.started.notified()).await.unwrap();
    loader.prime(1, 77);
    ctl.release.notify_one();
    assert_eq!(
        timeout(BOUND, first).await.unwrap().unwrap().unwrap(),
        Some(1000)
    );
    assert_eq!(
        cache.get(&1),
        Some(77),
        "the load overwrote the primed value"
    );
    assert_eq!(loader.load(1).await.unwrap(), Some(77));
    assert_eq!(ctl.calls(), 1);
}

/// A yield window opened on a runtime that is then dropped, its opener never polled again: a
/// load that joined the window from another runtime gets an answer (a value or an error), it
/// does not hang; and the key loads normally afterwards.
#[test]
fn opener_on_a_dropped_runtime_does_not_strand_joiners() {
    let rt1 = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let rt2 = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ctl = Ctl::default();
    let loader = Arc::new(DataLoader::new(ctl.clone()));
    let mut opener = Box::pin(loader.load(1));
    rt1.block_on(async {
        assert!(
            std::future::poll_fn(|cx| Poll::Ready(opener.as_mut().poll(cx)))
                .await
                .is_pending()
        );
    });
    let joiner = rt2.spawn({
        let loader = loader.clone();
        async move { loader.load(2).await }
    });
    drop(rt1);
    let r = rt2.block_on(async { timeout(BOUND, joiner).await });
    let r = r.expect("joiner stranded by a dropped runtime").unwrap();
    assert!(
        matches!(&r, Ok(Some(2000))) || r.as_ref().is_err_and(|e| e.is_cancelled()),
        "{r:?}"
    );
    rt2.block_on(async {
        let again = timeout(BOUND, loader.load(2))
            .await
            .expect("key stuck")
            .unwrap();
        assert_eq!(again, Some(2000));
    });
    std::mem::forget(opener);
}

/// A storm of loads (some dropped early), `load_many`, `clear`, `clear_all` and `prime` from
/// several tasks, over a loader whose batches sometimes hang (and time out), panic while
/// building, or fail: no load hangs, nothing stays in flight, and the counts add up
/// (`requests = memo_hits + cache_hits + joined + batched_keys` once no batch is open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_counts_add_up_and_nothing_hangs() {
    let ctl = Ctl::default();
    ctl.hang.lock().unwrap().insert(5);
    ctl.build_panic.lock().unwrap().insert(7);
    let loader = Arc::new(
        DataLoader::builder(ctl.clone())
            .memo(true)
            .max_batch_size(4)
            .max_concurrent_batches(2)
            .load_timeout(Duration::from_millis(40))
            .build()
            .unwrap(),
    );
    let tasks: Vec<_> = (0..4u64)
        .map(|t| {
            let loader = loader.clone();
            tokio::spawn(async move {
                let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                for _ in 0..150 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = x % 24 + if x % 5 == 0 { 660 } else { 0 };
                    match (x >> 8) % 8 {
                        0 => loader.clear(&key),
                        1 if x % 7 == 0 => loader.clear_all(),
                        2 => loader.prime(key, 1),
                        3 => {
                            let many = loader.load_many([key, key + 1, key + 2]);
                            timeout(BOUND, many).await.expect("load_many hung").ok();
                        }
                        4 => {
                            // Given up on early: the future is dropped mid-way.
                            let _ = timeout(Duration::from_micros(200), loader.load(key)).await;
                        }
                        _ => {
                            timeout(BOUND, loader.load(key))
                                .await
                                .expect("load hung")
                                .ok();
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        timeout(Duration::from_secs(20), t)
            .await
            .expect("storm task hung")
            .unwrap();
    }
    timeout(BOUND, async {
        while loader.stats().in_flight != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("keys stuck in flight");
    let s = loader.stats();
    assert_eq!(
        s.requests,
        s.memo_hits + s.cache_hits + s.joined + s.batched_keys,
        "{s:?}"
    );
    assert!(
        s.timeouts > 0 && s.panics > 0,
        "the storm did not reach the edge cases: {s:?}"
    );
}

/// A runtime built without the time driver (`enable_all` not called), and no timer-based
/// setting on the loader (no `delay`, no `load_timeout`). The docs never say the DataLoader
/// needs the time driver; its fallback janitor does (`tokio::time::sleep`). The janitor task
/// panics at its first poll, and its guard then fails the open window "because its runtime shut
/// down": loads fail as cancelled instead of loading.
#[test]
fn runtime_without_the_time_driver() {
    // Current-thread: the janitor spawned by the opener runs during the opener's first yield,
    // deterministically.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let loader = DataLoader::new(Ctl::default());
    let mut failures = Vec::new();
    rt.block_on(async {
        for r in 0..5u64 {
            let (a, b) = tokio::join!(loader.load(100 * r + 1), loader.load(100 * r + 2));
            if a.is_err() || b.is_err() {
                failures.push(format!("{a:?} {b:?}"));
            }
        }
    });
    assert!(
        failures.is_empty(),
        "{} of 5 rounds failed: {:?}",
        failures.len(),
        &failures[..1]
    );
}

/// With a cache in front, a batch that times out or panics while building frees its keys: the
/// next load calls the loader again (the cache's flights for them are not left behind).
#[tokio::test(start_paused = true)]
async fn with_a_cache_timed_out_and_panicked_batches_free_their_keys() {
    let ctl = Ctl::default();
    ctl.hang.lock().unwrap().insert(1);
    ctl.build_panic.lock().unwrap().insert(2);
    let cache: Cache<u64, u64> = Cache::new(1000);
    let loader = DataLoader::builder(ctl.clone())
        .cache(cache.clone())
        .max_batch_size(1)
        .load_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let (a, b) = timeout(Duration::from_secs(60), async {
        tokio::join!(loader.load(1), loader.load(2))
    })
    .await
    .unwrap();
    assert!(a.unwrap_err().is_timeout());
    assert!(b.unwrap_err().is_panic());
    ctl.hang.lock().unwrap().clear();
    ctl.build_panic.lock().unwrap().clear();
    let (a, b) = timeout(Duration::from_secs(60), async {
        tokio::join!(loader.load(1), loader.load(2))
    })
    .await
    .unwrap();
    assert_eq!((a.unwrap(), b.unwrap()), (Some(1000), Some(2000)));
    assert_eq!((cache.get(&1), cache.get(&2)), (Some(1000), Some(2000)));
    assert_eq!(ctl.calls(), 4);
}
