//! The surface a moka user reaches for: lookups by a borrowed key, `remove` returning the value,
//! `iter`, and an eviction listener told the cause of each removal. Paused clock.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use herder::Cache;
use herder::cache::RemovalCause;
use support::{BackendDown, Gate, poll_once};
use tokio::time::advance;

const SECOND: Duration = Duration::from_secs(1);

type Log = Arc<Mutex<Vec<(String, u32, RemovalCause)>>>;

fn listened(capacity: u64, ttl: Option<Duration>) -> (Cache<String, u32>, Log) {
    let log: Log = Arc::default();
    let sink = log.clone();
    let mut builder = Cache::builder()
        .max_capacity(capacity)
        .eviction_listener(move |key, value, cause| sink.lock().unwrap().push((key, value, cause)));
    if let Some(ttl) = ttl {
        builder = builder.time_to_live(ttl);
    }
    (builder.build().unwrap(), log)
}

fn drain(log: &Log) -> Vec<(String, u32, RemovalCause)> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[test]
fn string_keys_are_looked_up_invalidated_and_removed_by_str() {
    let cache: Cache<String, u32> = Cache::new(10);
    cache.insert("a".to_string(), 1);
    cache.insert("b".to_string(), 2);
    assert_eq!(cache.get("a"), Some(1));
    assert!(cache.contains_key("b"));
    cache.invalidate("b");
    assert!(!cache.contains_key("b"));
    assert_eq!(cache.remove("a"), Some(1));
    assert_eq!(cache.remove("a"), None);
    // Byte-slice keys too.
    let bytes: Cache<Vec<u8>, u32> = Cache::new(10);
    bytes.insert(b"k".to_vec(), 7);
    assert_eq!(bytes.get(&b"k"[..]), Some(7));
}

#[tokio::test(start_paused = true)]
async fn remove_returns_only_a_value_that_would_be_served() {
    let cache: Cache<String, u32> = Cache::builder()
        .max_capacity(10)
        .time_to_live(SECOND)
        .build()
        .unwrap();
    cache.insert("k".to_string(), 1);
    advance(2 * SECOND).await;
    assert_eq!(cache.remove("k"), None, "expired");
}

#[tokio::test(start_paused = true)]
async fn iter_yields_the_live_values_only() {
    let cache: Cache<u32, u32> = Cache::builder()
        .max_capacity(100)
        .time_to_live(10 * SECOND)
        .negative_ttl(60 * SECOND)
        .build()
        .unwrap();
    cache.insert(1, 10);
    cache.insert_with_ttl(2, 20, SECOND);
    let absent = || async { Ok::<_, BackendDown>(herder::cache::Loaded::not_found()) };
    cache.fetch(3, absent).await.unwrap();
    advance(2 * SECOND).await;
    let all: Vec<(u32, u32)> = cache.iter().collect();
    assert_eq!(all, [(1, 10)], "2 expired, 3 is a cached absence");
}

#[tokio::test(start_paused = true)]
async fn the_listener_hears_each_cause() {
    let (cache, log) = listened(1_000, Some(10 * SECOND));
    // Replaced, by an insert and by a load.
    cache.insert("a".into(), 1);
    cache.insert("a".into(), 2);
    assert_eq!(drain(&log), [("a".into(), 1, RemovalCause::Replaced)]);
    assert_eq!(cache.stats().evictions, 0, "a replacement is no eviction");
    // Explicit: invalidate, remove, invalidate_all.
    cache.invalidate("a");
    cache.insert("b".into(), 3);
    assert_eq!(cache.remove("b"), Some(3));
    cache.insert("c".into(), 4);
    cache.invalidate_all();
    assert_eq!(
        drain(&log),
        [
            ("a".into(), 2, RemovalCause::Explicit),
            ("b".into(), 3, RemovalCause::Explicit),
            ("c".into(), 4, RemovalCause::Explicit),
        ]
    );
    // Expired: found by a read after its TTL.
    cache.insert("d".into(), 5);
    advance(11 * SECOND).await;
    assert_eq!(cache.get("d"), None);
    assert_eq!(drain(&log), [("d".into(), 5, RemovalCause::Expired)]);
    assert!(RemovalCause::Size.was_evicted() && !RemovalCause::Explicit.was_evicted());
}

#[tokio::test(start_paused = true)]
async fn the_listener_hears_evictions_for_size() {
    let (cache, log) = listened(100, None);
    for i in 0..1_000u32 {
        cache.insert(format!("k{i}"), i);
    }
    let evicted = drain(&log);
    assert_eq!(evicted.len() as u64, cache.stats().evictions);
    assert!(
        evicted.len() >= 850,
        "{} of 1,000 inserts over a capacity of 100",
        evicted.len()
    );
    assert!(
        evicted
            .iter()
            .all(|(_, _, cause)| *cause == RemovalCause::Size)
    );
    assert_eq!(
        cache.iter().count() + evicted.len(),
        1_000,
        "each key reported once or kept"
    );
}

#[tokio::test(start_paused = true)]
async fn a_load_that_stores_over_a_value_reports_it_replaced() {
    let (cache, log) = listened(10, Some(SECOND));
    cache.insert("k".into(), 1);
    advance(2 * SECOND).await;
    // The expired value is replaced by the load: reported as expired, not replaced.
    assert_eq!(cache.get_with("k".into(), || async { 2 }).await, 2);
    assert_eq!(drain(&log), [("k".into(), 1, RemovalCause::Expired)]);
}

#[tokio::test(start_paused = true)]
async fn the_listener_may_call_back_into_the_cache() {
    let slot: Arc<Mutex<Option<Cache<String, u32>>>> = Arc::default();
    let handle = slot.clone();
    let cache: Cache<String, u32> = Cache::builder()
        .max_capacity(10)
        .eviction_listener(move |key, _, _| {
            // Re-entrant calls on the same key and on others: no deadlock.
            if let Some(cache) = handle.lock().unwrap().clone() {
                cache.get(&key);
                if key == "a" {
                    cache.insert("b".into(), 0);
                }
            }
        })
        .build()
        .unwrap();
    *slot.lock().unwrap() = Some(cache.clone());
    cache.insert("a".into(), 1);
    cache.invalidate("a");
    assert_eq!(cache.get("b"), Some(0));
    // And from a load's store step.
    let gate = Gate::default();
    let pass = gate.clone();
    let mut load = Box::pin(cache.get_with("b".into(), move || async move {
        pass.pass().await;
        1
    }));
    cache.invalidate("b");
    assert!(poll_once(&mut load).await);
    gate.open(1);
    assert_eq!(load.await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_listener_does_not_disturb_the_cache() {
    let cache: Cache<u32, u32> = Cache::builder()
        .max_capacity(10)
        .eviction_listener(|_, _, _| panic!("listener bug"))
        .build()
        .unwrap();
    cache.insert(1, 1);
    cache.insert(1, 2);
    assert_eq!(cache.get(&1), Some(2));
    cache.invalidate(&1);
    assert_eq!(cache.get_with(1, || async { 3 }).await, 3);
}

#[tokio::test(start_paused = true)]
async fn time_to_idle_expires_unread_entries_and_reads_keep_them() {
    let log: Log = Arc::default();
    let sink = log.clone();
    let cache: Cache<String, u32> = Cache::builder()
        .max_capacity(100)
        .time_to_idle(16 * SECOND)
        .time_to_live(100 * SECOND)
        .eviction_listener(move |key, value, cause| sink.lock().unwrap().push((key, value, cause)))
        .build()
        .unwrap();
    cache.insert("read".into(), 1);
    cache.insert("unread".into(), 2);
    // Read every 10 s: kept. Unread: gone after 16 s.
    for _ in 0..5 {
        advance(10 * SECOND).await;
        assert_eq!(cache.get("read"), Some(1));
    }
    assert_eq!(cache.get("unread"), None);
    assert_eq!(drain(&log), [("unread".into(), 2, RemovalCause::Expired)]);
    // The time to live still ends it, however often it is read.
    for _ in 0..5 {
        advance(10 * SECOND).await;
        cache.get("read");
    }
    assert_eq!(cache.get("read"), None, "100 s time to live");
    // A loaded value is kept by its reads too, and joins no second load meanwhile.
    assert_eq!(cache.get_with("loaded".into(), || async { 3 }).await, 3);
    advance(12 * SECOND).await;
    assert_eq!(
        cache
            .get_with("loaded".into(), || async { unreachable!() })
            .await,
        3
    );
    advance(12 * SECOND).await;
    assert_eq!(
        cache.get("loaded"),
        Some(3),
        "the read at 12 s pushed the deadline back"
    );
}

#[tokio::test(start_paused = true)]
async fn a_read_never_brings_back_an_entry_invalidated_while_it_was_kept_alive() {
    let cache: Cache<u32, u32> = Cache::builder()
        .max_capacity(100)
        .time_to_idle(16 * SECOND)
        .build()
        .unwrap();
    cache.insert(1, 1);
    advance(8 * SECOND).await;
    assert_eq!(cache.get(&1), Some(1));
    cache.invalidate(&1);
    advance(SECOND).await;
    assert_eq!(cache.get(&1), None);
    cache.insert(1, 2);
    advance(8 * SECOND).await;
    assert_eq!(cache.get(&1), Some(2));
}

#[test]
fn time_to_idle_settings_that_cannot_work_are_refused() {
    let refused =
        |b: herder::cache::Builder<u32, u32>| b.max_capacity(1).build().unwrap_err().to_string();
    assert!(
        refused(Cache::builder().time_to_idle(Duration::ZERO))
            .contains("time_to_idle must be positive")
    );
    assert!(
        refused(
            Cache::builder()
                .time_to_live(SECOND)
                .time_to_idle(SECOND)
                .early_refresh(herder::cache::EarlyRefresh::Fraction(0.5))
        )
        .contains("cannot be combined")
    );
    // At its maximum it saturates to never.
    let cache: Cache<u32, u32> = Cache::builder()
        .max_capacity(1)
        .time_to_idle(Duration::MAX)
        .build()
        .unwrap();
    cache.insert(1, 1);
    assert_eq!(cache.get(&1), Some(1));
}
