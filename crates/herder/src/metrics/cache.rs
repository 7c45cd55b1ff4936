use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use super::{Totals, labels};
use crate::cache::CacheStats;

/// A cache's metric handles.
pub(crate) struct CacheMetrics {
    totals: Totals<11>,
    entries: Gauge,
    weight: Gauge,
    in_flight: Gauge,
    load_duration: Histogram,
    invalidations: Counter,
}

impl CacheMetrics {
    pub(crate) fn new(name: Option<&Arc<str>>) -> Self {
        let labels = labels(name);
        CacheMetrics {
            totals: Totals::new(
                [
                    "herder_cache_hits_total",
                    "herder_cache_negative_hits_total",
                    "herder_cache_misses_total",
                    "herder_cache_coalesced_total",
                    "herder_cache_stale_served_total",
                    "herder_cache_loads_total",
                    "herder_cache_load_errors_total",
                    "herder_cache_load_panics_total",
                    "herder_cache_load_timeouts_total",
                    "herder_cache_refreshes_total",
                    "herder_cache_evictions_total",
                ],
                &labels,
            ),
            entries: metrics::gauge!("herder_cache_entries", labels.clone()),
            weight: metrics::gauge!("herder_cache_weight", labels.clone()),
            in_flight: metrics::gauge!("herder_cache_loads_in_flight", labels.clone()),
            load_duration: metrics::histogram!(
                "herder_cache_load_duration_seconds",
                labels.clone()
            ),
            invalidations: metrics::counter!("herder_cache_invalidations_total", labels),
        }
    }

    /// A load finished with a value (or "not found") after `took`.
    pub(crate) fn loaded(&self, took: Duration) {
        self.load_duration.record(took.as_secs_f64());
    }

    /// An `invalidate`, `remove` or `invalidate_all` call: counted when it happens (not a
    /// hot path, and not in the stats).
    pub(crate) fn invalidated(&self) {
        self.invalidations.increment(1);
    }

    pub(crate) fn publish(&self, stats: &CacheStats) {
        self.totals.publish([
            stats.hits,
            stats.negative_hits,
            stats.misses,
            stats.coalesced,
            stats.stale_served,
            stats.loads,
            stats.load_errors,
            stats.load_panics,
            stats.load_timeouts,
            stats.refreshes,
            stats.evictions,
        ]);
        self.entries.set(stats.entries as f64);
        self.weight.set(stats.weight as f64);
        self.in_flight.set(stats.in_flight as f64);
    }
}

/// A primitive that is gone holds nothing: its gauges go back to 0 rather than keep its last
/// value (its counters keep what it counted).
impl Drop for CacheMetrics {
    fn drop(&mut self) {
        self.entries.set(0.0);
        self.weight.set(0.0);
        self.in_flight.set(0.0);
    }
}
