use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of a [`DataLoader`](crate::DataLoader), read with
/// [`DataLoader::stats`](crate::DataLoader::stats).
///
/// `requests = memo_hits + joined + batched_keys` once no batch is open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DataLoaderStats {
    /// Keys asked for, through `load` and `load_many` (duplicates within one `load_many`
    /// count once).
    pub requests: u64,
    /// Requests answered from the memo.
    pub memo_hits: u64,
    /// Requests that joined a batch already holding their key (open or running).
    pub joined: u64,
    /// Loader calls.
    pub batches: u64,
    /// Keys sent to the loader, over all batches.
    pub batched_keys: u64,
    /// The largest batch so far.
    pub largest_batch: u64,
    /// Batches whose loader returned an error.
    pub errors: u64,
    /// Batches whose loader panicked.
    pub panics: u64,
    /// Batches dropped before they finished (their runtime shut down).
    pub cancelled: u64,
    /// Keys in an open or running batch when the stats were read.
    pub in_flight: usize,
    /// Entries in the memo when the stats were read.
    pub memoized: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) memo_hits: AtomicU64,
    pub(crate) joined: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) batched_keys: AtomicU64,
    pub(crate) largest_batch: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) cancelled: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Relaxed);
        }
    }

    pub(crate) fn batch(&self, keys: usize) {
        let keys = keys as u64;
        self.batches.fetch_add(1, Relaxed);
        self.batched_keys.fetch_add(keys, Relaxed);
        self.largest_batch.fetch_max(keys, Relaxed);
    }

    pub(crate) fn snapshot(&self, in_flight: usize, memoized: usize) -> DataLoaderStats {
        DataLoaderStats {
            requests: self.requests.load(Relaxed),
            memo_hits: self.memo_hits.load(Relaxed),
            joined: self.joined.load(Relaxed),
            batches: self.batches.load(Relaxed),
            batched_keys: self.batched_keys.load(Relaxed),
            largest_batch: self.largest_batch.load(Relaxed),
            errors: self.errors.load(Relaxed),
            panics: self.panics.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            in_flight,
            memoized,
        }
    }
}
