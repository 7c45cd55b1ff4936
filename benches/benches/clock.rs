//! What reading the clock costs on a cache hit: the figure behind the "Hit path" note of
//! `docs/BENCHMARKS.md` (why a TTL on the default clock is slower than `.clock_resolution`).
//!
//! ```text
//! cargo bench -p herder-benches --bench clock
//! ```
//!
//! One thread: `Instant::now()` alone, a loop of quick_cache `get`s, and the same loop with two
//! clock reads per `get` (what a TTL check on the default clock does), side by side in one run.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tokio::time::Instant;

const KEYS: u64 = 1000;

fn clock(c: &mut Criterion) {
    let cache = quick_cache::sync::Cache::<u64, u64>::new(KEYS as usize);
    for key in 0..KEYS {
        cache.insert(key, key);
    }
    let mut group = c.benchmark_group("clock");
    group.bench_function("Instant::now", |b| b.iter(|| black_box(Instant::now())));
    let mut key = 0;
    group.bench_function("quick_cache get", |b| {
        b.iter(|| {
            key = (key + 1) % KEYS;
            black_box(cache.get(&key))
        })
    });
    group.bench_function("quick_cache get + 2 clock reads", |b| {
        b.iter(|| {
            key = (key + 1) % KEYS;
            let now = Instant::now();
            let value = cache.get(&key);
            black_box((now, value, Instant::now()))
        })
    });
    group.finish();
}

criterion_group!(benches, clock);
criterion_main!(benches);
