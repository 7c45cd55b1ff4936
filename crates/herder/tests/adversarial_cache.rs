//! Adversarial tests of `Cache`: invalidation finality against loads, refreshes, fail-safe and
//! bulk loads in flight; stampedes with cancelled, panicking, erring and hung leaders; settings
//! and weights at their extremes; exact stats; the eviction listener. Each bug they found is
//! fixed; its test stays as a regression test.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herder::Cache;
use herder::cache::{Loaded, RemovalCause, Status};
use support::{BackendDown, Gate, settle, until};

/// A real-clock bound on anything that could hang.
const BOUND: Duration = Duration::from_secs(3);

async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(BOUND, fut).await {
        Ok(value) => value,
        Err(_) => panic!("hung: {what}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Bugs
// ---------------------------------------------------------------------------------------------

/// The weigher is user code that runs inside the load's store step, under the flight's shard
/// lock (`Flights::finish` → `Inner::store` → `Storage::insert` → quick_cache → weigher). A
/// panic there unwinds out of `finish` before the flight is unregistered and before its slot
/// is completed: every waiter hangs forever and every later read of the key joins the dead
/// flight. (`sync::lock`'s comment assumes only `Hash`/`Eq`/`Clone` run under the lock.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_weigher_never_strands_the_waiters() {
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(1_000)
        .weigher(|_, v: &String| {
            assert!(v != "poison", "weigher exploded");
            v.len() as u64
        })
        .build()
        .unwrap();
    let gate = Gate::default();
    let leader = tokio::spawn({
        let (cache, gate) = (cache.clone(), gate.clone());
        async move {
            cache
                .get_with(1, move || async move {
                    gate.pass().await;
                    "poison".to_string()
                })
                .await
        }
    });
    until("the load reaches the backend", || gate.calls() == 1).await;
    let follower = tokio::spawn({
        let cache = cache.clone();
        async move { cache.get_with(1, || async { "other".to_string() }).await }
    });
    until("the follower joins", || cache.stats().coalesced == 1).await;
    gate.open(1);
    // Either the value or a panic is acceptable; hanging is not.
    let leader = tokio::time::timeout(BOUND, leader).await;
    let follower = tokio::time::timeout(BOUND, follower).await;
    assert!(
        leader.is_ok() && follower.is_ok(),
        "waiters hung: leader {:?}, follower {:?}, stats {:?}",
        leader.is_ok(),
        follower.is_ok(),
        cache.stats()
    );
    // And the key is not wedged: a later read loads.
    let later = tokio::time::timeout(BOUND, cache.get_with(1, || async { "fine".into() })).await;
    assert_eq!(later.ok().as_deref(), Some("fine"), "{:?}", cache.stats());
}

/// `Storage::new` gives quick_cache 64 shards (at least); quick_cache halves that until each
/// shard is sized for 32 items, which for a weighted cache (1024 estimated items) leaves 32
/// shards, and splits the weight capacity evenly between them. An entry heavier than about
/// capacity / 32 is then "overweight" for its shard and rejected: a 10,000-unit cache never
/// keeps a 500-unit value (5 % of its capacity), so every read of it goes to the backend.
/// (`tests/cache.rs`'s `a_weigher_bounds_the_total_weight` passes only because every one of its
/// 500-byte values is rejected: its weight stays 0.)
#[tokio::test(start_paused = true)]
async fn a_weighted_cache_keeps_an_entry_far_below_its_capacity() {
    let cache: Cache<u32, Vec<u8>> = Cache::builder()
        .max_capacity(10_000)
        .weigher(|_, v: &Vec<u8>| v.len() as u64)
        .build()
        .unwrap();
    cache.insert(1, vec![0; 500]);
    // Read-through too: the second read should be a hit.
    for _ in 0..2 {
        cache.get_with(2, || async { vec![1u8; 500] }).await;
    }
    let stats = cache.stats();
    assert_eq!(
        cache.get(&1).map(|v| v.len()),
        Some(500),
        "a 500-unit entry in an empty 10,000-unit cache was not kept: {stats:?}"
    );
    assert_eq!(stats.loads, 1, "{stats:?}");
}

/// The other face of the per-shard split: quick_cache rounds each shard's capacity up, so a
/// weighted cache of capacity 1 holds one entry per shard (32), not one.
#[tokio::test(start_paused = true)]
async fn a_weighted_cache_never_holds_more_than_its_capacity() {
    let cache: Cache<u32, u32> = Cache::builder()
        .max_capacity(1)
        .weigher(|_, _| 1)
        .build()
        .unwrap();
    for k in 0..200 {
        cache.insert(k, k);
    }
    let stats = cache.stats();
    assert!(
        stats.weight <= 1 && stats.entries <= 1,
        "max_capacity(1) holds {stats:?}"
    );
}

/// `negative_hits` counts "reads answered by a cached not found". A `get_with` over a cached
/// absence is not answered by it (its own loader says the value exists: it loads), yet its
/// lookup counts a negative hit before it counts the miss of the load it leads: one read, two
/// counters.
#[tokio::test(start_paused = true)]
async fn a_get_with_over_a_cached_absence_counts_one_miss_and_no_negative_hit() {
    let cache: Cache<u32, u32> = Cache::builder()
        .max_capacity(100)
        .negative_ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    let absent = cache
        .fetch(1, || async { Ok::<_, BackendDown>(Loaded::not_found()) })
        .await
        .unwrap();
    assert_eq!(absent.status, Status::Miss);
    assert_eq!(cache.get_with(1, || async { 10 }).await, 10);
    let stats = cache.stats();
    assert_eq!(stats.loads, 2, "{stats:?}");
    assert_eq!(
        (stats.misses, stats.negative_hits, stats.hits),
        (2, 0, 0),
        "two reads, both loaded: {stats:?}"
    );
}

/// With a time to idle, a read that pushes the idle deadline back (`Inner::touch`) removes the
/// entry and inserts it again: two storage operations. The flight lock it holds orders it with
/// writes and with the rechecks of `get_with`, but `Cache::get` and `contains_key` read the
/// storage without it, so on another thread they see a fresh key as absent.
#[test]
fn with_time_to_idle_a_fresh_key_is_never_missing_for_a_concurrent_get() {
    let cache: Cache<u32, u32> = Cache::builder()
        .max_capacity(100)
        .time_to_idle(Duration::from_millis(8)) // a touch every half millisecond of reads
        .clock_resolution(Duration::ZERO)
        .build()
        .unwrap();
    cache.insert(1, 1);
    // A miss followed at once by a hit, with no insert in between: the key was there all along.
    // (A real expiry, both threads descheduled for 8 ms on a busy machine, is put back by thread
    // 0 and not counted.)
    let transient = Arc::new(AtomicUsize::new(0));
    let reinserts = Arc::new(AtomicUsize::new(0));
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let readers: Vec<_> = (0..2)
        .map(|thread| {
            let (cache, transient, reinserts) =
                (cache.clone(), transient.clone(), reinserts.clone());
            std::thread::spawn(move || {
                while std::time::Instant::now() < deadline {
                    for _ in 0..1_000 {
                        // Odd while thread 0 re-inserts (a seqlock): a miss and a hit around an
                        // insert are not counted.
                        let epoch = reinserts.load(SeqCst);
                        if cache.get(&1).is_some() {
                            continue;
                        }
                        if cache.get(&1).is_some()
                            && epoch % 2 == 0
                            && reinserts.load(SeqCst) == epoch
                        {
                            transient.fetch_add(1, SeqCst);
                        } else if thread == 0 {
                            reinserts.fetch_add(1, SeqCst);
                            cache.insert(1, 1);
                            reinserts.fetch_add(1, SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    for reader in readers {
        reader.join().unwrap();
    }
    assert_eq!(
        transient.load(SeqCst),
        0,
        "get() returned None for a key that was there just before and just after"
    );
}

// ---------------------------------------------------------------------------------------------
// Invalidation is final
// ---------------------------------------------------------------------------------------------

/// A get_with whose load is held at the gate; returns the task and waits until the load runs.
async fn gated_get_with(
    cache: &Cache<u32, String>,
    key: u32,
    gate: &Gate,
    value: &str,
) -> tokio::task::JoinHandle<String> {
    let before = gate.calls();
    let task = tokio::spawn({
        let (cache, gate, value) = (cache.clone(), gate.clone(), value.to_string());
        async move {
            cache
                .get_with(key, move || async move {
                    gate.pass().await;
                    value
                })
                .await
        }
    });
    until("the load reaches the backend", || {
        gate.calls() == before + 1
    })
    .await;
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_began_before_invalidate_or_invalidate_all_stores_nothing() {
    for all in [false, true] {
        let cache: Cache<u32, String> = Cache::new(100);
        let gate = Gate::default();
        let old = gated_get_with(&cache, 1, &gate, "old").await;
        // A second key in flight too, for invalidate_all.
        let other = gated_get_with(&cache, 2, &gate, "old").await;
        if all {
            cache.invalidate_all();
        } else {
            cache.invalidate(&1);
            cache.invalidate(&2);
        }
        // A read that starts now does not join the old loads: it leads its own.
        let fresh = gated_get_with(&cache, 1, &gate, "new").await;
        gate.open(3);
        assert_eq!(bounded("old", old).await.unwrap(), "old");
        assert_eq!(bounded("other", other).await.unwrap(), "old");
        assert_eq!(bounded("fresh", fresh).await.unwrap(), "new");
        until("loads end", || cache.stats().in_flight == 0).await;
        assert_eq!(cache.get(&1).as_deref(), Some("new"));
        assert_eq!(cache.get(&2), None, "the old load of 2 was put back");
        assert_eq!(gate.calls(), 3);
    }
}

#[tokio::test(start_paused = true)]
async fn a_refresh_in_flight_during_invalidate_stores_nothing() {
    // Stale-while-revalidate and early refresh (Fraction) both refresh in the background.
    for early in [false, true] {
        let mut builder = Cache::builder()
            .max_capacity(100)
            .time_to_live(Duration::from_secs(10))
            .stale_while_revalidate(Duration::from_secs(60));
        if early {
            builder = builder.early_refresh(herder::cache::EarlyRefresh::Fraction(0.5));
        }
        let cache: Cache<u32, String> = builder.build().unwrap();
        cache.insert(1, "v1".into());
        tokio::time::advance(Duration::from_secs(if early { 6 } else { 11 })).await;
        let gate = Gate::default();
        let g = gate.clone();
        let served = cache
            .fetch(1, move || async move {
                g.pass().await;
                Ok::<_, BackendDown>(Loaded::found("refreshed-old".to_string()))
            })
            .await
            .unwrap();
        assert_eq!(served.value.as_deref(), Some("v1"));
        until("the refresh reaches the backend", || gate.calls() == 1).await;
        assert_eq!(cache.stats().refreshes, 1);
        cache.invalidate(&1);
        gate.open(1);
        until("the refresh ends", || cache.stats().in_flight == 0).await;
        settle().await;
        assert_eq!(
            cache.get(&1),
            None,
            "early={early}: the refresh put its value back"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn fail_safe_never_serves_a_value_older_than_the_last_invalidation() {
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(1))
        .fail_safe(Duration::from_secs(3_600), Duration::from_secs(30))
        .wait_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let fail = || async { Err::<Loaded<String>, _>(BackendDown("down".into())) };
    cache.insert(1, "v1".into());
    tokio::time::advance(Duration::from_secs(2)).await;
    // Kept as a fallback; a failed load serves it (the control).
    let control = cache.fetch(1, fail).await.unwrap();
    assert_eq!(
        (control.value.as_deref(), control.status),
        (Some("v1"), Status::StaleOnError)
    );
    // The throttled re-store is invalidated: no fail-safe value after that.
    cache.invalidate(&1);
    let after = cache.fetch(1, fail).await;
    assert!(after.is_err(), "fail-safe served {:?}", after.ok());

    // A failing load under way when the key is invalidated: its waiter (who asked before) may get
    // the fallback, but it is not re-stored for the throttle period.
    cache.insert(2, "v1".into());
    tokio::time::advance(Duration::from_secs(2)).await;
    let gate = Gate::default();
    let read = tokio::spawn({
        let (cache, gate) = (cache.clone(), gate.clone());
        async move {
            cache
                .fetch(2, move || async move {
                    gate.pass().await;
                    Err::<Loaded<String>, _>(BackendDown("down".into()))
                })
                .await
        }
    });
    until("the load reaches the backend", || gate.calls() == 1).await;
    cache.invalidate(&2);
    gate.open(1);
    let _ = read.await.unwrap();
    assert_eq!(
        cache.get(&2),
        None,
        "the fail-safe value came back after invalidate"
    );
    let next = cache.fetch(2, fail).await;
    assert!(next.is_err(), "fail-safe served {:?}", next.ok());
}

#[tokio::test(start_paused = true)]
async fn a_soft_timed_out_load_that_lands_after_invalidate_stores_nothing() {
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(100)
        .soft_load_timeout(Duration::from_secs(1))
        .load_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let gate = Gate::default();
    let read = tokio::spawn({
        let (cache, gate) = (cache.clone(), gate.clone());
        async move {
            cache
                .try_get_with(1, move || async move {
                    gate.pass().await;
                    Ok::<_, BackendDown>("old".to_string())
                })
                .await
        }
    });
    until("the load reaches the backend", || gate.calls() == 1).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    let early = read.await.unwrap();
    assert!(early.unwrap_err().is_timeout());
    assert_eq!(cache.stats().in_flight, 1, "the load goes on");
    cache.invalidate(&1);
    gate.open(1);
    until("the load ends", || cache.stats().in_flight == 0).await;
    settle().await;
    assert_eq!(
        cache.get(&1),
        None,
        "the late landing was stored after invalidate"
    );
    assert_eq!(
        cache.get_with(1, || async { "new".to_string() }).await,
        "new"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_load_under_way_during_invalidate_stores_nothing_for_that_key() {
    let cache: Cache<u32, String> = Cache::new(100);
    let gate = Gate::default();
    let bulk = tokio::spawn({
        let (cache, gate) = (cache.clone(), gate.clone());
        async move {
            cache
                .get_many_with([1, 2, 3], move |keys: Vec<u32>| async move {
                    gate.pass().await;
                    Ok::<_, BackendDown>(
                        keys.into_iter()
                            .map(|k| (k, format!("old {k}")))
                            .collect::<HashMap<_, _>>(),
                    )
                })
                .await
        }
    });
    until("the bulk load reaches the backend", || gate.calls() == 1).await;
    cache.invalidate(&2);
    // A single-key read of 2 does not join the bulk flight.
    let fresh = gated_get_with(&cache, 2, &gate, "new 2").await;
    gate.open(2);
    let values = bounded("bulk", bulk).await.unwrap().unwrap();
    assert_eq!(values.len(), 3);
    assert_eq!(bounded("fresh", fresh).await.unwrap(), "new 2");
    until("loads end", || cache.stats().in_flight == 0).await;
    assert_eq!(cache.get(&1).as_deref(), Some("old 1"));
    assert_eq!(cache.get(&2).as_deref(), Some("new 2"));
    assert_eq!(cache.get(&3).as_deref(), Some("old 3"));
}

// ---------------------------------------------------------------------------------------------
// Stampedes and failed leaders
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_key_read_by_many_makes_one_call_with_exact_counts() {
    let cache: Cache<u32, String> = Cache::new(100);
    let gate = Gate::default();
    let reads: Vec<_> = (0..64)
        .map(|_| {
            let (cache, gate) = (cache.clone(), gate.clone());
            tokio::spawn(async move {
                cache
                    .get_with(7, move || async move {
                        gate.pass().await;
                        "seven".to_string()
                    })
                    .await
            })
        })
        .collect();
    until("every reader joined", || {
        let s = cache.stats();
        s.misses + s.hits == 64
    })
    .await;
    gate.open(64);
    for read in reads {
        assert_eq!(bounded("read", read).await.unwrap(), "seven");
    }
    let stats = cache.stats();
    assert_eq!(gate.calls(), 1);
    assert_eq!(
        (stats.misses, stats.coalesced, stats.loads),
        (64, 63, 1),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_strands_nobody() {
    let cache: Cache<u32, String> = Cache::new(100);
    let gate = Gate::default();
    let leader = gated_get_with(&cache, 1, &gate, "v").await;
    let follower = tokio::spawn({
        let cache = cache.clone();
        async move { cache.get_with(1, || async { unreachable!("joined") }).await }
    });
    until("the follower joins", || cache.stats().coalesced == 1).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    gate.open(1);
    assert_eq!(bounded("follower", follower).await.unwrap(), "v");
    assert_eq!(cache.get(&1).as_deref(), Some("v"));
    assert_eq!(gate.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_or_erring_leader_fails_its_waiters_once_and_the_next_read_loads() {
    for panics in [false, true] {
        let cache: Cache<u32, String> = Cache::new(100);
        let gate = Gate::default();
        let leader = tokio::spawn({
            let (cache, gate) = (cache.clone(), gate.clone());
            async move {
                cache
                    .try_get_with(1, move || async move {
                        gate.pass().await;
                        assert!(!panics, "loader exploded");
                        Err::<String, _>(BackendDown("down".into()))
                    })
                    .await
            }
        });
        until("the load runs", || gate.calls() == 1).await;
        let follower = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .try_get_with(1, || async {
                        unreachable!("joined") as Result<String, BackendDown>
                    })
                    .await
            }
        });
        until("the follower joins", || cache.stats().coalesced == 1).await;
        gate.open(1);
        let (a, b) = (
            bounded("leader", leader).await.unwrap().unwrap_err(),
            bounded("follower", follower).await.unwrap().unwrap_err(),
        );
        if panics {
            assert!(a.is_panic() && b.is_panic());
            assert_eq!(b.panic_message(), Some("loader exploded"));
        } else {
            assert_eq!(a.loader_error(), Some(&BackendDown("down".into())));
            assert_eq!(b.loader_error(), Some(&BackendDown("down".into())));
        }
        assert_eq!(gate.calls(), 1);
        assert_eq!(cache.get(&1), None, "errors are not cached");
        assert_eq!(cache.get_with(1, || async { "ok".to_string() }).await, "ok");
        let stats = cache.stats();
        assert_eq!(
            (stats.load_errors, stats.load_panics, stats.loads),
            (u64::from(!panics), u64::from(panics), 1),
            "{stats:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_leader_is_cut_by_load_timeout_and_the_next_read_loads_again() {
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(100)
        .load_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let hung = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .try_get_with(1, std::future::pending::<Result<String, BackendDown>>)
                .await
        }
    });
    settle().await;
    let follower = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .try_get_with(1, || async {
                    unreachable!("joined") as Result<String, BackendDown>
                })
                .await
        }
    });
    until("the follower joins", || cache.stats().coalesced == 1).await;
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(hung.await.unwrap().unwrap_err().is_timeout());
    assert!(follower.await.unwrap().unwrap_err().is_timeout());
    assert_eq!(cache.stats().in_flight, 0);
    assert_eq!(cache.stats().load_timeouts, 1);
    let next = cache
        .try_get_with(1, || async { Ok::<_, BackendDown>("v".to_string()) })
        .await;
    assert_eq!(next.unwrap(), "v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_reads_keeps_exact_counts() {
    let cache: Cache<u32, u32> = Cache::new(1_000);
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move {
                for i in 0..500u32 {
                    let key = (i * 7 + t) % 40;
                    let calls = calls.clone();
                    let v = cache
                        .get_with(key, move || async move {
                            calls.fetch_add(1, SeqCst);
                            tokio::task::yield_now().await;
                            key * 2
                        })
                        .await;
                    assert_eq!(v, key * 2);
                    if i % 50 == 0 {
                        cache.invalidate(&key);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        bounded("storm", task).await.unwrap();
    }
    let stats = cache.stats();
    assert_eq!(stats.hits + stats.misses, 8 * 500, "{stats:?}");
    assert_eq!(stats.loads, calls.load(SeqCst) as u64, "{stats:?}");
    assert_eq!(stats.misses - stats.coalesced, stats.loads, "{stats:?}");
    assert_eq!(stats.in_flight, 0);
}

// ---------------------------------------------------------------------------------------------
// Settings, weights, listener
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn extreme_settings_are_refused_or_saturate() {
    // Duration::MAX everywhere a duration is taken.
    let cache: Cache<u32, u32> = Cache::builder()
        .max_capacity(u64::MAX)
        .time_to_live(Duration::MAX)
        .time_to_idle(Duration::MAX)
        .negative_ttl(Duration::MAX)
        .stale_while_revalidate(Duration::MAX)
        .fail_safe(Duration::MAX, Duration::MAX)
        .wait_timeout(Duration::MAX)
        .load_timeout(Duration::MAX)
        .clock_resolution(Duration::ZERO)
        .build()
        .unwrap();
    assert_eq!(cache.get_with(1, || async { 1 }).await, 1);
    cache.insert_with_ttl(2, 2, Duration::MAX);
    tokio::time::advance(Duration::from_secs(86_400 * 365)).await;
    assert_eq!((cache.get(&1), cache.get(&2)), (Some(1), Some(2)));
    let fetched = cache
        .fetch(3, || async {
            Ok::<_, BackendDown>(Loaded::found(3).ttl(Duration::MAX))
        })
        .await
        .unwrap();
    assert_eq!(fetched.value, Some(3));
    // Zero where zero makes no sense is refused.
    for builder in [
        Cache::<u32, u32>::builder().max_capacity(0),
        Cache::builder()
            .max_capacity(1)
            .time_to_idle(Duration::ZERO),
        Cache::builder()
            .max_capacity(1)
            .soft_load_timeout(Duration::MAX)
            .load_timeout(Duration::MAX),
    ] {
        assert!(builder.build().is_err());
    }
}

#[tokio::test(start_paused = true)]
async fn weights_of_zero_and_u32_max_and_a_capacity_of_one() {
    let cache: Cache<u32, u32> = Cache::builder().max_capacity(1).build().unwrap();
    for k in 0..10 {
        assert_eq!(cache.get_with(k, move || async move { k }).await, k);
    }
    assert_eq!(cache.stats().entries, 1);
    assert_eq!(cache.get(&9), Some(9));

    let zero: Cache<u32, u32> = Cache::builder()
        .max_capacity(4)
        .estimated_items(4)
        .weigher(|_, _| 0)
        .build()
        .unwrap();
    for k in 0..100 {
        zero.insert(k, k);
    }
    assert!(
        zero.stats().entries <= 4,
        "weight 0 counts as 1: {:?}",
        zero.stats()
    );

    let heavy: Cache<u32, u32> = Cache::builder()
        .max_capacity(u64::MAX)
        .weigher(|_, _| u64::from(u32::MAX))
        .build()
        .unwrap();
    for k in 0..100 {
        heavy.insert(k, k);
    }
    assert_eq!(heavy.stats().entries, 100);
    assert_eq!(heavy.stats().weight, 100 * u64::from(u32::MAX));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_listener_is_told_every_removal_and_breaks_nothing() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let cache: Cache<u32, u32> = Cache::builder()
        .max_capacity(1)
        .time_to_live(Duration::from_secs(10))
        .eviction_listener(move |k, v, cause| {
            log.lock().unwrap().push((k, v, cause));
            panic!("listener exploded");
        })
        .build()
        .unwrap();
    cache.insert(1, 10);
    cache.insert(1, 11); // replaced
    cache.insert(2, 20); // 1 evicted for size
    cache.invalidate(&2); // explicit
    cache.insert(3, 30);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(cache.get(&3), None); // expired, found by a read
    assert_eq!(cache.get_with(4, || async { 40 }).await, 40);
    cache.insert(5, 50);
    cache.invalidate_all();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (1, 10, RemovalCause::Replaced),
            (1, 11, RemovalCause::Size),
            (2, 20, RemovalCause::Explicit),
            (3, 30, RemovalCause::Expired),
            (4, 40, RemovalCause::Size),
            (5, 50, RemovalCause::Explicit),
        ]
    );
    assert_eq!(cache.get_with(6, || async { 60 }).await, 60);
}

/// The largest capacity with few shards (`estimated_items(1)`: one quick_cache shard holding all
/// of `u64::MAX`) and weights near half of it: quick_cache adds the hot and cold weights
/// (`weight_hot + weight_cold > weight_capacity`) without saturating, which overflows, a panic in
/// a debug build, under the key's flight lock when it happens in a load's store step (see
/// `a_panicking_weigher_never_strands_the_waiters`): the key's waiters hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_capacity_with_huge_weights_never_overflows() {
    let cache: Cache<u32, u32> = Cache::builder()
        .max_capacity(u64::MAX)
        .estimated_items(1)
        .weigher(|_, _| u64::MAX / 2)
        .build()
        .unwrap();
    for k in 0..4 {
        let read = tokio::time::timeout(BOUND, cache.get_with(k, move || async move { k })).await;
        assert_eq!(read.ok(), Some(k), "read {k} hung: {:?}", cache.stats());
    }
    // Capacities are capped at a quarter of `u64::MAX`, so that sums of weights cannot overflow.
    assert!(cache.stats().weight <= u64::MAX / 4, "{:?}", cache.stats());
}

/// `get_many_with` registers a flight per missing key (`join_flight`) while it walks the
/// caller's key iterator, and only hands the tickets to the load task after the walk. The
/// iterator is user code: when it panics part-way, the tickets already taken are dropped
/// (`Ticket` has no `Drop`), so their flights stay registered for ever, never completed: every
/// later read of those keys joins a flight nobody will finish and hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_read_whose_key_iterator_panics_strands_nobody() {
    let cache: Cache<u32, u32> = Cache::new(100);
    let bulk = tokio::spawn({
        let cache = cache.clone();
        async move {
            let keys = (1..=3u32).inspect(|k| assert!(*k != 3, "a key that does not parse"));
            cache
                .get_many_with(keys, |keys: Vec<u32>| async move {
                    Ok::<_, BackendDown>(keys.into_iter().map(|k| (k, k * 10)).collect())
                })
                .await
        }
    });
    assert!(bulk.await.unwrap_err().is_panic());
    let read = tokio::time::timeout(BOUND, cache.get_with(1, || async { 10 })).await;
    assert_eq!(
        read.ok(),
        Some(10),
        "the read of key 1 hung: {:?}",
        cache.stats()
    );
    assert_eq!(cache.stats().in_flight, 0, "{:?}", cache.stats());
}

/// Fail-safe serves a value at most `max_stale` past its TTL. A load past its soft timeout
/// completes its flight's slot early with the fallback it captured when it started, and stays
/// registered until it lands (up to the hard `load_timeout`): every reader arriving meanwhile
/// joins it and gets that fallback at once, however old it has become. Here a value with
/// `max_stale` 1 s is served 100 s past its TTL, while a read with no flight under way would
/// find it gone.
#[tokio::test(start_paused = true)]
async fn a_soft_timed_out_load_never_serves_a_fallback_past_max_stale() {
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(10))
        .fail_safe(Duration::from_secs(1), Duration::from_secs(5))
        .soft_load_timeout(Duration::from_millis(100))
        .load_timeout(Duration::from_secs(3_600))
        .build()
        .unwrap();
    cache.insert(1, "v1".into());
    tokio::time::advance(Duration::from_millis(10_500)).await; // kept: 0.5 s past its TTL
    let gate = Gate::default();
    let first = tokio::spawn({
        let (cache, gate) = (cache.clone(), gate.clone());
        async move {
            cache
                .fetch(1, move || async move {
                    gate.pass().await;
                    Ok::<_, BackendDown>(Loaded::found("v2".to_string()))
                })
                .await
        }
    });
    until("the load runs", || gate.calls() == 1).await;
    tokio::time::advance(Duration::from_millis(200)).await;
    let first = first.await.unwrap().unwrap();
    assert_eq!(
        first.status,
        Status::StaleOnTimeout,
        "the control: within max_stale"
    );
    // 100 s later, the load still under way (its hard limit is an hour).
    tokio::time::advance(Duration::from_secs(100)).await;
    let late = cache
        .fetch(1, || async {
            Ok::<_, BackendDown>(Loaded::found("v3".to_string()))
        })
        .await;
    assert!(
        !matches!(&late, Ok(f) if f.value.as_deref() == Some("v1")),
        "served v1, 100 s past its TTL with max_stale 1 s: {:?}",
        late.map(|f| f.status)
    );
    gate.open(1);
}

/// `Clone` of the value is user code too, and a load's store step clones the loaded value under
/// the key's flight lock: if it panics there, the flight still ends (its waiters get the value
/// or the panic) and the key is not wedged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_whose_clone_panics_never_wedges_its_key() {
    static EXPLODE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    #[derive(Debug, PartialEq)]
    struct Fragile(u32);
    impl Clone for Fragile {
        fn clone(&self) -> Self {
            assert!(!EXPLODE.load(SeqCst), "clone exploded");
            Fragile(self.0)
        }
    }
    let cache: Cache<u32, Fragile> = Cache::new(10);
    EXPLODE.store(true, SeqCst);
    let first = tokio::spawn({
        let cache = cache.clone();
        async move { cache.get_with(1, || async { Fragile(1) }).await }
    });
    // Answered, or failed with the panic: never hung.
    let first = tokio::time::timeout(BOUND, first).await;
    EXPLODE.store(false, SeqCst);
    assert!(first.is_ok(), "the read hung: {:?}", cache.stats());
    let later = tokio::time::timeout(BOUND, cache.get_with(1, || async { Fragile(2) }))
        .await
        .expect("the key is wedged");
    assert!(later == Fragile(1) || later == Fragile(2), "{later:?}");
    assert_eq!(cache.stats().in_flight, 0, "{:?}", cache.stats());
}

/// The same across the DataLoader seam: a DataLoader load that joins a cache load released
/// early at its soft timeout takes that load's fail-safe fallback only if the cache could still
/// serve it (here 100 s past `max_stale`, it could not).
#[tokio::test(start_paused = true)]
async fn a_dataloader_joined_to_a_soft_timed_out_load_never_gets_a_fallback_past_max_stale() {
    struct Rows;
    impl herder::Loader for Rows {
        type Key = u32;
        type Value = String;
        type Error = BackendDown;
        async fn load(&self, keys: &[u32]) -> Result<HashMap<u32, String>, BackendDown> {
            Ok(keys.iter().map(|k| (*k, "v3".to_string())).collect())
        }
    }
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(10))
        .fail_safe(Duration::from_secs(1), Duration::from_secs(5))
        .soft_load_timeout(Duration::from_millis(100))
        .load_timeout(Duration::from_secs(3_600))
        .build()
        .unwrap();
    let rows = herder::DataLoader::builder(Rows)
        .cache(cache.clone())
        .build()
        .unwrap();
    cache.insert(1, "v1".into());
    tokio::time::advance(Duration::from_millis(10_500)).await; // kept: 0.5 s past its TTL
    let gate = Gate::default();
    let first = tokio::spawn({
        let (cache, gate) = (cache.clone(), gate.clone());
        async move {
            cache
                .fetch(1, move || async move {
                    gate.pass().await;
                    Ok::<_, BackendDown>(Loaded::found("v2".to_string()))
                })
                .await
        }
    });
    until("the load runs", || gate.calls() == 1).await;
    tokio::time::advance(Duration::from_millis(200)).await;
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status, Status::StaleOnTimeout, "the control");
    // 100 s later, the cache's load still under way.
    tokio::time::advance(Duration::from_secs(100)).await;
    let late = tokio::time::timeout(BOUND, rows.load(1))
        .await
        .expect("the load hung");
    assert!(
        !matches!(&late, Ok(Some(v)) if v == "v1"),
        "served v1, 100 s past its TTL with max_stale 1 s: {late:?}"
    );
    gate.open(1);
}
