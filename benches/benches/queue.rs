//! Criterion bench of the OperationQueue workload: 100,000 trivial operations through 8 runners,
//! herder and its peers side by side in one run.
//!
//! ```text
//! cargo bench -p herder-benches --bench queue
//! ```
//!
//! The `compare` binary runs the same workload on both runtime flavours and prints the tables of
//! `docs/BENCHMARKS.md`.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use herder_benches::queue::QueuePeer;
use tokio::runtime::{Builder, Runtime};

const OPS: u64 = 100_000;
const RUNNERS: usize = 8;

fn multi_thread() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn current_thread() -> Runtime {
    Builder::new_current_thread().enable_all().build().unwrap()
}

/// Each iteration is one run of the workload, timed inside the runtime (the queue is built and
/// torn down outside the timed part). The runtime is built outside the loop.
fn group(c: &mut Criterion, name: &str, rt: &Runtime, peers: &[QueuePeer]) {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    for peer in peers {
        group.bench_function(peer.name(), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| rt.block_on(peer.run(OPS, RUNNERS)))
                    .sum::<Duration>()
            })
        });
    }
    group.finish();
}

fn queue(c: &mut Criterion) {
    let mut local = QueuePeer::all();
    local.insert(3, QueuePeer::HerderLocal);
    group(
        c,
        "queue/100k_ops_8_runners/current_thread",
        &current_thread(),
        &local,
    );
    group(
        c,
        "queue/100k_ops_8_runners/multi_thread",
        &multi_thread(),
        &QueuePeer::all(),
    );
}

criterion_group!(benches, queue);
criterion_main!(benches);
