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
//!   a circuit breaker skips Redis for a while (at once when the connection is refused), and
//!   each instance loads on its own meanwhile.
//!
//! # Quickstart
//!
//! ```no_run
//! use herder::Cache;
//! use herder_redis::{RedisConnection, RedisTier};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One connection pair for the whole process, checked at start-up.
//! let redis = RedisConnection::open("redis://127.0.0.1:6379")?;
//! redis.ping().await?;
//! let tier = RedisTier::<u64, String>::builder_with(&redis)
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
//!
//! # Connections
//!
//! * **One per process.** A [`RedisConnection`] is one multiplexed command connection and one
//!   pub/sub connection; every tier built on it with [`RedisTier::builder_with`] shares them,
//!   whatever its namespace or value type. [`RedisTier::builder`] with a URL gives the tier
//!   connections of its own. [`RedisConnection::from_client`] takes a `redis::Client` the
//!   application configured.
//! * **TLS** (feature `tls-rustls`): `rediss://` URLs, through redis-rs's rustls support, with
//!   ring as rustls's crypto provider and the system's root certificates; a private authority
//!   goes through `redis::Client::build_with_tls` and [`RedisConnection::from_client`].
//! * **Redis Cluster** (feature `cluster`): `RedisTier::builder_cluster` or
//!   `RedisConnection::open_cluster` with seed nodes. A key's value, lease and epoch share a
//!   hash slot; the namespace is spread over 1,024 hash tags, each with its own generation, so
//!   that `invalidate_all` is one `INCR` per tag; invalidations are published with classic
//!   `PUBLISH`, which the cluster broadcasts to every node, and each process subscribes on one
//!   node (the next seed if it fails).
//! * **Misconfiguration says why.** [`Builder::connect`] and [`RedisTier::ping`] report an
//!   unreachable server, refused credentials or a timeout as an [`Error`]; [`Builder::build`]
//!   connects lazily and runs without Redis until it is there.
//!
//! # Invalidation is final
//!
//! [`Cache::invalidate`](herder::Cache::invalidate) on one instance (and `insert`, `remove`,
//! `invalidate_all`) is final for the whole fleet, within these bounds:
//!
//! * **On the invalidating instance, at once.** A read that starts after `invalidate(k)`
//!   returns gets a value loaded after it (herder's own contract). Until Redis has applied the
//!   invalidation, this instance does not read `k` from Redis (the shared copy may still be the
//!   old value): it loads `k` itself and fills nothing.
//! * **On the other instances, within milliseconds while Redis is healthy.** The worker deletes
//!   the value and the lease in Redis, bumps the key's epoch (a load that began before can no
//!   longer fill it) and publishes; every instance evicts its L1 copy and retires its load under
//!   way. Measured from the `invalidate` call to the key gone from another instance's L1, on
//!   loopback: p50 226 µs, p99 5.0 ms (`fleet_check`, see `docs/BENCHMARKS.md`); the fleet
//!   checker holds every read to 250 ms under a random read and write load.
//! * **After an outage of any length, within seconds of Redis answering again.** An invalidation
//!   that Redis cannot take is kept, deduplicated per key and bounded
//!   ([`Builder::max_pending_invalidations`]: past it the pending keys fold into one
//!   `invalidate_all`), and retried at least every 250 ms until Redis applies it, oldest first
//!   ([`RedisStats::invalidations_pending`], `invalidations_replayed`, `invalidations_collapsed`).
//!   The replay publishes, so an instance whose subscription survived (a paused server) evicts;
//!   an instance whose subscription broke flushes its L1 when it resubscribes (retried at least
//!   every 250 ms), and one that read or wrote through the tier before its first subscription
//!   flushes it then; a subscription that went silent (a half-open socket) is found by a `PING`
//!   every second and replaced. The fleet checker holds every read to 3 s after a fault ends;
//!   the worst it saw over a 3-minute run of injected faults (latency, stalls, blackholes,
//!   resets, refused connections, a paused, killed and restarted server) was 1.1 s, with 0
//!   violations in 1.39 million reads.
//! * **During an outage**, the other instances cannot be told: they serve what their L1 holds
//!   (within its TTL) until Redis is back. An instance that dies with invalidations pending
//!   loses them; the other instances' copies then end with their TTL, the last bound.
//! * **A Redis that forgets.** Keys evicted under a `maxmemory-policy` of `allkeys-*` are misses
//!   (a value, a lease, an epoch), and a missing generation key is renewed to a value never used
//!   before, so what an `invalidate_all` hid never comes back. A Redis that loses writes it
//!   acknowledged (a replica promoted before it had them, a restart from an older snapshot) can
//!   bring back values invalidated before: the tier took the invalidations as applied, and the
//!   copies then end with their TTL. Run the tier's Redis without persistence (a restart is then
//!   empty, which the tier handles) or accept that bound.
//!
//! Bad input is a miss, never an error against the breaker and never a stale read: a stored
//! value that does not parse or decode (or a key of another type) is dropped and replaced by the
//! next fill; a lease without an expiry is taken over; an epoch or generation key of another
//! type, or one `INCR` refuses, is renewed to a value no lease was granted under; a pub/sub
//! message that does not decode is ignored, and a forged one can only
//! evict.
//!
//! # Feature flags
//!
//! | flag | default | what it enables |
//! |---|---|---|
//! | `tracing` | on | events for circuit-breaker trips, lost leases and resubscriptions (and herder's spans) |
//! | `serde` | off | `serde::Serialize` for [`RedisStats`] (and herder's stats) |
//! | `tls-rustls` | off | `rediss://` URLs (rustls, with ring) |
//! | `cluster` | off | Redis Cluster (redis-rs `cluster-async`) |
//! | `metrics` | off | the tier's counters and gauges through the `metrics` facade (below), and herder's (`herder/metrics`) |
//!
//! # Metrics
//!
//! With the `metrics` feature, a tier records its [`RedisStats`] as `herder_redis_…` series,
//! labelled `name` by [`Builder::name`], when `herder::metrics::flush()` runs (as herder's own
//! counters are; see `herder::metrics` for when and how). Counters end in `_total`.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `herder_redis_l2_hits_total` | counter | L1 misses answered by Redis with a fresh value |
//! | `herder_redis_l2_stale_hits_total` | counter | L1 misses answered with a stale value while another instance refreshes |
//! | `herder_redis_leases_total` | counter | leases granted: this instance loaded the key for the fleet |
//! | `herder_redis_lease_waits_total` | counter | acquires that waited for another instance's load |
//! | `herder_redis_takeovers_total` | counter | leases won after waiting |
//! | `herder_redis_fills_total` | counter | values written to Redis under a lease |
//! | `herder_redis_fills_lost_total` | counter | fills refused because the lease was lost |
//! | `herder_redis_errors_total` | counter | Redis calls that failed or ran out of their time budget |
//! | `herder_redis_circuit_opens_total` | counter | times the circuit breaker opened |
//! | `herder_redis_skipped_total` | counter | acquires skipped (circuit open, or waited too long): loaded locally |
//! | `herder_redis_decode_failures_total` | counter | stored values that could not be decoded |
//! | `herder_redis_invalidations_sent_total` | counter | invalidations Redis applied for this instance |
//! | `herder_redis_invalidations_failed_total` | counter | attempts to apply an invalidation that failed (retried) |
//! | `herder_redis_invalidations_replayed_total` | counter | invalidations applied once Redis answered again |
//! | `herder_redis_invalidations_collapsed_total` | counter | pending keys folded into one `invalidate_all` |
//! | `herder_redis_l2_skipped_pending_total` | counter | L1 misses that skipped Redis because an invalidation was pending |
//! | `herder_redis_invalidations_received_total` | counter | invalidations from other instances applied to L1 |
//! | `herder_redis_subscriptions_total` | counter | successful pub/sub subscriptions |
//! | `herder_redis_resubscribes_total` | counter | pub/sub resubscriptions after a lost connection |
//! | `herder_redis_heartbeats_missed_total` | counter | pub/sub connections given up for a missing PING reply |
//! | `herder_redis_invalidations_pending` | gauge | invalidations waiting for Redis |
//! | `herder_redis_circuit_open` | gauge | 1 while the circuit breaker is open, else 0 |

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
mod group;
mod layout;
mod lease;
mod many;
#[cfg(feature = "metrics")]
mod metrics;
mod nodes;
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
