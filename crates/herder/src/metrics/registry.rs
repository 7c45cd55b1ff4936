//! The live primitives [`flush`] reads.

use std::sync::{Arc, Mutex, PoisonError, Weak};

/// Something whose counts [`flush`] records: each primitive's shared state, or a tier of
/// another crate (`herder-redis` registers its `RedisTier`).
pub trait Source: Send + Sync {
    /// Records the current counts through the metric handles resolved when it was built.
    fn publish(&self);
}

/// The sources, and how many were live at the last pruning.
static SOURCES: Mutex<(Vec<Weak<dyn Source>>, usize)> = Mutex::new((Vec::new(), 0));

/// Adds `source` to what [`flush`] records, for as long as it lives. herder's primitives
/// register themselves when built with the `metrics` feature.
pub fn register(source: Weak<dyn Source>) {
    let mut guard = SOURCES.lock().unwrap_or_else(PoisonError::into_inner);
    let (sources, live) = &mut *guard;
    // Dropped sources are pruned once the list has doubled since the last pruning, so that a
    // loader made per request costs a push, not a scan of every other live loader.
    if sources.len() >= (2 * *live).max(64) {
        sources.retain(|source| source.strong_count() > 0);
        *live = sources.len();
    }
    sources.push(source);
}

/// Records the counters and gauges of every live primitive (see the [module](crate::metrics) docs):
/// call it before rendering, or every few seconds.
///
/// It reads each primitive's exact counts, as `stats()` does, so its cost grows with the
/// number of live primitives, not with the traffic.
///
/// ```
/// let cache: herder::Cache<u8, u8> =
///     herder::Cache::builder().name("tiny").max_capacity(10).build().unwrap();
/// cache.insert(1, 1);
/// herder::metrics::flush(); // herder_cache_entries{name="tiny"} = 1, in the global recorder
/// ```
pub fn flush() {
    let live: Vec<Arc<dyn Source>> = {
        let mut guard = SOURCES.lock().unwrap_or_else(PoisonError::into_inner);
        let (sources, live) = &mut *guard;
        sources.retain(|source| source.strong_count() > 0);
        *live = sources.len();
        sources.iter().filter_map(Weak::upgrade).collect()
    };
    // Outside the lock: a source takes its own locks, and may be dropped here.
    for source in live {
        source.publish();
    }
}
