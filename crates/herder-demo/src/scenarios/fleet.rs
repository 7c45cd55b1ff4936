//! Fleet: several instances of the service in one process, each with its own cache, sharing one
//! database and (in the last mode) one Redis; a burst of requests for one cold aggregate spread
//! over them.
//!
//! Without a cache every request queries. With a herder `Cache` per instance each instance
//! loads the key once: one backend call per instance. With a `RedisTier` under every instance's
//! cache, one instance takes the lease and loads, the others wait for its value in Redis: one
//! backend call for the fleet.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herder_redis::{RedisStats, RedisTier};

use super::stampede;
use super::{Latencies, burst, response_error};
use crate::DemoError;
use crate::db::{Db, YearStats};
use crate::error::redact;
use crate::graphql::{AggregateAccess, Bookstore, RowAccess, year_cache_over_redis};

/// How the instances share work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FleetMode {
    /// No cache: every request queries.
    NoCache,
    /// A herder `Cache` per instance: coalescing within an instance only.
    CachePerInstance,
    /// A herder `Cache` per instance over a shared `RedisTier`: coalescing across the fleet.
    RedisTier,
}

/// The modes, in the report's order.
pub const MODES: [FleetMode; 3] = [
    FleetMode::NoCache,
    FleetMode::CachePerInstance,
    FleetMode::RedisTier,
];

/// The size of the scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Instances in the fleet.
    pub instances: usize,
    /// Concurrent requests per instance.
    pub requests_per_instance: usize,
    /// The year whose aggregate they all ask for.
    pub year: i64,
    /// The time budget of every Redis call (past it, the tier fails open).
    pub redis_budget: Duration,
}

impl Settings {
    /// The report's: 4 instances × 250 requests.
    pub const FULL: Settings = Settings {
        instances: 4,
        requests_per_instance: 250,
        year: 1987,
        redis_budget: Duration::from_millis(250),
    };
    /// `--quick`: 4 instances × 25 requests.
    pub const QUICK: Settings = Settings {
        requests_per_instance: 25,
        ..Settings::FULL
    };
}

/// What one mode measured.
#[derive(Debug)]
pub struct ModeRun {
    /// The mode.
    pub mode: FleetMode,
    /// Aggregate queries sent to the database by the whole fleet.
    pub backend_calls: u64,
    /// From the burst's start to its last answer.
    pub wall: Duration,
    /// Per request, over the fleet.
    pub latencies: Latencies,
    /// The tiers' counters, summed over the instances (Redis mode only).
    pub redis: Option<RedisStats>,
}

/// A namespace no earlier run used, so that the key is cold in Redis too.
fn fresh_namespace() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("herder-demo:{}:{nanos}", std::process::id())
}

/// Builds the instances: a bookstore each, and its tier in Redis mode.
async fn instances(
    db: &Db,
    redis_url: &str,
    mode: FleetMode,
    settings: Settings,
) -> Result<Vec<(Bookstore, Option<RedisTier<i64, YearStats>>)>, DemoError> {
    let namespace = fresh_namespace();
    let mut fleet = Vec::new();
    for _ in 0..settings.instances {
        let instance = match mode {
            FleetMode::NoCache => (
                Bookstore::new(db.clone(), RowAccess::Naive, AggregateAccess::Direct),
                None,
            ),
            FleetMode::CachePerInstance => (
                Bookstore::new(db.clone(), RowAccess::Naive, AggregateAccess::HerderCache),
                None,
            ),
            FleetMode::RedisTier => {
                let (cache, tier) =
                    year_cache_over_redis(redis_url, &namespace, Some(settings.redis_budget))?;
                let store = Bookstore::with_year_cache(db.clone(), RowAccess::Naive, cache);
                (store, Some(tier))
            }
        };
        fleet.push(instance);
    }
    // Every instance subscribed: Redis answers, and the lease holder's message will reach them.
    let patience = (settings.redis_budget * 10).max(Duration::from_secs(2));
    let deadline = tokio::time::Instant::now() + patience;
    let tiers: Vec<_> = fleet.iter().filter_map(|(_, tier)| tier.as_ref()).collect();
    while tiers.iter().any(|tier| tier.stats().subscriptions == 0) {
        if tokio::time::Instant::now() > deadline {
            return Err(DemoError::new(format!(
                "cannot reach redis at {} (no answer within {:?})",
                redact(redis_url),
                patience
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(fleet)
}

/// Runs one mode: `settings.instances` fresh instances, `requests_per_instance` concurrent
/// requests on each.
pub async fn run_mode(
    db: &Db,
    redis_url: &str,
    mode: FleetMode,
    settings: Settings,
) -> Result<ModeRun, DemoError> {
    let fleet = instances(db, redis_url, mode, settings).await?;
    let stores: Vec<Bookstore> = fleet.iter().map(|(store, _)| store.clone()).collect();
    let before = db.round_trips();
    let per_instance = settings.requests_per_instance.max(1);
    let run = burst(stores.len() * per_instance, |i| {
        let store = stores[i % stores.len()].clone();
        async move { store.execute(stampede::request(settings.year)).await }
    })
    .await;
    let backend_calls = db.round_trips() - before;
    let first = run.outputs.first().map(|r| r.data.clone());
    for response in &run.outputs {
        if let Some(err) = response_error("fleet", response) {
            return Err(err);
        }
        if Some(&response.data) != first.as_ref() {
            return Err(DemoError::new("fleet: instances gave different answers"));
        }
    }
    let redis = (mode == FleetMode::RedisTier).then(|| {
        fleet
            .iter()
            .filter_map(|(_, tier)| tier.as_ref().map(RedisTier::stats))
            .fold(RedisStats::default(), |sum, s| {
                let mut sum = sum;
                sum.l2_hits += s.l2_hits;
                sum.leases += s.leases;
                sum.lease_waits += s.lease_waits;
                sum.takeovers += s.takeovers;
                sum.fills += s.fills;
                sum.errors += s.errors;
                sum.skipped += s.skipped;
                sum
            })
    });
    Ok(ModeRun {
        mode,
        backend_calls,
        wall: run.wall,
        latencies: run.latencies,
        redis,
    })
}

/// Runs the three modes in turn; `step` is called before each.
pub async fn run(
    db: &Db,
    redis_url: &str,
    settings: Settings,
    mut step: impl FnMut(FleetMode),
) -> Result<Vec<ModeRun>, DemoError> {
    let mut runs = Vec::new();
    for mode in MODES {
        step(mode);
        runs.push(run_mode(db, redis_url, mode, settings).await?);
    }
    Ok(runs)
}

/// A human name for a mode.
pub fn mode_name(mode: FleetMode) -> &'static str {
    match mode {
        FleetMode::NoCache => "no cache",
        FleetMode::CachePerInstance => "Cache per instance",
        FleetMode::RedisTier => "Cache + RedisTier",
    }
}
