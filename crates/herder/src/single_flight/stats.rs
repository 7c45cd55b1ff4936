use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of a [`SingleFlight`](super::SingleFlight), read with
/// [`SingleFlight::stats`](super::SingleFlight::stats).
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SingleFlightStats {
    /// Runs that started the work (one per flight).
    pub started: u64,
    /// Runs that joined a flight already under way instead of starting the work.
    pub joined: u64,
    /// Flights whose work panicked.
    pub panicked: u64,
    /// Flights whose work was stopped before it finished: aborted because no caller was left
    /// (with [`abort_unused`](super::Builder::abort_unused)), or dropped with its runtime.
    pub cancelled: u64,
    /// Flights under way when the stats were read.
    pub in_flight: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) started: AtomicU64,
    pub(crate) joined: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) cancelled: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self, in_flight: usize) -> SingleFlightStats {
        SingleFlightStats {
            started: self.started.load(Relaxed),
            joined: self.joined.load(Relaxed),
            panicked: self.panicked.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            in_flight,
        }
    }
}
