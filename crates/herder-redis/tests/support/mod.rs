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
