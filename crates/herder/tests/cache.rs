//! Cache behaviour: pingora's read-through tests ported, a regression test for each anchor
//! failure, freshness (TTL, stale-while-revalidate, fail-safe, early refresh, negative caching),
//! timeouts, generations and bulk reads. Paused clock; ordering by gates and handshakes.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use futures_util::future::join_all;
use herder::Cache;
use herder::cache::{EarlyRefresh, Loaded, Status};
use support::{BackendDown, Gate, poll_once};
use tokio::time::advance;

const SECOND: Duration = Duration::from_secs(1);

fn cache() -> Cache<u32, String> {
    Cache::new(1000)
}

/// A loader for `key` that waits at `gate` and then answers `value`.
fn gated(
    gate: &Gate,
    value: &str,
) -> impl FnOnce() -> futures_util::future::BoxFuture<'static, Result<String, BackendDown>>
+ Send
+ 'static {
    let (gate, value) = (gate.clone(), value.to_owned());
    move || {
        Box::pin(async move {
            gate.pass().await;
            Ok(value)
        })
    }
}

/// A loader that counts its calls and answers at once.
fn counted(
    calls: &Arc<AtomicUsize>,
    value: &str,
) -> impl FnOnce() -> futures_util::future::BoxFuture<'static, Result<String, BackendDown>>
+ Send
+ 'static {
    let (calls, value) = (calls.clone(), value.to_owned());
    move || {
        Box::pin(async move {
            calls.fetch_add(1, SeqCst);
            Ok(value)
        })
    }
}

fn found(
    calls: &Arc<AtomicUsize>,
    value: &str,
) -> impl FnOnce() -> futures_util::future::BoxFuture<'static, Result<Loaded<String>, BackendDown>>
+ Send
+ 'static {
    let load = counted(calls, value);
    move || Box::pin(async move { load().await.map(Loaded::found) })
}

// ---- pingora's read-through tests, ported ----

#[tokio::test(start_paused = true)]
async fn a_hit_follows_a_miss() {
    let cache = cache();
    let calls = Arc::default();
    let first = cache.fetch(1, found(&calls, "a")).await.unwrap();
    assert_eq!(
        (first.value.as_deref(), first.status),
        (Some("a"), Status::Miss)
    );
    let second = cache.fetch(1, found(&calls, "b")).await.unwrap();
    assert_eq!(
        (second.value.as_deref(), second.status),
        (Some("a"), Status::Hit)
    );
    assert_eq!(calls.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn an_error_is_not_cached() {
    let cache = cache();
    let err = cache
        .try_get_with(1, || async {
            Err::<String, _>(BackendDown("refused".into()))
        })
        .await
        .unwrap_err();
    assert_eq!(err.loader_error(), Some(&BackendDown("refused".into())));
    assert_eq!(cache.get(&1), None);
    let calls = Arc::default();
    assert_eq!(
        cache.try_get_with(1, counted(&calls, "ok")).await.unwrap(),
        "ok"
    );
    assert_eq!(calls.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn three_concurrent_gets_make_one_lookup() {
    let cache = cache();
    let gate = Gate::default();
    let gets = join_all((0..3).map(|_| cache.try_get_with(1, gated(&gate, "v"))));
    let mut gets = Box::pin(gets);
    assert!(poll_once(&mut gets).await);
    gate.arrived().await;
    gate.open(3);
    assert!(gets.await.into_iter().all(|v| v.unwrap() == "v"));
    assert_eq!(gate.calls(), 1);
    assert_eq!(cache.stats().coalesced, 2);
}

#[tokio::test(start_paused = true)]
async fn three_different_keys_make_three_lookups() {
    let cache = cache();
    let calls = Arc::default();
    let values = join_all((0..3).map(|k| cache.try_get_with(k, counted(&calls, "v")))).await;
    assert!(values.into_iter().all(|v| v.is_ok()));
    assert_eq!(calls.load(SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn bulk_reads_report_hit_and_miss_statuses() {
    let cache: Cache<u32, u32> = Cache::new(100);
    cache.insert(1, 10);
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let load = {
        let asked = asked.clone();
        move |keys: Vec<u32>| async move {
            asked.lock().unwrap().extend(keys.iter().copied());
            Ok::<_, BackendDown>(keys.into_iter().map(|k| (k, k * 10)).collect())
        }
    };
    let answers = cache.fetch_many_with([1, 2, 3, 2], load).await.unwrap();
    assert_eq!(answers.len(), 3);
    assert_eq!(answers[&1].status, Status::Hit);
    assert_eq!(
        (answers[&2].value, answers[&2].status),
        (Some(20), Status::Miss)
    );
    assert_eq!(
        (answers[&3].value, answers[&3].status),
        (Some(30), Status::Miss)
    );
    assert_eq!(*asked.lock().unwrap(), vec![2, 3]);
    // Now all hits, no load.
    let load =
        |_: Vec<u32>| async { Err::<HashMap<u32, u32>, _>(BackendDown("not called".into())) };
    let answers = cache.fetch_many_with([1, 2, 3], load).await.unwrap();
    assert!(answers.values().all(|f| f.status == Status::Hit));
}

/// pingora panics when a bulk lookup answers the wrong number of keys; here an answer is a map,
/// so a short or padded answer is keys left out (absent, not cached) and keys added (ignored).
#[tokio::test(start_paused = true)]
async fn a_bulk_loader_answering_the_wrong_keys_does_not_panic() {
    let cache: Cache<u32, u32> = Cache::new(100);
    let load = |_: Vec<u32>| async { Ok::<_, BackendDown>(HashMap::from([(1, 10), (99, 990)])) };
    let answers = cache.fetch_many_with([1, 2, 3], load).await.unwrap();
    assert_eq!(answers[&1].value, Some(10));
    assert_eq!((answers[&2].value, answers[&3].value), (None, None));
    assert!(!answers.contains_key(&99));
    assert_eq!(cache.get(&99), None, "a key nobody asked for was cached");
    assert!(!cache.contains_key(&2));
}

// ---- one regression test per anchor failure ----

/// pingora #931: the caller running the lookup is dropped mid-load; later callers must neither
/// hang nor find the key uncached.
#[tokio::test(start_paused = true)]
async fn a_loading_caller_aborted_mid_load_neither_hangs_nor_leaves_the_key_uncached() {
    let cache = cache();
    let gate = Gate::default();
    let leader = tokio::spawn({
        let cache = cache.clone();
        let load = gated(&gate, "v");
        async move { cache.try_get_with(1, load).await }
    });
    gate.arrived().await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    gate.open(1);
    let calls = Arc::default();
    assert_eq!(
        cache
            .try_get_with(1, counted(&calls, "other"))
            .await
            .unwrap(),
        "v"
    );
    assert_eq!(
        calls.load(SeqCst),
        0,
        "the abandoned load still filled the cache"
    );
    assert_eq!(gate.calls(), 1);
}

/// moka #240: the loading caller is polled once and never again; the others still get the value.
#[tokio::test(start_paused = true)]
async fn a_parked_loading_caller_does_not_block_the_others() {
    let cache = cache();
    let calls = Arc::default();
    let mut parked = Box::pin(cache.try_get_with(1, counted(&calls, "v")));
    assert!(poll_once(&mut parked).await);
    let other = cache
        .try_get_with(1, counted(&calls, "other"))
        .await
        .unwrap();
    assert_eq!(other, "v");
    assert_eq!(calls.load(SeqCst), 1);
    drop(parked);
}

/// Caffeine #870: one waiter's cancellation must not fail the others.
#[tokio::test(start_paused = true)]
async fn one_callers_cancellation_does_not_fail_the_other_waiters() {
    let cache = cache();
    let gate = Gate::default();
    let mut leader = Box::pin(cache.try_get_with(1, gated(&gate, "v")));
    let mut cancelled = Box::pin(cache.try_get_with(1, gated(&gate, "x")));
    let mut kept = Box::pin(cache.try_get_with(1, gated(&gate, "y")));
    for f in [&mut leader, &mut cancelled, &mut kept] {
        assert!(poll_once(f).await);
    }
    gate.arrived().await;
    drop(cancelled);
    drop(leader);
    gate.open(1);
    assert_eq!(kept.await.unwrap(), "v");
    assert_eq!(gate.calls(), 1);
}

/// quick_cache's guards run N serial loads when the loader keeps failing; here one call fails
/// all N waiters with the same error.
#[tokio::test(start_paused = true)]
async fn n_waiters_on_a_failing_loader_make_one_backend_call_and_get_n_errors() {
    let cache = cache();
    let gate = Gate::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let load = || {
        let (gate, calls) = (gate.clone(), calls.clone());
        move || async move {
            calls.fetch_add(1, SeqCst);
            gate.pass().await;
            Err::<String, _>(BackendDown("overloaded".into()))
        }
    };
    let mut gets = Box::pin(join_all((0..50).map(|_| cache.try_get_with(1, load()))));
    assert!(poll_once(&mut gets).await);
    gate.arrived().await;
    gate.open(1);
    let errors: Vec<_> = gets.await.into_iter().map(Result::unwrap_err).collect();
    assert_eq!(errors.len(), 50);
    let first = errors[0].clone().into_loader_error().unwrap();
    assert!(
        errors
            .into_iter()
            .all(|e| Arc::ptr_eq(&e.into_loader_error().unwrap(), &first))
    );
    assert_eq!(calls.load(SeqCst), 1);
    assert_eq!(cache.stats().load_errors, 1);
}

#[tokio::test(start_paused = true)]
async fn an_invalidate_during_a_load_keeps_the_stale_result_out() {
    let cache = cache();
    let gate = Gate::default();
    let reader = tokio::spawn({
        let (cache, load) = (cache.clone(), gated(&gate, "before the update"));
        async move { cache.try_get_with(1, load).await }
    });
    gate.arrived().await;
    cache.invalidate(&1); // the row changed while it was being read
    gate.open(1);
    assert_eq!(reader.await.unwrap().unwrap(), "before the update");
    assert_eq!(cache.get(&1), None, "the stale result was stored");
    let calls = Arc::default();
    assert_eq!(
        cache
            .try_get_with(1, counted(&calls, "after"))
            .await
            .unwrap(),
        "after"
    );
}

#[tokio::test(start_paused = true)]
async fn an_insert_during_a_load_wins_over_the_loaded_value() {
    let cache = cache();
    let gate = Gate::default();
    let reader = tokio::spawn({
        let (cache, load) = (cache.clone(), gated(&gate, "loaded"));
        async move { cache.try_get_with(1, load).await }
    });
    gate.arrived().await;
    cache.insert(1, "inserted".into());
    gate.open(1);
    assert_eq!(reader.await.unwrap().unwrap(), "loaded");
    assert_eq!(cache.get(&1).as_deref(), Some("inserted"));
}

#[tokio::test(start_paused = true)]
async fn invalidate_all_during_loads_keeps_every_result_out() {
    let cache = cache();
    let gate = Gate::default();
    let readers: Vec<_> = (0..3)
        .map(|k| {
            let (cache, load) = (cache.clone(), gated(&gate, "old"));
            tokio::spawn(async move { cache.try_get_with(k, load).await })
        })
        .collect();
    while gate.calls() < 3 {
        gate.arrived().await;
    }
    cache.invalidate_all();
    gate.open(3);
    for reader in readers {
        assert_eq!(reader.await.unwrap().unwrap(), "old");
    }
    assert_eq!(cache.stats().entries, 0);
}

// ---- panics ----

#[tokio::test(start_paused = true)]
async fn a_loader_panic_reaches_every_waiter_as_an_error() {
    let cache = cache();
    let gate = Gate::default();
    let load = || {
        let gate = gate.clone();
        move || async move {
            gate.pass().await;
            if true {
                panic!("decoder bug");
            }
            Ok::<String, BackendDown>(String::new())
        }
    };
    let mut gets = Box::pin(join_all((0..4).map(|_| cache.try_get_with(1, load()))));
    assert!(poll_once(&mut gets).await);
    gate.arrived().await;
    gate.open(1);
    for err in gets.await.into_iter().map(Result::unwrap_err) {
        assert!(err.is_panic());
        assert_eq!(err.panic_message(), Some("decoder bug"));
    }
    assert_eq!(cache.stats().load_panics, 1);
    assert_eq!(cache.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn get_with_re_raises_the_loaders_panic_in_its_caller() {
    let cache = cache();
    let caller =
        tokio::spawn(async move { cache.get_with(1, || async { panic!("init failed") }).await });
    let err = caller.await.unwrap_err();
    assert!(err.is_panic());
    let payload = err.into_panic();
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("init failed")
    );
}

// ---- freshness ----

#[tokio::test(start_paused = true)]
async fn entries_expire_after_their_ttl() {
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(10)
        .time_to_live(10 * SECOND)
        .build()
        .unwrap();
    let calls = Arc::default();
    cache.try_get_with(1, counted(&calls, "v1")).await.unwrap();
    advance(9 * SECOND).await;
    assert_eq!(
        cache.try_get_with(1, counted(&calls, "v2")).await.unwrap(),
        "v1"
    );
    advance(SECOND).await;
    assert_eq!(cache.get(&1), None);
    assert_eq!(
        cache.try_get_with(1, counted(&calls, "v2")).await.unwrap(),
        "v2"
    );
    assert_eq!(calls.load(SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_loader_sets_a_ttl_per_entry() {
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(10)
        .time_to_live(100 * SECOND)
        .build()
        .unwrap();
    let short =
        || async { Ok::<_, BackendDown>(Loaded::found("short".to_string()).ttl(2 * SECOND)) };
    cache.fetch(1, short).await.unwrap();
    cache.insert(2, "long".into());
    advance(3 * SECOND).await;
    assert_eq!(cache.get(&1), None);
    assert_eq!(cache.get(&2).as_deref(), Some("long"));
}

#[tokio::test(start_paused = true)]
async fn not_found_is_cached_for_the_negative_ttl_only() {
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(10)
        .negative_ttl(5 * SECOND)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let lookup = || {
        let calls = calls.clone();
        move || async move {
            calls.fetch_add(1, SeqCst);
            Ok::<_, BackendDown>(Loaded::not_found())
        }
    };
    assert_eq!(
        cache.fetch(404, lookup()).await.unwrap().status,
        Status::Miss
    );
    for _ in 0..10 {
        let hit = cache.fetch(404, lookup()).await.unwrap();
        assert_eq!((hit.value, hit.status), (None, Status::NegativeHit));
    }
    assert_eq!(calls.load(SeqCst), 1, "a missing row became a stampede");
    assert!(
        cache
            .try_get_with(404, || async { Ok::<String, BackendDown>("x".into()) })
            .await
            .unwrap_err()
            .is_not_found()
    );
    advance(5 * SECOND).await;
    assert_eq!(
        cache.fetch(404, lookup()).await.unwrap().status,
        Status::Miss
    );
    assert_eq!(calls.load(SeqCst), 2);

    // Without a negative TTL, absence is not cached.
    let plain: Cache<u32, String> = Cache::new(10);
    plain.fetch(404, lookup()).await.unwrap();
    plain.fetch(404, lookup()).await.unwrap();
    assert_eq!(calls.load(SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn a_stale_read_answers_at_once_and_starts_one_refresh() {
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(10)
        .time_to_live(10 * SECOND)
        .stale_while_revalidate(60 * SECOND)
        .build()
        .unwrap();
    cache.insert(1, "old".into());
    advance(11 * SECOND).await;
    let gate = Gate::default();
    let loader = || {
        let gate = gate.clone();
        move || async move {
            gate.pass().await;
            Ok::<_, BackendDown>(Loaded::found("new".to_string()))
        }
    };
    // 20 stale reads: each answers at once with the old value.
    for _ in 0..20 {
        let stale = cache.fetch(1, loader()).await.unwrap();
        assert_eq!(
            (stale.value.as_deref(), stale.status),
            (Some("old"), Status::Stale)
        );
    }
    gate.arrived().await;
    assert_eq!(gate.calls(), 1, "one refresh for all stale reads");
    gate.open(1);
    while cache.stats().in_flight > 0 {
        tokio::task::yield_now().await;
    }
    let fresh = cache.fetch(1, loader()).await.unwrap();
    assert_eq!(
        (fresh.value.as_deref(), fresh.status),
        (Some("new"), Status::Hit)
    );
    assert_eq!(cache.stats().refreshes, 1);
}

#[tokio::test(start_paused = true)]
async fn past_the_stale_window_a_read_waits_for_the_load() {
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(10)
        .time_to_live(10 * SECOND)
        .stale_while_revalidate(5 * SECOND)
        .build()
        .unwrap();
    cache.insert(1, "old".into());
    advance(16 * SECOND).await;
    let calls = Arc::default();
    let read = cache.fetch(1, found(&calls, "new")).await.unwrap();
    assert_eq!(
        (read.value.as_deref(), read.status),
        (Some("new"), Status::Miss)
    );
}

fn fail_safe_cache() -> Cache<u32, String> {
    Cache::builder()
        .max_capacity(10)
        .time_to_live(10 * SECOND)
        .fail_safe(3600 * SECOND, 30 * SECOND)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn fail_safe_serves_the_last_value_when_the_load_fails_and_throttles_the_backend() {
    let cache = fail_safe_cache();
    cache.insert(1, "last good".into());
    advance(20 * SECOND).await; // expired, but kept
    let calls = Arc::new(AtomicUsize::new(0));
    let failing = || {
        let calls = calls.clone();
        move || async move {
            calls.fetch_add(1, SeqCst);
            Err::<Loaded<String>, _>(BackendDown("503".into()))
        }
    };
    let read = cache.fetch(1, failing()).await.unwrap();
    assert_eq!(
        (read.value.as_deref(), read.status),
        (Some("last good"), Status::StaleOnError)
    );
    // Within the throttle period the backend is left alone.
    for _ in 0..10 {
        let read = cache.fetch(1, failing()).await.unwrap();
        assert_eq!(read.status, Status::StaleOnError);
    }
    assert_eq!(calls.load(SeqCst), 1);
    advance(31 * SECOND).await;
    assert_eq!(
        cache.fetch(1, failing()).await.unwrap().status,
        Status::StaleOnError
    );
    assert_eq!(
        calls.load(SeqCst),
        2,
        "after the throttle the backend is asked again"
    );
    // Recovery: a successful load replaces the degraded value.
    advance(31 * SECOND).await;
    let ok = || async { Ok::<_, BackendDown>(Loaded::found("fresh".to_string())) };
    let read = cache.fetch(1, ok).await.unwrap();
    assert_eq!(
        (read.value.as_deref(), read.status),
        (Some("fresh"), Status::Miss)
    );
}

#[tokio::test(start_paused = true)]
async fn fail_safe_stops_at_its_maximum_staleness() {
    let cache = fail_safe_cache();
    cache.insert(1, "ancient".into());
    advance(4000 * SECOND).await;
    let err = cache
        .try_get_with(1, || async { Err::<String, _>(BackendDown("down".into())) })
        .await
        .unwrap_err();
    assert!(err.loader_error().is_some());
}

#[tokio::test(start_paused = true)]
async fn fail_safe_covers_panics_too() {
    let cache = fail_safe_cache();
    cache.insert(1, "last good".into());
    advance(20 * SECOND).await;
    let read = cache
        .fetch(1, || async {
            if true {
                panic!("bug");
            }
            Ok::<Loaded<String>, BackendDown>(Loaded::not_found())
        })
        .await
        .unwrap();
    assert_eq!(read.status, Status::StaleOnError);
}

#[tokio::test(start_paused = true)]
async fn early_refresh_by_fraction_refreshes_a_fresh_entry_once() {
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(10)
        .time_to_live(10 * SECOND)
        .early_refresh(EarlyRefresh::Fraction(0.8))
        .build()
        .unwrap();
    let calls = Arc::default();
    cache.fetch(1, found(&calls, "v1")).await.unwrap();
    advance(7 * SECOND).await;
    assert_eq!(
        cache.fetch(1, found(&calls, "v2")).await.unwrap().status,
        Status::Hit
    );
    assert_eq!(cache.stats().refreshes, 0);
    advance(SECOND).await; // 8 s: past 80 % of the TTL
    let read = cache.fetch(1, found(&calls, "v2")).await.unwrap();
    assert_eq!(
        (read.value.as_deref(), read.status),
        (Some("v1"), Status::Hit)
    );
    while cache.stats().in_flight > 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(cache.get(&1).as_deref(), Some("v2"));
    assert_eq!(calls.load(SeqCst), 2);
    assert_eq!(cache.stats().refreshes, 1);
}

#[tokio::test(start_paused = true)]
async fn probabilistic_early_refresh_fires_near_expiry_and_never_far_from_it() {
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(10)
        .time_to_live(1000 * SECOND)
        .early_refresh(EarlyRefresh::Probabilistic { beta: 1.0 })
        .build()
        .unwrap();
    // The load takes 1 s of (paused) time: δ = 1 s.
    let slow = || async {
        tokio::time::sleep(SECOND).await;
        Ok::<_, BackendDown>(Loaded::found("v".to_string()))
    };
    cache.fetch(1, slow).await.unwrap();
    // 900 s before expiry is beyond 36.8 δβ: no read can trigger a refresh.
    advance(100 * SECOND).await;
    for _ in 0..1000 {
        cache.fetch(1, slow).await.unwrap();
    }
    assert_eq!(cache.stats().refreshes, 0);
    // A microsecond before expiry the probability is 1 − 1e-6: the first read refreshes.
    advance(900 * SECOND - Duration::from_micros(1)).await;
    assert_eq!(cache.fetch(1, slow).await.unwrap().status, Status::Hit);
    assert_eq!(cache.stats().refreshes, 1);
}

// ---- timeouts ----

#[tokio::test(start_paused = true)]
async fn a_wait_timeout_errs_without_starting_a_duplicate_load() {
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(10)
        .wait_timeout(SECOND)
        .build()
        .unwrap();
    let gate = Gate::default();
    let mut first = Box::pin(cache.try_get_with(1, gated(&gate, "slow")));
    let mut second = Box::pin(cache.try_get_with(1, gated(&gate, "dup")));
    assert!(poll_once(&mut first).await && poll_once(&mut second).await);
    gate.arrived().await;
    advance(SECOND).await;
    assert!(first.await.unwrap_err().is_timeout());
    assert!(second.await.unwrap_err().is_timeout());
    assert_eq!(gate.calls(), 1, "the timeout started a duplicate load");
    // The load goes on and fills the cache.
    gate.open(1);
    while cache.stats().in_flight > 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(cache.get(&1).as_deref(), Some("slow"));
}

#[tokio::test(start_paused = true)]
async fn a_wait_timeout_serves_the_kept_value() {
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(10)
        .time_to_live(10 * SECOND)
        .fail_safe(3600 * SECOND, 30 * SECOND)
        .wait_timeout(SECOND)
        .build()
        .unwrap();
    cache.insert(1, "kept".into());
    advance(20 * SECOND).await;
    let gate = Gate::default();
    let mut read = Box::pin(cache.fetch(1, {
        let load = gated(&gate, "new");
        move || async move { load().await.map(Loaded::found) }
    }));
    assert!(poll_once(&mut read).await);
    advance(SECOND).await;
    let read = read.await.unwrap();
    assert_eq!(
        (read.value.as_deref(), read.status),
        (Some("kept"), Status::StaleOnTimeout)
    );
    assert_eq!(gate.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hard_load_timeout_fails_a_hung_load_for_everyone_and_frees_the_key() {
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(10)
        .load_timeout(5 * SECOND)
        .build()
        .unwrap();
    let hung = Gate::default();
    let mut reads = Box::pin(join_all(
        (0..3).map(|_| cache.try_get_with(1, gated(&hung, "never"))),
    ));
    assert!(poll_once(&mut reads).await);
    hung.arrived().await;
    advance(5 * SECOND).await;
    assert!(reads.await.into_iter().all(|r| r.unwrap_err().is_timeout()));
    assert_eq!(cache.stats().load_timeouts, 1);
    assert_eq!(
        cache.stats().in_flight,
        0,
        "a hung backend still holds the key"
    );
    let calls = Arc::default();
    assert_eq!(
        cache
            .try_get_with(1, counted(&calls, "retry"))
            .await
            .unwrap(),
        "retry"
    );
}

#[tokio::test(start_paused = true)]
async fn a_soft_load_timeout_answers_the_waiters_but_lets_the_load_fill_the_cache() {
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(10)
        .soft_load_timeout(SECOND)
        .load_timeout(60 * SECOND)
        .build()
        .unwrap();
    let gate = Gate::default();
    let mut first = Box::pin(cache.try_get_with(1, gated(&gate, "slow")));
    assert!(poll_once(&mut first).await);
    gate.arrived().await;
    advance(SECOND).await;
    assert!(first.await.unwrap_err().is_timeout());
    // Meanwhile a new caller gets the same answer at once, without a second load.
    assert!(
        cache
            .try_get_with(1, gated(&gate, "dup"))
            .await
            .unwrap_err()
            .is_timeout()
    );
    assert_eq!(gate.calls(), 1);
    gate.open(1);
    while cache.stats().in_flight > 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(cache.get(&1).as_deref(), Some("slow"));
}

// ---- capacity, bulk, misc ----

#[tokio::test(start_paused = true)]
async fn a_weigher_bounds_the_total_weight() {
    let cache: Cache<u32, Vec<u8>> = Cache::builder()
        .max_capacity(10_000)
        .weigher(|_, v: &Vec<u8>| v.len() as u64)
        .build()
        .unwrap();
    for k in 0..100 {
        cache.insert(k, vec![0; 500]);
    }
    let stats = cache.stats();
    assert!(stats.weight <= 10_000, "{stats:?}");
    assert!(stats.evictions >= 80, "{stats:?}");
    assert_eq!(stats.entries as u64 * 500, stats.weight);
}

#[tokio::test(start_paused = true)]
async fn overlapping_bulk_reads_join_each_others_keys_and_never_deadlock() {
    let cache: Cache<u32, u32> = Cache::new(100);
    let gate = Gate::default();
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let load = || {
        let (gate, asked) = (gate.clone(), asked.clone());
        move |keys: Vec<u32>| async move {
            asked.lock().unwrap().push(keys.clone());
            gate.pass().await;
            Ok::<_, BackendDown>(
                keys.into_iter()
                    .map(|k| (k, k * 10))
                    .collect::<HashMap<_, _>>(),
            )
        }
    };
    let mut a = Box::pin(cache.get_many_with([1, 2, 3], load()));
    assert!(poll_once(&mut a).await);
    gate.arrived().await;
    let mut b = Box::pin(cache.get_many_with([3, 4, 2], load()));
    let mut single = Box::pin(cache.try_get_with(4, || async { Ok::<u32, BackendDown>(0) }));
    assert!(poll_once(&mut b).await && poll_once(&mut single).await);
    gate.arrived().await;
    gate.open(2);
    assert_eq!(a.await.unwrap(), HashMap::from([(1, 10), (2, 20), (3, 30)]));
    assert_eq!(b.await.unwrap(), HashMap::from([(2, 20), (3, 30), (4, 40)]));
    assert_eq!(
        single.await.unwrap(),
        40,
        "the single read joined the bulk load of key 4"
    );
    assert_eq!(*asked.lock().unwrap(), vec![vec![1, 2, 3], vec![4]]);
}

#[tokio::test(start_paused = true)]
async fn a_failing_bulk_load_fails_the_call_and_caches_nothing() {
    let cache: Cache<u32, u32> = Cache::new(100);
    let load = |_: Vec<u32>| async { Err::<HashMap<u32, u32>, _>(BackendDown("down".into())) };
    let err = cache.get_many_with([1, 2], load).await.unwrap_err();
    assert_eq!(err.loader_error(), Some(&BackendDown("down".into())));
    assert_eq!(cache.stats().entries, 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_with_another_error_type_still_learns_the_load_failed() {
    let cache = cache();
    let gate = Gate::default();
    let mut leader = Box::pin(cache.try_get_with(1, {
        let gate = gate.clone();
        move || async move {
            gate.pass().await;
            Err::<String, _>(BackendDown("x".into()))
        }
    }));
    let mut other = Box::pin(cache.try_get_with(1, || async { Err::<String, _>(std::fmt::Error) }));
    assert!(poll_once(&mut leader).await && poll_once(&mut other).await);
    gate.arrived().await;
    gate.open(1);
    assert!(leader.await.unwrap_err().loader_error().is_some());
    let err = other.await.unwrap_err();
    assert!(err.is_loader_error() && err.loader_error().is_none());
}

#[test]
fn a_load_whose_runtime_shuts_down_fails_its_waiters_instead_of_hanging() {
    let cache = cache();
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut waiting =
        Box::pin(cache.try_get_with(1, std::future::pending::<Result<String, BackendDown>>));
    first.block_on(async {
        assert!(poll_once(&mut waiting).await);
    });
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(second.block_on(waiting).unwrap_err().is_cancelled());
    assert_eq!(cache.stats().in_flight, 0);
}

#[test]
fn invalid_settings_are_refused_by_build() {
    let reason = |b: herder::cache::Builder<u32, u32>| b.build().unwrap_err().reason().to_owned();
    assert_eq!(reason(Cache::builder()), "max_capacity must be set");
    assert_eq!(
        reason(Cache::builder().max_capacity(0)),
        "max_capacity must be at least 1"
    );
    assert_eq!(
        reason(
            Cache::builder()
                .max_capacity(1)
                .early_refresh(EarlyRefresh::Fraction(1.5))
        ),
        "early_refresh fraction must be in (0, 1)"
    );
    assert_eq!(
        reason(
            Cache::builder()
                .max_capacity(1)
                .early_refresh(EarlyRefresh::Fraction(0.5))
        ),
        "early_refresh needs a time_to_live"
    );
    assert_eq!(
        reason(
            Cache::builder()
                .max_capacity(1)
                .soft_load_timeout(SECOND)
                .load_timeout(SECOND)
        ),
        "soft_load_timeout must be shorter than load_timeout"
    );
    assert_eq!(
        reason(
            Cache::builder()
                .max_capacity(1)
                .wait_timeout(Duration::ZERO)
        ),
        "timeouts must be positive"
    );
}

#[tokio::test(start_paused = true)]
async fn a_paused_clock_is_followed_exactly_whatever_the_resolution() {
    for resolution in [
        Duration::ZERO,
        Duration::from_millis(1),
        Duration::from_secs(1),
    ] {
        let cache: Cache<u32, String> = Cache::builder()
            .max_capacity(10)
            .time_to_live(Duration::from_millis(100))
            .clock_resolution(resolution)
            .build()
            .unwrap();
        cache.insert(1, "v".into());
        tokio::time::advance(Duration::from_millis(100) - Duration::from_nanos(1)).await;
        assert_eq!(cache.get(&1).as_deref(), Some("v"), "{resolution:?}");
        tokio::time::advance(Duration::from_nanos(1)).await;
        assert_eq!(cache.get(&1), None, "{resolution:?}");
    }
}

#[test]
fn a_cache_built_and_read_outside_a_runtime_expires_its_entries() {
    let cache: Cache<u32, u32> = Cache::builder()
        .max_capacity(1)
        .time_to_live(Duration::from_millis(5))
        .build()
        .unwrap();
    cache.insert(1, 1);
    assert_eq!(cache.get(&1), Some(1));
    // No runtime: the clock is read at every use (a real sleep: there is no clock to pause).
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(cache.get(&1), None);
}

#[test]
fn hits_on_a_multi_thread_runtime_expire_entries_within_the_resolution() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    // Real time (a multi-thread runtime cannot pause its clock), with wide margins: a loaded
    // machine may deschedule any thread for tens of milliseconds.
    let ttl = Duration::from_millis(300);
    let cache: Cache<u32, u32> = Cache::builder()
        .max_capacity(1)
        .time_to_live(ttl)
        .build()
        .unwrap();
    runtime.block_on(async {
        cache.insert(1, 1);
        assert_eq!(cache.get(&1), Some(1)); // starts the ticker
        // The ticker moves the cache's clock, so the hot entry expires although no hit reads
        // the OS clock: within a few ticks of its deadline (bounded here by 3 s).
        tokio::time::sleep(ttl).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while cache.get(&1).is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the ticker's clock stopped: the entry never expired"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    // The ticker's runtime is gone: hits read the clock again rather than a time that stopped.
    cache.insert(2, 2);
    assert_eq!(cache.get(&2), Some(2));
    drop(runtime);
    std::thread::sleep(ttl + Duration::from_millis(10));
    assert_eq!(cache.get(&2), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_misses_on_one_key_make_one_backend_call() {
    let cache: Cache<u32, u64> = Cache::new(100);
    let calls = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let tasks: Vec<_> = (0..10_000)
        .map(|_| {
            let (cache, calls, release) = (cache.clone(), calls.clone(), release.clone());
            tokio::spawn(async move {
                cache
                    .get_with(7, move || async move {
                        calls.fetch_add(1, SeqCst);
                        release.acquire().await.unwrap().forget();
                        49
                    })
                    .await
            })
        })
        .collect();
    release.add_permits(1);
    for task in tasks {
        assert_eq!(task.await.unwrap(), 49);
    }
    assert_eq!(calls.load(SeqCst), 1);
}
