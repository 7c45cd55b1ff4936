use std::sync::Arc;
use std::time::Duration;

use metrics::{Gauge, Histogram};

use super::{Totals, labels};
use crate::batch::DataLoaderStats;

/// A DataLoader's metric handles.
pub(crate) struct LoaderMetrics {
    totals: Totals<11>,
    in_flight: Gauge,
    memoized: Gauge,
    batch_size: Histogram,
    batch_duration: Histogram,
}

impl LoaderMetrics {
    pub(crate) fn new(name: Option<&Arc<str>>) -> Self {
        let labels = labels(name);
        LoaderMetrics {
            totals: Totals::new(
                [
                    "herder_dataloader_requests_total",
                    "herder_dataloader_memo_hits_total",
                    "herder_dataloader_cache_hits_total",
                    "herder_dataloader_joined_total",
                    "herder_dataloader_batches_total",
                    "herder_dataloader_keys_loaded_total",
                    "herder_dataloader_errors_total",
                    "herder_dataloader_panics_total",
                    "herder_dataloader_timeouts_total",
                    "herder_dataloader_cancelled_total",
                    "herder_dataloader_unattended_windows_total",
                ],
                &labels,
            ),
            in_flight: metrics::gauge!("herder_dataloader_keys_in_flight", labels.clone()),
            memoized: metrics::gauge!("herder_dataloader_memoized", labels.clone()),
            batch_size: metrics::histogram!("herder_dataloader_batch_size", labels.clone()),
            batch_duration: metrics::histogram!("herder_dataloader_batch_duration_seconds", labels),
        }
    }

    /// A loader call for `keys` keys ended after `took`.
    pub(crate) fn batch(&self, keys: usize, took: Duration) {
        self.batch_size.record(keys as f64);
        self.batch_duration.record(took.as_secs_f64());
    }

    pub(crate) fn publish(&self, stats: &DataLoaderStats) {
        self.totals.publish([
            stats.requests,
            stats.memo_hits,
            stats.cache_hits,
            stats.joined,
            stats.batches,
            stats.batched_keys,
            stats.errors,
            stats.panics,
            stats.timeouts,
            stats.cancelled,
            stats.unattended_windows,
        ]);
        self.in_flight.set(stats.in_flight as f64);
        self.memoized.set(stats.memoized as f64);
    }
}

/// A primitive that is gone holds nothing: its gauges go back to 0 rather than keep its last
/// value (its counters keep what it counted).
impl Drop for LoaderMetrics {
    fn drop(&mut self) {
        self.in_flight.set(0.0);
        self.memoized.set(0.0);
    }
}
