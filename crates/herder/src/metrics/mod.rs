//! Every primitive's counters, gauges and histograms through the [`metrics`] facade (feature
//! `metrics`).
//!
//! Give each primitive a name with its builder's `name(…)`
//! ([`Cache`](crate::cache::Builder::name), [`DataLoader`](crate::batch::Builder::name),
//! [`SingleFlight`](crate::single_flight::Builder::name), [`Line`](crate::line::Builder::name),
//! [`OperationQueue`](crate::queue::Builder::name)): it becomes the label `name` of every
//! series that primitive records (`herder_cache_hits_total{name="books"}`). Unnamed primitives
//! record under `name=""`; their counters add up, their gauges are the last one's. A dropped
//! primitive sets its gauges to 0 (the next flush of a live one of the same name sets them again).
//!
//! # When values are recorded
//!
//! A primitive resolves its metric handles when it is built, from the recorder installed then
//! (the global one, or a [`metrics::with_local_recorder`] around `build()`): install the
//! recorder first. Then:
//!
//! * **Counters and gauges** are the exact counts that `stats()` reads, recorded by [`flush`]:
//!   each counter is incremented by what it gained since the previous flush, each gauge is set.
//!   Counting itself stays what it is without the feature (the cache's hit path writes a
//!   counter on a stripe of its thread's own, and makes no facade call), so reading a hit costs
//!   the same with the feature on. Call [`flush`] before rendering (an exporter's scrape
//!   handler) or from a task every few seconds. A [`DataLoader`](crate::DataLoader) also
//!   flushes itself at the end of each batch and when it is dropped, so a loader made per
//!   request loses nothing.
//! * **Histograms** are recorded when the event happens (a load, a batch, a flight, a
//!   recovery, an operation taken and ended by a runner): those are the slow paths, where one facade call is small next to the work.
//!   So is `herder_cache_invalidations_total` (not in the stats) and
//!   `herder_queue_rejected_total`.
//!
//! Building a primitive resolves its handles once: with `metrics-exporter-prometheus`
//! installed, a `DataLoader` takes about 2–3 µs more to build and drop than without the
//! feature (a loader made per request pays it each time).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use metrics_util::debugging::{DebugValue, DebuggingRecorder};
//!
//! let recorder = DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! let cache: herder::Cache<u32, u32> = metrics::with_local_recorder(&recorder, || {
//!     herder::Cache::builder().name("squares").max_capacity(100).build().unwrap()
//! });
//! cache.get_with(3, || async { 9 }).await;
//! cache.get_with(3, || async { 9 }).await;
//! herder::metrics::flush();
//! let hits = snapshotter.snapshot().into_vec().into_iter().find(|(key, ..)| {
//!     key.key().name() == "herder_cache_hits_total"
//!         && key.key().labels().any(|l| l.key() == "name" && l.value() == "squares")
//! });
//! assert!(matches!(hits, Some((_, _, _, DebugValue::Counter(1)))));
//! # }
//! ```
//!
//! Without the feature there is no `metrics` dependency and no recording code: the names are
//! kept (they show in `Debug`), nothing else.
//!
//! # Metrics
//!
//! Every series has the label `name`. Counters end in `_total`, durations are in seconds
//! (`_seconds`), as Prometheus names them. `herder-redis` documents the `herder_redis_…` series
//! of its tier in its own `metrics` section.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `herder_cache_hits_total` | counter | reads answered by a fresh value |
//! | `herder_cache_negative_hits_total` | counter | reads answered by a cached "not found" |
//! | `herder_cache_misses_total` | counter | reads that found nothing usable (led or joined a load) |
//! | `herder_cache_coalesced_total` | counter | reads that waited for a load another call started |
//! | `herder_cache_stale_served_total` | counter | reads answered by a stale value |
//! | `herder_cache_loads_total` | counter | keys loaded (found or not found) |
//! | `herder_cache_load_errors_total` | counter | loads whose loader returned an error |
//! | `herder_cache_load_panics_total` | counter | loads whose loader panicked |
//! | `herder_cache_load_timeouts_total` | counter | loads failed by the hard load timeout |
//! | `herder_cache_refreshes_total` | counter | background refreshes started |
//! | `herder_cache_evictions_total` | counter | entries evicted to stay within capacity |
//! | `herder_cache_invalidations_total` | counter | `invalidate`, `remove` and `invalidate_all` calls (recorded as they happen) |
//! | `herder_cache_entries` | gauge | entries held |
//! | `herder_cache_weight` | gauge | total weight held |
//! | `herder_cache_loads_in_flight` | gauge | loads under way |
//! | `herder_cache_load_duration_seconds` | histogram | time a successful load took (a bulk or DataLoader load records its time once per key) |
//! | `herder_dataloader_requests_total` | counter | keys asked for |
//! | `herder_dataloader_memo_hits_total` | counter | requests answered from the memo |
//! | `herder_dataloader_cache_hits_total` | counter | requests answered by the cache in front |
//! | `herder_dataloader_joined_total` | counter | requests that joined a batch holding their key |
//! | `herder_dataloader_batches_total` | counter | loader calls |
//! | `herder_dataloader_keys_loaded_total` | counter | keys sent to the loader |
//! | `herder_dataloader_errors_total` | counter | batches whose loader returned an error |
//! | `herder_dataloader_panics_total` | counter | batches whose loader panicked |
//! | `herder_dataloader_timeouts_total` | counter | batches that outlived the load timeout |
//! | `herder_dataloader_cancelled_total` | counter | batches dropped before they finished |
//! | `herder_dataloader_unattended_windows_total` | counter | windows closed by their fallback timer |
//! | `herder_dataloader_keys_in_flight` | gauge | keys in an open or running batch |
//! | `herder_dataloader_memoized` | gauge | entries in the memo |
//! | `herder_dataloader_batch_size` | histogram | keys per loader call |
//! | `herder_dataloader_batch_duration_seconds` | histogram | time a loader call took |
//! | `herder_single_flight_started_total` | counter | flights started (the work ran) |
//! | `herder_single_flight_joined_total` | counter | calls that joined a flight under way |
//! | `herder_single_flight_panics_total` | counter | flights whose work panicked |
//! | `herder_single_flight_cancelled_total` | counter | flights stopped before they finished |
//! | `herder_single_flight_in_flight` | gauge | flights under way |
//! | `herder_single_flight_duration_seconds` | histogram | time the work of a flight took |
//! | `herder_line_recoveries_total` | counter | recoveries started |
//! | `herder_line_joined_total` | counter | calls that joined a recovery under way |
//! | `herder_line_already_done_total` | counter | calls told a recovery had finished since their epoch |
//! | `herder_line_panics_total` | counter | recoveries that panicked |
//! | `herder_line_timeouts_total` | counter | recoveries that ran past the recovery timeout |
//! | `herder_line_recovering` | gauge | 1 while a recovery is under way, else 0 |
//! | `herder_line_recovery_duration_seconds` | histogram | time a recovery took |
//! | `herder_queue_submitted_total` | counter | operations queued |
//! | `herder_queue_completed_total` | counter | operations that ran to the end |
//! | `herder_queue_panics_total` | counter | operations that panicked |
//! | `herder_queue_timeouts_total` | counter | operations stopped by the per-operation timeout |
//! | `herder_queue_aborted_total` | counter | operations stopped by a shutdown's deadline |
//! | `herder_queue_cancelled_total` | counter | operations removed before they started |
//! | `herder_queue_rejected_total` | counter | `try_submit` calls that found the queue full |
//! | `herder_queue_depth` | gauge | operations waiting for a runner |
//! | `herder_queue_running` | gauge | operations running |
//! | `herder_queue_runners` | gauge | live runners |
//! | `herder_queue_wait_seconds` | histogram | time an operation waited for a runner |
//! | `herder_queue_run_duration_seconds` | histogram | time an operation ran (to its end, panic or timeout) |
//!
//! The [`LocalOperationQueue`](crate::LocalOperationQueue) records nothing (it is not `Send`,
//! and [`flush`] may run on any thread).

mod cache;
mod flight;
mod line;
mod loader;
mod queue;
mod registry;

pub(crate) use cache::CacheMetrics;
pub(crate) use flight::FlightMetrics;
pub(crate) use line::LineMetrics;
pub(crate) use loader::LoaderMetrics;
pub(crate) use queue::{QueueHistograms, QueueMetrics};
pub use registry::{Source, flush, register};

use std::sync::{Arc, Mutex, PoisonError};

use metrics::{Counter, Label, SharedString};

/// The labels of every series of a primitive named `name`.
pub(crate) fn labels(name: Option<&Arc<str>>) -> Vec<Label> {
    let value = match name {
        Some(name) => SharedString::from(name.clone()),
        None => SharedString::const_str(""),
    };
    vec![Label::new("name", value)]
}

/// Counters recorded from running totals: each publish adds what a total gained since the
/// previous one, so that the recorder's counter follows the total exactly (and unnamed
/// primitives sharing a series add up).
pub(crate) struct Totals<const N: usize> {
    counters: [Counter; N],
    last: Mutex<[u64; N]>,
}

impl<const N: usize> Totals<N> {
    pub(crate) fn new(names: [&'static str; N], labels: &[Label]) -> Self {
        Totals {
            counters: names.map(|name| metrics::counter!(name, labels.to_vec())),
            last: Mutex::new([0; N]),
        }
    }

    pub(crate) fn publish(&self, totals: [u64; N]) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        for ((counter, last), total) in self.counters.iter().zip(last.iter_mut()).zip(totals) {
            if total > *last {
                counter.increment(total - *last);
                *last = total;
            }
        }
    }
}
