//! The `metrics` feature: a tier's `herder_redis_…` series after a known workload against a
//! real `redis-server`, and the crate docs' table against what a tier records.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use herder::Cache;
use herder_redis::RedisTier;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use support::eventually;
use support::servers::RedisServer;

/// What a recorder holds, by the label `name` and then by metric name. (Taking a snapshot
/// resets the debugging recorder's counters: take one per check.)
fn series(snapshotter: &Snapshotter) -> HashMap<String, HashMap<String, DebugValue>> {
    let mut series: HashMap<String, HashMap<String, DebugValue>> = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        if let Some(label) = key.labels().find(|label| label.key() == "name") {
            series
                .entry(label.value().to_owned())
                .or_default()
                .insert(key.name().to_owned(), value);
        }
    }
    series
}

fn counter(series: &HashMap<String, DebugValue>, metric: &str) -> u64 {
    match series.get(metric) {
        Some(DebugValue::Counter(value)) => *value,
        other => panic!("{metric}: {other:?}"),
    }
}

fn instance(redis: &RedisServer, name: &str) -> (Cache<u64, String>, RedisTier<u64, String>) {
    let tier = RedisTier::<u64, String>::builder(&redis.url())
        .namespace("metrics")
        .name(name)
        .budget(Duration::from_millis(200))
        .build()
        .unwrap();
    let cache = Cache::builder()
        .name(name)
        .max_capacity(100)
        .tier(Arc::new(tier.clone()))
        .build()
        .unwrap();
    (cache, tier)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_loads_for_the_fleet_the_other_reads_l2() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let ((cache_a, tier_a), (cache_b, tier_b)) =
        metrics::with_local_recorder(&recorder, || (instance(&redis, "a"), instance(&redis, "b")));
    assert_eq!(
        cache_a.get_with(1, || async { "one".to_string() }).await,
        "one"
    );
    assert!(eventually(Duration::from_secs(5), || tier_a.stats().fills == 1).await);
    assert_eq!(
        cache_b.get_with(1, || async { unreachable!() }).await,
        "one"
    );
    herder::metrics::flush();
    let mut all = series(&snapshotter);
    let a = all.remove("a").unwrap();
    assert_eq!(counter(&a, "herder_redis_leases_total"), 1);
    assert_eq!(counter(&a, "herder_redis_fills_total"), 1);
    assert_eq!(counter(&a, "herder_redis_errors_total"), 0);
    assert_eq!(counter(&a, "herder_cache_loads_total"), 1);
    let b = all.remove("b").unwrap();
    assert_eq!(counter(&b, "herder_redis_l2_hits_total"), 1);
    assert_eq!(counter(&b, "herder_redis_leases_total"), 0);
    assert_eq!(
        b.get("herder_redis_circuit_open"),
        Some(&DebugValue::Gauge(0.0.into()))
    );
    assert_eq!(tier_b.stats().l2_hits, 1);
}

/// The metric names of the table in the crate docs.
fn documented() -> BTreeSet<String> {
    include_str!("../src/lib.rs")
        .lines()
        .filter_map(|line| line.strip_prefix("//! | `herder_redis_"))
        .map(|rest| format!("herder_redis_{}", &rest[..rest.find('`').unwrap()]))
        .collect()
}

#[tokio::test]
async fn the_docs_list_exactly_the_recorded_metrics() {
    // Building does not connect: no server is needed to see which series a tier registers.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _tier = metrics::with_local_recorder(&recorder, || {
        RedisTier::<u64, String>::builder("redis://127.0.0.1:1")
            .name("docs")
            .build()
            .unwrap()
    });
    let recorded: BTreeSet<String> = series(&snapshotter)
        .remove("docs")
        .unwrap()
        .into_keys()
        .filter(|name| name.starts_with("herder_redis_"))
        .collect();
    assert_eq!(recorded, documented());
}
