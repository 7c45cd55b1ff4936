//! The fleet benchmark: N instances in one process (each with its own Redis connection, as N
//! processes would have), Zipf-distributed reads over a large key space, a share of writes that
//! bump a row and invalidate it through the writing instance, and a database that sleeps on
//! every query. Each row of the table is one way to share the work: no cache, a `Cache` per
//! instance, or a `Cache` per instance over one `RedisTier` (single server or cluster).
//!
//! What it reports: database queries (and their ratio to the ideal of one query per key and
//! version read, fleet-wide), Redis round trips per read and per L1 miss, p50/p99 read latency, and
//! the invalidation contract checked over every read (`herder_testkit::History`).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use herder::Cache;
use herder_redis::{RedisConnection, RedisTier};
use herder_testkit::{Bounds, Database, History, Report};

/// How the instances share work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every read queries the database.
    NoCache,
    /// A herder `Cache` per instance; an invalidation reaches only the writing instance.
    PerInstance,
    /// A herder `Cache` per instance over a shared `RedisTier`.
    Tier,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::NoCache => "no cache",
            Mode::PerInstance => "herder Cache per instance",
            Mode::Tier => "herder Cache + RedisTier",
        }
    }
}

/// Where Redis is.
#[derive(Clone, Debug)]
pub enum Redis {
    Single(String),
    Cluster(Vec<String>),
}

impl Redis {
    fn urls(&self) -> Vec<String> {
        match self {
            Redis::Single(url) => vec![url.clone()],
            Redis::Cluster(urls) => urls.clone(),
        }
    }
}

/// The shape of a run.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub instances: usize,
    /// Concurrent readers (and writers: each operation is a write with `write_percent`).
    pub tasks_per_instance: usize,
    pub keys: u64,
    /// Zipf exponent (1.0 in the issue).
    pub exponent: f64,
    pub write_percent: u32,
    pub db_latency: Duration,
    /// Run first without measuring, so that the measured window sees a warm fleet.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// The L1 capacity of each instance.
    pub l1_capacity: u64,
    pub ttl: Duration,
    pub seed: u64,
}

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    pub reads: u64,
    pub writes: u64,
    pub elapsed: Duration,
    /// Loader calls (each one database query, which sleeps `db_latency`).
    pub db_queries: u64,
    /// Distinct (key, version) pairs that reads of the window returned and no read of the
    /// warm-up did: the fewest queries a fleet could make in the window (one per key per
    /// invalidation; the TTL is longer than the run).
    pub ideal_queries: u64,
    /// Redis round trips served during the run (every node; see [`redis_round_trips`]).
    pub redis_round_trips: u64,
    /// Reads that missed the instance's L1 (the sum of every cache's `misses`).
    pub l1_misses: u64,
    /// Sorted read latencies.
    pub latencies: Vec<Duration>,
    pub report: Report,
}

impl Outcome {
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies[((self.latencies.len() - 1) as f64 * p).round() as usize]
    }
}

/// A Zipf sampler over ranks `0..n` (rank 0 the most popular), by inverse CDF.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: u64, exponent: f64) -> Self {
        let mut total = 0.0;
        let cdf = (1..=n)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(exponent);
                total
            })
            .collect();
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut fastrand::Rng) -> u64 {
        let total = *self.cdf.last().expect("at least one key");
        let at = rng.f64() * total;
        self.cdf
            .partition_point(|&c| c <= at)
            .min(self.cdf.len() - 1) as u64
    }
}

struct Instance {
    cache: Option<Cache<u64, u64>>,
    tier: Option<RedisTier<u64, u64>>,
}

async fn instance(mode: Mode, redis: &Redis, setup: &Setup, namespace: &str) -> Instance {
    if mode == Mode::NoCache {
        return Instance {
            cache: None,
            tier: None,
        };
    }
    let mut builder = Cache::builder()
        .max_capacity(setup.l1_capacity)
        .time_to_live(setup.ttl)
        .wait_timeout(Duration::from_secs(10));
    let mut shared = None;
    if mode == Mode::Tier {
        let connection = match redis {
            Redis::Single(url) => RedisConnection::open(url),
            Redis::Cluster(urls) => RedisConnection::open_cluster(urls),
        }
        .expect("a Redis connection");
        connection.ping().await.expect("Redis answers");
        let tier = RedisTier::<u64, u64>::builder_with(&connection)
            .namespace(namespace)
            .build()
            .expect("the tier builds");
        builder = builder.tier(Arc::new(tier.clone()));
        shared = Some(tier);
    }
    Instance {
        cache: Some(builder.build().expect("the cache builds")),
        tier: shared,
    }
}

/// Commands the tier's scripts run inside Redis: Redis counts them in its command statistics
/// as if they had been sent, but they cost no round trip.
const INSIDE_SCRIPTS: &[&str] = &[
    "get", "set", "del", "incr", "pexpire", "pttl", "time", "publish",
];

/// Round trips Redis served so far, summed over `urls`: every command in `INFO commandstats`
/// but those the scripts run inside Redis (`INSIDE_SCRIPTS`; none of them is sent on its own by
/// the tier in this benchmark, which never calls `invalidate_all`) and the benchmark's own
/// `INFO`.
pub async fn redis_round_trips(urls: &[String]) -> u64 {
    let mut total = 0;
    for url in urls {
        let info = crate::fleet::redis_info(url, "commandstats").await;
        total += herder_testkit::command_calls(&info)
            .filter(|(name, _)| *name != "info" && !INSIDE_SCRIPTS.contains(name))
            .map(|(_, calls)| calls)
            .sum::<u64>();
    }
    total
}

/// What one task saw.
#[derive(Default)]
struct Tally {
    reads: u64,
    writes: u64,
    latencies: Vec<Duration>,
    /// (key, version) pairs read during the warm-up.
    warm: HashSet<(u64, u64)>,
    /// (key, version) pairs read during the measured window.
    seen: HashSet<(u64, u64)>,
}

fn misses(fleet: &[Arc<Instance>]) -> u64 {
    fleet
        .iter()
        .filter_map(|node| node.cache.as_ref())
        .map(|cache| cache.stats().misses)
        .sum()
}

/// Runs one row on the current (multi-thread) runtime. `namespace` must be new for each run.
pub async fn run(mode: Mode, redis: &Redis, setup: Setup, namespace: &str) -> Outcome {
    let db = Arc::new(Database::new(setup.keys));
    let zipf = Arc::new(Zipf::new(setup.keys, setup.exponent));
    let history = Arc::new(History::new());
    let mut fleet = Vec::new();
    for _ in 0..setup.instances {
        fleet.push(Arc::new(instance(mode, redis, &setup, namespace).await));
    }
    // The subscribers connected (their commands are not the run's).
    crate::fleet::subscribed(fleet.iter().filter_map(|node| node.tier.as_ref())).await;
    let urls = redis.urls();
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut seeds = fastrand::Rng::with_seed(setup.seed);
    let mut tasks = Vec::new();
    for (index, node) in fleet.iter().enumerate() {
        for _ in 0..setup.tasks_per_instance {
            let (node, db, zipf, history, stop, measuring) = (
                node.clone(),
                db.clone(),
                zipf.clone(),
                history.clone(),
                stop.clone(),
                measuring.clone(),
            );
            let mut rng = fastrand::Rng::with_seed(seeds.u64(..));
            tasks.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                while !stop.load(Relaxed) {
                    let key = zipf.sample(&mut rng);
                    if rng.u32(..100) < setup.write_percent {
                        {
                            let mut row = db.lock(key);
                            let version = row.bump();
                            if let Some(cache) = &node.cache {
                                cache.invalidate(&key);
                            }
                            history.write(key, version, index, Instant::now());
                        }
                        tally.writes += u64::from(measuring.load(Relaxed));
                        tokio::task::yield_now().await;
                        continue;
                    }
                    let load = {
                        let db = db.clone();
                        move || async move {
                            let version = db.read(key);
                            tokio::time::sleep(setup.db_latency).await;
                            version
                        }
                    };
                    let start = Instant::now();
                    let version = match &node.cache {
                        Some(cache) => cache.get_with(key, load).await,
                        None => load().await,
                    };
                    let end = Instant::now();
                    history.read(index, key, start, end, version);
                    if measuring.load(Relaxed) {
                        tally.reads += 1;
                        tally.latencies.push(end - start);
                        tally.seen.insert((key, version));
                    } else {
                        tally.warm.insert((key, version));
                    }
                    // A hit completes without yielding: let the other tasks run.
                    tokio::task::yield_now().await;
                }
                tally
            }));
        }
    }
    tokio::time::sleep(setup.warmup).await;
    let misses_before = misses(&fleet);
    let round_trips_before = redis_round_trips(&urls).await;
    let queries_before = db.reads();
    measuring.store(true, Relaxed);
    let started = Instant::now();
    tokio::time::sleep(setup.duration).await;
    stop.store(true, Relaxed);
    let db_queries = db.reads() - queries_before;
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.expect("a benchmark task panicked");
        total.reads += tally.reads;
        total.writes += tally.writes;
        total.latencies.extend(tally.latencies);
        total.seen.extend(tally.seen);
        total.warm.extend(tally.warm);
    }
    let elapsed = started.elapsed();
    let redis_round_trips = redis_round_trips(&urls)
        .await
        .saturating_sub(round_trips_before);
    total.latencies.sort_unstable();
    let l1_misses = misses(&fleet) - misses_before;
    let report = history.check(Bounds::new(
        Duration::from_millis(250),
        Duration::from_secs(3),
    ));
    Outcome {
        reads: total.reads,
        writes: total.writes,
        elapsed,
        db_queries,
        ideal_queries: total.seen.difference(&total.warm).count() as u64,
        redis_round_trips: if mode == Mode::Tier {
            redis_round_trips
        } else {
            0
        },
        l1_misses,
        latencies: total.latencies,
        report,
    }
}

#[cfg(test)]
mod tests {
    use super::Zipf;

    #[test]
    fn zipf_one_favours_low_ranks_as_the_harmonic_series_says() {
        let zipf = Zipf::new(1000, 1.0);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = [0_u32; 1000];
        for _ in 0..200_000 {
            counts[zipf.sample(&mut rng) as usize] += 1;
        }
        // P(rank 0) = 1 / H(1000) ≈ 0.1336; P(rank 1) is half of it.
        let first = f64::from(counts[0]) / 200_000.0;
        assert!((first - 0.1336).abs() < 0.01, "{first}");
        let ratio = f64::from(counts[0]) / f64::from(counts[1]);
        assert!((ratio - 2.0).abs() < 0.15, "{ratio}");
        assert!(counts[999] > 0, "the tail is reached");
    }
}
