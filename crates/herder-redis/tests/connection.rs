//! One connection pair per process, and errors that say why: against real `redis-server`s (a
//! plain one, one with a password) and a closed port.

mod support;

use std::sync::Arc;
use std::time::Duration;

use herder::Cache;
use herder_redis::{RedisConnection, RedisTier};
use support::servers::{ConfiguredRedis, RedisServer};
use support::{eventually, raw};
use tokio::time::Instant;

/// Far above what loopback needs (these tests count what reached Redis; a call past its budget
/// would rightly go without it).
const BUDGET: Duration = Duration::from_secs(2);

fn cache<V: Clone + Send + Sync + 'static>(tier: &RedisTier<u64, V>) -> Cache<u64, V> {
    Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(60))
        .tier(Arc::new(tier.clone()))
        .build()
        .unwrap()
}

/// The clients connected to the server, other than the one asking.
async fn other_clients(redis: &RedisServer) -> usize {
    let mut raw = raw(redis).await;
    let me: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut raw)
        .await
        .unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut raw)
        .await
        .unwrap();
    list.lines()
        .filter(|line| !line.starts_with(&format!("id={me} ")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tiers_on_one_connection_use_two_connections_not_six() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let shared = RedisConnection::open(&redis.url()).unwrap();
    let ratings = RedisTier::<u64, f32>::builder_with(&shared)
        .namespace("ratings")
        .budget(BUDGET)
        .build()
        .unwrap();
    let titles = RedisTier::<u64, String>::builder_with(&shared)
        .namespace("titles")
        .budget(BUDGET)
        .build()
        .unwrap();
    let authors = RedisTier::<u64, Vec<u64>>::builder_with(&shared)
        .namespace("authors")
        .budget(BUDGET)
        .build()
        .unwrap();
    let (ratings_cache, titles_cache, authors_cache) =
        (cache(&ratings), cache(&titles), cache(&authors));
    assert_eq!(ratings_cache.get_with(1, || async { 4.5 }).await, 4.5);
    assert_eq!(
        titles_cache.get_with(1, || async { "Dune".into() }).await,
        "Dune"
    );
    assert_eq!(authors_cache.get_with(1, || async { vec![7] }).await, [7]);
    let tiers = [ratings.stats(), titles.stats(), authors.stats()];
    assert!(tiers.iter().all(|stats| stats.fills == 1), "{tiers:?}");
    assert!(
        eventually(Duration::from_secs(5), || [
            ratings.stats(),
            titles.stats(),
            authors.stats()
        ]
        .iter()
        .all(|stats| stats.subscriptions == 1))
        .await
    );
    // What a tier cached before its first subscription is flushed by it (it may have missed
    // invalidations meanwhile): read ratings again, into L1, for the check below.
    assert_eq!(ratings_cache.get_with(1, || async { 4.5 }).await, 4.5);
    assert_eq!(
        other_clients(&redis).await,
        2,
        "one command, one pub/sub connection"
    );

    // Each tier still hears only its own channel: an invalidation of `titles` on another
    // instance evicts titles, not ratings.
    let other = RedisTier::<u64, String>::builder(&redis.url())
        .namespace("titles")
        .budget(BUDGET)
        .build()
        .unwrap();
    let other_cache = cache(&other);
    other_cache.get_with(1, || async { "Dune".into() }).await;
    other_cache.invalidate(&1);
    assert!(eventually(Duration::from_secs(5), || titles_cache.get(&1).is_none()).await);
    assert_eq!(ratings_cache.get(&1), Some(4.5));
    assert_eq!(ratings.stats().invalidations_received, 0);
    assert_eq!(titles.stats().invalidations_received, 1);

    // A tier dropped: the shared subscriber stops listening to its channel, and only to it.
    drop((authors, authors_cache));
    let mut raw = raw(&redis).await;
    let mut subscribers = async |channel: &str| {
        let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut raw)
            .await
            .unwrap();
        counts[0].1
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while subscribers("authors:h1:events").await != 0 {
        assert!(
            Instant::now() < deadline,
            "still subscribed to a dropped tier's channel"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(subscribers("ratings:h1:events").await, 1);
    drop(raw);
    // The server sees a dropped connection close a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    while other_clients(&redis).await != 2 + 2 {
        assert!(
            Instant::now() < deadline,
            "not the shared pair and `other`'s: {}",
            other_clients(&redis).await
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_built_on_their_own_take_two_connections_each() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let tiers: Vec<_> = ["a", "b", "c"]
        .map(|namespace| {
            RedisTier::<u64, u64>::builder(&redis.url())
                .namespace(namespace)
                .budget(BUDGET)
                .build()
                .unwrap()
        })
        .into_iter()
        .collect();
    for tier in &tiers {
        assert_eq!(cache(tier).get_with(1, || async { 1 }).await, 1);
    }
    assert!(
        eventually(Duration::from_secs(5), || tiers
            .iter()
            .all(|tier| tier.stats().subscriptions == 1))
        .await
    );
    assert_eq!(other_clients(&redis).await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_an_error_that_says_so() {
    let Some(redis) = ConfiguredRedis::with_password("s3cret") else {
        return;
    };
    let port = redis.port();
    for url in [
        format!("redis://:wrong@127.0.0.1:{port}/"),
        format!("redis://127.0.0.1:{port}/"),
    ] {
        let error = RedisTier::<u64, String>::builder(&url)
            .budget(BUDGET)
            .connect()
            .await
            .unwrap_err();
        assert!(error.is_auth(), "{url}: {error}");
        assert!(error.to_string().contains("credentials"), "{error}");
        let shared = RedisConnection::open(&url).unwrap();
        assert!(shared.ping().await.unwrap_err().is_auth());
    }
    let tier = RedisTier::<u64, String>::builder(&redis.url())
        .budget(BUDGET)
        .connect()
        .await
        .unwrap();
    assert!(tier.ping().await.is_ok());
    assert_eq!(
        cache(&tier).get_with(1, || async { "one".into() }).await,
        "one"
    );
    assert_eq!(tier.stats().fills, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_an_error_and_misses_do_not_wait_for_it() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/");
    let error = RedisTier::<u64, u64>::builder(&url)
        .connect()
        .await
        .unwrap_err();
    assert!(error.is_connect() && !error.is_auth(), "{error}");
    eprintln!("{error}");

    // Built anyway (fail-open): the first refused connection opens the breaker, and the misses
    // after it skip Redis instead of paying for it each.
    let budget = Duration::from_millis(500);
    let tier = RedisTier::<u64, u64>::builder(&url)
        .budget(budget)
        .circuit_breaker(3, Duration::from_secs(30))
        .build()
        .unwrap();
    let cache = cache(&tier);
    let started = Instant::now();
    for key in 0..20 {
        let miss = Instant::now();
        assert_eq!(cache.get_with(key, move || async move { key }).await, key);
        if key < 2 {
            eprintln!(
                "miss {key} with the connection refused: {:?}",
                miss.elapsed()
            );
        }
    }
    let elapsed = started.elapsed();
    eprintln!("20 misses with the connection refused: {elapsed:?}");
    let stats = tier.stats();
    assert_eq!((stats.errors, stats.circuit_opens), (1, 1), "{stats:?}");
    assert_eq!(stats.skipped, 19, "{stats:?}");
    assert!(
        started.elapsed() < budget,
        "20 misses took {:?}",
        started.elapsed()
    );
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync + Clone + 'static>() {}
    send_sync::<RedisConnection>();
    send_sync::<RedisTier<u64, String>>();
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    error::<herder_redis::Error>();
}
