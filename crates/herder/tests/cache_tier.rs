//! The Cache's side of the tier contract, against an in-memory tier shared by several caches
//! ("instances"): L1 misses read the tier, one lease per key, fills, fail-open, invalidations.
//! `herder-redis` runs the same scenarios against a real Redis.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herder::Cache;
use herder::cache::{Acquired, Lease, Loaded, LocalCache, Status, Tier, TierFuture};
use support::BackendDown;

/// A shared value (`None`: a cached absence) and the TTL it was filled with.
type Stored = (Option<String>, Option<Duration>);

/// A tier in memory: values, leases, and the instances to evict on invalidation.
#[derive(Default)]
struct MemoryTier {
    values: Mutex<HashMap<u32, Stored>>,
    leases: Mutex<HashSet<u32>>,
    instances: Mutex<Vec<LocalCache<u32, String>>>,
    down: AtomicBool,
    acquires: AtomicUsize,
}

struct MemoryLease {
    tier: Arc<MemoryTier>,
    key: u32,
}

impl Lease<String> for MemoryLease {
    fn fill(
        self: Box<Self>,
        loaded: Loaded<String>,
        ttl: Option<Duration>,
    ) -> TierFuture<'static, ()> {
        let tier = self.tier.clone();
        Box::pin(async move {
            if tier.leases.lock().unwrap().contains(&self.key) {
                tier.values
                    .lock()
                    .unwrap()
                    .insert(self.key, (loaded.value().cloned(), ttl));
            }
        })
    }
}

impl Drop for MemoryLease {
    fn drop(&mut self) {
        self.tier.leases.lock().unwrap().remove(&self.key);
    }
}

/// The handle each cache holds: the shared tier.
struct Shared(Arc<MemoryTier>);

impl Tier<u32, String> for Shared {
    fn attach(&self, local: LocalCache<u32, String>) {
        self.0.instances.lock().unwrap().push(local);
    }

    fn acquire<'a>(&'a self, key: &'a u32) -> TierFuture<'a, Acquired<String>> {
        Box::pin(async move {
            let tier = &self.0;
            tier.acquires.fetch_add(1, SeqCst);
            if tier.down.load(SeqCst) {
                return Acquired::Unavailable;
            }
            if let Some((value, _)) = tier.values.lock().unwrap().get(key) {
                return Acquired::Hit(match value {
                    Some(value) => Loaded::found(value.clone()),
                    None => Loaded::not_found(),
                });
            }
            if tier.leases.lock().unwrap().insert(*key) {
                Acquired::Lead(Box::new(MemoryLease {
                    tier: tier.clone(),
                    key: *key,
                }))
            } else {
                // Another instance loads it; this fake does not wait for it.
                Acquired::Unavailable
            }
        })
    }

    fn invalidate(&self, key: &u32) {
        self.0.values.lock().unwrap().remove(key);
        self.0.leases.lock().unwrap().remove(key);
        for instance in self.0.instances.lock().unwrap().iter() {
            instance.evict(key);
        }
    }

    fn invalidate_all(&self) {
        self.0.values.lock().unwrap().clear();
        for instance in self.0.instances.lock().unwrap().iter() {
            instance.evict_all();
        }
    }
}

fn instance(tier: &Arc<MemoryTier>) -> Cache<u32, String> {
    Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(60))
        .stale_while_revalidate(Duration::from_secs(30))
        .tier(Arc::new(Shared(tier.clone())))
        .build()
        .unwrap()
}

fn loader(
    calls: &Arc<AtomicUsize>,
    value: &'static str,
) -> impl FnOnce() -> std::future::Ready<Result<String, BackendDown>> + Send + 'static {
    let calls = calls.clone();
    move || {
        calls.fetch_add(1, SeqCst);
        std::future::ready(Ok(value.to_owned()))
    }
}

#[tokio::test(start_paused = true)]
async fn a_value_loaded_by_one_instance_is_read_from_the_tier_by_another() {
    let tier = Arc::new(MemoryTier::default());
    let (a, b) = (instance(&tier), instance(&tier));
    let calls = Arc::default();
    assert_eq!(a.try_get_with(1, loader(&calls, "v")).await.unwrap(), "v");
    assert_eq!(
        tier.values.lock().unwrap()[&1],
        (Some("v".into()), Some(Duration::from_secs(90))),
        "filled with the TTL plus the stale window"
    );
    assert_eq!(
        b.try_get_with(1, loader(&calls, "other")).await.unwrap(),
        "v"
    );
    assert_eq!(
        calls.load(SeqCst),
        1,
        "the second instance loaded instead of reading the tier"
    );
    // Now in b's L1: no more tier reads.
    b.try_get_with(1, loader(&calls, "other")).await.unwrap();
    assert_eq!(tier.acquires.load(SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_load_releases_its_lease_and_fills_nothing() {
    let tier = Arc::new(MemoryTier::default());
    let a = instance(&tier);
    let err = a
        .try_get_with(1, || async { Err::<String, _>(BackendDown("x".into())) })
        .await
        .unwrap_err();
    assert!(err.loader_error().is_some());
    assert!(
        tier.leases.lock().unwrap().is_empty(),
        "the lease was not released"
    );
    assert!(tier.values.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_unavailable_tier_is_skipped_and_nothing_fails() {
    let tier = Arc::new(MemoryTier::default());
    tier.down.store(true, SeqCst);
    let a = instance(&tier);
    let calls = Arc::default();
    let read = a
        .fetch(1, {
            let load = loader(&calls, "local");
            move || async move { load().await.map(Loaded::found) }
        })
        .await
        .unwrap();
    assert_eq!(
        (read.value.as_deref(), read.status),
        (Some("local"), Status::Miss)
    );
    assert_eq!(calls.load(SeqCst), 1);
    assert!(tier.values.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_reaches_every_instance_and_the_tier() {
    let tier = Arc::new(MemoryTier::default());
    let (a, b) = (instance(&tier), instance(&tier));
    let calls = Arc::default();
    a.try_get_with(1, loader(&calls, "old")).await.unwrap();
    b.try_get_with(1, loader(&calls, "old")).await.unwrap();
    assert_eq!(b.get(&1).as_deref(), Some("old"));
    a.invalidate(&1);
    assert_eq!(b.get(&1), None, "the other instance kept its copy");
    assert!(tier.values.lock().unwrap().is_empty());
    assert_eq!(
        b.try_get_with(1, loader(&calls, "new")).await.unwrap(),
        "new"
    );
}

#[tokio::test(start_paused = true)]
async fn an_insert_invalidates_the_other_copies() {
    let tier = Arc::new(MemoryTier::default());
    let (a, b) = (instance(&tier), instance(&tier));
    let calls = Arc::default();
    b.try_get_with(1, loader(&calls, "old")).await.unwrap();
    // The fake tier evicts every instance, the writer's own included; a real tier skips the
    // writer (herder-redis tags its messages with the instance that sent them).
    a.insert(1, "new".into());
    assert_eq!(b.get(&1), None);
}

#[tokio::test(start_paused = true)]
async fn a_cached_absence_is_shared_for_the_negative_ttl() {
    let tier = Arc::new(MemoryTier::default());
    let with_negative = |tier: &Arc<MemoryTier>| {
        Cache::builder()
            .max_capacity(100)
            .negative_ttl(Duration::from_secs(5))
            .tier(Arc::new(Shared(tier.clone())) as Arc<dyn Tier<u32, String>>)
            .build()
            .unwrap()
    };
    let (a, b) = (with_negative(&tier), with_negative(&tier));
    let missing = || async { Ok::<_, BackendDown>(Loaded::not_found()) };
    a.fetch(404, missing).await.unwrap();
    assert_eq!(
        tier.values.lock().unwrap()[&404],
        (None, Some(Duration::from_secs(5)))
    );
    let read = b
        .fetch(404, || async {
            Ok::<_, BackendDown>(Loaded::found("x".to_string()))
        })
        .await;
    assert_eq!(read.unwrap().value, None, "the absence came from the tier");
}
