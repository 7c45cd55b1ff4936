//! The test's Redis servers, a plain connection to one, and a poll on the real clock.
#![allow(dead_code, unreachable_pub)]

pub mod servers;

pub use servers::eventually;

use servers::RedisServer;

/// A plain connection, to look at or tamper with what the tier stored.
pub async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis.url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// A dead holder's lease of `lease_ms` was taken over after `waited`: not before it expired
/// (100 ms of slack for the clocks), and at the first poll after (1.5 s of slack for a loaded
/// machine).
pub fn assert_taken_over_in_time(waited: std::time::Duration, lease_ms: u64) {
    use std::time::Duration;
    assert!(
        waited >= Duration::from_millis(lease_ms - 100),
        "took over a live lease: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(lease_ms + 1500),
        "took over too late: {waited:?}"
    );
}

/// Waits until every tier has subscribed to its invalidation channel (within 5 s). A tier's
/// first subscription flushes what its L1 got before it (it may have missed invalidations
/// meanwhile): tests that count loads or look at L1s subscribe first.
pub async fn subscribed<'a, K: 'a, V: 'a>(
    tiers: impl IntoIterator<Item = &'a herder_redis::RedisTier<K, V>>,
) {
    for tier in tiers {
        assert!(
            eventually(std::time::Duration::from_secs(5), || tier
                .stats()
                .subscriptions
                >= 1)
            .await,
            "never subscribed"
        );
    }
}
