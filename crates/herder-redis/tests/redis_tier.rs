//! The Redis tier against a real `redis-server` (one per test, on a free loopback port), with
//! several instances: each a `Cache` with its own `RedisTier` and its own connections.
//!
//! These tests run on the real clock: Redis and its pub/sub deliveries are another process. They
//! assert counts and outcomes; where they wait for a message to cross Redis, they poll for it with
//! a deadline far above what loopback needs, and never sleep to order their own steps.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use herder::Cache;
use herder_redis::RedisTier;
use redis::AsyncCommands;
use support::servers::RedisServer;
use support::{eventually, raw};
use tokio::time::Instant;

const NAMESPACE: &str = "test";

struct Instance {
    cache: Cache<u64, String>,
    tier: RedisTier<u64, String>,
}

/// An instance whose Redis calls have a budget far above what loopback needs: the tests that
/// use it count what reached the backend with a healthy Redis, and a call past its budget would
/// (rightly) load locally, which a machine busy building can cause with a short budget.
fn instance(redis: &RedisServer, lease: Duration) -> Instance {
    instance_within(redis, lease, Duration::from_secs(2))
}

/// An instance that gives up on Redis after 200 ms: for the tests that pause, kill or restart it.
fn impatient_instance(redis: &RedisServer, lease: Duration) -> Instance {
    instance_within(redis, lease, Duration::from_millis(200))
}

fn instance_within(redis: &RedisServer, lease: Duration, budget: Duration) -> Instance {
    let tier = RedisTier::<u64, String>::builder(&redis.url())
        .namespace(NAMESPACE)
        .lease_ttl(lease)
        .budget(budget)
        .build()
        .unwrap();
    let cache = Cache::builder()
        .max_capacity(1000)
        .time_to_live(Duration::from_secs(60))
        .tier(Arc::new(tier.clone()))
        .build()
        .unwrap();
    Instance { cache, tier }
}

/// A backend that counts its calls and takes `latency`.
#[derive(Clone)]
struct Backend {
    calls: Arc<AtomicUsize>,
    latency: Duration,
    version: Arc<AtomicU32>,
}

impl Backend {
    fn new(latency: Duration) -> Self {
        Backend {
            calls: Arc::default(),
            latency,
            version: Arc::new(AtomicU32::new(1)),
        }
    }

    /// Reads the row as it is when the load starts, then takes its time.
    fn load(
        &self,
        key: u64,
    ) -> impl FnOnce() -> futures_util::future::BoxFuture<'static, String> + Send + 'static {
        let backend = self.clone();
        move || {
            Box::pin(async move {
                backend.calls.fetch_add(1, SeqCst);
                let version = backend.version.load(SeqCst);
                tokio::time::sleep(backend.latency).await;
                format!("row {key} v{version}")
            })
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(SeqCst)
    }
}

/// The Redis key under which the tier keeps `key`'s value or lease (on a single server).
fn redis_key(kind: &str, key: u64) -> Vec<u8> {
    let mut name = format!("{NAMESPACE}:h1:{kind}:").into_bytes();
    name.extend(postcard::to_stdvec(&key).unwrap());
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_key_read_by_many_instances_reaches_the_backend_once() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::new(Duration::from_millis(100));
    let instances: Vec<_> = (0..4)
        .map(|_| instance(&redis, Duration::from_secs(2)))
        .collect();
    // A tier's first subscription flushes what its L1 got before (and retires the loads under
    // way, which would start a second local flight): subscribe first, to count one per instance.
    support::subscribed(instances.iter().map(|instance| &instance.tier)).await;
    let mut reads = Vec::new();
    for instance in &instances {
        for _ in 0..50 {
            let (cache, load) = (instance.cache.clone(), backend.load(1));
            reads.push(tokio::spawn(async move { cache.get_with(1, load).await }));
        }
    }
    for read in reads {
        assert_eq!(read.await.unwrap(), "row 1 v1");
    }
    assert_eq!(backend.calls(), 1, "4 instances × 50 callers");
    let leases: u64 = instances.iter().map(|i| i.tier.stats().leases).sum();
    let waits: u64 = instances.iter().map(|i| i.tier.stats().lease_waits).sum();
    assert_eq!(leases, 1);
    assert_eq!(
        waits, 3,
        "each other instance waited once, for its one local flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_lease_is_taken_over_within_its_ttl() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // An instance that took the lease (in generation 0) and died: nobody extends or releases it.
    let mut raw = raw(&redis).await;
    // The keys below are forged in generation 0: make it the current one (a missing
    // generation is renewed to a fresh value).
    let _: () = raw.set(format!("{NAMESPACE}:h1:gen"), "0").await.unwrap();
    let lease_ms = 400u64;
    let _: () = raw
        .pset_ex(redis_key("l", 7), "0|dead-instance-token", lease_ms)
        .await
        .unwrap();
    let backend = Backend::new(Duration::from_millis(10));
    let survivor = instance(&redis, Duration::from_millis(lease_ms));
    let started = Instant::now();
    assert_eq!(
        survivor.cache.get_with(7, backend.load(7)).await,
        "row 7 v1"
    );
    let waited = started.elapsed();
    assert_eq!(backend.calls(), 1);
    assert_eq!(survivor.tier.stats().takeovers, 1);
    support::assert_taken_over_in_time(waited, lease_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_longer_than_the_lease_still_makes_one_backend_call() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // The watchdog extends the lease every third of it: 500 ms leaves it 333 ms of slack per
    // extension, which a loaded 2-vCPU machine needs (with 150 ms it once lost the lease).
    let lease = Duration::from_millis(500);
    let backend = Backend::new(Duration::from_millis(1_500)); // three leases long
    let (a, b) = (instance(&redis, lease), instance(&redis, lease));
    let first = tokio::spawn({
        let (cache, load) = (a.cache.clone(), backend.load(3));
        async move { cache.get_with(3, load).await }
    });
    assert!(eventually(Duration::from_secs(2), || a.tier.stats().leases == 1).await);
    let second = tokio::spawn({
        let (cache, load) = (b.cache.clone(), backend.load(3));
        async move { cache.get_with(3, load).await }
    });
    assert_eq!(first.await.unwrap(), "row 3 v1");
    assert_eq!(second.await.unwrap(), "row 3 v1");
    assert_eq!(
        backend.calls(),
        1,
        "the lease expired under a live load: a convoy of takeovers"
    );
    assert_eq!(b.tier.stats().takeovers, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_during_a_load_leaves_the_new_value_in_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::new(Duration::from_millis(300));
    let (a, b, c) = (
        instance(&redis, Duration::from_secs(2)),
        instance(&redis, Duration::from_secs(2)),
        instance(&redis, Duration::from_secs(2)),
    );
    let stale_read = tokio::spawn({
        let (cache, load) = (a.cache.clone(), backend.load(5));
        async move { cache.get_with(5, load).await }
    });
    assert!(eventually(Duration::from_secs(2), || backend.calls() == 1).await);
    // The row changes while instance a is reading it; instance b invalidates.
    backend.version.store(2, SeqCst);
    b.cache.invalidate(&5);
    assert!(
        eventually(Duration::from_secs(2), || b.tier.stats().invalidations_sent
            == 1)
        .await
    );
    assert_eq!(
        stale_read.await.unwrap(),
        "row 5 v1",
        "the load still answers its caller"
    );
    assert!(eventually(Duration::from_secs(2), || a.tier.stats().fills_lost == 1).await);
    assert_eq!(c.cache.get_with(5, backend.load(5)).await, "row 5 v2");
    let mut raw = raw(&redis).await;
    let stored: Vec<u8> = raw.get(redis_key("v", 5)).await.unwrap();
    assert!(
        String::from_utf8_lossy(&stored).ends_with("row 5 v2"),
        "redis kept the stale value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_reaches_the_other_instances_l1() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::new(Duration::ZERO);
    let (a, b) = (
        instance(&redis, Duration::from_secs(2)),
        instance(&redis, Duration::from_secs(2)),
    );
    // An invalidation published before b subscribed would not be for b.
    assert!(eventually(Duration::from_secs(2), || b.tier.stats().subscriptions == 1).await);
    a.cache.get_with(9, backend.load(9)).await;
    b.cache.get_with(9, backend.load(9)).await;
    assert_eq!(backend.calls(), 1, "b read a's value from redis");
    assert!(b.cache.get(&9).is_some());
    let sent = Instant::now();
    a.cache.invalidate(&9);
    assert!(eventually(Duration::from_secs(2), || b.cache.get(&9).is_none()).await);
    eprintln!(
        "invalidation reached the other instance's L1 in {:?}",
        sent.elapsed()
    );
    assert_eq!(b.tier.stats().invalidations_received, 1);
    assert_eq!(
        a.tier.stats().invalidations_received,
        0,
        "an instance ignores its own messages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_paused_then_killed_every_request_still_gets_the_loaders_value_in_time() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let budget = Duration::from_millis(100);
    let tier = RedisTier::<u64, String>::builder(&redis.url())
        .namespace(NAMESPACE)
        .budget(budget)
        .build()
        .unwrap();
    let cache: Cache<u64, String> = Cache::builder()
        .max_capacity(1000)
        .time_to_live(Duration::from_secs(60))
        .tier(Arc::new(tier.clone()))
        .build()
        .unwrap();
    let backend = Backend::new(Duration::from_millis(5));
    assert_eq!(cache.get_with(1, backend.load(1)).await, "row 1 v1");

    redis.pause();
    for key in 100..120 {
        let started = Instant::now();
        assert_eq!(
            cache.get_with(key, backend.load(key)).await,
            format!("row {key} v1")
        );
        // At most one call's budget (then the circuit opens), plus slack for a loaded machine.
        assert!(
            started.elapsed() < budget + Duration::from_secs(1),
            "a paused redis held a request for {:?}",
            started.elapsed()
        );
    }
    redis.resume();
    redis.kill();
    for key in 200..220 {
        let started = Instant::now();
        assert_eq!(
            cache.get_with(key, backend.load(key)).await,
            format!("row {key} v1")
        );
        assert!(
            started.elapsed() < budget + Duration::from_secs(1),
            "a dead redis held a request for {:?}",
            started.elapsed()
        );
    }
    let stats = tier.stats();
    assert!(stats.errors >= 1 && stats.circuit_opens >= 1, "{stats:?}");
    assert_eq!(backend.calls(), 41);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_tier_recovers_its_scripts_and_subscriptions() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::new(Duration::ZERO);
    let (a, b) = (
        impatient_instance(&redis, Duration::from_secs(2)),
        impatient_instance(&redis, Duration::from_secs(2)),
    );
    // Subscribed before the restart (else the one after it is a first subscription).
    assert!(
        eventually(Duration::from_secs(3), || a.tier.stats().subscriptions >= 1
            && b.tier.stats().subscriptions >= 1)
        .await
    );
    a.cache.get_with(1, backend.load(1)).await;
    redis.restart(); // empty, no scripts loaded, no subscribers
    assert!(
        eventually(Duration::from_secs(10), || a.tier.stats().resubscribes >= 1
            && b.tier.stats().resubscribes >= 1)
        .await
    );
    assert_eq!(
        a.cache.get(&1),
        None,
        "L1 was not flushed after the lost connection"
    );
    // Scripts are loaded again on first use, fills land, invalidations flow.
    let reads = Instant::now();
    loop {
        // Evict key 2 and wait until Redis has applied it: while an invalidation is pending,
        // this instance does not read or fill the key in Redis.
        a.cache.invalidate(&2);
        eventually(Duration::from_secs(3), || {
            a.tier.stats().invalidations_pending == 0
        })
        .await;
        let _ = a.cache.get_with(2, backend.load(2)).await;
        if a.tier.stats().fills >= 2 || reads.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    assert!(a.tier.stats().fills >= 2, "{:?}", a.tier.stats());
    b.cache.get_with(2, backend.load(2)).await;
    a.cache.invalidate(&2);
    assert!(eventually(Duration::from_secs(3), || b.cache.get(&2).is_none()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_tells_whether_redis_answers() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let a = impatient_instance(&redis, Duration::from_secs(2));
    assert!(a.tier.ping().await.is_ok());
    redis.kill();
    let error = a.tier.ping().await.unwrap_err();
    assert!(error.is_connect() || error.is_timeout(), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_does_not_decode_is_a_miss_and_is_replaced() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut raw = raw(&redis).await;
    // The keys below are forged in generation 0: make it the current one (a missing
    // generation is renewed to a fresh value).
    let _: () = raw.set(format!("{NAMESPACE}:h1:gen"), "0").await.unwrap();
    // A fresh value of the current generation (0) whose envelope is not one.
    let garbage: &[u8] = b"0|99999999999999|\x07\x07not an envelope";
    let _: () = raw.set(redis_key("v", 4), garbage).await.unwrap();
    let a = instance(&redis, Duration::from_secs(2));
    let backend = Backend::new(Duration::ZERO);
    assert_eq!(a.cache.get_with(4, backend.load(4)).await, "row 4 v1");
    assert_eq!(backend.calls(), 1);
    assert_eq!(a.tier.stats().decode_failures, 1);
    let stored: Vec<u8> = raw.get(redis_key("v", 4)).await.unwrap();
    assert!(
        String::from_utf8_lossy(&stored).ends_with("row 4 v1"),
        "the garbage was not replaced"
    );
}

/// Issue "Invalidation is final", item 4: the invalidating instance read the old value back from
/// Redis before Redis had applied its invalidation, and kept it in L1 until its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invalidating_instance_never_refills_its_l1_from_the_stale_shared_copy() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::new(Duration::ZERO);
    let a = instance(&redis, Duration::from_secs(2));
    let b = instance(&redis, Duration::from_secs(2));
    let mut stale = 0;
    for round in 1..=300u32 {
        let key = u64::from(round % 7);
        // Both instances and Redis hold the row as it is now.
        let before = a.cache.get_with(key, backend.load(key)).await;
        b.cache.get_with(key, backend.load(key)).await;
        // A write: the row changes, then A invalidates it and reads it at once.
        backend.version.fetch_add(1, SeqCst);
        a.cache.invalidate(&key);
        let after = a.cache.get_with(key, backend.load(key)).await;
        let now = format!("row {key} v{}", backend.version.load(SeqCst));
        stale += usize::from(after != now);
        assert_ne!(before, now);
    }
    assert_eq!(stale, 0, "reads after invalidate got the old row");
    // And the fleet converged on the new rows.
    assert!(
        eventually(Duration::from_secs(5), || a
            .tier
            .stats()
            .invalidations_pending
            == 0)
        .await
    );
}

/// Issue "Invalidation is final", item 5: an invalidation made while Redis stalls was dropped
/// after a few tries, and an instance whose pub/sub connection survived the stall served the
/// old value until its TTL. Now it is kept, replayed when Redis answers, and reaches the other
/// instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_made_while_redis_stalls_is_replayed_when_it_returns() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::new(Duration::ZERO);
    let a = impatient_instance(&redis, Duration::from_secs(2));
    let b = impatient_instance(&redis, Duration::from_secs(2));
    assert_eq!(a.cache.get_with(1, backend.load(1)).await, "row 1 v1");
    assert_eq!(b.cache.get_with(1, backend.load(1)).await, "row 1 v1");
    redis.pause();
    backend.version.fetch_add(1, SeqCst);
    a.cache.invalidate(&1);
    // While Redis stalls, A answers with the new row (loaded locally, not read from Redis).
    assert_eq!(a.cache.get_with(1, backend.load(1)).await, "row 1 v2");
    // Several retries fail; the invalidation stays pending.
    assert!(
        eventually(Duration::from_secs(10), || a
            .tier
            .stats()
            .invalidations_failed
            >= 3)
        .await
    );
    assert_eq!(a.tier.stats().invalidations_pending, 1);
    redis.resume();
    let b_cache = b.cache.clone();
    assert!(
        eventually(Duration::from_secs(5), || b_cache.get(&1).as_deref()
            != Some("row 1 v1"))
        .await,
        "B still serves the row A invalidated during the stall"
    );
    assert_eq!(b.cache.get_with(1, backend.load(1)).await, "row 1 v2");
    let stats = a.tier.stats();
    assert_eq!(stats.invalidations_pending, 0);
    assert!(stats.invalidations_replayed >= 1, "{stats:?}");
    // Redis no longer holds the old row.
    let mut raw = raw(&redis).await;
    let stored: Option<Vec<u8>> = raw.get(redis_key("v", 1)).await.unwrap();
    assert!(stored.is_none_or(|v| !String::from_utf8_lossy(&v).contains("v1")));
}

/// Issue "Invalidation is final", item 6: a value with text that is not a number before `|`
/// made the acquire script raise a Lua error, counted as a Redis failure for every key, and was
/// never replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_value_is_a_miss_that_is_replaced_and_never_trips_the_breaker() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut raw = raw(&redis).await;
    let _: () = raw.set(redis_key("v", 3), "abc|garbage").await.unwrap();
    // A key holding another type altogether.
    let _: () = raw.rpush(redis_key("v", 4), "not a string").await.unwrap();
    let backend = Backend::new(Duration::ZERO);
    let a = instance(&redis, Duration::from_secs(2));
    for _ in 0..5 {
        for key in [3, 4] {
            assert_eq!(
                a.cache.get_with(key, backend.load(key)).await,
                format!("row {key} v1")
            );
            a.cache.invalidate(&key);
        }
    }
    let stats = a.tier.stats();
    assert_eq!((stats.errors, stats.circuit_opens), (0, 0), "{stats:?}");
    assert_eq!(stats.decode_failures, 2, "{stats:?}");
    // Another instance reads the replaced value from Redis.
    let b = instance(&redis, Duration::from_secs(2));
    assert!(
        eventually(Duration::from_secs(5), || a
            .tier
            .stats()
            .invalidations_pending
            == 0)
        .await
    );
    assert_eq!(b.cache.get_with(3, backend.load(3)).await, "row 3 v1");
    assert_eq!(b.tier.stats().errors, 0);
}

/// A healthy subscription answers its heartbeat; a stalled server does not, and the instance
/// resubscribes (flushing its L1) once the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscription_is_detected_by_its_heartbeat() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::new(Duration::ZERO);
    let a = impatient_instance(&redis, Duration::from_secs(2));
    a.cache.get_with(1, backend.load(1)).await;
    // Three heartbeats on a healthy connection.
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let stats = a.tier.stats();
    assert_eq!(
        (stats.heartbeats_missed, stats.subscriptions),
        (0, 1),
        "{stats:?}"
    );
    redis.pause();
    assert!(
        eventually(Duration::from_secs(10), || a.tier.stats().heartbeats_missed
            >= 1)
        .await
    );
    redis.resume();
    assert!(eventually(Duration::from_secs(10), || a.tier.stats().resubscribes >= 1).await);
    assert_eq!(a.cache.get(&1), None, "the resubscription flushed L1");
}

/// The generation is stored with each value and lease (so that scripts declare every key they
/// touch, as a cluster requires): a load under way when the namespace is invalidated as a whole
/// must not fill Redis after it, and the values before it must no longer be read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidate_all_during_a_load_keeps_the_old_row_out_of_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::new(Duration::from_millis(300));
    let (a, b, c) = (
        instance(&redis, Duration::from_secs(2)),
        instance(&redis, Duration::from_secs(2)),
        instance(&redis, Duration::from_secs(2)),
    );
    let quick = Backend::new(Duration::ZERO);
    assert_eq!(a.cache.get_with(1, quick.load(1)).await, "row 1 v1");
    let stale_read = tokio::spawn({
        let (cache, load) = (a.cache.clone(), backend.load(2));
        async move { cache.get_with(2, load).await }
    });
    assert!(eventually(Duration::from_secs(2), || backend.calls() == 1).await);
    backend.version.store(2, SeqCst);
    quick.version.store(2, SeqCst);
    b.cache.invalidate_all();
    assert!(
        eventually(Duration::from_secs(2), || b.tier.stats().invalidations_sent
            == 1)
        .await
    );
    assert_eq!(stale_read.await.unwrap(), "row 2 v1");
    assert!(eventually(Duration::from_secs(2), || a.tier.stats().fills_lost == 1).await);
    // Neither the value stored before nor the load under way is read from Redis.
    assert_eq!(c.cache.get_with(1, quick.load(1)).await, "row 1 v2");
    assert_eq!(c.cache.get_with(2, quick.load(2)).await, "row 2 v2");
    assert_eq!(c.tier.stats().l2_hits, 0, "{:?}", c.tier.stats());
}

/// Settings at their extremes: a lease that could never end is refused by `build`, every other
/// duration saturates, and a value kept "forever" (`Duration::MAX` TTL and stale window) is
/// stored without expiry and read back by another instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_at_their_maximum_are_refused_or_saturate() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let err = RedisTier::<u64, String>::builder(&redis.url())
        .lease_ttl(Duration::MAX)
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("lease_ttl must be at most 24 h"),
        "{err}"
    );
    let forever = || {
        let tier = RedisTier::<u64, String>::builder(&redis.url())
            .namespace(NAMESPACE)
            .budget(Duration::MAX)
            .max_wait(Duration::MAX)
            .circuit_breaker(1, Duration::MAX)
            .build()
            .unwrap();
        let cache: Cache<u64, String> = Cache::builder()
            .max_capacity(10)
            .time_to_live(Duration::MAX)
            .stale_while_revalidate(Duration::MAX)
            .tier(Arc::new(tier.clone()))
            .build()
            .unwrap();
        Instance { cache, tier }
    };
    let backend = Backend::new(Duration::ZERO);
    let (a, b) = (forever(), forever());
    assert_eq!(a.cache.get_with(1, backend.load(1)).await, "row 1 v1");
    assert_eq!(a.tier.stats().fills, 1, "{:?}", a.tier.stats());
    assert_eq!(b.cache.get_with(1, backend.load(1)).await, "row 1 v1");
    assert_eq!((b.tier.stats().l2_hits, backend.calls()), (1, 1));
    let mut raw = raw(&redis).await;
    let ttl: i64 = raw.pttl(redis_key("v", 1)).await.unwrap();
    assert_eq!(ttl, -1, "stored without expiry");
}

/// A burst of invalidations is sent several at a time (the worker pipelines up to 64), and
/// every one of them is applied once and reaches the other instance: none lost, none sent
/// twice, whatever the batch boundaries. (Sent one round trip each, the 1,000 took 145-167 ms
/// to reach the other instance on loopback, against 32-44 ms now: see docs/BENCHMARKS.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_invalidations_is_applied_once_each_and_reaches_every_instance() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = (
        instance(&redis, Duration::from_secs(2)),
        instance(&redis, Duration::from_secs(2)),
    );
    support::subscribed([&a.tier, &b.tier]).await;
    const BURST: u64 = 1_000;
    let started = Instant::now();
    for key in 0..BURST {
        a.cache.invalidate(&key);
    }
    // The messages are published by the scripts, before A has their answers: A's own count
    // may lag what B received.
    let applied = eventually(Duration::from_secs(30), || {
        b.tier.stats().invalidations_received == BURST && a.tier.stats().invalidations_sent == BURST
    })
    .await;
    let took = started.elapsed();
    let (sa, sb) = (a.tier.stats(), b.tier.stats());
    eprintln!("a burst of {BURST} invalidations reached the other instance in {took:?}");
    assert!(applied, "{sa:?} {sb:?}");
    assert_eq!(
        (
            sa.invalidations_sent,
            sa.invalidations_failed,
            sa.invalidations_pending
        ),
        (BURST, 0, 0),
        "{sa:?}"
    );
    let mut raw = raw(&redis).await;
    let epochs: Vec<Option<u64>> = redis::cmd("MGET")
        .arg(
            (0..BURST)
                .map(|key| redis_key("e", key))
                .collect::<Vec<_>>(),
        )
        .query_async(&mut raw)
        .await
        .unwrap();
    let not_once: Vec<(u64, Option<u64>)> = (0..BURST)
        .zip(epochs)
        .filter(|(_, epoch)| *epoch != Some(1))
        .collect();
    assert!(
        not_once.is_empty(),
        "keys whose epoch is not 1 (not invalidated exactly once): {:?}",
        &not_once[..not_once.len().min(10)]
    );
}
