/// Counters of a [`DataLoader`](crate::DataLoader), read with
/// [`DataLoader::stats`](crate::DataLoader::stats).
///
/// Once no batch is open, `requests = memo_hits + cache_hits + joined + batched_keys`, minus
/// keys a batch refreshed for the cache without a caller waiting.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DataLoaderStats {
    /// Keys asked for, through `load` and `load_many` (duplicates within one `load_many`
    /// count once).
    pub requests: u64,
    /// Requests answered from the memo.
    pub memo_hits: u64,
    /// Requests answered by the cache in front ([`Builder::cache`](super::Builder::cache)).
    pub cache_hits: u64,
    /// Requests that joined a batch already holding their key (open or running).
    pub joined: u64,
    /// Batches run: loader calls, except with a cache with a shared tier in front, where a
    /// batch loads only the keys the tier does not answer (none: no call; the tier's own stats
    /// count what it answered).
    pub batches: u64,
    /// Keys of all batches (with a tiered cache in front, not all of them reach the loader).
    pub batched_keys: u64,
    /// The largest batch so far.
    pub largest_batch: u64,
    /// Batches whose loader returned an error.
    pub errors: u64,
    /// Batches whose loader panicked (while building its future, or while it ran).
    pub panics: u64,
    /// Batches whose loader call outlived the load timeout ([`Builder::load_timeout`](super::Builder::load_timeout)).
    pub timeouts: u64,
    /// Batches dropped before they finished (their runtime shut down).
    pub cancelled: u64,
    /// Yield windows closed by the loader's fallback timer (100–200 ms after they opened)
    /// instead of by the caller that opened them: that caller was parked (polled once, never
    /// again), its task waited that long for a worker, or keys kept arriving at every pass for
    /// that long without filling the batch. Nonzero on a healthy service means batches are
    /// being delayed.
    pub unattended_windows: u64,
    /// Keys in an open or running batch when the stats were read.
    pub in_flight: usize,
    /// Entries in the memo when the stats were read.
    pub memoized: usize,
}

/// The counters, kept in the loader's state and updated under its lock (which every counted
/// event holds anyway), so counting costs no atomic operation. A memo hit outside that lock is
/// counted in its memo shard, under the shard's lock (`Memo::hit`), and added in by
/// `State::stats`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub(crate) requests: u64,
    pub(crate) memo_hits: u64,
    pub(crate) cache_hits: u64,
    pub(crate) joined: u64,
    pub(crate) batches: u64,
    pub(crate) batched_keys: u64,
    pub(crate) largest_batch: u64,
    pub(crate) errors: u64,
    pub(crate) panics: u64,
    pub(crate) timeouts: u64,
    pub(crate) cancelled: u64,
    pub(crate) unattended_windows: u64,
}

impl Counters {
    pub(crate) fn batch_started(&mut self, keys: usize) {
        let keys = keys as u64;
        self.batches += 1;
        self.batched_keys += keys;
        self.largest_batch = self.largest_batch.max(keys);
    }

    pub(crate) fn snapshot(&self, in_flight: usize, memoized: usize) -> DataLoaderStats {
        DataLoaderStats {
            requests: self.requests,
            memo_hits: self.memo_hits,
            cache_hits: self.cache_hits,
            joined: self.joined,
            batches: self.batches,
            batched_keys: self.batched_keys,
            largest_batch: self.largest_batch,
            errors: self.errors,
            panics: self.panics,
            timeouts: self.timeouts,
            cancelled: self.cancelled,
            unattended_windows: self.unattended_windows,
            in_flight,
            memoized,
        }
    }
}
