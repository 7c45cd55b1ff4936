//! Cache counters, striped across cache lines so that the hit path of two threads never writes the
//! same line (a shared counter would cost more than the lookup itself).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};

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

/// Stripes with one writer each: a thread that owns a stripe counts with a plain load and
/// store (no locked read-modify-write, which costs more than the lookup on a hit); threads past
/// the pool share the last stripe and count with `fetch_add`. Either way every count lands, so
/// `stats()` is exact.
const OWNED: usize = 63;
const STRIPES: usize = OWNED + 1;

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

/// No stripe assigned to this thread yet.
const UNASSIGNED: usize = usize::MAX;

thread_local! {
    /// This thread's stripe: a plain `Cell` with a constant initializer and no destructor, so
    /// reading it on the hit path is one thread-local load.
    static STRIPE: Cell<usize> = const { Cell::new(UNASSIGNED) };
    /// Hands the stripe back to the pool when the thread exits.
    static OWNER: Owner = const { Owner(Cell::new(None)) };
}

/// This thread's stripe: one it owns (from a pool shared by every cache, handed back when the
/// thread exits), or the shared one ([`OWNED`]) past the pool.
#[inline]
fn stripe() -> usize {
    match STRIPE.with(Cell::get) {
        UNASSIGNED => assign(),
        stripe => stripe,
    }
}

#[cold]
fn assign() -> usize {
    let taken = {
        let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        let (free, next) = &mut *pool;
        free.pop().or_else(|| {
            let stripe = (*next < OWNED).then_some(*next);
            *next += usize::from(stripe.is_some());
            stripe
        })
    };
    let stripe = match taken {
        // Owned only if the release on exit could be registered (not during thread teardown).
        Some(stripe) if OWNER.try_with(|owner| owner.0.set(Some(stripe))).is_ok() => stripe,
        Some(stripe) => {
            release(stripe);
            OWNED
        }
        None => OWNED,
    };
    STRIPE.with(|cell| cell.set(stripe));
    stripe
}

/// Free stripes, and the next never-used one.
static POOL: Mutex<(Vec<usize>, usize)> = Mutex::new((Vec::new(), 0));

fn release(stripe: usize) {
    // The lock orders this thread's last counts before the next owner's first.
    POOL.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .0
        .push(stripe);
}

struct Owner(Cell<Option<usize>>);

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(stripe) = self.0.take() {
            // Whatever this thread counts from here on goes to the shared stripe.
            STRIPE.with(|cell| cell.set(OWNED));
            release(stripe);
        }
    }
}

impl Counters {
    #[inline]
    pub(crate) fn bump(&self, counter: Counter) {
        let stripe = stripe();
        let cell = &self.stripes[stripe].0[counter as usize];
        if stripe == OWNED {
            cell.fetch_add(1, Relaxed);
        } else {
            cell.store(cell.load(Relaxed) + 1, Relaxed);
        }
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
