//! What herder's tests and benches share: a `redis-server` of their own on a free loopback port,
//! which they can pause, kill and restart; a [`FaultProxy`] to put between it and herder; and the
//! invalidation-contract checker ([`History`], driven by a [`Workload`] over a versioned
//! [`Database`], with [`Chaos`] injecting faults).
//!
//! Without the binary, [`RedisServer::start`] returns `None` (the caller skips), unless
//! `HERDER_REQUIRE_REDIS=1` (set by `.ci/run`), in which case it panics.
#![forbid(unsafe_code)]
#![warn(
    missing_debug_implementations,
    missing_docs,
    rust_2018_idioms,
    unreachable_pub
)]

mod chaos;
mod database;
mod history;
mod proxy;
mod workload;

pub use chaos::{Chaos, Fault, Injected};
pub use database::{Database, RowGuard};
pub use history::{Bounds, FaultWindow, History, Read, Report, Rule, Violation, Write};
pub use proxy::{FaultProxy, Faults};
pub use workload::{Node, ReadFuture, Workload};

/// The seed of a randomized test: `HERDER_SEED` if set (to replay a failure), else a random one;
/// printed either way, so that a failing run says how to replay it.
pub fn seed() -> u64 {
    let seed = std::env::var("HERDER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("HERDER_SEED={seed}");
    seed
}

// One copy, in herder-redis's tests (which must build from the packaged crate, without this
// unpublished one).
#[path = "../../herder-redis/tests/support/servers.rs"]
mod servers;

pub use servers::{
    ConfiguredRedis, RedisCluster, RedisServer, command_calls, eventually, script_calls,
};
