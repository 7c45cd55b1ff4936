use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use super::{Totals, labels};
use crate::queue::OperationQueueStats;

/// An operation queue's metric handles.
pub(crate) struct QueueMetrics {
    totals: Totals<6>,
    depth: Gauge,
    running: Gauge,
    runners: Gauge,
    rejected: Counter,
    histograms: QueueHistograms,
}

/// What a runner records for each operation it takes.
#[derive(Clone)]
pub(crate) struct QueueHistograms {
    wait: Histogram,
    run: Histogram,
}

impl QueueHistograms {
    /// An operation waited `waited` in the queue before a runner took it.
    pub(crate) fn waited(&self, waited: Duration) {
        self.wait.record(waited.as_secs_f64());
    }

    /// An operation ran for `ran` (to its end, its panic or its timeout).
    pub(crate) fn ran(&self, ran: Duration) {
        self.run.record(ran.as_secs_f64());
    }
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
            rejected: metrics::counter!("herder_queue_rejected_total", labels.clone()),
            histograms: QueueHistograms {
                wait: metrics::histogram!("herder_queue_wait_seconds", labels.clone()),
                run: metrics::histogram!("herder_queue_run_duration_seconds", labels),
            },
        }
    }

    pub(crate) fn histograms(&self) -> QueueHistograms {
        self.histograms.clone()
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

/// A primitive that is gone holds nothing: its gauges go back to 0 rather than keep its last
/// value (its counters keep what it counted).
impl Drop for QueueMetrics {
    fn drop(&mut self) {
        self.depth.set(0.0);
        self.running.set(0.0);
        self.runners.set(0.0);
    }
}
