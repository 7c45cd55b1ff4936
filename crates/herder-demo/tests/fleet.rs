//! The fleet scenario against a `redis-server` of the test's own (skipped with a message when the
//! binary is missing, unless `HERDER_REQUIRE_REDIS=1`).

mod support;

use std::time::Duration;

use herder_demo::scenarios::fleet::{self, FleetMode, Settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_over_redis_loads_a_cold_key_once() {
    let Some(redis) = herder_testkit::RedisServer::start() else {
        return;
    };
    let db = support::sqlite(Duration::from_millis(1)).await;
    let settings = Settings {
        instances: 4,
        requests_per_instance: 25,
        year: 1987,
        // Generous: a loaded machine must not make a Redis call fail open and load locally.
        redis_budget: Duration::from_secs(5),
    };
    let runs = fleet::run(&db, &redis.url(), settings, |_| {})
        .await
        .expect("runs");
    let calls: Vec<u64> = runs.iter().map(|r| r.backend_calls).collect();
    assert_eq!(
        calls,
        [100, 4, 1],
        "no cache, a cache per instance, a shared Redis tier"
    );
    let redis_stats = runs[2].redis.expect("redis mode counts");
    assert_eq!(redis_stats.leases, 1, "one instance loaded for the fleet");
    assert_eq!(redis_stats.errors, 0);
    assert!(runs.iter().all(|r| r.latencies.len() == 100));
}

#[tokio::test]
async fn an_unreachable_redis_is_one_clear_error() {
    let db = support::sqlite(Duration::ZERO).await;
    let url = format!("redis://127.0.0.1:{}/", support::free_port());
    let settings = Settings {
        instances: 2,
        requests_per_instance: 1,
        year: 1987,
        redis_budget: Duration::from_millis(100),
    };
    let err = fleet::run_mode(&db, &url, FleetMode::RedisTier, settings)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot reach redis at redis://127.0.0.1:"),
        "{err}"
    );
}
