//! The Cache's side of the tier contract, against an in-memory tier shared by several caches
//! ("instances"): L1 misses read the tier, one lease per key, fills, fail-open, invalidations.
//! `herder-redis` runs the same scenarios against a real Redis.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herder::Cache;
use herder::cache::{Acquired, Acquisition, Lease, Loaded, LocalCache, Status, Tier, TierFuture};
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

/// Keys each bulk loader call was asked for.
type Calls = Arc<Mutex<Vec<Vec<u32>>>>;

fn bulk(
    calls: &Calls,
) -> impl FnOnce(Vec<u32>) -> std::future::Ready<Result<HashMap<u32, String>, BackendDown>>
+ Send
+ 'static {
    let calls = calls.clone();
    move |mut keys: Vec<u32>| {
        keys.sort_unstable();
        let values = keys.iter().map(|k| (*k, format!("row {k}"))).collect();
        calls.lock().unwrap().push(keys);
        std::future::ready(Ok(values))
    }
}

#[tokio::test(start_paused = true)]
async fn a_bulk_read_loads_only_what_the_tier_lacks_and_fills_it() {
    let tier = Arc::new(MemoryTier::default());
    let (a, b) = (instance(&tier), instance(&tier));
    let calls = Calls::default();
    a.get_many_with([1, 2], bulk(&calls)).await.unwrap();
    let values = b.get_many_with([1, 2, 3, 4], bulk(&calls)).await.unwrap();
    assert_eq!(values.len(), 4);
    assert_eq!(values[&3], "row 3");
    assert_eq!(*calls.lock().unwrap(), vec![vec![1, 2], vec![3, 4]]);
    assert_eq!(
        tier.values.lock().unwrap()[&4],
        (Some("row 4".into()), Some(Duration::from_secs(90))),
        "filled with the TTL plus the stale window"
    );
    assert!(tier.leases.lock().unwrap().is_empty());
    assert_eq!(b.get(&1).as_deref(), Some("row 1"), "a tier hit fills L1");
}

/// A DataLoader backend that records each call's keys.
#[derive(Clone, Default)]
struct Rows(Calls);

impl herder::Loader for Rows {
    type Key = u32;
    type Value = String;
    type Error = BackendDown;

    async fn load(&self, keys: &[u32]) -> Result<HashMap<u32, String>, BackendDown> {
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        let values = keys.iter().map(|k| (*k, format!("row {k}"))).collect();
        self.0.lock().unwrap().push(keys);
        Ok(values)
    }
}

#[tokio::test(start_paused = true)]
async fn a_dataloader_batch_over_a_tiered_cache_loads_only_what_the_tier_lacks() {
    let tier = Arc::new(MemoryTier::default());
    let (a, b) = (instance(&tier), instance(&tier));
    let rows = Rows::default();
    let on_a = herder::DataLoader::builder(rows.clone())
        .cache(a)
        .build()
        .unwrap();
    let on_b = herder::DataLoader::builder(rows.clone())
        .cache(b.clone())
        .build()
        .unwrap();
    on_a.load_many([1, 2]).await.unwrap();
    let values = on_b.load_many([1, 2, 3, 4]).await.unwrap();
    assert_eq!(values.len(), 4);
    assert_eq!(*rows.0.lock().unwrap(), vec![vec![1, 2], vec![3, 4]]);
    assert_eq!(tier.values.lock().unwrap()[&3].0.as_deref(), Some("row 3"));
    assert_eq!(b.get(&2).as_deref(), Some("row 2"), "a tier hit fills L1");
    // Every key of a batch in the tier: no loader call at all.
    let on_c = herder::DataLoader::builder(rows.clone())
        .cache(instance(&tier))
        .build()
        .unwrap();
    assert_eq!(on_c.load_many([1, 2, 3, 4]).await.unwrap().len(), 4);
    assert_eq!(rows.0.lock().unwrap().len(), 2);
}

/// The memory tier, answering the odd positions of a batch in a later round (as a tier does
/// for keys other instances are loading); with `stuck`, a later round that comes only once
/// the leases of the batch's even positions are released (the other instance waits for them).
struct InRounds(Arc<MemoryTier>, bool);

impl Tier<u32, String> for InRounds {
    fn attach(&self, local: LocalCache<u32, String>) {
        Shared(self.0.clone()).attach(local);
    }

    fn acquire<'a>(&'a self, key: &'a u32) -> TierFuture<'a, Acquired<String>> {
        let shared = Shared(self.0.clone());
        let key = *key;
        Box::pin(async move { shared.acquire(&key).await })
    }

    fn acquire_many<'a>(&'a self, keys: &'a [u32]) -> TierFuture<'a, Acquisition<String>> {
        let tier = self.0.clone();
        let keys = keys.to_vec();
        let stuck = self.1;
        Box::pin(async move {
            let shared = Shared(tier.clone());
            let (tier_for_wait, even) = (
                tier.clone(),
                keys.iter().step_by(2).copied().collect::<Vec<u32>>(),
            );
            let mut answers = Vec::new();
            for (at, key) in keys.iter().enumerate().filter(|(at, _)| at % 2 == 0) {
                answers.push((at, shared.acquire(key).await));
            }
            let later: TierFuture<'static, Acquisition<String>> = Box::pin(async move {
                let shared = Shared(tier);
                let mut answers = Vec::new();
                for (at, key) in keys.iter().enumerate().filter(|(at, _)| at % 2 == 1) {
                    answers.push((at, shared.acquire(key).await));
                }
                Acquisition {
                    answers,
                    later: None,
                }
            });
            let later = if stuck {
                let tier = tier_for_wait;
                Box::pin(async move {
                    while even.iter().any(|k| tier.leases.lock().unwrap().contains(k)) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    later.await
                })
            } else {
                later
            };
            Acquisition {
                answers,
                later: Some(later),
            }
        })
    }

    fn invalidate(&self, key: &u32) {
        Shared(self.0.clone()).invalidate(key);
    }

    fn invalidate_all(&self) {
        Shared(self.0.clone()).invalidate_all();
    }
}

#[tokio::test(start_paused = true)]
async fn keys_answered_in_a_later_round_load_per_round_or_once_for_get_many_with() {
    let tier = Arc::new(MemoryTier::default());
    let in_rounds = |tier: &Arc<MemoryTier>| {
        Cache::builder()
            .max_capacity(100)
            .time_to_live(Duration::from_secs(60))
            .tier(Arc::new(InRounds(tier.clone(), false)) as Arc<dyn Tier<u32, String>>)
            .build()
            .unwrap()
    };
    // A DataLoader's loader is called for each round that leaves keys to load.
    let rows = Rows::default();
    let loader = herder::DataLoader::builder(rows.clone())
        .cache(in_rounds(&tier))
        .build()
        .unwrap();
    assert_eq!(loader.load_many([1, 2, 3, 4]).await.unwrap().len(), 4);
    let mut seen = rows.0.lock().unwrap().concat();
    seen.sort_unstable();
    assert_eq!(seen, vec![1, 2, 3, 4]);
    assert_eq!(rows.0.lock().unwrap().len(), 2, "one call per round");
    // `get_many_with`'s loader is `FnOnce`: one call, after every round.
    let calls = Calls::default();
    let values = in_rounds(&Arc::new(MemoryTier::default()))
        .get_many_with([5, 6, 7, 8], bulk(&calls))
        .await
        .unwrap();
    assert_eq!(values.len(), 4);
    assert_eq!(*calls.lock().unwrap(), vec![vec![5, 6, 7, 8]]);
}

/// Regression: `get_many_with` (one loader call) used to keep its leases while it waited for
/// keys other instances held; two such calls whose leases crossed (a cluster grants a batch's
/// leases one node at a time) waited for each other until `max_wait`. A call that would wait
/// holding leases now gives them back first (here the other instance answers only then), and
/// asks again for the keys it gave back, holding none. This tier makes every ask wait again:
/// the call asks again 3 times, then loads what it would wait for itself.
#[tokio::test(start_paused = true)]
async fn get_many_with_gives_its_leases_back_before_it_waits_for_other_instances() {
    let tier = Arc::new(MemoryTier::default());
    let cache = Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(60))
        .tier(Arc::new(InRounds(tier.clone(), true)) as Arc<dyn Tier<u32, String>>)
        .build()
        .unwrap();
    let calls = Calls::default();
    let values = tokio::time::timeout(
        Duration::from_secs(3600),
        cache.get_many_with([5, 6, 7, 8], bulk(&calls)),
    )
    .await
    .expect("it waited for a round that never comes while holding leases")
    .unwrap();
    assert_eq!(values.len(), 4);
    assert_eq!(*calls.lock().unwrap(), vec![vec![5, 6, 7, 8]]);
    // The first ask and 3 more, of the 4 keys each; at the last, holding the leases of 5 and
    // 7, the call waits no more for 6 and 8 (2 acquires left out): it loads them.
    assert_eq!(tier.acquires.load(SeqCst), 14);
    // The last ask led 5 and 7 (the even positions), and the call filled them.
    let mut filled: Vec<u32> = tier.values.lock().unwrap().keys().copied().collect();
    filled.sort_unstable();
    assert_eq!(filled, vec![5, 7]);
    assert!(
        tier.leases.lock().unwrap().is_empty(),
        "every lease settled"
    );
}
