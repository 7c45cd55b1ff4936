//! The fleet benchmark of the issue "herder-redis for production fleets": 16 instances in one
//! process, Zipf(1.0) reads over 100,000 keys, 5% writes that invalidate, a database that sleeps
//! 1 ms per query, against a local `redis-server` it starts (and, with `--cluster`, a local
//! 3-master cluster too). One row per way of sharing the work.
//!
//! ```text
//! cargo run --release -p herder-benches --bin fleet_zipf -- [--warmup 10] [--seconds 10] [--instances 16]
//!     [--keys 100000] [--tasks 4] [--write-percent 5] [--db-ms 1] [--l1 10000] [--cluster]
//! ```
//!
//! Columns: reads, database queries per second and per 1,000 reads, queries over the ideal (distinct key versions
//! read fleet-wide), Redis round trips per read and per L1 miss (scripts count once: the
//! commands a script runs inside Redis are not round trips), p50/p99 read latency, contract
//! violations (reads that broke "invalidation is final"; a cache per instance has no invalidation
//! bus, so its violations are expected and show why the tier exists).

use std::time::Duration;

use herder_benches::report::arg;
use herder_benches::zipf::{self, Mode, Redis, Setup};
use herder_testkit::{RedisCluster, RedisServer};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let setup = Setup {
        instances: arg(&args, "--instances").unwrap_or(16) as usize,
        tasks_per_instance: arg(&args, "--tasks").unwrap_or(4) as usize,
        keys: arg(&args, "--keys").unwrap_or(100_000),
        exponent: 1.0,
        write_percent: arg(&args, "--write-percent").unwrap_or(5) as u32,
        db_latency: Duration::from_millis(arg(&args, "--db-ms").unwrap_or(1)),
        warmup: Duration::from_secs(arg(&args, "--warmup").unwrap_or(10)),
        duration: Duration::from_secs(arg(&args, "--seconds").unwrap_or(10)),
        l1_capacity: arg(&args, "--l1").unwrap_or(10_000),
        ttl: Duration::from_secs(300),
        seed: arg(&args, "--seed").unwrap_or_else(|| fastrand::u64(..)),
    };
    let cluster = args.iter().any(|a| a == "--cluster");
    println!(
        "fleet_zipf: {} instances × {} tasks, Zipf({}) over {} keys, {}% writes, database {:?} per \
         query, L1 {} entries, TTL {:?}, {:?} warm-up then {:?} measured per row, seed {}",
        setup.instances,
        setup.tasks_per_instance,
        setup.exponent,
        setup.keys,
        setup.write_percent,
        setup.db_latency,
        setup.l1_capacity,
        setup.ttl,
        setup.warmup,
        setup.duration,
        setup.seed
    );
    let Some(server) = RedisServer::start() else {
        eprintln!("fleet_zipf needs redis-server on the PATH");
        std::process::exit(2);
    };
    let cluster = if cluster {
        Some(RedisCluster::start(3).expect("a local 3-master cluster (redis-server, redis-cli)"))
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = vec![
        (Mode::NoCache, Redis::Single(server.url()), "-"),
        (Mode::PerInstance, Redis::Single(server.url()), "-"),
        (Mode::Tier, Redis::Single(server.url()), "single node"),
    ];
    if let Some(cluster) = &cluster {
        rows.push((
            Mode::Tier,
            Redis::Cluster(cluster.urls()),
            "3-master cluster",
        ));
    }
    println!(
        "\n| mode | redis | reads | db queries/s | db queries / 1k reads | queries / ideal | redis round trips / read | redis round trips / L1 miss | p50 | p99 | violations |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut failed = false;
    for (run, (mode, redis, where_)) in rows.into_iter().enumerate() {
        let namespace = format!("zipf{run}");
        let outcome = runtime.block_on(zipf::run(mode, &redis, setup, &namespace));
        let per_second = outcome.db_queries as f64 / outcome.elapsed.as_secs_f64();
        let (per_read, per_miss) = if mode == Mode::Tier {
            (
                format!(
                    "{:.3}",
                    outcome.redis_round_trips as f64 / outcome.reads.max(1) as f64
                ),
                format!(
                    "{:.2}",
                    outcome.redis_round_trips as f64 / outcome.l1_misses.max(1) as f64
                ),
            )
        } else {
            ("-".into(), "-".into())
        };
        println!(
            "| {} | {} | {} | {:.0} | {:.1} | {:.2} ({} / {}) | {} | {} | {:?} | {:?} | {} |",
            mode.name(),
            where_,
            outcome.reads,
            per_second,
            outcome.db_queries as f64 * 1000.0 / outcome.reads.max(1) as f64,
            outcome.db_queries as f64 / outcome.ideal_queries.max(1) as f64,
            outcome.db_queries,
            outcome.ideal_queries,
            per_read,
            per_miss,
            outcome.percentile(0.5),
            outcome.percentile(0.99),
            outcome.report.violation_count,
        );
        if mode == Mode::Tier && !outcome.report.is_ok() {
            failed = true;
            eprintln!("{}", outcome.report);
        }
    }
    if failed {
        std::process::exit(1);
    }
}
