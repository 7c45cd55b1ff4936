//! Heap bytes per cached entry beyond its key and value, for herder's Cache and its peers,
//! measured with a counting global allocator.
//!
//! ```text
//! cargo run --release -p herder-benches --bin cache_memory
//! ```
//!
//! Each cache is built for and filled with 100,000 `u64 → u64` entries (16 bytes of key and
//! value); the table reports the heap it holds (tables, nodes, metadata), divided by the entries
//! it kept, minus those 16 bytes.

use std::alloc::System;
use std::time::Duration;

use futures_util::FutureExt as _;
use herder_benches::report::Table;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const ENTRIES: u64 = 100_000;
const HOUR: Duration = Duration::from_secs(3600);

/// Builds a cache with `make`, fills it, and returns (entries kept, heap bytes held).
fn measure<C>(
    make: impl FnOnce() -> C,
    fill: impl Fn(&C, u64),
    len: impl Fn(&C) -> usize,
) -> (usize, isize) {
    let region = Region::new(GLOBAL);
    let cache = make();
    for key in 0..ENTRIES {
        fill(&cache, key);
    }
    let kept = len(&cache);
    let change = region.change();
    // A `realloc` that grows a table already counts its growth in `bytes_allocated` (and one
    // that shrinks it in `bytes_deallocated`): `bytes_reallocated` is not added on top.
    let held = change.bytes_allocated as isize - change.bytes_deallocated as isize;
    drop(cache);
    (kept, held)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let rows = [
        (
            "herder Cache (TTL)",
            measure(
                || {
                    herder::Cache::<u64, u64>::builder()
                        .max_capacity(ENTRIES)
                        .time_to_live(HOUR)
                        .build()
                        .unwrap()
                },
                |c, k| c.insert(k, k),
                |c| c.stats().entries,
            ),
        ),
        (
            "quick_cache 0.7 sync::Cache",
            measure(
                || quick_cache::sync::Cache::<u64, u64>::new(ENTRIES as usize),
                |c, k| c.insert(k, k),
                |c| c.len(),
            ),
        ),
        (
            "moka 0.12 future::Cache (TTL)",
            measure(
                || {
                    moka::future::Cache::<u64, u64>::builder()
                        .max_capacity(ENTRIES)
                        .time_to_live(HOUR)
                        .build()
                },
                |c, k| {
                    c.insert(k, k).now_or_never().unwrap();
                    if k % 1024 == 0 {
                        runtime.block_on(c.run_pending_tasks());
                    }
                },
                |c| {
                    runtime.block_on(c.run_pending_tasks());
                    c.entry_count() as usize
                },
            ),
        ),
        (
            "pingora-memory-cache 0.9 MemoryCache (TTL)",
            measure(
                || pingora_memory_cache::MemoryCache::<u64, u64>::new(ENTRIES as usize),
                |c, k| c.put(&k, k, Some(HOUR)),
                |_| ENTRIES as usize,
            ),
        ),
    ];
    let mut table = Table::new(&[
        "cache",
        "entries kept",
        "heap bytes per entry",
        "beyond key + value",
    ]);
    for (name, (kept, held)) in rows {
        let per = held as f64 / kept as f64;
        table.row(vec![
            name.to_owned(),
            kept.to_string(),
            format!("{per:.1}"),
            format!("{:.1}", per - 16.0),
        ]);
    }
    println!(
        "### Memory: {ENTRIES} `u64 → u64` entries\n\n{}",
        table.markdown()
    );
}
