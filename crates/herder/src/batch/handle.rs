use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use super::builder::Builder;
use super::dispatch::{ActionsOf, apply, start_janitor};
use super::future::{Driving, Load, LoadMany};
use super::loader::Loader;
use super::memo::Memo;
use super::state::{Config, Found, State, Window};
use super::stats::DataLoaderStats;
use crate::cache::CacheFront;
use crate::flight::task;
use crate::sync::{Mutex, lock};

type FoundOf<L> = Found<<L as Loader>::Value, <L as Loader>::Error>;

/// Batches the keys asked for in one short window into one call of a [`Loader`].
///
/// The N+1 problem: a GraphQL resolver (or any fan-out) asks for one row per parent, and each ask
/// is a round trip. A `DataLoader` collects the keys requested while the runtime runs what is
/// ready, and calls the loader once for all of them. By default there is no timer: the caller
/// that asked first yields to the scheduler and looks again, and the batch dispatches after the
/// first pass that added no key. A single `load` adds about a microsecond, not a millisecond,
/// and a resolver tree lands one batch per level, on any runtime flavour and from any thread (a
/// worker or the `block_on` thread of `#[tokio::main]`).
///
/// * Keys already in an open or running batch join it (in-flight dedup).
/// * A batch belongs to no caller: the caller that closes its window polls it once right away
///   (a loader that answers at once costs no task and no thread hop), and a batch not done by
///   then goes on as its own task. Dropping, parking or panicking any caller, including the one
///   whose key opened the batch, never strands the others. (That first poll runs in the closing
///   caller's task: a loader should not rely on task-local values.)
/// * A loader error or panic reaches every caller of that batch and is never remembered.
/// * A loader that panics, even while building its future, fails its own batch only, with
///   [`LoadError::is_panic`](crate::LoadError::is_panic).
/// * Optional: a memo ([`Builder::memo`], recommended for a request-scoped loader), a timer
///   window ([`Builder::delay`]), a cap on loader calls in flight
///   ([`Builder::max_concurrent_batches`]), a load timeout ([`Builder::load_timeout`]).
///
/// The handle is cheap to clone; clones share batches, memo and stats.
///
/// ```
/// use herder::{DataLoader, Loader};
/// use std::collections::HashMap;
/// use std::convert::Infallible;
///
/// struct Authors;
///
/// impl Loader for Authors {
///     type Key = u32;
///     type Value = String;
///     type Error = Infallible;
///
///     async fn load(&self, ids: &[u32]) -> Result<HashMap<u32, String>, Infallible> {
///         Ok(ids.iter().map(|id| (*id, format!("author {id}"))).collect())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let authors = DataLoader::new(Authors);
/// // 100 resolvers, one loader call.
/// let names = futures_util::future::join_all((0..100).map(|id| authors.load(id % 10))).await;
/// assert_eq!(names[42].as_ref().unwrap().as_deref(), Some("author 2"));
/// assert_eq!(authors.stats().batches, 1);
/// # }
/// ```
pub struct DataLoader<L: Loader> {
    pub(super) shared: Arc<Shared<L>>,
}

pub(crate) struct Shared<L: Loader> {
    pub(crate) loader: L,
    pub(crate) config: Config,
    /// The cache in front, if any.
    pub(crate) cache: Option<CacheFront<L::Key, L::Value>>,
    /// The memo (`memo(true)`), shared with the state: read here without the state's lock,
    /// written only under it.
    pub(crate) memo: Option<Arc<Memo<L::Key, L::Value>>>,
    pub(crate) state: Mutex<State<L::Key, L::Value, L::Error>>,
    pub(crate) name: Option<Arc<str>>,
    /// Batches handing their answers to their callers right now, and how many have done so
    /// (wrapping): a yield window whose pass saw either move is not quiet yet (`Driving`).
    pub(crate) landings: Landings,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: crate::metrics::LoaderMetrics,
}

/// Batches landing: waking their callers, which may be on other threads and may each load
/// again at once (the next level of a GraphQL query). While a batch is waking them, or just
/// after, the window a woken caller opened must not close at its first quiet pass: the others
/// have not been polled yet.
#[derive(Default)]
pub(crate) struct Landings {
    waking: AtomicU32,
    done: AtomicU32,
}

impl Landings {
    /// A batch starts waking its callers; it has landed when the guard is dropped.
    pub(crate) fn landing(&self) -> Landing<'_> {
        self.waking.fetch_add(1, SeqCst);
        Landing(self)
    }

    /// How many batches have landed (wrapping), to compare with a later [`moved`] look.
    ///
    /// [`moved`]: Landings::moved
    pub(crate) fn count(&self) -> u32 {
        self.done.load(SeqCst)
    }

    /// Whether a batch is landing now, or has landed since `*seen` (which is updated).
    pub(crate) fn moved(&self, seen: &mut u32) -> Moved {
        if self.waking.load(SeqCst) > 0 {
            return Moved::Landing;
        }
        let done = self.count();
        let moved = done != *seen;
        *seen = done;
        if moved { Moved::Landed } else { Moved::Still }
    }
}

/// A batch waking its callers ([`Landings::landing`]).
pub(crate) struct Landing<'a>(&'a Landings);

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        self.0.done.fetch_add(1, SeqCst);
        self.0.waking.fetch_sub(1, SeqCst);
    }
}

/// What [`Landings::moved`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Moved {
    /// A batch is waking its callers now.
    Landing,
    /// A batch has woken its callers since the last look.
    Landed,
    /// Neither.
    Still,
}

#[cfg(feature = "metrics")]
impl<L: Loader> crate::metrics::Source for Shared<L> {
    fn publish(&self) {
        self.metrics.publish(&lock(&self.state).stats());
    }
}

/// A loader made per request is dropped before any scrape: it records what it counted last.
#[cfg(feature = "metrics")]
impl<L: Loader> Drop for Shared<L> {
    fn drop(&mut self) {
        crate::metrics::Source::publish(self);
    }
}

impl<L: Loader> DataLoader<L> {
    /// A loader with the default settings: no timer window, batches of at most 1000 keys, no cap
    /// on concurrent batches, no memo.
    ///
    /// ```
    /// # use herder::{DataLoader, Loader};
    /// # use std::collections::HashMap;
    /// # struct Rows;
    /// # impl Loader for Rows {
    /// #     type Key = u32;
    /// #     type Value = u32;
    /// #     type Error = std::convert::Infallible;
    /// #     async fn load(&self, keys: &[u32]) -> Result<HashMap<u32, u32>, Self::Error> {
    /// #         Ok(keys.iter().map(|k| (*k, *k)).collect())
    /// #     }
    /// # }
    /// let rows = DataLoader::new(Rows);
    /// assert_eq!(rows.stats().batches, 0);
    /// ```
    pub fn new(loader: L) -> Self {
        Self::builder(loader)
            .build()
            .expect("the default settings are valid")
    }

    /// A builder for the non-default settings; see [`Builder`] for each of them.
    ///
    /// ```
    /// # use herder::{DataLoader, Loader};
    /// # use std::collections::HashMap;
    /// # struct Rows;
    /// # impl Loader for Rows {
    /// #     type Key = u32;
    /// #     type Value = u32;
    /// #     type Error = std::convert::Infallible;
    /// #     async fn load(&self, keys: &[u32]) -> Result<HashMap<u32, u32>, Self::Error> {
    /// #         Ok(keys.iter().map(|k| (*k, *k)).collect())
    /// #     }
    /// # }
    /// let rows = DataLoader::builder(Rows).max_batch_size(100).memo(true).build().unwrap();
    /// ```
    pub fn builder(loader: L) -> Builder<L> {
        Builder::new(loader)
    }

    pub(super) fn from_parts(
        loader: L,
        config: Config,
        cache: Option<CacheFront<L::Key, L::Value>>,
        name: Option<Arc<str>>,
    ) -> Self {
        let state = State::new(&config);
        let shared = Arc::new(Shared {
            loader,
            cache,
            memo: state.memo().cloned(),
            state: Mutex::new(state),
            config,
            landings: Landings::default(),
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::LoaderMetrics::new(name.as_ref()),
            name,
        });
        #[cfg(feature = "metrics")]
        crate::metrics::register(Arc::downgrade(&shared) as _);
        DataLoader { shared }
    }

    /// Loads one key: `Ok(None)` if the loader did not return it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future forgets this caller only. The batch still runs for the
    /// other callers, and its result still fills the memo. A key the memo holds is answered at
    /// the first poll, without the loader's lock.
    ///
    /// # Panics
    ///
    /// When polled outside a Tokio runtime, unless the memo answers the key.
    ///
    /// ```
    /// # use herder::{DataLoader, Loader};
    /// # use std::collections::HashMap;
    /// # struct Evens;
    /// # impl Loader for Evens {
    /// #     type Key = u32;
    /// #     type Value = u32;
    /// #     type Error = std::convert::Infallible;
    /// #     async fn load(&self, keys: &[u32]) -> Result<HashMap<u32, u32>, Self::Error> {
    /// #         Ok(keys.iter().filter(|k| *k % 2 == 0).map(|k| (*k, k / 2)).collect())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let halves = DataLoader::new(Evens); // answers even keys only
    /// assert_eq!(halves.load(8).await.unwrap(), Some(4));
    /// assert_eq!(halves.load(7).await.unwrap(), None);
    /// # }
    /// ```
    pub fn load(&self, key: L::Key) -> Load<'_, L> {
        Load::new(self, key)
    }

    /// Loads many keys at once; keys the loader did not return are absent from the map. If any
    /// batch the keys went to fails, the whole call fails with that batch's error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`load`](DataLoader::load).
    ///
    /// # Panics
    ///
    /// When polled outside a Tokio runtime, as [`load`](DataLoader::load), unless the memo
    /// answers every key.
    ///
    /// ```
    /// # use herder::{DataLoader, Loader};
    /// # use std::collections::HashMap;
    /// # struct Doubles;
    /// # impl Loader for Doubles {
    /// #     type Key = u32;
    /// #     type Value = u32;
    /// #     type Error = std::convert::Infallible;
    /// #     async fn load(&self, keys: &[u32]) -> Result<HashMap<u32, u32>, Self::Error> {
    /// #         Ok(keys.iter().map(|k| (*k, k * 2)).collect())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let doubles = DataLoader::new(Doubles);
    /// let values = doubles.load_many([1, 2, 2, 3]).await.unwrap();
    /// assert_eq!(values.len(), 3);
    /// assert_eq!(values[&3], 6);
    /// assert!(doubles.load_many(Vec::new()).await.unwrap().is_empty());
    /// # }
    /// ```
    pub fn load_many<I>(&self, keys: I) -> LoadMany<'_, L>
    where
        I: IntoIterator<Item = L::Key>,
    {
        LoadMany::new(self, keys.into_iter().collect())
    }

    /// Stores `value` for `key` in the memo, replacing what was there, so that loads of `key`
    /// skip the loader. With a [cache](Builder::cache) in front, the value goes into the cache
    /// instead, as [`Cache::insert`](crate::Cache::insert) would put it (the cache is the memo).
    /// Without either, this does nothing.
    ///
    /// A load of `key` already under way still answers its own callers, but does not overwrite
    /// the primed value.
    ///
    /// ```
    /// # use herder::{DataLoader, Loader};
    /// # use std::collections::HashMap;
    /// # struct Rows;
    /// # impl Loader for Rows {
    /// #     type Key = u32;
    /// #     type Value = &'static str;
    /// #     type Error = std::convert::Infallible;
    /// #     async fn load(&self, keys: &[u32]) -> Result<HashMap<u32, &'static str>, Self::Error> {
    /// #         Ok(keys.iter().map(|k| (*k, "from the database")).collect())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let rows = DataLoader::builder(Rows).memo(true).build().unwrap();
    /// rows.prime(1, "primed");
    /// assert_eq!(rows.load(1).await.unwrap(), Some("primed"));
    /// assert_eq!(rows.stats().batches, 0);
    /// # }
    /// ```
    pub fn prime(&self, key: L::Key, value: L::Value) {
        match &self.shared.cache {
            // The cache is the memo: the value fills it (an explicit write, as `Cache::insert`).
            Some(cache) => cache.insert(key, value),
            None => lock(&self.shared.state).prime(key, value),
        }
    }

    /// Forgets `key`: its memoized value, and its load under way if that load has started, whose
    /// callers still get its result but whose result is not memoized. The next load of `key`
    /// asks the loader. With a [cache](Builder::cache) in front, the key is invalidated in the
    /// cache, as [`Cache::invalidate`](crate::Cache::invalidate) would (and, through its tier,
    /// in every instance's).
    ///
    /// ```
    /// # use herder::{DataLoader, Loader};
    /// # use std::collections::HashMap;
    /// # struct Rows;
    /// # impl Loader for Rows {
    /// #     type Key = u32;
    /// #     type Value = u32;
    /// #     type Error = std::convert::Infallible;
    /// #     async fn load(&self, keys: &[u32]) -> Result<HashMap<u32, u32>, Self::Error> {
    /// #         Ok(keys.iter().map(|k| (*k, *k)).collect())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let rows = DataLoader::builder(Rows).memo(true).build().unwrap();
    /// rows.load(1).await.unwrap();
    /// rows.clear(&1);
    /// rows.load(1).await.unwrap();
    /// assert_eq!(rows.stats().batches, 2);
    /// # }
    /// ```
    pub fn clear(&self, key: &L::Key) {
        lock(&self.shared.state).clear(key);
        if let Some(cache) = &self.shared.cache {
            cache.invalidate(key);
        }
    }

    /// [`clear`](DataLoader::clear) for every key; with a [cache](Builder::cache) in front, the
    /// whole cache is invalidated.
    ///
    /// ```
    /// # use herder::{DataLoader, Loader};
    /// # use std::collections::HashMap;
    /// # struct Rows;
    /// # impl Loader for Rows {
    /// #     type Key = u32;
    /// #     type Value = u32;
    /// #     type Error = std::convert::Infallible;
    /// #     async fn load(&self, keys: &[u32]) -> Result<HashMap<u32, u32>, Self::Error> {
    /// #         Ok(keys.iter().map(|k| (*k, *k)).collect())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let rows = DataLoader::builder(Rows).memo(true).build().unwrap();
    /// rows.load_many([1, 2, 3]).await.unwrap();
    /// assert_eq!(rows.stats().memoized, 3);
    /// rows.clear_all();
    /// assert_eq!(rows.stats().memoized, 0);
    /// # }
    /// ```
    pub fn clear_all(&self) {
        lock(&self.shared.state).clear_all();
        if let Some(cache) = &self.shared.cache {
            cache.invalidate_all();
        }
    }

    /// A snapshot of the counters.
    ///
    /// ```
    /// # use herder::{DataLoader, Loader};
    /// # use std::collections::HashMap;
    /// # struct Rows;
    /// # impl Loader for Rows {
    /// #     type Key = u32;
    /// #     type Value = u32;
    /// #     type Error = std::convert::Infallible;
    /// #     async fn load(&self, keys: &[u32]) -> Result<HashMap<u32, u32>, Self::Error> {
    /// #         Ok(keys.iter().map(|k| (*k, *k)).collect())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let rows = DataLoader::new(Rows);
    /// let (a, b, c) = tokio::join!(rows.load(1), rows.load(2), rows.load(1));
    /// let stats = rows.stats();
    /// assert_eq!((stats.requests, stats.joined, stats.batches, stats.batched_keys), (3, 1, 1, 2));
    /// # }
    /// ```
    pub fn stats(&self) -> DataLoaderStats {
        lock(&self.shared.state).stats()
    }

    /// The loader.
    ///
    /// ```
    /// # use herder::{DataLoader, Loader};
    /// # use std::collections::HashMap;
    /// struct Table(&'static str);
    /// # impl Loader for Table {
    /// #     type Key = u32;
    /// #     type Value = u32;
    /// #     type Error = std::convert::Infallible;
    /// #     async fn load(&self, keys: &[u32]) -> Result<HashMap<u32, u32>, Self::Error> {
    /// #         Ok(HashMap::new())
    /// #     }
    /// # }
    /// let books = DataLoader::new(Table("books"));
    /// assert_eq!(books.loader().0, "books");
    /// ```
    pub fn loader(&self) -> &L {
        &self.shared.loader
    }

    /// Looks up keys under one lock, then dispatches whatever that opened or closed. Returns the
    /// batch this call opened, if it opened a yield window that is still open: the caller then
    /// drives that window from its own task (see `future::Driving`). `again`: the keys are
    /// looked up again after the cache load they joined failed with another call site's error
    /// (see `State::find`).
    pub(super) fn find_all<'k>(
        &self,
        keys: impl Iterator<Item = &'k L::Key>,
        again: bool,
        mut each: impl FnMut(&'k L::Key, FoundOf<L>),
    ) -> Option<Driving<L>> {
        let shared = &self.shared;
        // Before any state changes: without a runtime, nothing could carry the batches.
        let runtime = task::runtime("DataLoader::load");
        let mut actions = ActionsOf::<L>::default();
        let opened = {
            let mut state = lock(&shared.state);
            for key in keys {
                let found = state.find(
                    key,
                    &shared.config,
                    shared.cache.as_ref(),
                    again,
                    &mut actions,
                );
                each(key, found);
            }
            let opened = match &actions.window {
                Some((slot, _)) => state
                    .window_opened(slot, Some(runtime.id()))
                    .then(|| slot.clone()),
                None => None,
            };
            (opened, state.needs_janitor(Some(runtime.id())))
        };
        if !actions.is_empty() {
            apply(shared, &runtime, actions);
        }
        // A window still open (this very call did not fill it): with a yield window, this
        // caller drives it, and the janitor (started if none is alive) backs it up.
        let (opened, janitor) = opened;
        if let Some(id) = janitor {
            start_janitor(shared, &runtime, id);
        }
        let slot = opened?;
        match shared.config.window {
            Window::Yield => Some(Driving::new(slot, shared.landings.count())),
            Window::Delay(_) => None,
        }
    }
}

impl<L: Loader> Clone for DataLoader<L> {
    fn clone(&self) -> Self {
        DataLoader {
            shared: self.shared.clone(),
        }
    }
}

impl<L: Loader> fmt::Debug for DataLoader<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataLoader")
            .field("name", &self.shared.name)
            .field("loader", &std::any::type_name::<L>())
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}
