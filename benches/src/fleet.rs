//! A fleet of instances over one Redis: a cold-key stampede across instances, the time an
//! invalidation takes to reach the other instances' L1, and Redis commands per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use herder::Cache;
use herder_redis::RedisTier;
use tokio::time::Instant;

/// How the instances of a fleet share work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Each instance a herder `Cache` over a shared `RedisTier`.
    Fleet,
    /// Each instance a herder `Cache` of its own: coalescing within an instance only.
    PerInstance,
    /// No coalescing at all: every request calls the backend.
    None,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Fleet => "herder Cache + RedisTier (fleet-wide coalescing)",
            Mode::PerInstance => "herder Cache per instance (no Redis)",
            Mode::None => "no coalescing",
        }
    }
}

/// What a fleet stampede measured.
#[derive(Debug)]
pub struct FleetRun {
    pub backend_calls: usize,
    pub latencies: Vec<Duration>,
    /// Redis commands processed during the run, per request.
    pub redis_commands_per_request: f64,
}

fn instance(
    url: &str,
    namespace: &str,
    mode: Mode,
) -> (Cache<u64, u64>, Option<RedisTier<u64, u64>>) {
    let tier = (mode == Mode::Fleet).then(|| {
        RedisTier::<u64, u64>::builder(url)
            .namespace(namespace)
            .build()
            .expect("tier builds")
    });
    let mut builder = Cache::builder()
        .max_capacity(1000)
        .time_to_live(Duration::from_secs(60));
    if let Some(tier) = &tier {
        builder = builder.tier(Arc::new(tier.clone()));
    }
    (builder.build().unwrap(), tier)
}

/// Waits until every instance with a tier has subscribed to its invalidation channel (polling:
/// the subscriber's connection is real and has no event to wait on).
pub(crate) async fn subscribed<'a>(tiers: impl Iterator<Item = &'a RedisTier<u64, u64>> + Clone) {
    while tiers.clone().any(|tier| tier.stats().subscriptions == 0) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One section of `INFO` from the Redis at `url`, on a connection of its own.
pub async fn redis_info(url: &str, section: &str) -> String {
    let client = redis::Client::open(url).expect("a Redis URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    redis::cmd("INFO")
        .arg(section)
        .query_async(&mut connection)
        .await
        .expect("INFO")
}

async fn redis_commands(url: &str) -> u64 {
    redis_info(url, "stats")
        .await
        .lines()
        .find_map(|line| line.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// `instances` × `per_instance` concurrent reads of one cold key, `latency` backend.
pub async fn stampede(
    url: &str,
    namespace: &str,
    mode: Mode,
    instances: usize,
    per_instance: usize,
    latency: Duration,
) -> FleetRun {
    let fleet: Vec<_> = (0..instances)
        .map(|_| instance(url, namespace, mode))
        .collect();
    // Wait for the subscribers, so that their commands are not counted as the stampede's.
    subscribed(fleet.iter().filter_map(|(_, tier)| tier.as_ref())).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let before = redis_commands(url).await;
    let gate = Arc::new(tokio::sync::Barrier::new(instances * per_instance));
    let mut tasks = Vec::new();
    for (cache, _) in &fleet {
        for _ in 0..per_instance {
            let (cache, calls, gate) = (cache.clone(), calls.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                gate.wait().await;
                let began = Instant::now();
                let load = move || async move {
                    calls.fetch_add(1, Relaxed);
                    tokio::time::sleep(latency).await;
                    42
                };
                let value = match mode {
                    Mode::None => load().await,
                    _ => cache.get_with(1, load).await,
                };
                assert_eq!(value, 42);
                began.elapsed()
            }));
        }
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await.unwrap());
    }
    // Subtract this function's own INFO call.
    let commands = redis_commands(url).await.saturating_sub(before + 1);
    FleetRun {
        backend_calls: calls.load(Relaxed),
        redis_commands_per_request: commands as f64 / (instances * per_instance) as f64,
        latencies,
    }
}

/// How long an invalidation takes to reach each other instance's L1, `rounds` times.
pub async fn invalidation_latency(
    url: &str,
    namespace: &str,
    instances: usize,
    rounds: usize,
) -> Vec<Duration> {
    let fleet: Vec<_> = (0..instances)
        .map(|_| instance(url, namespace, Mode::Fleet))
        .collect();
    subscribed(fleet.iter().filter_map(|(_, tier)| tier.as_ref())).await;
    let mut samples = Vec::new();
    for round in 0..rounds as u64 {
        // Read-through, so every instance holds the key (the first loads it, the others read
        // it from Redis) without sending any invalidation.
        for (cache, _) in &fleet {
            cache.get_with(round, move || async move { round }).await;
        }
        let (writer, others) = fleet.split_first().unwrap();
        let sent = Instant::now();
        writer.0.invalidate(&round);
        let mut pending: Vec<_> = others.iter().map(|(cache, _)| cache.clone()).collect();
        while !pending.is_empty() {
            pending.retain(|cache| {
                if cache.get(&round).is_none() {
                    samples.push(sent.elapsed());
                    false
                } else {
                    true
                }
            });
            tokio::task::yield_now().await;
            assert!(
                sent.elapsed() < Duration::from_secs(5),
                "an invalidation was lost"
            );
        }
    }
    samples
}

/// What a fleet of DataLoader batches measured.
#[derive(Debug)]
pub struct BatchRun {
    /// Keys the backend was asked for, over every instance's loader calls.
    pub keys_loaded: usize,
    pub loader_calls: usize,
    /// Script calls (EVAL, EVALSHA, SCRIPT: round trips) Redis processed during the run.
    pub redis_scripts: u64,
    /// How long each instance's `load_many` took.
    pub latencies: Vec<Duration>,
}

/// Script calls Redis has processed so far (`INFO commandstats`).
async fn redis_scripts(url: &str) -> u64 {
    herder_testkit::script_calls(&redis_info(url, "commandstats").await)
}

/// The backend of [`batches`]: counts keys and calls, takes `latency` per call.
struct Rows {
    keys: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    latency: Duration,
}

impl herder::Loader for Rows {
    type Key = u64;
    type Value = u64;
    type Error = std::convert::Infallible;

    async fn load(&self, keys: &[u64]) -> Result<std::collections::HashMap<u64, u64>, Self::Error> {
        self.calls.fetch_add(1, Relaxed);
        self.keys.fetch_add(keys.len(), Relaxed);
        tokio::time::sleep(self.latency).await;
        Ok(keys.iter().map(|k| (*k, k * 2)).collect())
    }
}

/// `instances` instances, each a DataLoader over its cache (`mode`), batch the same `keys` cold
/// keys at once (`load_many`), `latency` backend.
pub async fn batches(
    url: &str,
    namespace: &str,
    mode: Mode,
    instances: usize,
    keys: u64,
    latency: Duration,
) -> BatchRun {
    let fleet: Vec<_> = (0..instances)
        .map(|_| instance(url, namespace, mode))
        .collect();
    subscribed(fleet.iter().filter_map(|(_, tier)| tier.as_ref())).await;
    let (loaded, calls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let before = redis_scripts(url).await;
    let gate = Arc::new(tokio::sync::Barrier::new(instances));
    let mut tasks = Vec::new();
    for (cache, _) in &fleet {
        let rows = Rows {
            keys: loaded.clone(),
            calls: calls.clone(),
            latency,
        };
        let mut builder = herder::DataLoader::builder(rows);
        if mode != Mode::None {
            builder = builder.cache(cache.clone());
        }
        let loader = builder.build().unwrap();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            let began = Instant::now();
            let values = loader.load_many(0..keys).await.unwrap();
            assert_eq!(values.len() as u64, keys);
            began.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await.unwrap());
    }
    BatchRun {
        keys_loaded: loaded.load(Relaxed),
        loader_calls: calls.load(Relaxed),
        redis_scripts: redis_scripts(url).await - before,
        latencies,
    }
}
