//! Criterion benches of the DataLoader workloads, herder and its peers side by side in one run.
//!
//! ```text
//! cargo bench -p herder-benches --bench dataloader
//! ```
//!
//! The `compare` binary runs the same workloads and prints the tables of `docs/BENCHMARKS.md`
//! (with loader-call counts, which criterion does not report).

use std::future::Future;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use herder_benches::on_peer;
use herder_benches::peers::{AsyncGraphql, Batcher, Cksac, Herder, Peer};
use herder_benches::workloads::{self, Sample};
use tokio::runtime::{Builder, Runtime};

fn runtime() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Benches `work` on peer `B`: each iteration is spawned as a task (a request handler) and timed
/// inside the runtime, so spawning it is not counted. The runtime is built outside the loop.
fn bench<B, F, Fut>(group: &mut BenchmarkGroup<'_, WallTime>, rt: &Runtime, work: F)
where
    B: Batcher + Default,
    F: Fn(B) -> Fut,
    Fut: Future<Output = Sample> + Send + 'static,
{
    let peer = rt.block_on(async { B::default() });
    group.bench_function(B::NAME, |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let fut = work(peer.clone());
                    rt.block_on(async move { tokio::spawn(fut).await.unwrap() })
                        .elapsed
                })
                .sum::<Duration>()
        })
    });
}

fn all_peers<F, Fut>(c: &mut Criterion, name: &str, samples: usize, work: F)
where
    F: Fn(Peer) -> Fut + Copy,
    Fut: Future<Output = Sample> + Send + 'static,
{
    let rt = runtime();
    let mut group = c.benchmark_group(name);
    group.sample_size(samples);
    bench(&mut group, &rt, move |p: Herder| work(Peer::Herder(p)));
    bench(&mut group, &rt, move |p: AsyncGraphql| {
        work(Peer::AsyncGraphql(p))
    });
    bench(&mut group, &rt, move |p: Cksac| work(Peer::Cksac(p)));
    group.finish();
}

fn dataloader(c: &mut Criterion) {
    all_peers(c, "dataloader/isolated_load", 100, |peer| async move {
        on_peer!(peer, b => workloads::isolated(&b, 7).await)
    });
    all_peers(c, "dataloader/two_levels_of_100", 50, |peer| async move {
        on_peer!(peer, b => workloads::two_levels(&b).await)
    });
    all_peers(
        c,
        "dataloader/fan_out_100k_over_10k_keys",
        10,
        |peer| async move { on_peer!(peer, b => workloads::fan_out(&b, 100_000, 10_000).await) },
    );
}

criterion_group!(benches, dataloader);
criterion_main!(benches);
