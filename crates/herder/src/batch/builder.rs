use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::handle::DataLoader;
use super::loader::Loader;
use super::state::{Config, Window};
use crate::cache::{Cache, CacheFront};
use crate::error::BuildError;

/// Configures a [`DataLoader`]; made by [`DataLoader::builder`].
///
/// ```
/// use herder::{DataLoader, Loader};
/// use std::collections::HashMap;
/// use std::time::Duration;
/// # struct Rows;
/// # impl Loader for Rows {
/// #     type Key = i64;
/// #     type Value = String;
/// #     type Error = std::io::Error;
/// #     async fn load(&self, k: &[i64]) -> Result<HashMap<i64, String>, std::io::Error> { Ok(HashMap::new()) }
/// # }
///
/// let loader = DataLoader::builder(Rows)
///     .max_batch_size(500)           // PostgreSQL's sweet spot for `= ANY($1)` lists
///     .max_concurrent_batches(4)     // at most 4 queries at once; the rest batch up meanwhile
///     .memo(true)                    // request-scoped: remember what was loaded
///     .build()
///     .expect("valid settings");
///
/// // Callers spread over many tasks: collect keys for 2 ms instead of one scheduler pass.
/// let spread = DataLoader::builder(Rows).delay(Duration::from_millis(2)).build().unwrap();
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<L: Loader> {
    loader: L,
    config: Config,
    cache: Option<Cache<L::Key, L::Value>>,
    name: Option<Arc<str>>,
}

impl<L: Loader> Builder<L> {
    pub(super) fn new(loader: L) -> Self {
        Builder {
            loader,
            config: Config {
                window: Window::Yield,
                max_batch_size: 1000,
                max_concurrent_batches: usize::MAX,
                memo: false,
                load_timeout: None,
            },
            cache: None,
            name: None,
        }
    }

    /// The name of this loader in its metrics (the label `name`, as in
    /// `herder_dataloader_batches_total{name="authors"}`), in its `Debug` output and in the
    /// `herder.batch` tracing span of each batch.
    ///
    /// ```
    /// # use herder::{DataLoader, Loader};
    /// # use std::collections::HashMap;
    /// # struct Authors;
    /// # impl Loader for Authors {
    /// #     type Key = u64;
    /// #     type Value = String;
    /// #     type Error = std::io::Error;
    /// #     async fn load(&self, k: &[u64]) -> Result<HashMap<u64, String>, std::io::Error> { Ok(HashMap::new()) }
    /// # }
    /// let loader = DataLoader::builder(Authors).name("authors").build().unwrap();
    /// assert!(format!("{loader:?}").contains("authors"));
    /// ```
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Collect keys for a fixed `delay` after the first key of a batch. The default, and
    /// `Duration::ZERO`, is no timer: the caller whose key opened the batch yields to the
    /// scheduler and looks again; while each pass adds keys, it yields once more, and the first
    /// quiet pass dispatches the batch (a full batch dispatches at once). That is what a fan-out
    /// polled in one task (a GraphQL resolver tree) needs, on any runtime flavour and thread, and
    /// it adds microseconds; loads spread over many spawned tasks batch too, while the runtime
    /// keeps running tasks that add keys. If the opener is parked (polled once, never again), or
    /// keys keep arriving for that long, the loader's fallback timer (one task per loader and runtime while
    /// windows keep opening) dispatches the batch 100 to 200 ms after it opened (counted in
    /// `unattended_windows`). On a runtime built without the time driver (no `enable_time`) the
    /// fallback timer sleeps on a timer thread shared by the process (herder finds out by
    /// catching the panic tokio raises when a timer is made, once per runtime: a program whose
    /// panic hook ends the process must build its runtimes with the time driver); a non-zero `delay`, and
    /// `load_timeout`, need the time driver, as tokio's timers do. Any duration is accepted.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.config.window = if delay.is_zero() {
            Window::Yield
        } else {
            Window::Delay(crate::time::clamp(delay))
        };
        self
    }

    /// The most keys in one loader call (default 1000). A batch that fills up dispatches at once.
    /// Must be at least 1.
    pub fn max_batch_size(mut self, max: usize) -> Self {
        self.config.max_batch_size = max;
        self
    }

    /// The most loader calls running at once (default: no limit). While every slot is busy, new
    /// keys accumulate into the next batch (natural batching) and full batches queue in order.
    /// Must be at least 1.
    pub fn max_concurrent_batches(mut self, max: usize) -> Self {
        self.config.max_concurrent_batches = max;
        self
    }

    /// Remember each key's result (including "not found") for the life of the loader, as
    /// facebook/dataloader does by default (default `false`). Recommended for a request-scoped
    /// loader (one per request, dropped with it): each key then reaches the loader once per
    /// request, however many tasks ask for it and whenever they ask. For a long-lived loader, put
    /// a `Cache` in front instead. Errors and timeouts are never memoized. With a
    /// [`cache`](Builder::cache) in front, the cache is the memo and this setting has no effect:
    /// a memo of its own would keep serving values the cache has invalidated.
    ///
    /// A memoized key is answered at the `load`'s first poll from one shard of the memo, without
    /// the loader's lock (tasks on other workers do not wait for each other), and counted in
    /// [`memo_hits`](super::DataLoaderStats::memo_hits). `prime`, `clear` and `clear_all` take
    /// effect for every load started after they return.
    pub fn memo(mut self, memo: bool) -> Self {
        self.config.memo = memo;
        self
    }

    /// How long a loader call may take (default: no limit). Past it, the call is dropped (its
    /// late result with it), every caller of the batch gets an error whose
    /// [`is_timeout`](crate::LoadError::is_timeout) is `true`, the batch's keys are free to be
    /// loaded again, and its slot of [`max_concurrent_batches`](Builder::max_concurrent_batches)
    /// goes to the next batch. Counted in `timeouts`. Must be greater than zero; any larger
    /// duration, `Duration::MAX` included, is accepted. With a cache in front, the cache's
    /// readers that joined a timed-out batch get a timeout too (`is_timeout()` on their
    /// `TaskError`), as from a load of the cache's own cut by its limit.
    ///
    /// ```
    /// # use herder::{DataLoader, Loader};
    /// # use std::collections::HashMap;
    /// # use std::time::Duration;
    /// struct Hung;
    /// impl Loader for Hung {
    ///     type Key = u32;
    ///     type Value = u32;
    ///     type Error = std::convert::Infallible;
    ///     async fn load(&self, _: &[u32]) -> Result<HashMap<u32, u32>, Self::Error> {
    ///         std::future::pending().await
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let rows = DataLoader::builder(Hung).load_timeout(Duration::from_secs(2)).build().unwrap();
    /// let err = rows.load(1).await.unwrap_err();
    /// assert!(err.is_timeout());
    /// assert_eq!((rows.stats().timeouts, rows.stats().in_flight), (1, 0));
    /// # }
    /// ```
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.config.load_timeout = Some(timeout);
        self
    }

    /// Put a shared [`Cache`] in front of the loader: cached keys skip the batch, missing keys
    /// are batched and the batch fills the cache (with its TTLs, stale window and negative
    /// caching), and every reader of the cache, through this loader or not, joins a batch under
    /// way instead of loading the key again. An invalidation during a batch keeps that batch's
    /// value out of the cache.
    ///
    /// The loader's keys the batch leaves out are cached as absent when the cache has a
    /// `negative_ttl`. Fail-safe does not apply to batches (a failed batch fails its callers).
    /// The cache's `load_timeout` bounds a batch as this loader's own `load_timeout` does (the
    /// shorter wins), so that a hung backend cannot hold the cache's keys through a batch; its
    /// `soft_load_timeout` does not apply to batches, as to the cache's own bulk loads (a
    /// batch has no single stale value to answer with): its readers can bound their wait with
    /// the cache's `wait_timeout`.
    ///
    /// A load that finds its key being loaded by another reader of the cache waits for that
    /// load and shares its outcome: its value, or its failure when the other reader's loader
    /// has this loader's error type (or panicked, or timed out). When that loader failed with an
    /// error of another type, which a [`LoadError`](crate::LoadError) cannot carry, this loader
    /// loads the key itself instead: in a batch that leads the cache's next flight for the key
    /// (and fills the cache), or, if yet another reader's load of the key is under way by then,
    /// in a batch of its own that answers this loader's callers only.
    ///
    /// ```
    /// # use herder::{Cache, DataLoader, Loader};
    /// # use std::collections::HashMap;
    /// # use std::time::Duration;
    /// # struct Users;
    /// # impl Loader for Users {
    /// #     type Key = u64;
    /// #     type Value = String;
    /// #     type Error = std::io::Error;
    /// #     async fn load(&self, k: &[u64]) -> Result<HashMap<u64, String>, std::io::Error> {
    /// #         Ok(k.iter().map(|k| (*k, format!("user {k}"))).collect())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache = Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(60)).build().unwrap();
    /// let users = DataLoader::builder(Users).cache(cache.clone()).build().unwrap();
    /// users.load(1).await.unwrap();
    /// assert_eq!(cache.get(&1).as_deref(), Some("user 1")); // the batch filled the cache
    /// users.load(1).await.unwrap();
    /// assert_eq!(users.stats().batches, 1);                  // the second load was a hit
    /// # }
    /// ```
    pub fn cache(mut self, cache: Cache<L::Key, L::Value>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Builds the loader, or says which setting is invalid.
    pub fn build(self) -> Result<DataLoader<L>, BuildError> {
        if self.config.max_batch_size == 0 {
            return Err(BuildError::new(
                "DataLoader",
                "max_batch_size must be at least 1",
            ));
        }
        if self.config.max_concurrent_batches == 0 {
            return Err(BuildError::new(
                "DataLoader",
                "max_concurrent_batches must be at least 1",
            ));
        }
        if self.config.load_timeout == Some(Duration::ZERO) {
            return Err(BuildError::new(
                "DataLoader",
                "load_timeout must be greater than zero",
            ));
        }
        let mut config = self.config;
        config.load_timeout = config.load_timeout.and_then(crate::time::finite);
        // With a cache in front, the cache holds the values: a memo would keep serving a value
        // the cache has invalidated.
        config.memo &= self.cache.is_none();
        let cache = self.cache.as_ref().map(CacheFront::new);
        // A batch that fills the cache is bounded by the cache's hard load limit too.
        if let Some(limit) = cache.as_ref().and_then(CacheFront::load_timeout) {
            config.load_timeout = Some(config.load_timeout.map_or(limit, |own| own.min(limit)));
        }
        Ok(DataLoader::from_parts(
            self.loader,
            config,
            cache,
            self.name,
        ))
    }
}

impl<L: Loader> fmt::Debug for Builder<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
