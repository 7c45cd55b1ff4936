//! Fleet-wide batches against a real `redis-server`: a DataLoader batch (and `get_many_with`)
//! over a Cache with a RedisTier asks Redis for all its keys at once, loads only the keys it
//! leased, waits for the keys other instances are loading, and fills Redis at once.
//!
//! Real clock (Redis is another process); the tests assert counts and outcomes, and poll with a
//! deadline far above what loopback needs where they wait for Redis.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herder::{Cache, DataLoader, Loader};
use herder_redis::RedisTier;
use redis::AsyncCommands;
use support::servers::{self, RedisServer};
use support::{eventually, raw};
use tokio::time::Instant;

const NAMESPACE: &str = "batch";

/// A backend that records every key of every call, and takes `latency` per call.
#[derive(Clone)]
struct Rows {
    calls: Arc<AtomicUsize>,
    keys: Arc<Mutex<HashMap<u64, usize>>>,
    latency: Duration,
    version: Arc<AtomicU32>,
    /// Counts the calls that started, for tests that act during a load.
    started: Arc<tokio::sync::Notify>,
}

impl Rows {
    fn new(latency: Duration) -> Self {
        Rows {
            calls: Arc::default(),
            keys: Arc::default(),
            latency,
            version: Arc::new(AtomicU32::new(1)),
            started: Arc::default(),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(SeqCst)
    }

    /// How many keys the backend was asked for in all, and the most times one key was.
    fn keys_loaded(&self) -> (usize, usize) {
        let keys = self.keys.lock().unwrap();
        (
            keys.values().sum(),
            keys.values().copied().max().unwrap_or(0),
        )
    }

    async fn read(&self, keys: &[u64]) -> HashMap<u64, String> {
        self.calls.fetch_add(1, SeqCst);
        {
            let mut seen = self.keys.lock().unwrap();
            for key in keys {
                *seen.entry(*key).or_default() += 1;
            }
        }
        let version = self.version.load(SeqCst);
        self.started.notify_waiters();
        tokio::time::sleep(self.latency).await;
        keys.iter()
            .map(|key| (*key, format!("row {key} v{version}")))
            .collect()
    }
}

impl Loader for Rows {
    type Key = u64;
    type Value = String;
    type Error = std::convert::Infallible;

    async fn load(&self, keys: &[u64]) -> Result<HashMap<u64, String>, Self::Error> {
        Ok(self.read(keys).await)
    }
}

/// One instance of a service: a Cache on a RedisTier, and a DataLoader in front of it.
struct Instance {
    cache: Cache<u64, String>,
    tier: RedisTier<u64, String>,
    loader: DataLoader<Rows>,
    rows: Rows,
}

fn instance(url: &str, lease: Duration, shared_backend: &Rows) -> Instance {
    let tier = RedisTier::<u64, String>::builder(url)
        .namespace(NAMESPACE)
        .lease_ttl(lease)
        .budget(Duration::from_millis(200))
        .build()
        .unwrap();
    let cache = Cache::builder()
        .max_capacity(10_000)
        .time_to_live(Duration::from_secs(60))
        .tier(Arc::new(tier.clone()))
        .build()
        .unwrap();
    // Each instance counts its own calls; the keys are counted fleet-wide.
    let rows = Rows {
        calls: Arc::default(),
        ..shared_backend.clone()
    };
    let loader = DataLoader::builder(rows.clone())
        .cache(cache.clone())
        .build()
        .unwrap();
    Instance {
        cache,
        tier,
        loader,
        rows,
    }
}

fn expected(keys: impl IntoIterator<Item = u64>, version: u32) -> HashMap<u64, String> {
    keys.into_iter()
        .map(|key| (key, format!("row {key} v{version}")))
        .collect()
}

/// The Redis key under which the tier keeps `key`'s value or lease (on a single server).
fn redis_key(kind: &str, key: u64) -> Vec<u8> {
    let mut name = format!("{NAMESPACE}:h1:{kind}:").into_bytes();
    name.extend(postcard::to_stdvec(&key).unwrap());
    name
}

/// Script calls (EVAL, EVALSHA, SCRIPT) and all commands Redis has processed so far.
async fn commands(redis: &RedisServer) -> (u64, u64) {
    let mut raw = raw(redis).await;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut raw)
        .await
        .unwrap();
    let scripts = servers::script_calls(&stats);
    let stats: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut raw)
        .await
        .unwrap();
    let total = stats
        .lines()
        .find_map(|line| line.strip_prefix("total_commands_processed:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (scripts, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_batching_the_same_200_cold_keys_load_each_key_once_fleet_wide() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let rows = Rows::new(Duration::from_millis(200));
    let instances: Vec<_> = (0..4)
        .map(|_| instance(&redis.url(), Duration::from_secs(2), &rows))
        .collect();
    // What an instance caches before its first subscription is flushed by it (it may have missed
    // invalidations meanwhile): subscribe first, so that the L1s are checked below.
    support::subscribed(instances.iter().map(|instance| &instance.tier)).await;
    let keys: Vec<u64> = (0..200).collect();
    let start = Arc::new(tokio::sync::Barrier::new(instances.len()));
    let mut batches = Vec::new();
    for instance in &instances {
        let (loader, keys, start) = (instance.loader.clone(), keys.clone(), start.clone());
        batches.push(tokio::spawn(async move {
            start.wait().await;
            let began = Instant::now();
            let values = loader.load_many(keys).await.unwrap();
            eprintln!("instance batch took {:?}", began.elapsed());
            values
        }));
    }
    for batch in batches {
        assert_eq!(batch.await.unwrap(), expected(0..200, 1));
    }
    let (total, most) = rows.keys_loaded();
    assert_eq!(total, 200, "keys loaded fleet-wide");
    assert_eq!(most, 1, "a key was loaded twice");
    for instance in &instances {
        assert!(
            instance.rows.calls() <= 1,
            "an instance made {} loader calls",
            instance.rows.calls()
        );
    }
    let leases: u64 = instances.iter().map(|i| i.tier.stats().leases).sum();
    let fills: u64 = instances.iter().map(|i| i.tier.stats().fills).sum();
    assert_eq!((leases, fills), (200, 200));
    // Every instance's L1 holds the keys now: another batch needs neither Redis nor the loader.
    for instance in &instances {
        assert_eq!(instance.cache.get(&123).as_deref(), Some("row 123 v1"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_with_shares_cold_keys_with_the_fleet() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let rows = Rows::new(Duration::from_millis(200));
    let instances: Vec<_> = (0..3)
        .map(|_| instance(&redis.url(), Duration::from_secs(2), &rows))
        .collect();
    let start = Arc::new(tokio::sync::Barrier::new(instances.len()));
    let mut reads = Vec::new();
    for instance in &instances {
        let (cache, rows, start) = (instance.cache.clone(), rows.clone(), start.clone());
        reads.push(tokio::spawn(async move {
            start.wait().await;
            let load = move |keys: Vec<u64>| async move {
                Ok::<_, std::io::Error>(rows.read(&keys).await)
            };
            cache.get_many_with(0..100, load).await.unwrap()
        }));
    }
    for read in reads {
        assert_eq!(read.await.unwrap(), expected(0..100, 1));
    }
    assert_eq!(rows.keys_loaded(), (100, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_200_cold_keys_costs_two_script_calls() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let rows = Rows::new(Duration::from_millis(1));
    let a = instance(&redis.url(), Duration::from_secs(2), &rows);
    // Warm up: the scripts get loaded into Redis (EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA).
    a.loader.load_many(1000..1200).await.unwrap();
    let (scripts_before, total_before) = commands(&redis).await;
    let values = a.loader.load_many(0..200).await.unwrap();
    assert_eq!(values, expected(0..200, 1));
    let (scripts_after, total_after) = commands(&redis).await;
    // The INFO calls themselves count as commands: two per sample.
    let scripts = scripts_after - scripts_before;
    let total = total_after - total_before;
    // Redis counts the commands a script runs too: `total` is the work inside Redis, `scripts`
    // the round trips.
    eprintln!(
        "a batch of 200 cold keys: {scripts} script calls (round trips), {total} commands run by Redis"
    );
    assert_eq!(scripts, 2, "one ACQUIRE_MANY and one FILL_MANY");
    assert_eq!(a.rows.calls(), 2);

    // For comparison, 200 cold keys read one by one (get_with): two scripts per key (after a
    // warm-up that loads the single-key scripts).
    a.cache
        .get_with(499, || async { "row 499 v1".to_string() })
        .await;
    let (scripts_before, _) = commands(&redis).await;
    let reads: Vec<_> = (500..700u64)
        .map(|key| {
            let cache = a.cache.clone();
            tokio::spawn(async move {
                cache
                    .get_with(key, move || async move { format!("row {key} v1") })
                    .await
            })
        })
        .collect();
    for read in reads {
        read.await.unwrap();
    }
    let (scripts_after, _) = commands(&redis).await;
    eprintln!(
        "200 cold keys read one by one: {} script calls",
        scripts_after - scripts_before
    );
    assert!(scripts_after - scripts_before >= 400);

    // Another instance: the same keys are all in Redis, one round trip, no loader call.
    let b = instance(&redis.url(), Duration::from_secs(2), &rows);
    let (scripts_before, _) = commands(&redis).await;
    assert_eq!(
        b.loader.load_many(0..200).await.unwrap(),
        expected(0..200, 1)
    );
    let (scripts_after, _) = commands(&redis).await;
    assert!(
        scripts_after - scripts_before <= 3,
        "warm-up of b's scripts included"
    );
    assert_eq!(b.rows.calls(), 0);
    assert_eq!(b.tier.stats().l2_hits, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_during_a_batch_is_not_filled_stale() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let rows = Rows::new(Duration::from_millis(300));
    let (a, b, c) = (
        instance(&redis.url(), Duration::from_secs(2), &rows),
        instance(&redis.url(), Duration::from_secs(2), &rows),
        instance(&redis.url(), Duration::from_secs(2), &rows),
    );
    let started = rows.started.clone();
    let loading = started.notified();
    let batch = tokio::spawn({
        let loader = a.loader.clone();
        async move { loader.load_many(0..10).await.unwrap() }
    });
    loading.await;
    // The rows change while instance a reads them; a invalidates key 5, b invalidates key 6.
    rows.version.store(2, SeqCst);
    a.cache.invalidate(&5);
    b.cache.invalidate(&6);
    assert!(
        eventually(Duration::from_secs(2), || {
            a.tier.stats().invalidations_sent == 1 && b.tier.stats().invalidations_sent == 1
        })
        .await
    );
    assert_eq!(
        batch.await.unwrap(),
        expected(0..10, 1),
        "the batch still answers its callers"
    );
    assert!(eventually(Duration::from_secs(2), || a.tier.stats().fills == 8).await);
    assert_eq!(a.tier.stats().fills_lost, 2);
    // Neither a's L1 nor Redis kept what was read before the invalidations.
    assert_eq!(a.cache.get(&5), None);
    let mut raw = raw(&redis).await;
    for key in [5, 6] {
        let stored: Option<Vec<u8>> = raw.get(redis_key("v", key)).await.unwrap();
        assert_eq!(
            stored, None,
            "redis kept key {key} read before its invalidation"
        );
    }
    assert_eq!(
        c.loader.load_many([4, 5, 6]).await.unwrap(),
        HashMap::from([
            (4, "row 4 v1".to_string()),
            (5, "row 5 v2".to_string()),
            (6, "row 6 v2".to_string()),
        ])
    );
    assert_eq!(
        a.loader.load_many([5]).await.unwrap()[&5],
        "row 5 v2",
        "a reads its own invalidation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_a_batch_loads_locally_without_hanging() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let rows = Rows::new(Duration::from_millis(1));
    let a = instance(&redis.url(), Duration::from_secs(2), &rows);
    assert_eq!(a.loader.load_many(0..10).await.unwrap(), expected(0..10, 1));
    redis.pause();
    let started = Instant::now();
    assert_eq!(
        a.loader.load_many(100..300).await.unwrap(),
        expected(100..300, 1)
    );
    assert!(
        started.elapsed() < Duration::from_millis(200) + Duration::from_secs(1),
        "a paused redis held a batch for {:?}",
        started.elapsed()
    );
    redis.resume();
    redis.kill();
    let started = Instant::now();
    assert_eq!(
        a.loader.load_many(300..500).await.unwrap(),
        expected(300..500, 1)
    );
    assert!(
        started.elapsed() < Duration::from_millis(200) + Duration::from_secs(1),
        "a dead redis held a batch for {:?}",
        started.elapsed()
    );
    assert_eq!(a.rows.calls(), 3, "one loader call per batch");
    assert!(a.tier.stats().errors >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_leased_by_a_dead_instance_is_taken_over_by_a_batch() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // An instance that took key 7's lease (in generation 0) and died.
    let mut raw = raw(&redis).await;
    // The keys below are forged in generation 0: make it the current one (a missing
    // generation is renewed to a fresh value).
    let _: () = raw.set(format!("{NAMESPACE}:h1:gen"), "0").await.unwrap();
    let lease_ms = 400u64;
    let _: () = raw
        .pset_ex(redis_key("l", 7), "0|dead-instance-token", lease_ms)
        .await
        .unwrap();
    let rows = Rows::new(Duration::from_millis(10));
    let survivor = instance(&redis.url(), Duration::from_millis(lease_ms), &rows);
    let started = Instant::now();
    assert_eq!(
        survivor.loader.load_many(0..10).await.unwrap(),
        expected(0..10, 1)
    );
    let waited = started.elapsed();
    assert_eq!(rows.keys_loaded(), (10, 1));
    let stats = survivor.tier.stats();
    assert_eq!((stats.takeovers, stats.leases, stats.fills), (1, 10, 10));
    support::assert_taken_over_in_time(waited, lease_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_releases_its_leases_at_once() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    struct Failing;
    impl Loader for Failing {
        type Key = u64;
        type Value = String;
        type Error = std::io::Error;
        async fn load(&self, _: &[u64]) -> Result<HashMap<u64, String>, std::io::Error> {
            Err(std::io::Error::other("database down"))
        }
    }
    let rows = Rows::new(Duration::from_millis(1));
    let a = instance(&redis.url(), Duration::from_secs(30), &rows);
    let failing = DataLoader::builder(Failing)
        .cache(a.cache.clone())
        .build()
        .unwrap();
    assert!(failing.load_many(0..20).await.is_err());
    // The leases are gone at once (not after their 30 s): another batch loads the keys.
    let mut raw = raw(&redis).await;
    let mut left = 1;
    for _ in 0..200 {
        left = 0;
        for key in 0..20 {
            let held: Option<Vec<u8>> = raw.get(redis_key("l", key)).await.unwrap();
            left += usize::from(held.is_some());
        }
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(left, 0, "leases still held after a failed batch");
    let started = Instant::now();
    assert_eq!(a.loader.load_many(0..20).await.unwrap(), expected(0..20, 1));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_after_an_invalidation_never_reads_the_old_shared_copy() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let rows = Rows::new(Duration::ZERO);
    let a = instance(&redis.url(), Duration::from_secs(2), &rows);
    let b = instance(&redis.url(), Duration::from_secs(2), &rows);
    let mut stale = 0;
    for round in 0..100u64 {
        let keys: Vec<u64> = (0..20).collect();
        let written = round % 20;
        // Both instances and Redis hold the rows as they are now.
        a.loader.load_many(keys.clone()).await.unwrap();
        b.loader.load_many(keys.clone()).await.unwrap();
        // A write: the rows change, A invalidates one and batches them all at once (its
        // invalidation may still be on its way to Redis: the batch must not read that key there).
        rows.version.fetch_add(1, SeqCst);
        a.cache.invalidate(&written);
        let after = a.loader.load_many(keys).await.unwrap();
        let now = format!("row {written} v{}", rows.version.load(SeqCst));
        stale += usize::from(after[&written] != now);
    }
    assert_eq!(stale, 0, "batches after invalidate got the old row");
    assert!(a.tier.stats().l2_skipped_pending + a.tier.stats().l2_hits > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_longer_than_its_leases_keeps_them_and_loads_each_key_once() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // Margins for a loaded machine: the watchdog extends every 100 ms.
    let lease = Duration::from_millis(300);
    let rows = Rows::new(Duration::from_millis(1200)); // four leases long
    let (a, b) = (
        instance(&redis.url(), lease, &rows),
        instance(&redis.url(), lease, &rows),
    );
    // Subscribed first: a first subscription retires the loads under way (a CI failure: the
    // 50 leases were not seen within 2 s; the stats are printed should it happen again).
    support::subscribed([&a.tier, &b.tier]).await;
    let first = tokio::spawn({
        let loader = a.loader.clone();
        async move { loader.load_many(0..50).await.unwrap() }
    });
    assert!(
        eventually(Duration::from_secs(2), || a.tier.stats().leases >= 50).await,
        "{:?}",
        a.tier.stats()
    );
    let second = tokio::spawn({
        let loader = b.loader.clone();
        async move { loader.load_many(0..50).await.unwrap() }
    });
    assert_eq!(first.await.unwrap(), expected(0..50, 1));
    assert_eq!(second.await.unwrap(), expected(0..50, 1));
    assert_eq!(
        rows.keys_loaded(),
        (50, 1),
        "the leases expired under a live batch: a convoy of takeovers"
    );
    assert_eq!(b.tier.stats().takeovers, 0);
}
