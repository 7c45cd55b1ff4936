//! The tier on a local 3-master Redis Cluster (feature `cluster`): values, leases and
//! invalidations across instances subscribed through different nodes.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use herder::Cache;
use herder_redis::{RedisConnection, RedisTier};
use support::eventually;
use support::servers::{self, RedisCluster};

struct Instance {
    cache: Cache<u64, String>,
    tier: RedisTier<u64, String>,
}

/// An instance whose seed list starts at node `first` (so that instances subscribe through
/// different nodes).
fn instance(cluster: &RedisCluster, first: usize) -> Instance {
    let mut nodes = cluster.urls();
    nodes.rotate_left(first);
    // A budget far above what loopback needs: this test is about what is shared, not how fast,
    // and a call past its budget would (rightly) load locally.
    let tier = RedisTier::<u64, String>::builder_cluster(&nodes)
        .namespace("cluster")
        .budget(Duration::from_secs(2))
        .build()
        .unwrap();
    let cache = Cache::builder()
        .max_capacity(10_000)
        .time_to_live(Duration::from_secs(60))
        .tier(Arc::new(tier.clone()))
        .build()
        .unwrap();
    Instance { cache, tier }
}

fn loader(
    calls: &Arc<AtomicUsize>,
    key: u64,
    version: u32,
) -> impl FnOnce() -> futures_util::future::BoxFuture<'static, String> + Send + 'static {
    let calls = calls.clone();
    move || {
        Box::pin(async move {
            calls.fetch_add(1, SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            format!("row {key} v{version}")
        })
    }
}

async fn dbsize(url: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("DBSIZE")
        .query_async(&mut connection)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_a_cluster_shares_values_leases_and_invalidations() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    let fleet: Vec<_> = (0..3).map(|node| instance(&cluster, node)).collect();
    for instance in &fleet {
        instance.tier.ping().await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(10), || fleet.iter().all(|i| i
            .tier
            .stats()
            .subscriptions
            == 1))
        .await
    );
    let calls = Arc::new(AtomicUsize::new(0));

    // 200 cold keys, read by every instance at once: each reaches the backend once.
    let mut reads = Vec::new();
    for instance in &fleet {
        for key in 0..200u64 {
            let (cache, load) = (instance.cache.clone(), loader(&calls, key, 1));
            reads.push(tokio::spawn(async move {
                (key, cache.get_with(key, load).await)
            }));
        }
    }
    for read in reads {
        let (key, value) = read.await.unwrap();
        assert_eq!(value, format!("row {key} v1"));
    }
    let stats: Vec<_> = fleet.iter().map(|i| i.tier.stats()).collect();
    assert_eq!(
        calls.load(SeqCst),
        200,
        "one load per key for the fleet: {stats:?}"
    );
    let errors: u64 = fleet.iter().map(|i| i.tier.stats().errors).sum();
    assert_eq!(errors, 0);
    // The keys spread over every master.
    for url in cluster.urls() {
        assert!(dbsize(&url).await > 0, "{url} holds nothing");
    }

    // An invalidation reaches every instance, whichever node it subscribed through.
    fleet[0].cache.invalidate(&7);
    for instance in &fleet[1..] {
        assert!(eventually(Duration::from_secs(5), || instance.cache.get(&7).is_none()).await);
    }
    assert_eq!(
        fleet[1].cache.get_with(7, loader(&calls, 7, 2)).await,
        "row 7 v2"
    );
    assert_eq!(
        fleet[2].cache.get_with(7, loader(&calls, 7, 3)).await,
        "row 7 v2",
        "read from the cluster"
    );
    assert_eq!(calls.load(SeqCst), 201);

    // invalidate_all: every instance's L1 is flushed, every bucket's values are orphaned.
    fleet[2].cache.invalidate_all();
    for instance in &fleet[..2] {
        assert!(
            eventually(Duration::from_secs(5), || (0..200)
                .all(|key| instance.cache.get(&key).is_none()))
            .await
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || fleet[2]
            .tier
            .stats()
            .invalidations_pending
            == 0)
        .await
    );
    for key in 0..200u64 {
        assert_eq!(
            fleet[0].cache.get_with(key, loader(&calls, key, 4)).await,
            format!("row {key} v4")
        );
    }
    assert_eq!(calls.load(SeqCst), 401, "every key loaded again, once");
    let errors: u64 = fleet.iter().map(|i| i.tier.stats().errors).sum();
    assert_eq!(errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_share_one_cluster_connection() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    let shared = RedisConnection::open_cluster(&cluster.urls()).unwrap();
    shared.ping().await.unwrap();
    let a = RedisTier::<u64, u64>::builder_with(&shared)
        .namespace("a")
        .budget(Duration::from_secs(2))
        .build()
        .unwrap();
    let b = RedisTier::<u64, String>::builder_with(&shared)
        .namespace("b")
        .budget(Duration::from_secs(2))
        .build()
        .unwrap();
    let a_cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .tier(Arc::new(a.clone()))
        .build()
        .unwrap();
    let b_cache: Cache<u64, String> = Cache::builder()
        .max_capacity(100)
        .tier(Arc::new(b.clone()))
        .build()
        .unwrap();
    for key in 0..50 {
        assert_eq!(a_cache.get_with(key, move || async move { key }).await, key);
        assert_eq!(
            b_cache
                .get_with(key, move || async move { key.to_string() })
                .await,
            key.to_string()
        );
    }
    assert_eq!((a.stats().fills, b.stats().fills), (50, 50));
    assert!(
        eventually(Duration::from_secs(5), || a.stats().subscriptions == 1
            && b.stats().subscriptions == 1)
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_an_error_that_says_so() {
    // Ports nobody listens on: bound, then released.
    let nodes: Vec<String> = (0..3)
        .map(|_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!(
                "redis://127.0.0.1:{}/",
                listener.local_addr().unwrap().port()
            )
        })
        .collect();
    let error = RedisTier::<u64, String>::builder_cluster(&nodes)
        .connect()
        .await
        .unwrap_err();
    assert!(error.is_connect() || error.is_timeout(), "{error}");
    eprintln!("{error}");
    // Built anyway, it loads locally.
    let tier = RedisTier::<u64, String>::builder_cluster(&nodes)
        .build()
        .unwrap();
    let cache: Cache<u64, String> = Cache::builder()
        .max_capacity(10)
        .tier(Arc::new(tier.clone()))
        .build()
        .unwrap();
    assert_eq!(cache.get_with(1, || async { "one".into() }).await, "one");
    assert!(tier.stats().errors >= 1, "{:?}", tier.stats());
}

/// A backend that counts every key it is asked for, fleet-wide.
#[derive(Clone, Default)]
struct Rows {
    keys: Arc<std::sync::Mutex<std::collections::HashMap<u64, usize>>>,
}

impl herder::Loader for Rows {
    type Key = u64;
    type Value = String;
    type Error = std::convert::Infallible;

    async fn load(
        &self,
        keys: &[u64],
    ) -> Result<std::collections::HashMap<u64, String>, Self::Error> {
        for key in keys {
            *self.keys.lock().unwrap().entry(*key).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(keys.iter().map(|k| (*k, format!("row {k} v1"))).collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_batches_on_a_cluster_load_each_cold_key_once() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    let rows = Rows::default();
    let fleet: Vec<_> = (0..3)
        .map(|node| {
            let instance = instance(&cluster, node);
            let loader = herder::DataLoader::builder(rows.clone())
                .cache(instance.cache.clone())
                .build()
                .unwrap();
            (instance, loader)
        })
        .collect();
    for (instance, _) in &fleet {
        instance.tier.ping().await.unwrap();
    }
    let start = Arc::new(tokio::sync::Barrier::new(fleet.len()));
    let batches: Vec<_> = fleet
        .iter()
        .map(|(_, loader)| {
            let (loader, start) = (loader.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                loader.load_many(0..200).await.unwrap()
            })
        })
        .collect();
    for batch in batches {
        let values = batch.await.unwrap();
        assert_eq!(values.len(), 200);
        assert_eq!(values[&150], "row 150 v1");
    }
    let keys = rows.keys.lock().unwrap();
    assert_eq!(keys.len(), 200);
    // One script per bucket: not atomic across buckets, so two batches can wait for each other
    // until `max_wait`; with the default, every key is still loaded once.
    assert_eq!(keys.values().sum::<usize>(), 200, "keys loaded fleet-wide");
}

/// Script calls (EVAL, EVALSHA, SCRIPT) every node has processed so far.
async fn script_calls(cluster: &RedisCluster) -> u64 {
    let mut calls = 0;
    for url in cluster.urls() {
        let client = redis::Client::open(url).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut connection)
            .await
            .unwrap();
        calls += servers::script_calls(&stats);
    }
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_on_a_cluster_sends_one_script_per_node() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    let rows = Rows::default();
    let a = instance(&cluster, 0);
    let loader = herder::DataLoader::builder(rows.clone())
        .cache(a.cache.clone())
        .build()
        .unwrap();
    // Warm-up: the scripts get loaded on every node.
    loader.load_many(10_000..10_200).await.unwrap();
    let before = script_calls(&cluster).await;
    assert_eq!(loader.load_many(0..200).await.unwrap().len(), 200);
    let scripts = script_calls(&cluster).await - before;
    // 200 keys fall into about 180 of the 1,024 buckets, spread over the 3 masters: one
    // ACQUIRE_MANY and one FILL_MANY per master (cross-slot scripts, Redis 7), concurrently.
    eprintln!("a batch of 200 cold keys on a 3-master cluster: {scripts} script calls");
    assert_eq!(
        scripts,
        2 * 3,
        "one ACQUIRE_MANY and one FILL_MANY per master"
    );
    assert_eq!(rows.keys.lock().unwrap().len(), 400);
}
