use std::sync::Arc;

use metrics::{Counter, Gauge};

use super::{Totals, labels};
use crate::queue::OperationQueueStats;

/// An operation queue's metric handles.
pub(crate) struct QueueMetrics {
    totals: Totals<6>,
    depth: Gauge,
    running: Gauge,
    runners: Gauge,
    rejected: Counter,
}

impl QueueMetrics {
    pub(crate) fn new(name: Option<&Arc<str>>) -> Self {
        let labels = labels(name);
        QueueMetrics {
            totals: Totals::new(
                [
                    "herder_queue_submitted_total",
                    "herder_queue_completed_total",
                    "herder_queue_panics_total",
                    "herder_queue_timeouts_total",
                    "herder_queue_aborted_total",
                    "herder_queue_cancelled_total",
                ],
                &labels,
            ),
            depth: metrics::gauge!("herder_queue_depth", labels.clone()),
            running: metrics::gauge!("herder_queue_running", labels.clone()),
            runners: metrics::gauge!("herder_queue_runners", labels.clone()),
            rejected: metrics::counter!("herder_queue_rejected_total", labels),
        }
    }

    /// A `try_submit` found the queue full.
    pub(crate) fn rejected(&self) {
        self.rejected.increment(1);
    }

    pub(crate) fn publish(&self, stats: &OperationQueueStats) {
        // Every operation queued is queued, running or in exactly one end state, and the
        // snapshot is taken under the queue's lock: the sum only grows.
        let submitted = (stats.queued + stats.running) as u64
            + stats.completed
            + stats.panicked
            + stats.timed_out
            + stats.aborted
            + stats.cancelled;
        self.totals.publish([
            submitted,
            stats.completed,
            stats.panicked,
            stats.timed_out,
            stats.aborted,
            stats.cancelled,
        ]);
        self.depth.set(stats.queued as f64);
        self.running.set(stats.running as f64);
        self.runners.set(stats.runners as f64);
    }
}
