//! Cache counters, striped across cache lines so that the hit path of two threads never writes the
//! same line (a shared counter would cost more than the lookup itself).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Counters of a [`Cache`](crate::Cache), read with [`Cache::stats`](crate::Cache::stats).
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads answered by a fresh value.
    pub hits: u64,
    /// Reads answered by a cached "not found".
    pub negative_hits: u64,
    /// Reads that found nothing usable (they led a load or joined one).
    pub misses: u64,
    /// Reads that waited for a load another call had started.
    pub coalesced: u64,
    /// Reads answered by a stale value (stale window, fail-safe or timeout).
    pub stale_served: u64,
    /// Keys loaded successfully, found or not found (a bulk load counts each key).
    pub loads: u64,
    /// Loads whose loader returned an error.
    pub load_errors: u64,
    /// Loads whose loader panicked.
    pub load_panics: u64,
    /// Loads failed by the hard `load_timeout`.
    pub load_timeouts: u64,
    /// Background refreshes started (stale window or early refresh).
    pub refreshes: u64,
    /// Entries evicted to stay within capacity.
    pub evictions: u64,
    /// Entries held when the stats were read.
    pub entries: usize,
    /// Total weight held (the entry count without a weigher).
    pub weight: u64,
    /// Loads under way when the stats were read.
    pub in_flight: usize,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Counter {
    Hit,
    NegativeHit,
    Miss,
    Coalesced,
    StaleServed,
    Load,
    LoadError,
    LoadPanic,
    LoadTimeout,
    Refresh,
}

const COUNTERS: usize = 10;
const STRIPES: usize = 16;

#[derive(Default)]
#[repr(align(128))]
struct Stripe([AtomicU64; COUNTERS]);

pub(crate) struct Counters {
    stripes: Box<[Stripe]>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
        }
    }
}

fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

impl Counters {
    pub(crate) fn bump(&self, counter: Counter) {
        self.stripes[stripe()].0[counter as usize].fetch_add(1, Relaxed);
    }

    fn sum(&self, counter: Counter) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0[counter as usize].load(Relaxed))
            .sum()
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.sum(Counter::Hit),
            negative_hits: self.sum(Counter::NegativeHit),
            misses: self.sum(Counter::Miss),
            coalesced: self.sum(Counter::Coalesced),
            stale_served: self.sum(Counter::StaleServed),
            loads: self.sum(Counter::Load),
            load_errors: self.sum(Counter::LoadError),
            load_panics: self.sum(Counter::LoadPanic),
            load_timeouts: self.sum(Counter::LoadTimeout),
            refreshes: self.sum(Counter::Refresh),
            ..CacheStats::default()
        }
    }
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}
