//! Adversarial tests of the Redis tier against a real `redis-server` (one per test, on a free
//! loopback port): garbage and wrong-type keys, a paused, killed and restarted server,
//! invalidations across instances and around loads in flight, leases across instances. Each
//! bug they found is fixed and its test stays as a regression test.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herder::Cache;
use herder_redis::RedisTier;
use redis::AsyncCommands;
use support::servers::{RedisServer, script_calls};
use support::{eventually, raw};
use tokio::time::Instant;

const NAMESPACE: &str = "adv";
/// Far above what loopback needs (see `redis_tier.rs`'s `instance`).
const BUDGET: Duration = Duration::from_secs(2);

struct Instance {
    cache: Cache<u64, String>,
    tier: RedisTier<u64, String>,
}

fn builder(redis: &RedisServer, budget: Duration) -> herder_redis::Builder<u64, String> {
    RedisTier::<u64, String>::builder(&redis.url())
        .namespace(NAMESPACE)
        .lease_ttl(Duration::from_secs(2))
        .budget(budget)
}

fn cache_over(tier: &RedisTier<u64, String>) -> Cache<u64, String> {
    Cache::builder()
        .max_capacity(1000)
        .time_to_live(Duration::from_secs(600))
        .tier(Arc::new(tier.clone()))
        .build()
        .unwrap()
}

fn instance(redis: &RedisServer) -> Instance {
    instance_within(redis, BUDGET)
}

fn instance_within(redis: &RedisServer, budget: Duration) -> Instance {
    let tier = builder(redis, budget).build().unwrap();
    Instance {
        cache: cache_over(&tier),
        tier,
    }
}

async fn subscribed(instances: &[&Instance]) {
    support::subscribed(instances.iter().map(|instance| &instance.tier)).await;
}

/// A backend that counts its calls per key; each value carries the row's version.
#[derive(Clone, Default)]
struct Backend {
    calls: Arc<Mutex<HashMap<u64, usize>>>,
    version: Arc<AtomicUsize>,
}

impl Backend {
    fn load(
        &self,
        key: u64,
    ) -> impl FnOnce() -> futures_util::future::BoxFuture<'static, String> + Send + 'static {
        let backend = self.clone();
        move || {
            Box::pin(async move {
                *backend.calls.lock().unwrap().entry(key).or_default() += 1;
                format!("row {key} v{}", backend.version.load(SeqCst))
            })
        }
    }

    fn calls(&self) -> usize {
        self.calls.lock().unwrap().values().sum()
    }
}

fn redis_key(kind: &str, key: u64) -> Vec<u8> {
    let mut name = format!("{NAMESPACE}:h1:{kind}:").into_bytes();
    name.extend(postcard::to_stdvec(&key).unwrap());
    name
}

async fn bounded<T>(what: &str, within: Duration, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(within, fut).await {
        Ok(value) => value,
        Err(_) => panic!("hung: {what}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Bugs
// ---------------------------------------------------------------------------------------------

/// `Listener::subscribed` flushes L1 only on a *re*subscription (`subscriptions` was not 0).
/// Until a tier's first SUBSCRIBE has completed, the instance already reads and fills its L1
/// through the command connection, and an invalidation published meanwhile is never seen: the
/// L1 copy read before it stays until its TTL. Here the window is widened by starting the
/// worker (`build_with_worker`) after the invalidation; with `build()` it is the time the spawned
/// worker takes to connect and subscribe, which after a start-up with Redis down is up to its
/// 250 ms retry: an instance that cached a key meanwhile (from the backend) misses the replay
/// of an invalidation made elsewhere during the outage if the replay wins that race (brief
/// item: "an invalidation made while Redis is down is not lost, or L1 is flushed").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_before_the_first_subscription_is_not_lost() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::default();
    let a = instance(&redis);
    subscribed(&[&a]).await;
    let (b_tier, b_worker) = builder(&redis, BUDGET).build_with_worker().unwrap();
    let b = Instance {
        cache: cache_over(&b_tier),
        tier: b_tier,
    };
    assert_eq!(a.cache.get_with(1, backend.load(1)).await, "row 1 v0");
    // B reads A's value from Redis into its L1 before it has subscribed.
    assert_eq!(b.cache.get_with(1, backend.load(1)).await, "row 1 v0");
    assert_eq!((backend.calls(), b.tier.stats().l2_hits), (1, 1));
    backend.version.store(1, SeqCst);
    a.cache.invalidate(&1);
    assert!(
        eventually(Duration::from_secs(3), || a.tier.stats().invalidations_sent
            == 1)
        .await
    );
    tokio::spawn(b_worker.run());
    subscribed(&[&b]).await;
    let evicted = eventually(Duration::from_secs(2), || b.cache.get(&1).is_none()).await;
    assert!(
        evicted,
        "B serves {:?}, invalidated by A (B: {:?})",
        b.cache.get(&1),
        b.tier.stats()
    );
}

/// A stored deadline that Lua reads as a number too large for a Redis integer (`inf`, `1e300`)
/// must not make the key unreadable: it is a miss, replaced by the next fill, which another
/// instance then reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_with_an_unrepresentable_deadline_is_a_miss_and_is_replaced() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut raw = raw(&redis).await;
    // The keys below are forged in generation 0: make it the current one (a missing
    // generation is renewed to a fresh value).
    let _: () = raw.set(format!("{NAMESPACE}:h1:gen"), "0").await.unwrap();
    let _: () = raw.set(redis_key("v", 1), "0|inf|garbage").await.unwrap();
    let _: () = raw.set(redis_key("v", 2), "0|1e300|garbage").await.unwrap();
    let backend = Backend::default();
    let (a, b) = (instance(&redis), instance(&redis));
    for key in [1, 2] {
        assert_eq!(
            a.cache.get_with(key, backend.load(key)).await,
            format!("row {key} v0")
        );
        assert_eq!(
            b.cache.get_with(key, backend.load(key)).await,
            format!("row {key} v0")
        );
    }
    let stored: Vec<Vec<u8>> = vec![
        raw.get(redis_key("v", 1)).await.unwrap(),
        raw.get(redis_key("v", 2)).await.unwrap(),
    ];
    assert_eq!(
        backend.calls(),
        2,
        "B did not read A's value from Redis: a {:?}, b {:?}, redis holds {:?}",
        a.tier.stats(),
        b.tier.stats(),
        stored
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect::<Vec<_>>()
    );
}

/// A key's epoch holding another type (here a list): INVALIDATE deletes the value and the lease,
/// then `INCR` on the epoch raises a Lua error, so the script never publishes and never
/// answers. The worker retries for ever: the other instances keep the invalidated value in L1
/// (they are never told), and the invalidating instance skips Redis for that key for ever.
/// (ACQUIRE's `GET` of the epoch when it grants a lease raises too, counted against the
/// breaker.) The docs: "a key of another type is dropped and replaced by the next fill",
/// "Bad input is a miss, never an error against the breaker".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_type_epoch_key_neither_blocks_invalidation_nor_trips_the_breaker() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::default();
    let (a, b) = (instance(&redis), instance(&redis));
    subscribed(&[&a, &b]).await;
    assert_eq!(a.cache.get_with(1, backend.load(1)).await, "row 1 v0");
    assert_eq!(b.cache.get_with(1, backend.load(1)).await, "row 1 v0");
    // An unrelated key B puts in Redis, for A to read later.
    assert_eq!(b.cache.get_with(50, backend.load(50)).await, "row 50 v0");
    let mut raw = raw(&redis).await;
    let _: () = raw.rpush(redis_key("e", 1), "not a counter").await.unwrap();
    backend.version.store(1, SeqCst);
    a.cache.invalidate(&1);
    let reached = eventually(Duration::from_secs(3), || b.cache.get(&1).is_none()).await;
    // Meanwhile, does A still read the unrelated key from Redis? (The worker's failed retries
    // count against A's breaker.)
    let a_used_redis = a.cache.get_with(50, backend.load(50)).await == "row 50 v0";
    let sa = a.tier.stats();
    // Keys whose epoch is garbage, read for the first time: a lease is granted after a GET of
    // the epoch.
    let c = instance(&redis);
    for key in 10..13 {
        let _: () = raw.rpush(redis_key("e", key), "garbage").await.unwrap();
        assert_eq!(
            c.cache.get_with(key, backend.load(key)).await,
            format!("row {key} v1")
        );
    }
    let sc = c.tier.stats();
    assert!(
        reached && a_used_redis && sa.invalidations_pending == 0 && sc.errors == 0,
        "B still serves {:?}; A read key 50 from redis: {a_used_redis}; a {sa:?}; c {sc:?}",
        b.cache.get(&1),
    );
}

/// The same with the namespace's generation key: holding a string that is not a number (which
/// ACQUIRE and FILL accept as a generation like any other), `invalidate_all`'s `INCR` fails for
/// ever. It is never published (the other instances keep every L1 entry), and the pending
/// `invalidate_all` covers every key, so the invalidating instance never reads Redis again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_numeric_generation_key_does_not_block_invalidate_all() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut raw = raw(&redis).await;
    let _: () = raw.set(format!("{NAMESPACE}:h1:gen"), "abc").await.unwrap();
    let backend = Backend::default();
    let (a, b) = (instance(&redis), instance(&redis));
    subscribed(&[&a, &b]).await;
    assert_eq!(a.cache.get_with(1, backend.load(1)).await, "row 1 v0");
    assert_eq!(b.cache.get_with(1, backend.load(1)).await, "row 1 v0");
    assert_eq!(
        backend.calls(),
        1,
        "generation `abc` works for reads and fills"
    );
    backend.version.store(1, SeqCst);
    a.cache.invalidate_all();
    let reached = eventually(Duration::from_secs(3), || b.cache.get(&1).is_none()).await;
    assert!(
        reached && a.tier.stats().invalidations_pending == 0,
        "B still serves {:?}; a {:?}",
        b.cache.get(&1),
        a.tier.stats()
    );
}

/// A lease of the current generation stored without an expiry (garbage, or a server whose
/// key was persisted): ACQUIRE answers "wait" with `PTTL` -1, read as 0 ms left, so the waiter
/// polls Redis every millisecond (`lease_left.max(1)`) until `max_wait` (30 s by default) and
/// then loads locally without filling: the lease is never taken over, every read of the key
/// waits `max_wait`, and each waiting read sends about a thousand scripts a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_without_expiry_is_taken_over_like_a_dead_holders() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut raw = raw(&redis).await;
    // The keys below are forged in generation 0: make it the current one (a missing
    // generation is renewed to a fresh value).
    let _: () = raw.set(format!("{NAMESPACE}:h1:gen"), "0").await.unwrap();
    let _: () = raw.set(redis_key("l", 1), "0|immortal").await.unwrap();
    let tier = builder(&redis, BUDGET)
        .lease_ttl(Duration::from_millis(300))
        .max_wait(Duration::from_secs(3))
        .build()
        .unwrap();
    let cache = cache_over(&tier);
    let backend = Backend::default();
    let info_before: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut raw)
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        bounded(
            "read",
            Duration::from_secs(10),
            cache.get_with(1, backend.load(1))
        )
        .await,
        "row 1 v0"
    );
    let waited = started.elapsed();
    let info_after: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut raw)
        .await
        .unwrap();
    let scripts = script_calls(&info_after) - script_calls(&info_before);
    assert!(
        waited < Duration::from_millis(300 + 1_500) && tier.stats().fills == 1,
        "waited {waited:?} with {scripts} scripts sent: {:?}",
        tier.stats()
    );
}

// ---------------------------------------------------------------------------------------------
// Attacks that hold
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_type_value_and_lease_keys_are_misses_that_are_replaced() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut raw = raw(&redis).await;
    // The keys below are forged in generation 0: make it the current one (a missing
    // generation is renewed to a fresh value).
    let _: () = raw.set(format!("{NAMESPACE}:h1:gen"), "0").await.unwrap();
    let _: () = raw.rpush(redis_key("v", 1), "a list").await.unwrap();
    let _: () = raw.hset(redis_key("l", 2), "a", "hash").await.unwrap();
    let _: () = raw.sadd(redis_key("v", 3), "a set").await.unwrap();
    let _: () = raw.sadd(redis_key("l", 3), "a set").await.unwrap();
    let _: () = raw
        .set(redis_key("v", 4), &b"0|12|\x01\x00\xff\xff\xff"[..])
        .await
        .unwrap();
    let backend = Backend::default();
    let (a, b) = (instance(&redis), instance(&redis));
    for key in 1..=4 {
        assert_eq!(
            a.cache.get_with(key, backend.load(key)).await,
            format!("row {key} v0")
        );
    }
    for key in 1..=4 {
        assert_eq!(
            b.cache.get_with(key, backend.load(key)).await,
            format!("row {key} v0")
        );
    }
    assert_eq!(
        backend.calls(),
        4,
        "b read every key from redis: {:?}",
        b.tier.stats()
    );
    let (sa, sb) = (a.tier.stats(), b.tier.stats());
    assert_eq!(
        (sa.errors, sa.fills, sb.l2_hits, sb.errors),
        (0, 4, 4, 0),
        "{sa:?} {sb:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_pubsub_message_is_ignored_and_a_forged_one_only_evicts() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::default();
    let a = instance(&redis);
    subscribed(&[&a]).await;
    assert_eq!(a.cache.get_with(1, backend.load(1)).await, "row 1 v0");
    let mut raw = raw(&redis).await;
    let channel = format!("{NAMESPACE}:h1:events");
    for garbage in [&b""[..], b"X", b"I123", b"Fxxxxxxxx\xff\xff", b"A"] {
        let _: i64 = raw.publish(&channel, garbage).await.unwrap();
    }
    let mut forged = vec![b'I'];
    forged.extend(7u64.to_le_bytes());
    forged.extend(postcard::to_stdvec(&1u64).unwrap());
    let _: i64 = raw.publish(&channel, forged).await.unwrap();
    assert!(eventually(Duration::from_secs(3), || a.cache.get(&1).is_none()).await);
    assert_eq!(a.cache.get_with(1, backend.load(1)).await, "row 1 v0");
    assert_eq!(a.tier.stats().invalidations_received, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_in_flight_on_b_during_as_invalidation_leaves_nothing_old_behind() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::default();
    let (a, b, c) = (instance(&redis), instance(&redis), instance(&redis));
    subscribed(&[&a, &b, &c]).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let started = Arc::new(tokio::sync::Notify::new());
    let old = tokio::spawn({
        let (cache, gate, started, backend) = (
            b.cache.clone(),
            gate.clone(),
            started.clone(),
            backend.clone(),
        );
        async move {
            cache
                .get_with(1, move || async move {
                    let row = backend.load(1)().await;
                    started.notify_one();
                    gate.acquire().await.unwrap().forget();
                    row
                })
                .await
        }
    });
    started.notified().await;
    assert_eq!(b.tier.stats().leases, 1);
    backend.version.store(1, SeqCst);
    a.cache.invalidate(&1);
    assert!(
        eventually(Duration::from_secs(3), || b
            .tier
            .stats()
            .invalidations_received
            == 1)
        .await
    );
    gate.add_permits(1);
    assert_eq!(bounded("old", BUDGET * 3, old).await.unwrap(), "row 1 v0");
    assert!(eventually(Duration::from_secs(3), || b.tier.stats().fills_lost == 1).await);
    assert_eq!(
        b.cache.get(&1),
        None,
        "B's L1 kept the row loaded before the invalidation"
    );
    let mut raw = raw(&redis).await;
    let stored: Option<Vec<u8>> = raw.get(redis_key("v", 1)).await.unwrap();
    assert_eq!(
        stored, None,
        "redis kept the row loaded before the invalidation"
    );
    assert_eq!(c.cache.get_with(1, backend.load(1)).await, "row 1 v1");
    assert_eq!(b.cache.get_with(1, backend.load(1)).await, "row 1 v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_made_while_redis_is_dead_reaches_the_fleet_after_restart() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::default();
    let budget = Duration::from_millis(200);
    let (a, b) = (
        instance_within(&redis, budget),
        instance_within(&redis, budget),
    );
    subscribed(&[&a, &b]).await;
    assert_eq!(a.cache.get_with(1, backend.load(1)).await, "row 1 v0");
    assert_eq!(b.cache.get_with(1, backend.load(1)).await, "row 1 v0");
    redis.kill();
    backend.version.store(1, SeqCst);
    a.cache.invalidate(&1);
    let started = Instant::now();
    assert_eq!(a.cache.get_with(1, backend.load(1)).await, "row 1 v1");
    assert!(started.elapsed() < budget + Duration::from_secs(1));
    for key in 100..110 {
        let started = Instant::now();
        assert_eq!(
            b.cache.get_with(key, backend.load(key)).await,
            format!("row {key} v1")
        );
        assert!(
            started.elapsed() < budget + Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    redis.restart();
    assert!(
        eventually(Duration::from_secs(5), || b.cache.get(&1).as_deref()
            != Some("row 1 v0"))
        .await,
        "B serves the row A invalidated while redis was dead: {:?}",
        b.tier.stats()
    );
    assert!(
        eventually(Duration::from_secs(5), || a
            .tier
            .stats()
            .invalidations_pending
            == 0)
        .await
    );
    assert_eq!(b.cache.get_with(1, backend.load(1)).await, "row 1 v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_during_a_lease_never_holds_a_request_past_its_budgets() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let budget = Duration::from_millis(200);
    let a = instance_within(&redis, budget);
    // A read begun before the tier's first subscription is not kept in L1 once it subscribes
    // (it may have missed invalidations): subscribe first, so that the read below is kept.
    subscribed(&[&a]).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let started = Arc::new(tokio::sync::Notify::new());
    let read = tokio::spawn({
        let (cache, gate, started) = (a.cache.clone(), gate.clone(), started.clone());
        async move {
            cache
                .get_with(1, move || async move {
                    started.notify_one();
                    gate.acquire().await.unwrap().forget();
                    "row 1".to_string()
                })
                .await
        }
    });
    started.notified().await;
    assert_eq!(a.tier.stats().leases, 1);
    redis.pause();
    let released = Instant::now();
    gate.add_permits(1);
    let value = bounded("read", Duration::from_secs(5), read).await.unwrap();
    let took = released.elapsed();
    redis.resume();
    assert_eq!(value, "row 1");
    // The fill (one budget) and nothing else.
    assert!(took < budget + Duration::from_secs(1), "held {took:?}");
    assert_eq!(a.cache.get(&1).as_deref(), Some("row 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_reads_of_the_same_cold_keys_on_three_instances_load_each_key_once() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let instances: Vec<_> = (0..3).map(|_| instance(&redis)).collect();
    let per_key = Arc::new(Mutex::new(HashMap::<u64, usize>::new()));
    let reads: Vec<_> = instances
        .iter()
        .flat_map(|i| [i.cache.clone(), i.cache.clone()])
        .map(|cache| {
            let per_key = per_key.clone();
            tokio::spawn(async move {
                cache
                    .get_many_with([1u64, 2, 3, 4, 5], move |keys: Vec<u64>| async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let mut counts = per_key.lock().unwrap();
                        Ok::<_, std::io::Error>(
                            keys.into_iter()
                                .map(|k| {
                                    *counts.entry(k).or_default() += 1;
                                    (k, format!("row {k}"))
                                })
                                .collect::<HashMap<_, _>>(),
                        )
                    })
                    .await
            })
        })
        .collect();
    for read in reads {
        let values = bounded("bulk", Duration::from_secs(10), read)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(values.len(), 5);
        assert!(values.iter().all(|(k, v)| *v == format!("row {k}")));
    }
    let counts = per_key.lock().unwrap().clone();
    assert_eq!(counts, (1..=5).map(|k| (k, 1)).collect(), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instances_lease_is_taken_over_within_its_ttl() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // The holder runs on a runtime of its own, which dies (as its process would) mid-load.
    let url = redis.url();
    let (granted_tx, granted_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let tier = RedisTier::<u64, String>::builder(&url)
                .namespace(NAMESPACE)
                .lease_ttl(Duration::from_millis(600))
                .budget(BUDGET)
                .build()
                .unwrap();
            // Connected first, so that the read's budget is spent on the read alone. (Once, in
            // CI, no lease was seen here within 3 s; the cause was not pinned down: a first read
            // past its budget loads without a lease, and a lease count of 1 can be polled past.
            // The stats are printed should it happen again.)
            tier.ping().await.unwrap();
            let cache = cache_over(&tier);
            tokio::spawn(async move { cache.get_with(1, std::future::pending::<String>).await });
            assert!(
                eventually(Duration::from_secs(3), || tier.stats().leases >= 1).await,
                "{:?}",
                tier.stats()
            );
            granted_tx.send(()).unwrap();
            // Keep the watchdog extending the lease a while, then die.
            tokio::time::sleep(Duration::from_millis(700)).await;
        });
        runtime.shutdown_background();
    });
    granted_rx.recv().unwrap();
    let backend = Backend::default();
    let survivor = instance(&redis);
    holder.join().unwrap();
    let started = Instant::now();
    assert_eq!(
        bounded(
            "survivor",
            Duration::from_secs(10),
            survivor.cache.get_with(1, backend.load(1))
        )
        .await,
        "row 1 v0"
    );
    assert_eq!(backend.calls(), 1);
    assert!(
        started.elapsed() < Duration::from_millis(600 + 1_500),
        "{:?}",
        started.elapsed()
    );
}

/// A leader hung on a cold key, cut by its cache's hard `load_timeout`: its lease is released
/// at once (not left to expire), so another instance's waiting read takes it and loads, well
/// within the lease TTL; the hung instance's next read loads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_leader_cut_by_load_timeout_releases_its_lease_at_once() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let lease = Duration::from_secs(10);
    let tier = builder(&redis, BUDGET).lease_ttl(lease).build().unwrap();
    let hung: Cache<u64, String> = Cache::builder()
        .max_capacity(100)
        .load_timeout(Duration::from_millis(300))
        .tier(Arc::new(tier.clone()))
        .build()
        .unwrap();
    let b = instance(&redis);
    subscribed(&[&b]).await;
    let backend = Backend::default();
    let stuck = tokio::spawn({
        let hung = hung.clone();
        async move {
            hung.try_get_with(1, || {
                std::future::pending::<Result<String, std::io::Error>>()
            })
            .await
        }
    });
    assert!(eventually(Duration::from_secs(3), || tier.stats().leases == 1).await);
    let started = Instant::now();
    let waiting = b.cache.get_with(1, backend.load(1));
    assert_eq!(
        bounded("b", Duration::from_secs(5), waiting).await,
        "row 1 v0"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        bounded("stuck", BUDGET, stuck)
            .await
            .unwrap()
            .unwrap_err()
            .is_timeout()
    );
    assert_eq!((backend.calls(), b.tier.stats().lease_waits), (1, 1));
    // The next read on the hung instance reads B's value from Redis.
    assert_eq!(hung.get_with(1, backend.load(1)).await, "row 1 v0");
    assert_eq!(backend.calls(), 1);
}

/// Two instances' bulk reads of overlapping cold keys: A leases 1, 2, 3 and loads them; B
/// asks for 3, 4, 5, leases 4 and 5 and is told to wait for 3. A `get_many_with` batch calls
/// its loader once, and it used to load the key it would wait for itself once it held a lease:
/// key 3 reached the backend twice with a healthy Redis. B now gives its leases back, waits
/// for A's 3, and leases 4 and 5 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_bulk_reads_on_two_instances_load_each_key_once() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = (instance(&redis), instance(&redis));
    let per_key = Arc::new(Mutex::new(HashMap::<u64, usize>::new()));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let bulk = |cache: Cache<u64, String>, keys: [u64; 3], gated: bool| {
        let (per_key, gate) = (per_key.clone(), gate.clone());
        tokio::spawn(async move {
            cache
                .get_many_with(keys, move |keys: Vec<u64>| async move {
                    for &k in &keys {
                        *per_key.lock().unwrap().entry(k).or_default() += 1;
                    }
                    if gated {
                        gate.acquire().await.unwrap().forget();
                    }
                    Ok::<_, std::io::Error>(
                        keys.into_iter()
                            .map(|k| (k, format!("row {k}")))
                            .collect::<HashMap<_, _>>(),
                    )
                })
                .await
        })
    };
    let first = bulk(a.cache.clone(), [1, 2, 3], true);
    assert!(eventually(Duration::from_secs(3), || a.tier.stats().leases == 3).await);
    let second = bulk(b.cache.clone(), [3, 4, 5], false);
    assert!(eventually(Duration::from_secs(3), || b.tier.stats().leases == 2).await);
    // B gives its leases on 4 and 5 back and waits for A's 3: it cannot end before A fills it.
    assert_eq!(b.tier.stats().lease_waits, 1);
    assert!(!second.is_finished());
    gate.add_permits(1);
    let (x, y) = (
        bounded("a", Duration::from_secs(5), first)
            .await
            .unwrap()
            .unwrap(),
        bounded("b", Duration::from_secs(5), second)
            .await
            .unwrap()
            .unwrap(),
    );
    assert_eq!((x.len(), y.len()), (3, 3));
    let counts = per_key.lock().unwrap().clone();
    assert_eq!(
        counts,
        (1..=5).map(|k| (k, 1)).collect::<HashMap<u64, usize>>(),
        "each key loaded once"
    );
    // B leased 4 and 5 twice (it gave them back), and read 3 from Redis.
    assert_eq!(b.tier.stats().leases, 4);
    assert_eq!(b.tier.stats().l2_hits, 1);
}

/// The namespace's generation key holding another type (a list): reads treat it as corrupt and
/// renew it (no error against the breaker, values are shared), and `invalidate_all` goes
/// through and reaches the other instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_type_generation_key_is_renewed_by_reads_and_invalidate_all() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut raw = raw(&redis).await;
    let generation = format!("{NAMESPACE}:h1:gen");
    let _: () = raw.rpush(&generation, "not a counter").await.unwrap();
    let backend = Backend::default();
    let (a, b) = (instance(&redis), instance(&redis));
    subscribed(&[&a, &b]).await;
    assert_eq!(a.cache.get_with(1, backend.load(1)).await, "row 1 v0");
    assert_eq!(b.cache.get_with(1, backend.load(1)).await, "row 1 v0");
    assert_eq!(backend.calls(), 1, "b read a's value from redis");
    let _: () = raw.del(&generation).await.unwrap();
    let _: () = raw.rpush(&generation, "not a counter").await.unwrap();
    backend.version.store(1, SeqCst);
    a.cache.invalidate_all();
    assert!(eventually(Duration::from_secs(3), || b.cache.get(&1).is_none()).await);
    assert!(
        eventually(Duration::from_secs(3), || a
            .tier
            .stats()
            .invalidations_pending
            == 0)
        .await
    );
    assert_eq!(b.cache.get_with(1, backend.load(1)).await, "row 1 v1");
    let (sa, sb) = (a.tier.stats(), b.tier.stats());
    assert_eq!((sa.errors, sb.errors), (0, 0), "{sa:?} {sb:?}");
}

/// `invalidate_all` orphans the values of the old generation, which stay in Redis (with their
/// TTL) and are hidden only by the generation no longer matching. The generation key is an
/// ordinary key: a `maxmemory-policy` of `allkeys-*` may evict it (deleted here), and a missing
/// one read as `'0'`, the generation the first values were stored under, and an `INCR` of a
/// missing one gave `1`, the one after it: the values hidden by an `invalidate_all` came back,
/// on the invalidating instance (its invalidation long applied) and everywhere else, for their
/// whole TTL. A missing generation is now renewed to a value never used before (found by a
/// review of the tier; with real eviction, 180 of 200 rows came back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_generation_key_never_brings_back_what_invalidate_all_hid() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::default();
    let a = instance(&redis);
    subscribed(&[&a]).await;
    let mut raw = raw(&redis).await;
    let generation = format!("{NAMESPACE}:h1:gen");
    assert_eq!(a.cache.get_with(1, backend.load(1)).await, "row 1 v0");
    for version in 1..=3 {
        backend.version.store(version, SeqCst);
        if version == 3 {
            // The generation goes missing before `invalidate_all` this time: it must still
            // be applied, to a generation not used before.
            let _: () = raw.del(&generation).await.unwrap();
        }
        let sent = a.tier.stats().invalidations_sent;
        a.cache.invalidate_all();
        assert!(
            eventually(Duration::from_secs(3), || {
                let stats = a.tier.stats();
                stats.invalidations_sent > sent && stats.invalidations_pending == 0
            })
            .await
        );
        if version < 3 {
            let _: () = raw.del(&generation).await.unwrap();
        }
        assert_eq!(
            a.cache.get_with(1, backend.load(1)).await,
            format!("row 1 v{version}"),
            "a value hidden by invalidate_all came back after the generation key was lost: {:?}",
            a.tier.stats()
        );
    }
}
