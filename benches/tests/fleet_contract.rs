//! The invalidation contract across a fleet: instances, each a `Cache` over its own `RedisTier`,
//! in front of one real `redis-server` reached through a fault-injecting proxy.
//!
//! The randomized check (`herder_benches::contract`, shared with the `fleet_check` binary) runs
//! readers and writers on every instance while the proxy adds latency, stalls, blackholes, resets
//! and refuses connections and the server is paused and restarted; it asserts that no read broke
//! the contract and that the fleet converged once the faults ended. `HERDER_SEED` replays a
//! seed. The regression tests reproduce the issue "Invalidation is final" items 4 to 6.
//!
//! Real clock throughout (Redis is another process); waits are polls with deadlines.

use herder_benches::contract as fleet;

use std::sync::Arc;
use std::time::Duration;

use fleet::{Check, Member, NAMESPACE};
use herder_testkit::{Database, RedisServer, eventually, seed};
use redis::AsyncCommands;

/// A plain connection, to look at or tamper with what the tier stored.
async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis.url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// The Redis key of `key`'s value in the fleet's namespace (single server; see `layout.rs`).
fn value_key(key: u64) -> Vec<u8> {
    let mut name = format!("{NAMESPACE}:h1:v:").into_bytes();
    name.extend(postcard::to_stdvec(&key).unwrap());
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_fleet_keeps_the_contract() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let seed = seed();
    let check = Check {
        faults: false,
        ..Check::new(seed, Duration::from_secs(2))
    };
    let (outcome, _redis) = fleet::run(redis, check).await;
    eprintln!("{outcome}");
    assert!(outcome.report.reads > 1_000, "{outcome}");
    assert!(
        outcome.report.is_ok() && outcome.converged.is_ok(),
        "HERDER_SEED={seed}\n{outcome}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_under_redis_faults_keeps_the_contract_and_converges() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let seed = seed();
    let (outcome, _redis) = fleet::run(redis, Check::new(seed, Duration::from_secs(4))).await;
    eprintln!("{outcome}");
    assert!(outcome.report.reads > 1_000, "{outcome}");
    assert!(outcome.injected.total() > 0, "{outcome}");
    assert!(
        outcome.report.is_ok() && outcome.converged.is_ok(),
        "HERDER_SEED={seed}\n{outcome}"
    );
}

/// Issue "Invalidation is final", item 4: `RedisTier::invalidate` only queues the Redis
/// invalidation, so a read right after `invalidate(k)` misses L1, finds the old value still in
/// Redis, and stores it in L1, where it stays (the instance ignores its own message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invalidating_instance_does_not_refill_its_l1_from_stale_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let db = Arc::new(Database::new(300));
    let member = Member::new(&redis.url(), &db, false);
    for key in 0..300 {
        assert_eq!(member.get_with(key).await, 0); // in L1 and Redis
    }
    let mut stale_reads = Vec::new();
    for key in 0..300 {
        let version = db.lock(key).bump();
        member.cache.invalidate(&key);
        let got = member.get_with(key).await;
        if got != version {
            stale_reads.push(key);
        }
    }
    // Let the queued invalidations reach Redis, then look at L1.
    let sent = eventually(Duration::from_secs(5), || {
        member.tier.stats().invalidations_sent >= 300
    })
    .await;
    let stale_after: Vec<u64> = (0..300)
        .filter(|&key| member.cache.get(&key).is_some_and(|v| v < db.read(key)))
        .collect();
    assert!(sent, "{:?}", member.tier.stats());
    assert!(
        stale_reads.is_empty() && stale_after.is_empty(),
        "300 rounds of invalidate(k); get_with(k): {} reads got the old version, {} keys still \
         stale in L1 afterwards (first: {:?})",
        stale_reads.len(),
        stale_after.len(),
        &stale_after[..stale_after.len().min(10)]
    );
}

/// Issue "Invalidation is final", item 5: an invalidation made while Redis does not answer is
/// retried a few times and dropped; when Redis is back it still holds the old value, and an
/// instance whose pub/sub connection survived (a paused server) never drops its L1 copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_made_while_redis_stalls_is_replayed_when_it_returns() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let db = Arc::new(Database::new(4));
    let (a, b) = (
        Member::new(&redis.url(), &db, false),
        Member::new(&redis.url(), &db, false),
    );
    assert_eq!(a.get_with(1).await, 0);
    assert_eq!(b.get_with(1).await, 0);
    assert!(eventually(Duration::from_secs(5), || b.tier.stats().subscriptions >= 1).await);
    redis.pause();
    let version = db.lock(1).bump();
    a.cache.invalidate(&1);
    // Longer than the tier's retries (about 0.6 s) and its breaker cooldown.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    redis.resume();
    let recovered = eventually(Duration::from_secs(3), || b.cache.get(&1) != Some(0)).await;
    let got_b = b.get_with(1).await;
    let got_a = a.get_with(1).await;
    let fresh = Member::new(&redis.url(), &db, false);
    let got_fresh = fresh.get_with(1).await;
    assert!(
        recovered && got_b == version && got_a == version && got_fresh == version,
        "3 s after Redis came back: b's L1 dropped the old value: {recovered}; get_with on \
         a = {got_a}, b = {got_b}, a fresh instance = {got_fresh}, want {version}; a: {:?}",
        a.tier.stats()
    );
}

/// Issue "Invalidation is final", item 6: a stored value with non-numeric text before `|` made
/// the acquire script raise a Lua error, counted as a Redis failure (three open the breaker for
/// every key), and the value was never replaced. It must be a miss, and be replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_redis_value_is_a_miss_that_gets_replaced_and_never_opens_the_breaker() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let db = Arc::new(Database::new(8));
    let mut raw = raw(&redis).await;
    for (key, garbage) in [
        (1_u64, &b"abc|garbage"[..]),
        (2, b"no separator"),
        (3, b"99999999999999|\xff\xfe"),
        (4, b"|"),
    ] {
        let _: () = raw.set(value_key(key), garbage).await.unwrap();
    }
    // Each reader is a fresh instance (an empty L1), so each read goes to Redis.
    for round in 0..4 {
        let reader = Member::new(&redis.url(), &db, false);
        for key in 1..=4 {
            assert_eq!(reader.get_with(key).await, 0, "round {round} key {key}");
        }
        let stats = reader.tier.stats();
        assert_eq!(
            (stats.errors, stats.circuit_opens),
            (0, 0),
            "round {round}: corrupted values counted as Redis failures: {stats:?}"
        );
        if round > 0 {
            assert_eq!(
                stats.l2_hits, 4,
                "round {round}: the corrupted values were not replaced: {stats:?}"
            );
        }
    }
    for key in 1..=4 {
        let stored: Vec<u8> = raw.get(value_key(key)).await.unwrap();
        assert!(
            stored.windows(8).all(|w| w != b"garbage") && stored.contains(&b'|'),
            "key {key} still holds {stored:?}"
        );
    }
}

/// Bad input on the pub/sub channel (the "garbage or forged pub/sub messages"): an
/// instance ignores what it cannot decode, keeps serving, and still applies the next real
/// invalidation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_channel_is_ignored_and_invalidations_still_arrive() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let db = Arc::new(Database::new(4));
    let (a, b) = (
        Member::new(&redis.url(), &db, false),
        Member::new(&redis.url(), &db, false),
    );
    assert_eq!(a.get_with(1).await, 0);
    assert_eq!(b.get_with(1).await, 0);
    assert!(eventually(Duration::from_secs(5), || b.tier.stats().subscriptions >= 1).await);
    let channel = format!("{NAMESPACE}:h1:events");
    let mut raw = raw(&redis).await;
    let mut forged_key = vec![b'I'];
    forged_key.extend_from_slice(&7_u64.to_le_bytes());
    forged_key.extend_from_slice(&[0xff; 12]); // not a postcard u64
    for garbage in [
        &b""[..],
        b"I",
        b"Ishort",
        b"Z-unknown-kind-with-enough-bytes",
        &forged_key,
        &[0xff; 64],
    ] {
        let _: i64 = raw.publish(&channel, garbage).await.unwrap();
    }
    // Still serving, and the next real invalidation still reaches b.
    assert_eq!(b.get_with(1).await, 0);
    let version = db.lock(1).bump();
    a.cache.invalidate(&1);
    assert!(
        eventually(Duration::from_secs(5), || b.cache.get(&1) != Some(0)).await,
        "b kept the old value after garbage on the channel: {:?}",
        b.tier.stats()
    );
    assert_eq!(b.get_with(1).await, version);
}
