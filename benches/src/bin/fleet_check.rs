//! The fleet consistency check, long: N instances (`Cache` + `RedisTier`, every other one with a
//! `DataLoader` in front) over one local `redis-server` behind a fault-injecting proxy, random
//! readers and writers on every instance, and random faults (latency, stall, blackhole, reset,
//! refused connections, server paused, server killed and restarted) for `--minutes`.
//!
//! ```text
//! cargo run --release -p herder-benches --bin fleet_check -- --minutes 5 --instances 4
//! ```
//!
//! Prints the propagation latency of an invalidation on healthy Redis (p50/p99), then the reads,
//! invalidations and faults of the run, the contract violations (must be 0), the worst staleness
//! seen against the bounds, and whether every instance converged; exits 1 on a violation.
//! Options: `--seed N`, `--keys N`, `--bound-ms N` (propagation bound, default 250),
//! `--recovery-ms N` (default 3000), `--gap-ms N` (longest healthy gap between faults, default
//! 4000), `--hold-ms N` (longest fault, default 800), `--no-faults`. The harness is the one `cargo test` runs
//! (`herder_benches::contract`).

use herder_benches::contract as fleet;
use herder_benches::report::arg;

use std::time::Duration;

use herder_testkit::{Bounds, RedisServer};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let minutes = arg(&args, "--minutes").unwrap_or(1);
    let instances = arg(&args, "--instances").unwrap_or(4) as usize;
    let seed = arg(&args, "--seed").unwrap_or_else(|| fastrand::u64(..));
    let keys = arg(&args, "--keys").unwrap_or(64);
    let bound = Duration::from_millis(arg(&args, "--bound-ms").unwrap_or(250));
    let recovery = Duration::from_millis(arg(&args, "--recovery-ms").unwrap_or(3_000));
    let faults = !args.iter().any(|a| a == "--no-faults");
    let gap = Duration::from_millis(arg(&args, "--gap-ms").unwrap_or(4_000));
    let hold = Duration::from_millis(arg(&args, "--hold-ms").unwrap_or(800));
    let Some(redis) = RedisServer::start() else {
        eprintln!("fleet_check needs redis-server on the PATH");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    println!(
        "fleet_check: {minutes} min, {instances} instances, {keys} keys, seed {seed}, faults {faults} \
         (gaps up to {gap:?}, held up to {hold:?}), bounds: propagation {bound:?}, recovery {recovery:?}"
    );
    let ok = runtime.block_on(async move {
        // Propagation on healthy Redis, measured alone (no workload, no faults), with the
        // instances connected directly and through the (idle) proxy.
        for (how, probe) in [
            ("direct", fleet::Fleet::direct(&redis, instances.max(2), keys)),
            ("through the proxy", fleet::Fleet::new(&redis, instances.max(2), keys)),
        ] {
            let (mut took, skipped) = probe.propagation(2_000).await;
            took.sort();
            println!(
                "invalidation propagation on healthy Redis, {how} (from `invalidate` to another \
                 instance's L1; {} samples, {skipped} skipped): p50 {:?}, p99 {:?}, max {:?}",
                took.len(),
                percentile(&took, 0.50),
                percentile(&took, 0.99),
                took.last().copied().unwrap_or_default()
            );
        }
        let check = fleet::Check {
            seed,
            instances,
            keys,
            duration: Duration::from_secs(60 * minutes),
            faults,
            gap,
            hold,
            bounds: Bounds::new(bound, recovery),
        };
        let (outcome, _redis) = fleet::run(redis, check).await;
        let report = &outcome.report;
        println!(
            "reads {} (+{} failed or cancelled), invalidations {}, faults injected {} {:?}",
            report.reads,
            report.failed_reads,
            report.invalidations,
            outcome.injected.total(),
            outcome.injected.counts
        );
        println!("proxy: {:?}", outcome.proxy);
        println!("contract violations: {}", report.violation_count);
        for violation in report.violations.iter().take(20) {
            println!("  {violation}");
        }
        println!(
            "worst staleness: {:?} while healthy (bound {bound:?}), {:?} overall (recovery bound {recovery:?})",
            report.worst_healthy_staleness, report.worst_staleness
        );
        match &outcome.converged {
            Ok(()) => println!("converged: every instance reads every key's latest version"),
            Err(stale) => println!(
                "NOT converged within {recovery:?}: {} (instance, key, got, latest), first {:?}",
                stale.len(),
                &stale[..stale.len().min(10)]
            ),
        }
        for (i, stats) in outcome.redis.iter().enumerate() {
            println!("instance {i}: {stats:?}");
        }
        report.is_ok() && outcome.converged.is_ok()
    });
    if !ok {
        println!("HERDER_SEED={seed}");
        std::process::exit(1);
    }
}
