use std::sync::Arc;
use std::time::Duration;

use metrics::{Gauge, Histogram};

use super::{Totals, labels};
use crate::single_flight::SingleFlightStats;

/// A SingleFlight's metric handles.
pub(crate) struct FlightMetrics {
    totals: Totals<4>,
    in_flight: Gauge,
    duration: Histogram,
}

impl FlightMetrics {
    pub(crate) fn new(name: Option<&Arc<str>>) -> Self {
        let labels = labels(name);
        FlightMetrics {
            totals: Totals::new(
                [
                    "herder_single_flight_started_total",
                    "herder_single_flight_joined_total",
                    "herder_single_flight_panics_total",
                    "herder_single_flight_cancelled_total",
                ],
                &labels,
            ),
            in_flight: metrics::gauge!("herder_single_flight_in_flight", labels.clone()),
            duration: metrics::histogram!("herder_single_flight_duration_seconds", labels),
        }
    }

    /// A flight's work ended after `took`.
    pub(crate) fn ran(&self, took: Duration) {
        self.duration.record(took.as_secs_f64());
    }

    pub(crate) fn publish(&self, stats: &SingleFlightStats) {
        self.totals
            .publish([stats.started, stats.joined, stats.panicked, stats.cancelled]);
        self.in_flight.set(stats.in_flight as f64);
    }
}

/// A primitive that is gone holds nothing: its gauges go back to 0 rather than keep its last
/// value (its counters keep what it counted).
impl Drop for FlightMetrics {
    fn drop(&mut self) {
        self.in_flight.set(0.0);
    }
}
