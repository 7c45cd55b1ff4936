//! Side-by-side comparison of herder with the crates it replaces, in one run, printed as the
//! markdown tables of `docs/BENCHMARKS.md`.
//!
//! ```text
//! cargo run --release -p herder-benches --bin compare -- [dataloader] [fan-out] [hits] [cache] [fleet] [queue] [--rounds N] [--only NAME]
//! ```
//!
//! Peers run interleaved, round after round, so that a noisy neighbour hurts all of them alike;
//! the tables report medians over every sample and ratios to herder.

use std::time::Duration;

use herder_benches::on_peer;
use herder_benches::peers::Peer;
use herder_benches::queue::{QueuePeer, submit_only};
use herder_benches::report::{Table, human, median, median_count, quantile, ratio};
use herder_benches::workloads::{self, Sample};
use tokio::runtime::{Builder, Runtime};

fn multi_thread() -> Runtime {
    multi_thread_with(2)
}

fn multi_thread_with(workers: usize) -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

fn current_thread() -> Runtime {
    Builder::new_current_thread().enable_all().build().unwrap()
}

/// Where a workload is polled from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum On {
    /// A spawned task (a request handler), on a worker of a multi-thread runtime.
    Task,
    /// The `Runtime::block_on` thread itself (the body of `#[tokio::main]`).
    BlockOn,
}

/// Runs `work` for every peer, `rounds` times, interleaved; each call is spawned as a task (a
/// request handler) and yields one sample per repetition.
fn collect<F, Fut>(
    rt: &Runtime,
    rounds: usize,
    reps: impl Fn(&Peer) -> usize,
    work: F,
) -> Vec<(Peer, Vec<Sample>)>
where
    F: Fn(Peer) -> Fut,
    Fut: std::future::Future<Output = Sample> + Send + 'static,
{
    collect_from(rt, Peer::all, On::Task, rounds, reps, work)
}

/// [`collect`] over the peers `peers` makes, polled from `on`.
fn collect_from<F, Fut>(
    rt: &Runtime,
    peers: impl FnOnce() -> Vec<Peer>,
    on: On,
    rounds: usize,
    reps: impl Fn(&Peer) -> usize,
    work: F,
) -> Vec<(Peer, Vec<Sample>)>
where
    F: Fn(Peer) -> Fut,
    Fut: std::future::Future<Output = Sample> + Send + 'static,
{
    let peers = rt.block_on(async { peers() });
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); peers.len()];
    for round in 0..rounds {
        for offset in 0..peers.len() {
            // Rotate the order each round.
            let i = (round + offset) % peers.len();
            for _ in 0..reps(&peers[i]) {
                let fut = work(peers[i].clone());
                samples[i].push(match on {
                    On::Task => rt.block_on(async move { tokio::spawn(fut).await.unwrap() }),
                    On::BlockOn => rt.block_on(fut),
                });
            }
        }
    }
    peers.into_iter().zip(samples).collect()
}

/// A latency table (median, p99 per peer) with each row's median minus the floor's (the last row).
fn lone_table(title: &str, results: &[(Peer, Vec<Sample>)]) {
    let (_, floor) = results.last().expect("the floor is the last row");
    let floor = median(&times(floor));
    let mut table = Table::new(&[
        "implementation",
        "median",
        "p99",
        "samples",
        "added over the floor",
    ]);
    for (peer, samples) in results {
        let t = times(samples);
        let m = median(&t);
        table.row(vec![
            peer.name().to_owned(),
            human(m),
            human(quantile(&t, 0.99)),
            t.len().to_string(),
            human(m.saturating_sub(floor)),
        ]);
    }
    println!("### {title}\n\n{}", table.markdown());
}

/// Batching of dependent levels: in how many rounds each level made exactly one batch.
fn levels_table(title: &str, levels: usize, results: &[(Peer, Vec<Sample>)]) {
    let mut table = Table::new(&[
        "implementation",
        "median",
        "p99",
        &format!("rounds with exactly {levels} loader calls"),
        "max loader calls",
    ]);
    for (peer, samples) in results {
        let t = times(samples);
        let exact = samples.iter().filter(|s| s.calls == levels).count();
        table.row(vec![
            peer.name().to_owned(),
            human(median(&t)),
            human(quantile(&t, 0.99)),
            format!("{exact} / {}", samples.len()),
            samples
                .iter()
                .map(|s| s.calls)
                .max()
                .unwrap_or(0)
                .to_string(),
        ]);
    }
    println!("### {title}\n\n{}", table.markdown());
}

fn batch_table(title: &str, loads: u64, results: &[(Peer, Vec<Sample>)]) {
    let base = median(&times(&results[0].1));
    let mut table = Table::new(&[
        "implementation",
        "median time",
        "loads/s",
        "loader calls",
        "keys loaded",
        "time vs herder",
    ]);
    for (peer, samples) in results {
        let t = times(samples);
        let m = median(&t);
        let calls: Vec<usize> = samples.iter().map(|s| s.calls).collect();
        let keys: Vec<usize> = samples.iter().map(|s| s.keys).collect();
        table.row(vec![
            peer.name().to_owned(),
            human(m),
            format!("{:.2} M", loads as f64 / m.as_secs_f64() / 1e6),
            format!(
                "{} (max {})",
                median_count(&calls),
                calls.iter().max().unwrap_or(&0)
            ),
            median_count(&keys).to_string(),
            ratio(m, base),
        ]);
    }
    println!("### {title}\n\n{}", table.markdown());
}

fn times(samples: &[Sample]) -> Vec<Duration> {
    samples.iter().map(|s| s.elapsed).collect()
}

fn dataloader(rounds: usize) {
    // async-graphql waits 1 ms per batch: fewer samples keep the run short, the median holds.
    let reps = |peer: &Peer| if peer.is_slow() { 20 } else { 200 };
    let isolated =
        |peer: Peer| async move { on_peer!(peer, b => workloads::isolated(&b, 7).await) };

    let rt = current_thread();
    let results = collect_from(&rt, Peer::lone, On::Task, rounds, reps, isolated);
    lone_table("Isolated `load`, current-thread runtime", &results);

    let rt = multi_thread();
    let results = collect_from(&rt, Peer::lone, On::Task, rounds, reps, isolated);
    lone_table(
        "Isolated `load`, multi-thread runtime (2 workers), in a spawned task (on a worker)",
        &results,
    );
    let results = collect_from(&rt, Peer::lone, On::BlockOn, rounds, reps, isolated);
    lone_table(
        "Isolated `load`, multi-thread runtime (2 workers), on the `block_on` thread (a `#[tokio::main]` body)",
        &results,
    );

    // After 300 ms of idleness: herder's loader janitor (one task per busy period) has retired,
    // so the load starts one again; async-graphql (milliseconds anyway) is left out.
    let idle_peers = || {
        let mut peers = Peer::lone();
        peers.retain(|peer| !peer.is_slow());
        peers
    };
    let after_idle = |peer: Peer| async move {
        on_peer!(peer, b => workloads::isolated_after_idle(&b, 7, Duration::from_millis(300)).await)
    };
    let results = collect_from(&rt, idle_peers, On::BlockOn, rounds, |_| 10, after_idle);
    lone_table(
        "Isolated `load` after 300 ms idle, on the `block_on` thread (multi-thread, 2 workers)",
        &results,
    );

    // 1,000 rounds for herder and dataloader, fewer for async-graphql (1 ms timer per level).
    let level_reps = |peer: &Peer| {
        if peer.is_slow() {
            10
        } else {
            1000usize.div_ceil(rounds)
        }
    };
    let results = collect_from(
        &rt,
        Peer::all,
        On::BlockOn,
        rounds,
        level_reps,
        |peer| async move { on_peer!(peer, b => workloads::two_levels(&b).await) },
    );
    levels_table(
        "100 loads × 2 dependent levels polled from the `block_on` thread (multi-thread, 2 workers)",
        2,
        &results,
    );

    let reps = |peer: &Peer| if peer.is_slow() { 10 } else { 50 };
    let results = collect(&rt, rounds, reps, |peer| async move {
        on_peer!(peer, b => workloads::two_levels(&b).await)
    });
    batch_table(
        "100 loads × 2 dependent levels in one task (multi-thread)",
        200,
        &results,
    );

    let ct = current_thread();
    let results = collect(
        &ct,
        rounds,
        |_| 1,
        |peer| async move { on_peer!(peer, b => workloads::fan_out(&b, 100_000, 10_000).await) },
    );
    batch_table(
        "Fan-out: 100,000 concurrent loads over 10,000 keys in one task, max batch 1000 (current-thread)",
        100_000,
        &results,
    );

    // async-graphql 8 (rc.5) takes minutes per sample here (184 s, the median of 5, in the run
    // docs/BENCHMARKS.md quotes): left out unless `HERDER_BENCH_AG8_ONE_TASK=1`.
    let with_ag8 = std::env::var("HERDER_BENCH_AG8_ONE_TASK").is_ok_and(|v| v == "1");
    let peers = || {
        let mut peers = Peer::all();
        peers.retain(|peer| with_ag8 || !matches!(peer, Peer::AsyncGraphql8(_)));
        peers
    };
    let results = collect_from(
        &rt,
        peers,
        On::Task,
        rounds,
        |_| 1,
        |peer| async move { on_peer!(peer, b => workloads::fan_out(&b, 100_000, 10_000).await) },
    );
    batch_table(
        "Fan-out: 100,000 concurrent loads over 10,000 keys in one task, max batch 1000 (multi-thread)",
        100_000,
        &results,
    );
    if !with_ag8 {
        println!(
            "async-graphql 8 (rc.5) is left out of this table: its samples take minutes \
             (`HERDER_BENCH_AG8_ONE_TASK=1` includes it).\n"
        );
    }

    spawned_fan_out(&rt, rounds);
}

/// The spawned fan-out alone: `compare -- fan-out`.
fn spawned_fan_out(rt: &Runtime, rounds: usize) {
    let results = collect_from(
        rt,
        || Peer::fan_out(10_000),
        On::Task,
        rounds,
        |_| 1,
        // A fresh loader per sample: a memo or cache must not carry over from the last one.
        |peer| async move {
            on_peer!(peer.fresh(), b => workloads::fan_out_tasks(&b, 100_000, 10_000).await)
        },
    );
    batch_table(
        "Fan-out: 100,000 loads over 10,000 keys, one spawned task each, max batch 1000, a fresh loader per sample (multi-thread)",
        100_000,
        &results,
    );
}

/// Memo and cache hits from two workers at once: `compare -- hits`.
fn warm_hits(rt: &Runtime, rounds: usize) {
    let results = collect_from(
        rt,
        || Peer::caching(1_000),
        On::Task,
        rounds,
        |_| 1,
        // The same loader every sample: its keys are memoized (or cached) from the first one.
        |peer| async move { on_peer!(peer, b => workloads::warm_hits(&b, 2, 100_000, 1_000).await) },
    );
    batch_table(
        "Hits: 2 spawned tasks at once, each loading 100,000 times one of 1,000 keys the memo or cache holds (warmed up before the timing; multi-thread, 2 workers; the floor row is one plain HashMap get per load here, no spawn per load)",
        200_000,
        &results,
    );
}

fn cache(rounds: usize) {
    use herder_benches::cache::{self as c, PingoraRt, Stampede, Uncoalesced};
    use std::sync::Arc;

    // Hit path: 2 threads reading 10,000 hot keys.
    // Capacity for twice the keys, so that every hot key stays cached in every peer. The coarse
    // clock's ticker runs on this runtime.
    let ticker = multi_thread();
    let _ticking = ticker.enter();
    let peers = c::hit_path_peers(20_000);
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); peers.len()];
    for round in 0..rounds {
        for offset in 0..peers.len() {
            let i = (round + offset) % peers.len();
            samples[i].push(c::hit_path(&peers[i], 2, 10_000, 2_000_000));
        }
    }
    let medians: Vec<Duration> = samples.iter().map(|s| median(s)).collect();
    let fastest = *medians.iter().min().unwrap();
    let herder = medians[0];
    let mut table = Table::new(&[
        "cache",
        "ns per get (median)",
        "min",
        "max",
        "vs fastest",
        "vs herder (TTL)",
    ]);
    for (peer, (samples, m)) in peers.iter().zip(samples.iter().zip(&medians)) {
        table.row(vec![
            peer.name().to_owned(),
            format!("{:.1}", m.as_nanos() as f64),
            format!("{}", samples.iter().min().unwrap().as_nanos()),
            format!("{}", samples.iter().max().unwrap().as_nanos()),
            ratio(*m, fastest),
            ratio(*m, herder),
        ]);
    }
    println!(
        "### Hit path: 2 threads, 10,000 hot keys, 2,000,000 gets per thread\n\n{}",
        table.markdown()
    );

    // Stampede: 10,000 concurrent reads of one cold key, 20 ms backend.
    let rt = multi_thread();
    let latency = Duration::from_millis(20);
    let mut table = Table::new(&[
        "cache",
        "backend calls (max over rounds)",
        "p50",
        "p99",
        "max",
    ]);
    fn row<S: Stampede>(
        rt: &Runtime,
        rounds: usize,
        latency: Duration,
        make: impl Fn() -> S,
        table: &mut Table,
    ) {
        let mut calls = Vec::new();
        let mut all = Vec::new();
        let mut name = "";
        for _ in 0..rounds {
            let cache = Arc::new(rt.block_on(async { make() }));
            name = cache.name();
            let run = rt.block_on(c::stampede(cache, 10_000, latency));
            calls.push(run.backend_calls);
            all.extend(run.latencies);
        }
        table.row(vec![
            name.to_owned(),
            format!("{} ({})", median_count(&calls), calls.iter().max().unwrap()),
            human(median(&all)),
            human(quantile(&all, 0.99)),
            human(quantile(&all, 1.0)),
        ]);
    }
    row(
        &rt,
        rounds,
        latency,
        || herder::Cache::<u64, u64>::new(1000),
        &mut table,
    );
    row(
        &rt,
        rounds,
        latency,
        || moka::future::Cache::<u64, u64>::new(1000),
        &mut table,
    );
    row(
        &rt,
        rounds,
        latency,
        || quick_cache::sync::Cache::<u64, u64>::new(1000),
        &mut table,
    );
    row(
        &rt,
        rounds,
        latency,
        || PingoraRt(pingora_memory_cache::RTCache::new(1000, None, None)),
        &mut table,
    );
    row(
        &rt,
        rounds,
        latency,
        || Uncoalesced(moka::future::Cache::new(1000)),
        &mut table,
    );
    println!(
        "### Stampede: 10,000 concurrent reads of one cold key, 20 ms backend (multi-thread, 2 workers)\n\n{}",
        table.markdown()
    );
}

fn fleet(rounds: usize) {
    use herder_benches::fleet::{self, Mode};
    use herder_testkit::RedisServer;

    let Some(server) = RedisServer::start() else {
        println!("(redis-server could not be started: fleet section skipped)\n");
        return;
    };
    let rt = multi_thread();
    let latency = Duration::from_millis(100);
    let mut table = Table::new(&[
        "mode",
        "backend calls (max over rounds)",
        "p50",
        "p99",
        "max",
        "redis commands per request",
    ]);
    for (m, mode) in [Mode::Fleet, Mode::PerInstance, Mode::None]
        .into_iter()
        .enumerate()
    {
        let mut calls = Vec::new();
        let mut all = Vec::new();
        let mut commands = Vec::new();
        for round in 0..rounds {
            let namespace = format!("bench:{m}:{round}");
            let run = rt.block_on(fleet::stampede(
                &server.url(),
                &namespace,
                mode,
                8,
                200,
                latency,
            ));
            calls.push(run.backend_calls);
            commands.push(run.redis_commands_per_request);
            all.extend(run.latencies);
        }
        commands.sort_by(f64::total_cmp);
        table.row(vec![
            mode.name().to_owned(),
            format!("{} ({})", median_count(&calls), calls.iter().max().unwrap()),
            human(median(&all)),
            human(quantile(&all, 0.99)),
            human(quantile(&all, 1.0)),
            format!("{:.2}", commands[commands.len() / 2]),
        ]);
    }
    println!(
        "### Fleet stampede: 8 instances × 200 concurrent reads of one cold key, 100 ms backend, one local redis-server\n\n{}",
        table.markdown()
    );

    let mut table = Table::new(&[
        "mode",
        "keys loaded (max over rounds)",
        "loader calls",
        "redis script calls",
        "batch p50",
        "batch max",
    ]);
    for (m, mode) in [Mode::Fleet, Mode::PerInstance].into_iter().enumerate() {
        let (mut keys, mut calls, mut scripts, mut all) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let namespace = format!("bench:batch:{m}:{round}");
            let run = rt.block_on(fleet::batches(
                &server.url(),
                &namespace,
                mode,
                4,
                200,
                Duration::from_millis(20),
            ));
            keys.push(run.keys_loaded);
            calls.push(run.loader_calls);
            scripts.push(run.redis_scripts as usize);
            all.extend(run.latencies);
        }
        table.row(vec![
            mode.name().to_owned(),
            format!("{} ({})", median_count(&keys), keys.iter().max().unwrap()),
            median_count(&calls).to_string(),
            median_count(&scripts).to_string(),
            human(median(&all)),
            human(quantile(&all, 1.0)),
        ]);
    }
    println!(
        "### Fleet batches: 4 instances, each a DataLoader over its cache, `load_many` of the same 200 cold keys at once, 20 ms backend, one local redis-server\n\n{}",
        table.markdown()
    );

    let samples = rt.block_on(fleet::invalidation_latency(
        &server.url(),
        "bench:inv",
        8,
        50 * rounds,
    ));
    let mut table = Table::new(&["samples", "p50", "p99", "max"]);
    table.row(vec![
        samples.len().to_string(),
        human(median(&samples)),
        human(quantile(&samples, 0.99)),
        human(quantile(&samples, 1.0)),
    ]);
    println!(
        "### Invalidation: time until each of 7 other instances' L1 no longer holds the key (loopback)\n\n{}",
        table.markdown()
    );
}

/// 100,000 trivial operations (increment, one yield, increment) through 8 runners; ratios
/// against operation-queue (fire and forget), the first peer.
fn queue(rounds: usize, only: Option<&str>) {
    const OPS: u64 = 100_000;
    const RUNNERS: usize = 8;
    let mut local = QueuePeer::all();
    local.insert(3, QueuePeer::HerderLocal);
    let setups = [
        ("current-thread runtime", current_thread(), local),
        (
            "multi-thread runtime (2 workers)",
            multi_thread(),
            QueuePeer::all(),
        ),
        (
            "multi-thread runtime (1 worker; the submitter has the other core)",
            multi_thread_with(1),
            QueuePeer::all(),
        ),
    ];
    // `QUEUE_RUNTIME=current` (or `multi`, or `submission`) keeps the runtimes whose description
    // contains it (or the submission-alone table).
    let runtime_filter = std::env::var("QUEUE_RUNTIME").ok();
    for (runtime, rt, mut peers) in setups {
        if let Some(filter) = &runtime_filter
            && !runtime.contains(filter.as_str())
        {
            continue;
        }
        if let Some(only) = only {
            peers.retain(|peer| peer.name().contains(only));
            if peers.is_empty() {
                continue;
            }
        }
        let samples = interleaved(&peers, rounds, |peer| rt.block_on(peer.run(OPS, RUNNERS)));
        let base = median(&samples[0]);
        let mut table = Table::new(&[
            "implementation",
            "median time",
            "operations/s",
            "fastest",
            "slowest",
            "samples",
            "throughput vs operation-queue",
        ]);
        for (peer, t) in peers.iter().zip(&samples) {
            let m = median(t);
            table.row(vec![
                peer.name().to_owned(),
                human(m),
                format!("{:.2} M", OPS as f64 / m.as_secs_f64() / 1e6),
                human(quantile(t, 0.0)),
                human(quantile(t, 1.0)),
                t.len().to_string(),
                format!("{:.2}×", base.as_secs_f64() / m.as_secs_f64()),
            ]);
        }
        println!(
            "### {OPS} trivial operations (increment, yield, increment) through {RUNNERS} runners, {runtime}\n\n{}",
            table.markdown()
        );
    }
    // Submission alone, the runners not running meanwhile (`queue::submit_only`).
    let peers: Vec<QueuePeer> = [
        QueuePeer::OperationQueue,
        QueuePeer::Herder,
        QueuePeer::HerderDetached,
        QueuePeer::HerderBounded,
    ]
    .into_iter()
    .filter(|peer| only.is_none_or(|only| peer.name().contains(only)))
    .collect();
    let title = "Submission alone";
    if peers.is_empty()
        || runtime_filter
            .as_deref()
            .is_some_and(|f| !title.to_lowercase().contains(f))
    {
        return;
    }
    let samples = interleaved(&peers, rounds, |peer| {
        submit_only(peer, OPS, RUNNERS).expect("a peer that submits")
    });
    let base = median(&samples[0]);
    let mut table = Table::new(&[
        "implementation",
        "median per submission",
        "fastest",
        "slowest",
        "samples",
        "cost vs operation-queue",
    ]);
    for (peer, t) in peers.iter().zip(&samples) {
        let m = median(t);
        let per = |d: Duration| format!("{:.0} ns", d.as_nanos() as f64 / OPS as f64);
        table.row(vec![
            if *peer == QueuePeer::HerderBounded {
                // `submit_only` gives it room for every submission: runners that cannot run
                // would never free a place of 1024.
                "herder OperationQueue with a capacity (room for every submission), handles kept"
                    .to_owned()
            } else {
                peer.name().to_owned()
            },
            per(m),
            per(quantile(t, 0.0)),
            per(quantile(t, 1.0)),
            t.len().to_string(),
            format!("{:.2}×", m.as_secs_f64() / base.as_secs_f64()),
        ]);
    }
    println!(
        "### {title}: {OPS} submissions while the runners cannot run (current-thread runtimes)\n\n{}",
        table.markdown()
    );
}

/// Runs each peer once unmeasured (allocator and runtime warm-up), then `rounds` rounds of every
/// peer, interleaved and starting with a different peer each round; the samples per peer.
fn interleaved<P: Copy>(
    peers: &[P],
    rounds: usize,
    mut run: impl FnMut(P) -> Duration,
) -> Vec<Vec<Duration>> {
    for peer in peers {
        run(*peer);
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); peers.len()];
    for round in 0..rounds {
        for offset in 0..peers.len() {
            let i = (round + offset) % peers.len();
            samples[i].push(run(peers[i]));
        }
    }
    samples
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .map_or(5, |n| n.parse().expect("--rounds takes a number"));
    // `--only TEXT` keeps the queue peers whose name contains TEXT (for profiling one of them).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    let which: Vec<&str> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            !a.starts_with("--")
                && (*i == 0 || (args[i - 1] != "--rounds" && args[i - 1] != "--only"))
        })
        .map(|(_, a)| a.as_str())
        .collect();
    let all = which.is_empty();
    if all || which.contains(&"dataloader") {
        println!("## DataLoader ({rounds} rounds)\n");
        dataloader(rounds);
    }
    if which.contains(&"fan-out") {
        println!("## DataLoader, spawned fan-out only ({rounds} rounds)\n");
        spawned_fan_out(&multi_thread(), rounds);
    }
    if which.contains(&"hits") {
        println!("## DataLoader, memo and cache hits only ({rounds} rounds)\n");
        warm_hits(&multi_thread(), rounds);
    }
    if all || which.contains(&"fleet") {
        println!("## Redis tier ({rounds} rounds)\n");
        fleet(rounds);
    }
    if all || which.contains(&"cache") {
        println!("## Cache ({rounds} rounds)\n");
        cache(rounds);
    }
    if all || which.contains(&"queue") {
        println!("## OperationQueue ({rounds} rounds)\n");
        queue(rounds, only);
    }
}
