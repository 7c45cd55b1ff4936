use std::sync::Arc;
use std::time::Duration;

use metrics::{Gauge, Histogram};

use super::{Totals, labels};
use crate::line::LineStats;

/// A Line's metric handles.
pub(crate) struct LineMetrics {
    totals: Totals<5>,
    recovering: Gauge,
    duration: Histogram,
}

impl LineMetrics {
    pub(crate) fn new(name: Option<&Arc<str>>) -> Self {
        let labels = labels(name);
        LineMetrics {
            totals: Totals::new(
                [
                    "herder_line_recoveries_total",
                    "herder_line_joined_total",
                    "herder_line_already_done_total",
                    "herder_line_panics_total",
                    "herder_line_timeouts_total",
                ],
                &labels,
            ),
            recovering: metrics::gauge!("herder_line_recovering", labels.clone()),
            duration: metrics::histogram!("herder_line_recovery_duration_seconds", labels),
        }
    }

    /// A recovery ended after `took`.
    pub(crate) fn recovered(&self, took: Duration) {
        self.duration.record(took.as_secs_f64());
    }

    pub(crate) fn publish(&self, stats: &LineStats) {
        self.totals.publish([
            stats.recoveries,
            stats.joined,
            stats.already_done,
            stats.panicked,
            stats.timed_out,
        ]);
        self.recovering
            .set(if stats.recovering { 1.0 } else { 0.0 });
    }
}

/// A primitive that is gone holds nothing: its gauges go back to 0 rather than keep its last
/// value (its counters keep what it counted).
impl Drop for LineMetrics {
    fn drop(&mut self) {
        self.recovering.set(0.0);
    }
}
