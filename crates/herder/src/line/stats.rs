use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of a [`Line`](super::Line), read with [`Line::stats`](super::Line::stats).
///
/// Every call of [`recover`](super::Line::recover) counts once in `recoveries`, `joined` or
/// `already_done`.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LineStats {
    /// Recoveries started (calls that led one).
    pub recoveries: u64,
    /// Calls that joined a recovery under way.
    pub joined: u64,
    /// Calls told that a recovery had finished since their epoch.
    pub already_done: u64,
    /// Recoveries that panicked.
    pub panicked: u64,
    /// Recoveries that ran past the line's recovery timeout and were dropped.
    pub timed_out: u64,
    /// Recoveries finished: the current epoch.
    pub epoch: u64,
    /// Whether a recovery was under way when the stats were read.
    pub recovering: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) recoveries: AtomicU64,
    pub(crate) joined: AtomicU64,
    pub(crate) already_done: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) timed_out: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self, epoch: u64, recovering: bool) -> LineStats {
        LineStats {
            recoveries: self.recoveries.load(Relaxed),
            joined: self.joined.load(Relaxed),
            already_done: self.already_done.load(Relaxed),
            panicked: self.panicked.load(Relaxed),
            timed_out: self.timed_out.load(Relaxed),
            epoch,
            recovering,
        }
    }
}
