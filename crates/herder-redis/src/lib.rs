//! A Redis tier for [`herder::Cache`]: with it, a fleet of instances behaves like one cache.
//!
//! Without it, each instance has its own in-process cache: a cold key is loaded once per
//! instance, and an update leaves stale copies everywhere. With a [`RedisTier`] under every
//! instance's cache:
//!
//! * an L1 miss reads Redis before loading (a shared L2, values in a versioned envelope);
//! * one instance loads a cold key while the others wait for it (leases, with a watchdog, and
//!   takeover of a dead holder's lease): N instances × M callers, one backend call;
//! * an invalidation reaches every instance's L1 (pub/sub, with a flush after a lost
//!   connection) and keeps a load that began before it out of Redis (per-key epochs);
//! * Redis being slow, down or restarting never fails a request: every call has a time budget,
//!   a circuit breaker skips Redis for a while, and each instance loads on its own meanwhile.
//!
//! ```no_run
//! use herder::Cache;
//! use herder_redis::RedisTier;
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tier = RedisTier::<u64, String>::builder("redis://127.0.0.1:6379")
//!     .namespace("bookstore:ratings")
//!     .build()?;
//! let ratings: Cache<u64, String> = Cache::builder()
//!     .max_capacity(10_000)
//!     .time_to_live(Duration::from_secs(60))
//!     .stale_while_revalidate(Duration::from_secs(30))
//!     .tier(Arc::new(tier.clone()))
//!     .build()?;
//! let rating = ratings.get_with(42, || async { "4.5".to_string() }).await;
//! println!("{rating}; redis: {:?}", tier.stats());
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(
    missing_debug_implementations,
    missing_docs,
    rust_2018_idioms,
    unreachable_pub
)]

mod breaker;
mod builder;
mod codec;
mod connection;
mod error;
mod events;
mod layout;
mod lease;
mod pending;
mod scripts;
mod stats;
mod tier;
mod worker;

pub use builder::Builder;
pub use codec::{Codec, Postcard};
pub use connection::RedisConnection;
pub use error::Error;
pub use stats::RedisStats;
pub use tier::RedisTier;
pub use worker::Worker;
