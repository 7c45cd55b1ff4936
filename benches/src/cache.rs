//! The cache peers behind two traits (the hit path, and the stampede), and their workloads.
//!
//! Keys and values are `u64`, so clones cost nothing and the numbers measure each cache's own
//! machinery. Caches with expiry get a one-hour TTL (so the hit path pays for reading the clock);
//! quick_cache has no expiry and is the raw-storage baseline.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::time::Instant;

const HOUR: Duration = Duration::from_secs(3600);

/// A cache whose hit path is measured.
pub trait HitPath: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn insert(&self, key: u64, value: u64);
    fn get(&self, key: u64) -> Option<u64>;
}

/// herder's `Cache::get`, with or without a TTL.
pub struct HerderGet(pub herder::Cache<u64, u64>, pub &'static str);

impl HerderGet {
    pub fn with_ttl(capacity: u64) -> Self {
        let cache = herder::Cache::builder()
            .max_capacity(capacity)
            .time_to_live(HOUR)
            .build();
        HerderGet(cache.unwrap(), "herder Cache::get (TTL)")
    }

    /// The OS clock read at every hit (`clock_resolution(ZERO)`; the default is a 1 ms clock).
    pub fn exact_clock(capacity: u64) -> Self {
        let cache = herder::Cache::builder()
            .max_capacity(capacity)
            .time_to_live(HOUR)
            .clock_resolution(Duration::ZERO)
            .build();
        HerderGet(
            cache.unwrap(),
            "herder Cache::get (TTL, OS clock at every hit)",
        )
    }

    pub fn without_ttl(capacity: u64) -> Self {
        HerderGet(herder::Cache::new(capacity), "herder Cache::get (no TTL)")
    }
}

impl HitPath for HerderGet {
    fn name(&self) -> &'static str {
        self.1
    }
    fn insert(&self, key: u64, value: u64) {
        self.0.insert(key, value);
    }
    fn get(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }
}

/// herder's read-through `try_get_with` on a hit (the future is ready on its first poll).
pub struct HerderGetWith(pub herder::Cache<u64, u64>);

impl HitPath for HerderGetWith {
    fn name(&self) -> &'static str {
        "herder Cache::try_get_with hit (TTL)"
    }
    fn insert(&self, key: u64, value: u64) {
        self.0.insert(key, value);
    }
    fn get(&self, key: u64) -> Option<u64> {
        let read = self.0.try_get_with(key, || async { Err::<u64, ()>(()) });
        read.now_or_never().expect("a hit is ready at once").ok()
    }
}

/// moka's `future::Cache::get` (ready on its first poll).
pub struct Moka(pub moka::future::Cache<u64, u64>);

impl Moka {
    pub fn new(capacity: u64) -> Self {
        Moka(
            moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(HOUR)
                .build(),
        )
    }
}

impl HitPath for Moka {
    fn name(&self) -> &'static str {
        "moka 0.12 future::Cache::get (TTL)"
    }
    fn insert(&self, key: u64, value: u64) {
        self.0
            .insert(key, value)
            .now_or_never()
            .expect("moka insert is ready at once");
    }
    fn get(&self, key: u64) -> Option<u64> {
        self.0
            .get(&key)
            .now_or_never()
            .expect("moka get is ready at once")
    }
}

/// quick_cache's `sync::Cache::get`: no expiry, the raw storage herder builds on; at its own
/// defaults, or (`tuned`) with the shard count herder gives it (16 per core, at least 64).
pub struct QuickCache(pub quick_cache::sync::Cache<u64, u64>, pub bool);

impl QuickCache {
    /// With herder's shard count (see `herder`'s `cache/storage.rs`).
    pub fn tuned(capacity: u64) -> Self {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let options = quick_cache::OptionsBuilder::new()
            .shards((cores * 16).max(64))
            .estimated_items_capacity(capacity as usize)
            .weight_capacity(capacity)
            .build()
            .expect("valid options");
        QuickCache(
            quick_cache::sync::Cache::with_options(
                options,
                quick_cache::UnitWeighter,
                quick_cache::DefaultHashBuilder::default(),
                quick_cache::sync::DefaultLifecycle::default(),
            ),
            true,
        )
    }
}

impl HitPath for QuickCache {
    fn name(&self) -> &'static str {
        if self.1 {
            "quick_cache 0.7 sync::Cache::get (no TTL), herder's shard count (tuned)"
        } else {
            "quick_cache 0.7 sync::Cache::get (no TTL)"
        }
    }
    fn insert(&self, key: u64, value: u64) {
        self.0.insert(key, value);
    }
    fn get(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }
}

/// pingora's `MemoryCache::get` (TinyUFO; keys are stored as 64-bit hashes only).
pub struct Pingora(pub pingora_memory_cache::MemoryCache<u64, u64>);

impl HitPath for Pingora {
    fn name(&self) -> &'static str {
        "pingora-memory-cache 0.9 MemoryCache::get (TTL)"
    }
    fn insert(&self, key: u64, value: u64) {
        self.0.put(&key, value, Some(HOUR));
    }
    fn get(&self, key: u64) -> Option<u64> {
        self.0.get(&key).0
    }
}

/// Every hit-path peer, sized for `capacity` entries.
pub fn hit_path_peers(capacity: u64) -> Vec<Arc<dyn HitPath>> {
    vec![
        Arc::new(HerderGet::with_ttl(capacity)),
        Arc::new(HerderGet::exact_clock(capacity)),
        Arc::new(HerderGet::without_ttl(capacity)),
        Arc::new(HerderGetWith(
            herder::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(HOUR)
                .build()
                .unwrap(),
        )),
        Arc::new(Moka::new(capacity)),
        Arc::new(QuickCache(
            quick_cache::sync::Cache::new(capacity as usize),
            false,
        )),
        Arc::new(QuickCache::tuned(capacity)),
        Arc::new(Pingora(pingora_memory_cache::MemoryCache::new(
            capacity as usize,
        ))),
    ]
}

/// `threads` threads each read `reads` hot keys (out of `keys`, all present) in a scattered
/// order; returns the wall time divided by `reads`: the time of one read on each thread.
pub fn hit_path(cache: &Arc<dyn HitPath>, threads: usize, keys: u64, reads: u64) -> Duration {
    for key in 0..keys {
        cache.insert(key, key);
    }
    let start = std::sync::Barrier::new(threads + 1);
    let elapsed = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads as u64)
            .map(|t| {
                let (cache, start) = (cache.clone(), &start);
                scope.spawn(move || {
                    start.wait();
                    let began = std::time::Instant::now();
                    let mut found = 0u64;
                    // A stride coprime with `keys` visits every key in a cache-unfriendly order.
                    let mut key = t * 7919 % keys;
                    for _ in 0..reads {
                        found += cache.get(key).is_some() as u64;
                        key = (key + 7919) % keys;
                    }
                    assert_eq!(found, reads, "{} missed a hot key", cache.name());
                    began.elapsed()
                })
            })
            .collect();
        start.wait();
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .max()
            .unwrap()
    });
    elapsed / reads as u32
}

/// A read-through cache under a stampede.
pub trait Stampede: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Reads `key` through the cache; a miss calls `backend`.
    fn read(
        self: Arc<Self>,
        key: u64,
        backend: Backend,
    ) -> impl Future<Output = u64> + Send + 'static;
}

/// A backend that takes `latency` per call and counts its calls.
#[derive(Clone)]
pub struct Backend {
    pub latency: Duration,
    pub calls: Arc<AtomicUsize>,
}

impl Backend {
    pub fn new(latency: Duration) -> Self {
        Backend {
            latency,
            calls: Arc::default(),
        }
    }

    pub async fn call(self, key: u64) -> u64 {
        self.calls.fetch_add(1, Relaxed);
        tokio::time::sleep(self.latency).await;
        key * 2
    }
}

impl Stampede for herder::Cache<u64, u64> {
    fn name(&self) -> &'static str {
        "herder Cache::get_with"
    }
    async fn read(self: Arc<Self>, key: u64, backend: Backend) -> u64 {
        self.get_with(key, move || backend.call(key)).await
    }
}

impl Stampede for moka::future::Cache<u64, u64> {
    fn name(&self) -> &'static str {
        "moka 0.12 get_with"
    }
    async fn read(self: Arc<Self>, key: u64, backend: Backend) -> u64 {
        self.get_with(key, backend.call(key)).await
    }
}

impl Stampede for quick_cache::sync::Cache<u64, u64> {
    fn name(&self) -> &'static str {
        "quick_cache 0.7 get_or_insert_async"
    }
    async fn read(self: Arc<Self>, key: u64, backend: Backend) -> u64 {
        let load = async move { Ok::<_, ()>(backend.call(key).await) };
        self.get_or_insert_async(&key, load).await.unwrap()
    }
}

/// pingora's read-through `RTCache`, its lookup given the backend as `extra`.
pub struct PingoraRt(pub pingora_memory_cache::RTCache<u64, u64, PingoraLookup, Backend>);

pub struct PingoraLookup;

#[async_trait::async_trait]
impl pingora_memory_cache::Lookup<u64, u64, Backend> for PingoraLookup {
    async fn lookup(
        key: &u64,
        backend: Option<&Backend>,
    ) -> Result<(u64, Option<Duration>), Box<dyn std::error::Error + Send + Sync>> {
        let backend = backend.expect("the bench passes the backend").clone();
        Ok((backend.call(*key).await, Some(HOUR)))
    }
}

impl Stampede for PingoraRt {
    fn name(&self) -> &'static str {
        "pingora-memory-cache 0.9 RTCache::get"
    }
    async fn read(self: Arc<Self>, key: u64, backend: Backend) -> u64 {
        self.0.get(&key, None, Some(&backend)).await.0.unwrap()
    }
}

/// No coalescing: look up, and on a miss call the backend and insert (what a plain cache does).
pub struct Uncoalesced(pub moka::future::Cache<u64, u64>);

impl Stampede for Uncoalesced {
    fn name(&self) -> &'static str {
        "no coalescing (get, then load and insert)"
    }
    async fn read(self: Arc<Self>, key: u64, backend: Backend) -> u64 {
        if let Some(value) = self.0.get(&key).await {
            return value;
        }
        let value = backend.call(key).await;
        self.0.insert(key, value).await;
        value
    }
}

/// What a stampede run measured.
#[derive(Debug, Clone)]
pub struct StampedeRun {
    pub backend_calls: usize,
    pub latencies: Vec<Duration>,
}

/// `requests` tasks read one cold key at once; each task times its own read.
pub async fn stampede<S: Stampede>(
    cache: Arc<S>,
    requests: usize,
    latency: Duration,
) -> StampedeRun {
    let backend = Backend::new(latency);
    let gate = Arc::new(tokio::sync::Barrier::new(requests));
    let tasks: Vec<_> = (0..requests)
        .map(|_| {
            let (cache, backend, gate) = (cache.clone(), backend.clone(), gate.clone());
            tokio::spawn(async move {
                gate.wait().await;
                let began = Instant::now();
                assert_eq!(cache.read(42, backend).await, 84);
                began.elapsed()
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests);
    for task in tasks {
        latencies.push(task.await.unwrap());
    }
    StampedeRun {
        backend_calls: backend.calls.load(Relaxed),
        latencies,
    }
}
