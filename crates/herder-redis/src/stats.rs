use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of a [`RedisTier`](crate::RedisTier), read with
/// [`RedisTier::stats`](crate::RedisTier::stats).
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// L1 misses answered by Redis with a fresh value (or a shared absence).
    pub l2_hits: u64,
    /// L1 misses answered with a stale value while another instance refreshes the key.
    pub l2_stale_hits: u64,
    /// Leases granted: this instance loaded the key for the fleet.
    pub leases: u64,
    /// Acquires that waited for another instance's load.
    pub lease_waits: u64,
    /// Leases won after waiting: the holder failed, died or gave up.
    pub takeovers: u64,
    /// Values written to Redis under a lease.
    pub fills: u64,
    /// Fills refused because the lease was lost (taken over, or revoked by an invalidation).
    pub fills_lost: u64,
    /// Redis calls that failed or ran out of their time budget.
    pub errors: u64,
    /// Times the circuit breaker opened.
    pub circuit_opens: u64,
    /// Acquires skipped (circuit open, or waited past `max_wait`): loaded locally.
    pub skipped: u64,
    /// Stored values that could not be decoded (treated as misses, and replaced).
    pub decode_failures: u64,
    /// Invalidations this instance made that Redis applied (and published to every instance).
    pub invalidations_sent: u64,
    /// Attempts to apply an invalidation that failed (Redis down, slow or the circuit open); the
    /// invalidation stays pending and is retried until Redis applies it.
    pub invalidations_failed: u64,
    /// Invalidations made while Redis could not be reached, applied once it answered again.
    pub invalidations_replayed: u64,
    /// Invalidations waiting for Redis right now (a pending `invalidate_all` counts as one).
    pub invalidations_pending: u64,
    /// Pending keys folded into one `invalidate_all` because the pending bound was reached
    /// ([`Builder::max_pending_invalidations`](crate::Builder::max_pending_invalidations)).
    pub invalidations_collapsed: u64,
    /// L1 misses that did not read Redis because an invalidation of the key was pending.
    pub l2_skipped_pending: u64,
    /// Invalidations from other instances applied to this instance's L1.
    pub invalidations_received: u64,
    /// Successful pub/sub subscriptions, the first one included.
    pub subscriptions: u64,
    /// Pub/sub resubscriptions after a lost connection (each flushes L1).
    pub resubscribes: u64,
    /// Pub/sub connections given up because a PING did not come back in time (a half-open
    /// socket or a stalled server); each is followed by a resubscription.
    pub heartbeats_missed: u64,
}

macro_rules! counters {
    ($($field:ident),* $(,)?) => {
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $(pub(crate) $field: AtomicU64,)*
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> RedisStats {
                RedisStats {
                    $($field: self.$field.load(Relaxed),)*
                    ..RedisStats::default()
                }
            }
        }
    };
}

counters!(
    l2_hits,
    l2_stale_hits,
    leases,
    lease_waits,
    takeovers,
    fills,
    fills_lost,
    errors,
    circuit_opens,
    skipped,
    decode_failures,
    invalidations_sent,
    invalidations_failed,
    invalidations_replayed,
    invalidations_collapsed,
    l2_skipped_pending,
    invalidations_received,
    subscriptions,
    resubscribes,
    heartbeats_missed,
);

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}
