use std::fmt;
use std::time::Duration;

use super::handle::DataLoader;
use super::loader::Loader;
use super::state::{Config, Window};
use crate::cache::Cache;
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
            },
            cache: None,
        }
    }

    /// Collect keys for a fixed `delay` after the first key of a batch, for callers spread over
    /// many tasks. The default, and `Duration::ZERO`, is no timer: a batch dispatches once the
    /// task whose key opened it comes round again, after the work that was ready (its sibling
    /// futures included) has run, plus a pass or more while keys keep arriving. That is all a
    /// fan-out polled in one task (a GraphQL resolver tree) needs, on any runtime, and it adds
    /// microseconds. If that caller is parked (polled once, never again), a timer dispatches the
    /// batch after 200 ms (counted in `unattended_windows`).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.config.window = if delay.is_zero() {
            Window::Yield
        } else {
            Window::Delay(delay)
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
    /// facebook/dataloader does by default (default `false`). Suited to a request-scoped loader;
    /// for a long-lived one, put a `Cache` in front instead. Errors are never memoized. With a
    /// [`cache`](Builder::cache) in front, the cache is the memo and this setting has no effect:
    /// a memo of its own would keep serving values the cache has invalidated.
    pub fn memo(mut self, memo: bool) -> Self {
        self.config.memo = memo;
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
        let mut config = self.config;
        // With a cache in front, the cache holds the values: a memo would keep serving a value
        // the cache has invalidated.
        config.memo &= self.cache.is_none();
        let cache = self.cache.map(|cache| cache.inner);
        Ok(DataLoader::from_parts(self.loader, config, cache))
    }
}

impl<L: Loader> fmt::Debug for Builder<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
