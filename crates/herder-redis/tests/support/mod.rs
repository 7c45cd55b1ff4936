//! The test's Redis servers, a plain connection to one, and a poll on the real clock.
#![allow(dead_code, unreachable_pub)]

pub mod servers;

use std::time::Duration;

use servers::RedisServer;

/// A plain connection, to look at or tamper with what the tier stored.
pub async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis.url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// Polls `condition` every 5 ms for up to `within`; the real clock, since Redis is real.
pub async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    condition()
}
