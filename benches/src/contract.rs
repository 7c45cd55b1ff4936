//! The fleet consistency check, shared by `benches/tests/fleet_contract.rs` (seconds) and the
//! `fleet_check` bench binary (minutes): N instances, each a `Cache` over its own `RedisTier`
//! (some with a `DataLoader` in front), all reaching a real `redis-server` through a
//! [`FaultProxy`]; a versioned database; the `herder_testkit` workload and contract check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herder::cache::{EarlyRefresh, Loaded};
use herder::{Cache, DataLoader, Loader};
use herder_redis::{RedisStats, RedisTier};
use herder_testkit::{
    Bounds, Chaos, Database, Fault, FaultProxy, Faults, History, Injected, Node, ReadFuture,
    RedisServer, Report, Workload,
};

/// The namespace of the fleet's keys and channels in Redis.
pub const NAMESPACE: &str = "fleet";

/// A loader error (the fleet's loads fail only when told to).
#[derive(Debug)]
pub struct Down;

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("backend down")
    }
}

impl std::error::Error for Down {}

/// Reads the row's version when the load starts, then takes up to 2 ms.
async fn load_row(db: Arc<Database>, key: u64, roll: u64) -> u64 {
    let version = db.read(key);
    let latency = roll % 2_000;
    if latency > 1_000 {
        tokio::time::sleep(Duration::from_micros(latency)).await;
    }
    version
}

/// The DataLoader's backend.
pub struct Rows {
    pub db: Arc<Database>,
}

impl Loader for Rows {
    type Key = u64;
    type Value = u64;
    type Error = Down;

    async fn load(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, Down> {
        let versions = keys.iter().map(|k| (*k, self.db.read(*k))).collect();
        tokio::time::sleep(Duration::from_micros(fastrand::u64(..1_000))).await;
        Ok(versions)
    }
}

/// One instance of the fleet.
pub struct Member {
    pub cache: Cache<u64, u64>,
    pub tier: RedisTier<u64, u64>,
    pub loader: Option<DataLoader<Rows>>,
    pub db: Arc<Database>,
    /// Per cent of `try_get_with` and `fetch` loads that fail.
    pub fail: u64,
}

/// The tier settings the fleet uses: a 50 ms budget, a 500 ms lease, the default breaker.
pub fn tier(url: &str) -> RedisTier<u64, u64> {
    RedisTier::builder(url)
        .namespace(NAMESPACE)
        .budget(Duration::from_millis(50))
        .lease_ttl(Duration::from_millis(500))
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap()
}

impl Member {
    /// An instance on `url`; its L1 keeps values for a minute, so a missed invalidation shows.
    pub fn new(url: &str, db: &Arc<Database>, with_loader: bool) -> Self {
        Member::of_kind(url, db, usize::from(with_loader))
    }

    /// The fleet's instances come in four kinds (`kind % 4`): 0 plain, with a one-minute TTL;
    /// 1 the same with a DataLoader in front; 2 a 300 ms TTL with stale-while-revalidate (2 s)
    /// and early refresh; 3 a 300 ms TTL with fail-safe (60 s, 50 ms throttle), a DataLoader in
    /// front, and 5% of its `try_get_with` and `fetch` loads failing.
    pub fn of_kind(url: &str, db: &Arc<Database>, kind: usize) -> Self {
        let tier = tier(url);
        let builder = Cache::builder()
            .max_capacity(10_000)
            .wait_timeout(Duration::from_secs(2))
            .tier(Arc::new(tier.clone()));
        let builder = match kind % 4 {
            0 | 1 => builder.time_to_live(Duration::from_secs(60)),
            2 => builder
                .time_to_live(Duration::from_millis(300))
                .stale_while_revalidate(Duration::from_secs(2))
                .early_refresh(EarlyRefresh::Probabilistic { beta: 1.0 }),
            _ => builder
                .time_to_live(Duration::from_millis(300))
                .fail_safe(Duration::from_secs(60), Duration::from_millis(50)),
        };
        let cache = builder.build().unwrap();
        let loader = (kind % 2 == 1).then(|| {
            DataLoader::builder(Rows { db: db.clone() })
                .cache(cache.clone())
                .build()
                .unwrap()
        });
        Member {
            cache,
            tier,
            loader,
            db: db.clone(),
            fail: if kind % 4 == 3 { 5 } else { 0 },
        }
    }

    /// `get_with` from the database.
    pub async fn get_with(&self, key: u64) -> u64 {
        let db = self.db.clone();
        self.cache.get_with(key, move || load_row(db, key, 0)).await
    }
}

impl Node for Member {
    fn read(&self, key: u64, rng: &mut fastrand::Rng) -> ReadFuture {
        let (cache, db) = (self.cache.clone(), self.db.clone());
        let roll = rng.u64(..);
        let fails = roll % 100 < self.fail;
        let paths = if self.loader.is_some() { 6 } else { 5 };
        match rng.u8(..paths) {
            0 => Box::pin(async move { cache.get(&key) }),
            1 => {
                Box::pin(
                    async move { Some(cache.get_with(key, move || load_row(db, key, roll)).await) },
                )
            }
            2 => Box::pin(async move {
                let load = move || async move {
                    let version = load_row(db, key, roll).await;
                    if fails { Err(Down) } else { Ok(version) }
                };
                cache.try_get_with(key, load).await.ok()
            }),
            3 => Box::pin(async move {
                let load = move || async move {
                    let version = load_row(db, key, roll).await;
                    if fails {
                        Err(Down)
                    } else {
                        Ok(Loaded::found(version))
                    }
                };
                cache.fetch(key, load).await.ok()?.value
            }),
            4 => Box::pin(async move {
                let other = roll % db.keys();
                let load = move |keys: Vec<u64>| async move {
                    Ok::<_, Down>(keys.iter().map(|k| (*k, db.read(*k))).collect())
                };
                cache
                    .get_many_with([key, other], load)
                    .await
                    .ok()?
                    .remove(&key)
            }),
            _ => {
                let loader = self.loader.clone().expect("a loader");
                Box::pin(async move { loader.load(key).await.ok().flatten() })
            }
        }
    }

    fn invalidate(&self, key: u64) {
        self.cache.invalidate(&key);
    }

    fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    fn insert(&self, key: u64, version: u64) {
        self.cache.insert(key, version);
    }
}

/// The shape of a fleet check.
#[derive(Clone, Copy, Debug)]
pub struct Check {
    pub seed: u64,
    pub instances: usize,
    pub keys: u64,
    /// How long the workload runs, faults included.
    pub duration: Duration,
    /// Inject faults (through the proxy and to the server) while the workload runs.
    pub faults: bool,
    /// The longest healthy gap between faults, and the longest a fault is held.
    pub gap: Duration,
    pub hold: Duration,
    pub bounds: Bounds,
}

impl Check {
    /// 4 instances (one of each kind, see [`Member::of_kind`]), 64 keys, propagation within 250 ms
    /// while healthy (a loaded 2-core machine; the bench measures the real figure), recovery
    /// within 3 s of a fault's end (breaker cooldown and reconnect back-off included).
    pub fn new(seed: u64, duration: Duration) -> Self {
        Check {
            seed,
            instances: 4,
            keys: 64,
            duration,
            faults: true,
            gap: Chaos::new(seed).gap,
            hold: Chaos::new(seed).hold,
            bounds: Bounds::new(Duration::from_millis(250), Duration::from_secs(3)),
        }
    }
}

/// What a fleet check found.
#[derive(Debug)]
pub struct Outcome {
    pub report: Report,
    pub injected: Injected,
    pub proxy: Faults,
    /// `Err` lists the (instance, key, got, latest) that had not converged within the recovery
    /// bound after the faults ended.
    pub converged: Result<(), Vec<(usize, u64, u64, u64)>>,
    pub redis: Vec<RedisStats>,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.report)?;
        writeln!(
            f,
            "faults injected {} {:?}; proxy {:?}",
            self.injected.total(),
            self.injected.counts,
            self.proxy
        )?;
        match &self.converged {
            Ok(()) => writeln!(
                f,
                "converged: every instance reads every key's latest version"
            ),
            Err(stale) => writeln!(
                f,
                "NOT converged: {} (instance, key, got, latest), first: {:?}",
                stale.len(),
                &stale[..stale.len().min(10)]
            ),
        }
    }
}

/// The fleet: the proxy in front of `redis`, the instances, the database.
pub struct Fleet {
    pub proxy: Arc<FaultProxy>,
    pub members: Vec<Arc<Member>>,
    pub db: Arc<Database>,
}

impl Fleet {
    /// `instances` members behind a new proxy to `redis`, of every kind in turn (see
    /// [`Member::of_kind`]).
    pub fn new(redis: &RedisServer, instances: usize, keys: u64) -> Self {
        Fleet::build(redis, instances, keys, true)
    }

    /// The same fleet connected to `redis` directly (its proxy forwards nothing).
    pub fn direct(redis: &RedisServer, instances: usize, keys: u64) -> Self {
        Fleet::build(redis, instances, keys, false)
    }

    fn build(redis: &RedisServer, instances: usize, keys: u64, via_proxy: bool) -> Self {
        let proxy = Arc::new(FaultProxy::start(([127, 0, 0, 1], redis.port()).into()));
        let url = if via_proxy { proxy.url() } else { redis.url() };
        let db = Arc::new(Database::new(keys));
        let members = (0..instances)
            .map(|i| Arc::new(Member::of_kind(&url, &db, i)))
            .collect();
        Fleet { proxy, members, db }
    }

    /// Every (instance, key) whose `get_with` does not return the latest version.
    pub async fn stale(&self) -> Vec<(usize, u64, u64, u64)> {
        let mut stale = Vec::new();
        for (i, member) in self.members.iter().enumerate() {
            for key in 0..self.db.keys() {
                let latest = self.db.read(key);
                let got = member.get_with(key).await;
                if got < latest {
                    stale.push((i, key, got, latest));
                }
            }
        }
        stale
    }

    /// Polls until every instance reads every key's latest version, for up to `within`.
    pub async fn converge(&self, within: Duration) -> Result<(), Vec<(usize, u64, u64, u64)>> {
        let deadline = Instant::now() + within;
        loop {
            let stale = self.stale().await;
            if stale.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(stale);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How long an invalidation on one instance takes, from the `invalidate` call, to drop the
    /// key from another's L1, on a healthy Redis: `samples` times, a key cached on another instance is bumped and
    /// invalidated through one, and the other is watched (its L1 only) until the old value is
    /// gone. Also returns how many samples could not start (the key would not stay in the
    /// other's L1).
    pub async fn propagation(&self, samples: usize) -> (Vec<Duration>, usize) {
        let mut took = Vec::with_capacity(samples);
        let mut skipped = 0;
        let n = self.members.len();
        for sample in 0..samples {
            let key = sample as u64 % self.db.keys();
            let (from, to) = (sample % n, (sample + 1) % n);
            let mut old = None;
            for _ in 0..10 {
                self.members[to].get_with(key).await;
                old = self.members[to].cache.get(&key);
                if old.is_some() {
                    break;
                }
            }
            if old.is_none() {
                skipped += 1;
                continue;
            }
            let mut row = self.db.lock(key);
            row.bump();
            // Timed from the call: the thread that returns from `invalidate` may be descheduled
            // while the other cores deliver the message, and a start taken after it would miss
            // that time.
            let start = Instant::now();
            self.members[from].cache.invalidate(&key);
            drop(row);
            while self.members[to].cache.get(&key) == old {
                if start.elapsed() > Duration::from_secs(5) {
                    break;
                }
                tokio::task::yield_now().await;
            }
            took.push(start.elapsed());
        }
        (took, skipped)
    }
}

/// Runs the workload on a fleet in front of `redis` for `check.duration`, with faults if asked,
/// then checks the history and that the fleet converged. Hands `redis` back (faults restart it).
pub async fn run(redis: RedisServer, check: Check) -> (Outcome, RedisServer) {
    let fleet = Fleet::new(&redis, check.instances, check.keys);
    // Warm up: every instance subscribed. An instance that has not subscribed yet cannot hear
    // invalidations: it flushes its L1 when it does (see `Listener::subscribed`), which on a
    // loaded machine can be a second later, and the reads before would count as violations
    // of the propagation bound that no healthy fleet has.
    for member in &fleet.members {
        let _ = member.get_with(0).await;
        let tier = &member.tier;
        let subscribed =
            herder_testkit::eventually(Duration::from_secs(10), || tier.stats().subscriptions >= 1)
                .await;
        assert!(
            subscribed,
            "an instance never subscribed: {:?}",
            tier.stats()
        );
    }
    let history = Arc::new(History::new());
    let chaos = {
        let (proxy, history) = (fleet.proxy.clone(), history.clone());
        let chaos = Chaos {
            seed: check.seed ^ 0x5eed,
            gap: check.gap,
            hold: check.hold,
        };
        let (duration, faults) = (check.duration, check.faults);
        let mut redis = redis;
        tokio::task::spawn_blocking(move || {
            let injected = if faults {
                chaos.run(&proxy, &mut redis, &history, duration, &Fault::ALL)
            } else {
                Injected::default()
            };
            (injected, redis)
        })
    };
    let nodes: Vec<Arc<dyn Node>> = fleet
        .members
        .iter()
        .map(|m| m.clone() as Arc<dyn Node>)
        .collect();
    let workload = Workload {
        write_pause: Duration::from_millis(10),
        read_pause: Duration::from_millis(1),
        ..Workload::new(check.seed, check.duration)
    };
    workload.run(&nodes, &fleet.db, &history).await;
    let (injected, redis) = chaos.await.expect("the chaos thread");
    // Healthy again: within the recovery bound every instance must read the latest versions.
    let converged = fleet.converge(check.bounds.recovery).await;
    let report = history.check(check.bounds);
    let outcome = Outcome {
        report,
        injected,
        proxy: fleet.proxy.faults(),
        converged,
        redis: fleet.members.iter().map(|m| m.tier.stats()).collect(),
    };
    (outcome, redis)
}
