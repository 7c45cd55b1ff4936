//! Settings at their extremes: every duration the Cache builder accepts works at `Duration::MAX`
//! (it saturates to "never"), a huge capacity builds, and what cannot work is refused by `build`.
//! Before, `wait_timeout(Duration::MAX)` panicked every caller on a miss and
//! `load_timeout(Duration::MAX)` turned every load into a panic.

mod support;

use std::sync::Arc;
use std::time::Duration;

use herder::Cache;
use herder::cache::{Acquired, Lease, Loaded, LocalCache, Status, Tier, TierFuture};
use support::BackendDown;

const MAX: Duration = Duration::MAX;

/// Reads a missing key through every single-key read path and checks each answer.
async fn every_read_works(cache: &Cache<u32, String>) {
    assert_eq!(
        cache.get_with(1, || async { "one".to_string() }).await,
        "one"
    );
    let two = cache
        .try_get_with(2, || async { Ok::<_, BackendDown>("two".to_string()) })
        .await;
    assert_eq!(two.unwrap(), "two");
    let three = cache
        .fetch(3, || async {
            Ok::<_, BackendDown>(Loaded::found("three".to_string()))
        })
        .await
        .unwrap();
    assert_eq!(
        (three.value.as_deref(), three.status),
        (Some("three"), Status::Miss)
    );
    let many = cache
        .get_many_with([1, 4], |keys: Vec<u32>| async move {
            Ok::<_, BackendDown>(keys.into_iter().map(|k| (k, format!("#{k}"))).collect())
        })
        .await
        .unwrap();
    assert_eq!((many[&1].as_str(), many[&4].as_str()), ("one", "#4"));
    // Everything is still cached: "never" expires.
    assert_eq!(cache.get(&2).as_deref(), Some("two"));
    cache.invalidate(&2);
    assert_eq!(cache.get(&2), None);
}

#[tokio::test]
async fn every_duration_at_its_maximum_saturates_to_never() {
    let builders: Vec<(&str, herder::cache::Builder<u32, String>)> = vec![
        ("time_to_live", Cache::builder().time_to_live(MAX)),
        ("negative_ttl", Cache::builder().negative_ttl(MAX)),
        (
            "stale_while_revalidate",
            Cache::builder()
                .time_to_live(MAX)
                .stale_while_revalidate(MAX),
        ),
        (
            "fail_safe",
            Cache::builder().time_to_live(MAX).fail_safe(MAX, MAX),
        ),
        ("wait_timeout", Cache::builder().wait_timeout(MAX)),
        ("load_timeout", Cache::builder().load_timeout(MAX)),
        ("soft_load_timeout", Cache::builder().soft_load_timeout(MAX)),
        (
            "soft and hard load timeouts",
            Cache::builder()
                .soft_load_timeout(MAX / 2)
                .load_timeout(MAX),
        ),
        (
            "early_refresh",
            Cache::builder()
                .time_to_live(MAX)
                .early_refresh(herder::cache::EarlyRefresh::Fraction(0.5)),
        ),
    ];
    for (setting, builder) in builders {
        let cache = builder
            .max_capacity(100)
            .build()
            .unwrap_or_else(|e| panic!("{setting}: {e}"));
        every_read_works(&cache).await;
    }
}

#[tokio::test]
async fn a_huge_capacity_builds_without_allocating_for_it() {
    let cache: Cache<u32, String> = Cache::builder().max_capacity(u64::MAX).build().unwrap();
    every_read_works(&cache).await;
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(u64::MAX)
        .estimated_items(usize::MAX)
        .build()
        .unwrap();
    every_read_works(&cache).await;
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused_by_build() {
    let refused =
        |builder: herder::cache::Builder<u32, String>| builder.build().unwrap_err().to_string();
    assert!(refused(Cache::builder()).contains("max_capacity must be set"));
    assert!(refused(Cache::builder().max_capacity(0)).contains("at least 1"));
    let zero = Duration::ZERO;
    for builder in [
        Cache::builder().max_capacity(1).time_to_live(zero),
        Cache::builder().max_capacity(1).wait_timeout(zero),
        Cache::builder().max_capacity(1).load_timeout(zero),
        Cache::builder().max_capacity(1).soft_load_timeout(zero),
        Cache::builder().max_capacity(1).clock_resolution(MAX),
        Cache::builder().max_capacity(1).fail_safe(MAX, zero),
        Cache::builder()
            .max_capacity(1)
            .soft_load_timeout(MAX)
            .load_timeout(MAX),
    ] {
        let err = refused(builder);
        assert!(
            err.starts_with("invalid Cache settings") || err.contains("must"),
            "{err}"
        );
    }
}

/// Timeouts that land within a millisecond of the largest instant (tokio's timer would overflow
/// rounding them up, a panic in the reader) never fire.
#[tokio::test]
async fn timeouts_next_to_the_largest_instant_never_fire() {
    let near_max = support::near_max_after(std::time::Instant::now());
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(10)
        .wait_timeout(near_max)
        .soft_load_timeout(near_max - Duration::from_nanos(1))
        .load_timeout(near_max)
        .build()
        .unwrap();
    let value = cache
        .try_get_with(1, || async {
            tokio::task::yield_now().await;
            Ok::<_, std::io::Error>("one".to_string())
        })
        .await
        .unwrap();
    assert_eq!(value, "one");
}

/// A tier that answers "load it yourself, and fill me": the fill's TTL (fresh TTL plus the
/// stale window) must not overflow at `Duration::MAX`.
struct Lenient;

struct Fill;

impl Lease<String> for Fill {
    fn fill(
        self: Box<Self>,
        loaded: Loaded<String>,
        ttl: Option<Duration>,
    ) -> TierFuture<'static, ()> {
        assert!(loaded.value().is_some());
        assert_eq!(ttl, Some(MAX), "saturated, not overflowed");
        Box::pin(async {})
    }
}

impl Tier<u32, String> for Lenient {
    fn attach(&self, _: LocalCache<u32, String>) {}
    fn acquire<'a>(&'a self, _: &'a u32) -> TierFuture<'a, Acquired<String>> {
        Box::pin(async { Acquired::Lead(Box::new(Fill)) })
    }
    fn invalidate(&self, _: &u32) {}
    fn invalidate_all(&self) {}
}

#[tokio::test]
async fn a_maximal_ttl_and_stale_window_with_a_tier_load_as_usual() {
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(100)
        .time_to_live(MAX)
        .stale_while_revalidate(MAX)
        .tier(Arc::new(Lenient))
        .build()
        .unwrap();
    every_read_works(&cache).await;
}
