use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use super::SingleFlight;

/// Configures a [`SingleFlight`]; made by [`SingleFlight::builder`].
///
/// ```
/// use herder::SingleFlight;
///
/// let flights: SingleFlight<String, u64> = SingleFlight::builder().abort_unused(true).build();
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<K, V> {
    pub(super) abort_unused: bool,
    pub(super) name: Option<Arc<str>>,
    _types: PhantomData<fn(K) -> V>,
}

impl<K, V> Builder<K, V> {
    pub(super) fn new() -> Self {
        Builder {
            abort_unused: false,
            name: None,
            _types: PhantomData,
        }
    }

    /// Abort the work as soon as no caller waits for it any more (default `false`: the work
    /// runs to completion even when every caller has gone, so that whatever it fills, such as a
    /// cache, still gets filled).
    ///
    /// The last caller's departure and the removal of the flight happen under one lock, so a
    /// caller arriving afterwards starts fresh work rather than joining the aborted one.
    pub fn abort_unused(mut self, abort: bool) -> Self {
        self.abort_unused = abort;
        self
    }

    /// The name of these flights in their metrics (the label `name`, as in
    /// `herder_single_flight_started_total{name="tokens"}`) and in their `Debug` output.
    /// Without the `metrics` feature it is only shown by `Debug`.
    ///
    /// ```
    /// let flights: herder::SingleFlight<u8, u8> =
    ///     herder::SingleFlight::builder().name("tokens").build();
    /// assert!(format!("{flights:?}").contains("tokens"));
    /// ```
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Builds the [`SingleFlight`]. Every combination of settings is valid.
    pub fn build(self) -> SingleFlight<K, V>
    where
        K: Hash + Eq + Clone + Send + 'static,
        V: Clone + Send + 'static,
    {
        SingleFlight::from_builder(self)
    }
}

impl<K, V> fmt::Debug for Builder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("abort_unused", &self.abort_unused)
            .field("name", &self.name)
            .finish()
    }
}
