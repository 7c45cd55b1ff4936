use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;

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
    _types: PhantomData<fn(K) -> V>,
}

impl<K, V> Builder<K, V> {
    pub(super) fn new() -> Self {
        Builder {
            abort_unused: false,
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
            .finish()
    }
}
