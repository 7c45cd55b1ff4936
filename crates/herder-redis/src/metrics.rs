//! The tier's series (feature `metrics`): its [`RedisStats`] recorded at each
//! [`herder::metrics::flush`], as herder records its primitives'.

use std::sync::{Arc, Mutex, PoisonError};

use metrics::{Counter, Gauge, Label, SharedString};

use crate::stats::RedisStats;
use crate::tier::Shared;

/// The running totals, in the order of [`NAMES`].
fn totals(stats: &RedisStats) -> [u64; 20] {
    [
        stats.l2_hits,
        stats.l2_stale_hits,
        stats.leases,
        stats.lease_waits,
        stats.takeovers,
        stats.fills,
        stats.fills_lost,
        stats.errors,
        stats.circuit_opens,
        stats.skipped,
        stats.decode_failures,
        stats.invalidations_sent,
        stats.invalidations_failed,
        stats.invalidations_replayed,
        stats.invalidations_collapsed,
        stats.l2_skipped_pending,
        stats.invalidations_received,
        stats.subscriptions,
        stats.resubscribes,
        stats.heartbeats_missed,
    ]
}

const NAMES: [&str; 20] = [
    "herder_redis_l2_hits_total",
    "herder_redis_l2_stale_hits_total",
    "herder_redis_leases_total",
    "herder_redis_lease_waits_total",
    "herder_redis_takeovers_total",
    "herder_redis_fills_total",
    "herder_redis_fills_lost_total",
    "herder_redis_errors_total",
    "herder_redis_circuit_opens_total",
    "herder_redis_skipped_total",
    "herder_redis_decode_failures_total",
    "herder_redis_invalidations_sent_total",
    "herder_redis_invalidations_failed_total",
    "herder_redis_invalidations_replayed_total",
    "herder_redis_invalidations_collapsed_total",
    "herder_redis_l2_skipped_pending_total",
    "herder_redis_invalidations_received_total",
    "herder_redis_subscriptions_total",
    "herder_redis_resubscribes_total",
    "herder_redis_heartbeats_missed_total",
];

/// A tier's metric handles, resolved when it is built.
pub(crate) struct RedisMetrics {
    counters: [Counter; 20],
    /// The totals at the previous flush: each flush adds what they gained.
    last: Mutex<[u64; 20]>,
    pending: Gauge,
    circuit_open: Gauge,
}

impl RedisMetrics {
    pub(crate) fn new(name: Option<&Arc<str>>) -> Self {
        let value = match name {
            Some(name) => SharedString::from(name.clone()),
            None => SharedString::const_str(""),
        };
        let labels = vec![Label::new("name", value)];
        RedisMetrics {
            counters: NAMES.map(|metric| metrics::counter!(metric, labels.clone())),
            last: Mutex::new([0; 20]),
            pending: metrics::gauge!("herder_redis_invalidations_pending", labels.clone()),
            circuit_open: metrics::gauge!("herder_redis_circuit_open", labels),
        }
    }

    fn publish(&self, stats: &RedisStats, circuit_open: bool) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        for ((counter, last), total) in self.counters.iter().zip(last.iter_mut()).zip(totals(stats))
        {
            if total > *last {
                counter.increment(total - *last);
                *last = total;
            }
        }
        self.pending.set(stats.invalidations_pending as f64);
        self.circuit_open.set(if circuit_open { 1.0 } else { 0.0 });
    }
}

impl<K, V> herder::metrics::Source for Shared<K, V>
where
    Shared<K, V>: Send + Sync,
{
    fn publish(&self) {
        let stats = RedisStats {
            invalidations_pending: crate::tier::lock(&self.pending).len() as u64,
            ..self.stats.snapshot()
        };
        self.metrics.publish(&stats, !self.breaker.allows());
    }
}
