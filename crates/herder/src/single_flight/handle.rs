use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use super::builder::Builder;
use super::future::Run;
use super::stats::{Counters, SingleFlightStats};
use crate::flight::Flights;

/// Concurrent calls with the same key share one execution of the work.
///
/// The first [`run`](SingleFlight::run) for a key spawns the work as its own task; every call for
/// that key until the work finishes waits for the same output, which each receives as a clone.
/// A later call starts the work again: nothing is cached.
///
/// The handle is cheap to clone; clones share the flights.
///
/// ```
/// use herder::SingleFlight;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let flights = SingleFlight::new();
/// let fetch = || async { "fresh token".to_string() };
/// let (a, b) = tokio::join!(flights.run("auth", fetch), flights.run("auth", fetch));
/// assert_eq!(a.unwrap(), b.unwrap());
/// assert_eq!(flights.stats().started, 1);
/// assert_eq!(flights.stats().joined, 1);
/// # }
/// ```
pub struct SingleFlight<K, V> {
    pub(super) inner: Arc<Inner<K, V>>,
}

pub(super) struct Inner<K, V> {
    pub(super) flights: Flights<K, V>,
    pub(super) abort_unused: bool,
    pub(super) counters: Counters,
    pub(super) name: Option<Arc<str>>,
    #[cfg(feature = "metrics")]
    pub(super) metrics: crate::metrics::FlightMetrics,
}

#[cfg(feature = "metrics")]
impl<K, V> crate::metrics::Source for Inner<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    fn publish(&self) {
        self.metrics
            .publish(&self.counters.snapshot(self.flights.len()));
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    /// A `SingleFlight` whose work always runs to completion.
    ///
    /// ```
    /// let flights = herder::SingleFlight::<String, u64>::new();
    /// assert_eq!(flights.in_flight(), 0);
    /// ```
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for the non-default settings.
    ///
    /// ```
    /// let flights = herder::SingleFlight::<u32, u32>::builder().abort_unused(true).build();
    /// ```
    pub fn builder() -> Builder<K, V> {
        Builder::new()
    }

    pub(super) fn from_builder(builder: Builder<K, V>) -> Self {
        let inner = Arc::new(Inner {
            flights: Flights::new(Flights::<K, V>::default_shards()),
            abort_unused: builder.abort_unused,
            counters: Counters::default(),
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::FlightMetrics::new(builder.name.as_ref()),
            name: builder.name,
        });
        #[cfg(feature = "metrics")]
        crate::metrics::register(Arc::downgrade(&inner) as _);
        SingleFlight { inner }
    }

    /// Runs `work()` for `key`, or joins the run already under way for it, and returns the
    /// output. `work` is only called by the caller that starts the flight.
    ///
    /// The work runs as its own task, so it keeps going if this caller is dropped (unless the
    /// flight was built with [`abort_unused`](Builder::abort_unused) and this was the last
    /// caller). A panic in the work reaches every waiter as a [`TaskError`](crate::TaskError).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the returned future only stops this caller from waiting. The work
    /// and the other callers are unaffected.
    ///
    /// # Panics
    ///
    /// When polled outside a Tokio runtime.
    ///
    /// # Deadlocks
    ///
    /// Work that calls `run` for its own key waits for itself, as with Go's singleflight: it
    /// never ends. Other keys are fine.
    ///
    /// ```
    /// use herder::SingleFlight;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let flights = SingleFlight::new();
    /// let calls = Arc::new(AtomicUsize::new(0));
    /// let work = || {
    ///     let calls = calls.clone();
    ///     move || async move { calls.fetch_add(1, Ordering::SeqCst); 42 }
    /// };
    /// let outputs = futures_util::future::join_all((0..10).map(|_| flights.run(7, work()))).await;
    /// assert!(outputs.iter().all(|v| *v.as_ref().unwrap() == 42));
    /// assert_eq!(calls.load(Ordering::SeqCst), 1);
    /// # }
    /// ```
    pub fn run<F, Fut>(&self, key: K, work: F) -> Run<'_, K, V, F>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        Run::new(self, key, work)
    }

    /// Retires the flight under way for `key`, if any: its callers still get its output, but
    /// the next call for `key` starts the work again instead of joining it (Go's `Forget`).
    /// Returns whether a flight was retired.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let flights = herder::SingleFlight::<&str, u32>::new();
    /// let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
    /// let old = tokio::spawn({
    ///     let flights = flights.clone();
    ///     async move { flights.run("config", || async { rx.await.unwrap() }).await }
    /// });
    /// while flights.in_flight() == 0 {
    ///     tokio::task::yield_now().await;
    /// }
    /// assert!(flights.forget(&"config"));
    /// // A new call starts new work instead of joining the old one.
    /// assert_eq!(flights.run("config", || async { 2 }).await.unwrap(), 2);
    /// tx.send(1).unwrap();
    /// assert_eq!(old.await.unwrap().unwrap(), 1);
    /// # }
    /// ```
    pub fn forget(&self, key: &K) -> bool {
        self.inner.flights.detach(key)
    }

    /// [`forget`](SingleFlight::forget) for every key; returns how many flights were retired.
    pub fn forget_all(&self) -> usize {
        self.inner.flights.detach_all()
    }

    /// The number of flights under way.
    pub fn in_flight(&self) -> usize {
        self.inner.flights.len()
    }

    /// A snapshot of the counters.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let flights = herder::SingleFlight::<u8, u8>::new();
    /// flights.run(1, || async { 1 }).await.unwrap();
    /// let stats = flights.stats();
    /// assert_eq!((stats.started, stats.joined, stats.in_flight), (1, 0, 0));
    /// # }
    /// ```
    pub fn stats(&self) -> SingleFlightStats {
        self.inner.counters.snapshot(self.inner.flights.len())
    }
}

impl<K, V> Default for SingleFlight<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> Clone for SingleFlight<K, V> {
    fn clone(&self) -> Self {
        SingleFlight {
            inner: self.inner.clone(),
        }
    }
}

impl<K, V> fmt::Debug for SingleFlight<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingleFlight")
            .field("name", &self.inner.name)
            .field("abort_unused", &self.inner.abort_unused)
            .finish_non_exhaustive()
    }
}
