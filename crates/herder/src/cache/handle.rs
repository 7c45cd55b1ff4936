use std::borrow::Borrow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use super::builder::Builder;
use super::bulk;
use super::clock::Clock;
use super::config::Config;
use super::entry::{Freshness, Loaded};
use super::error::CacheError;
use super::fetch::{self, Lookup};
use super::listener::Listener;
use super::load::Landing;
use super::stats::{CacheStats, Counters};
use super::status::Fetched;
use super::storage::Storage;
use super::tier::{LocalCache, Tier};
use crate::flight::Flights;

/// A bounded, async, read-through cache with stampede protection.
///
/// On a miss exactly one load runs, as its own task, and every other caller for that key waits
/// for it; a caller that is cancelled, times out or is parked never blocks or fails the others,
/// and a loader that errs or panics gives every waiter the same error, one backend call for all.
///
/// Entries go **fresh → stale → dead**. Within the stale window
/// ([`stale_while_revalidate`](Builder::stale_while_revalidate)) a read returns the old value at
/// once and starts one background refresh. With [`fail_safe`](Builder::fail_safe), a load that
/// fails while an old value is kept serves that value (`StaleOnError`) and leaves the backend
/// alone for a throttle period. [`EarlyRefresh`](super::EarlyRefresh) refreshes hot keys before
/// they expire. Loaders can set a TTL per entry and cache "not found" ([`Loaded`]).
///
/// An [`invalidate`](Cache::invalidate) or [`insert`](Cache::insert) during a load lets that load
/// answer its waiters but not overwrite the cache (no stale set).
///
/// The handle is cheap to clone; clones share the cache.
///
/// ```
/// use herder::Cache;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache: Cache<u64, String> = Cache::builder()
///     .max_capacity(10_000)
///     .time_to_live(Duration::from_secs(30))
///     .build()
///     .unwrap();
/// // 100 concurrent misses, one load.
/// let reads = (0..100).map(|_| cache.get_with(7, || async { "row 7".to_string() }));
/// let values = futures_util::future::join_all(reads).await;
/// assert!(values.iter().all(|v| v == "row 7"));
/// assert_eq!(cache.stats().loads, 1);
/// # }
/// ```
pub struct Cache<K, V> {
    pub(super) inner: Arc<Inner<K, V>>,
}

/// The cache's state, shared by its handles. Its fields are the cache module's own: the rest
/// of the crate reaches a cache through [`Cache`]'s methods or its front (`front.rs`).
pub(super) struct Inner<K, V> {
    pub(super) storage: Storage<K, V>,
    pub(super) flights: Flights<K, Landing<V>>,
    pub(super) config: Config,
    /// The shared second level, if any.
    pub(super) tier: Option<Arc<dyn Tier<K, V>>>,
    pub(super) clock: Clock,
    pub(super) stats: Counters,
    pub(super) listener: Option<Listener<K, V>>,
    pub(super) name: Option<Arc<str>>,
    #[cfg(feature = "metrics")]
    pub(super) metrics: crate::metrics::CacheMetrics,
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache holding at most `max_capacity` entries, which never expire (evicted by use).
    ///
    /// # Panics
    ///
    /// If `max_capacity` is 0.
    ///
    /// ```
    /// let cache: herder::Cache<String, Vec<u8>> = herder::Cache::new(10_000);
    /// assert_eq!(cache.stats().entries, 0);
    /// ```
    pub fn new(max_capacity: u64) -> Self {
        match Self::builder().max_capacity(max_capacity).build() {
            Ok(cache) => cache,
            Err(err) => panic!("{err}"),
        }
    }

    /// A builder for capacity, weigher, TTLs, stale window, fail-safe, early refresh, timeouts
    /// and a shared tier; see [`Builder`] for every setting.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let cache: herder::Cache<u64, String> = herder::Cache::builder()
    ///     .max_capacity(1_000)
    ///     .time_to_live(Duration::from_secs(30))
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn builder() -> Builder<K, V> {
        Builder::new()
    }

    pub(super) fn from_parts(
        storage: Storage<K, V>,
        config: Config,
        tier: Option<Arc<dyn Tier<K, V>>>,
        listener: Option<Listener<K, V>>,
        name: Option<Arc<str>>,
    ) -> Self {
        let inner = Arc::new(Inner {
            storage,
            flights: Flights::new(Flights::<K, Landing<V>>::default_shards()),
            config,
            tier,
            clock: Clock::new(Some(config.clock_resolution).filter(|r| !r.is_zero())),
            stats: Counters::default(),
            listener,
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::CacheMetrics::new(name.as_ref()),
            name,
        });
        #[cfg(feature = "metrics")]
        crate::metrics::register(Arc::downgrade(&inner) as _);
        if let Some(tier) = &inner.tier {
            tier.attach(LocalCache::new(&inner));
        }
        Cache { inner }
    }

    /// The cached value of `key`, fresh or stale; never loads. `None` for a missing, expired
    /// or cached-as-absent key. Takes any borrowed form of the key (`&str` for a `String` key),
    /// as moka's `get` does.
    ///
    /// ```
    /// # use herder::Cache;
    /// let cache: Cache<String, u32> = Cache::new(10);
    /// cache.insert("a".to_string(), 1);
    /// assert_eq!(cache.get("a"), Some(1));
    /// assert_eq!(cache.get("b"), None);
    /// ```
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.get_value(key)
    }

    /// The value of `key`, loaded with `init` on a miss. Concurrent misses share one load.
    ///
    /// `get_with` is for loads that cannot fail, and it always returns a value: when the load
    /// it joined was started elsewhere and failed (a `try_get_with` whose loader erred, a load
    /// cut by the hard `load_timeout`), or when the key is cached as "not found" by
    /// [`fetch`](Cache::fetch), it loads the key with its own `init`. It waits out the cache's
    /// soft load timeout (the load goes on) and does not apply its `wait_timeout`. Use
    /// [`try_get_with`](Cache::try_get_with) or [`fetch`](Cache::fetch) to see errors, timeouts
    /// and absences.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only stops this caller from waiting. The load runs on as
    /// its own task, fills the cache, and answers the other callers.
    ///
    /// # Panics
    ///
    /// Only for a failure of its own `init`: when `init` panicked (every caller waiting on that
    /// load panics with its message) or was cut by the hard `load_timeout`. And when polled
    /// outside a Tokio runtime on a miss.
    ///
    /// # Deadlocks
    ///
    /// An `init` that reads the same key through the cache (`get_with`, `try_get_with`,
    /// `fetch`) waits for its own load, which never ends (as with moka's `get_with` and Go's
    /// singleflight); set a `load_timeout` if loaders may recurse. Other keys are fine.
    ///
    /// ```
    /// # use herder::Cache;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache: Cache<&str, String> = Cache::new(100);
    /// let token = cache.get_with("api", || async { "t-1".to_string() }).await;
    /// assert_eq!(token, "t-1");
    /// // Cached: the second init never runs.
    /// assert_eq!(cache.get_with("api", || async { unreachable!() }).await, "t-1");
    /// # }
    /// ```
    pub async fn get_with<F, Fut>(&self, key: K, init: F) -> V
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        // The hit path first: nothing to allocate for a value that is there.
        let mut looked = match self.inner.lookup_present(&key) {
            Lookup::Serve {
                fetched: Fetched {
                    value: Some(value), ..
                },
                refresh: None,
            } => return value,
            looked => Some(looked),
        };
        // `init` runs at most once, in this call's own load; a load it merely joined leaves it.
        let init = Arc::new(std::sync::Mutex::new(Some(init)));
        let read = fetch::Read {
            wait: None,
            present: true,
        };
        loop {
            let mine = init.clone();
            let load = move || {
                let init = mine.lock().unwrap_or_else(|e| e.into_inner()).take();
                async move {
                    let init = init.expect("a load runs its loader once");
                    Ok::<_, Infallible>(Loaded::found(init().await))
                }
            };
            let looked = looked
                .take()
                .unwrap_or_else(|| self.inner.lookup_present(&key));
            let fetched = fetch::fetch_after(&self.inner, key.clone(), looked, load, read);
            let failed = match fetched.await {
                Ok(Fetched {
                    value: Some(value), ..
                }) => return value,
                // A joined load found nothing (a `fetch` elsewhere): load it with `init`.
                Ok(Fetched { value: None, .. }) => None,
                Err(err) => Some(err),
            };
            let own = init.lock().unwrap_or_else(|e| e.into_inner()).is_none();
            match failed {
                Some(err) if own => match err.panic_message() {
                    Some(message) => panic!("{message}"),
                    None => panic!("Cache::get_with: {err}"),
                },
                // The joined load (another call site's) failed or found nothing: try again,
                // which leads a load with `init` unless another one started meanwhile.
                _ => continue,
            }
        }
    }

    /// The value of `key`, loaded with `init` on a miss; an error from `init` reaches every
    /// caller waiting on that load (shared behind an `Arc`) and is not cached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`get_with`](Cache::get_with).
    ///
    /// ```
    /// # use herder::Cache;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache: Cache<u32, u32> = Cache::new(100);
    /// let ok = cache.try_get_with(1, || async { Ok::<_, std::io::Error>(10) }).await;
    /// assert_eq!(ok.unwrap(), 10);
    /// let failed = cache.try_get_with(2, || async { Err(std::io::Error::other("down")) }).await;
    /// assert!(failed.unwrap_err().loader_error().is_some());
    /// assert_eq!(cache.get(&2), None, "errors are not cached");
    /// # }
    /// ```
    pub async fn try_get_with<F, Fut, E>(&self, key: K, init: F) -> Result<V, CacheError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let load = move || async move { init().await.map(Loaded::found) };
        let read = fetch::Read {
            wait: self.inner.config.wait_timeout,
            present: false,
        };
        match fetch::fetch(&self.inner, key, load, read).await? {
            Fetched {
                value: Some(value), ..
            } => Ok(value),
            Fetched { value: None, .. } => Err(CacheError::not_found()),
        }
    }

    /// The full read: the loader says what it found ([`Loaded`]: a value or "not found", with an
    /// optional TTL of its own), and the answer says how it was obtained ([`Status`]: hit, miss,
    /// coalesced, stale, stale on error, ...).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`get_with`](Cache::get_with).
    ///
    /// ```
    /// use herder::Cache;
    /// use herder::cache::{Loaded, Status};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache: Cache<u32, String> = Cache::builder()
    ///     .max_capacity(100)
    ///     .negative_ttl(Duration::from_secs(5))
    ///     .build()
    ///     .unwrap();
    /// let lookup = || async { Ok::<_, std::io::Error>(Loaded::not_found()) };
    /// assert_eq!(cache.fetch(404, lookup).await.unwrap().status, Status::Miss);
    /// let again = cache.fetch(404, lookup).await.unwrap();
    /// assert_eq!((again.value, again.status), (None, Status::NegativeHit));
    /// # }
    /// ```
    ///
    /// [`Status`]: super::Status
    pub async fn fetch<F, Fut, E>(&self, key: K, load: F) -> Result<Fetched<V>, CacheError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Loaded<V>, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let read = fetch::Read {
            wait: self.inner.config.wait_timeout,
            present: false,
        };
        fetch::fetch(&self.inner, key, load, read).await
    }

    /// Many keys at once: hits are answered from the cache, keys already being loaded are joined,
    /// and only the rest go to `load`, in one call. Keys `load` leaves out are absent from the
    /// answer (and cached as absent if a `negative_ttl` is set); keys it adds are ignored.
    ///
    /// Overlapping bulk calls never deadlock: each waits only for loads that run as their own
    /// tasks, never for another call.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the bulk load runs on as its own task and fills the cache.
    ///
    /// ```
    /// # use herder::Cache;
    /// # use std::collections::HashMap;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache: Cache<u32, u32> = Cache::new(100);
    /// cache.insert(1, 10);
    /// let load = |missing: Vec<u32>| async move {
    ///     assert_eq!(missing, vec![2, 3]); // 1 was a hit
    ///     Ok::<_, std::io::Error>(missing.into_iter().map(|k| (k, k * 10)).collect())
    /// };
    /// let values = cache.get_many_with([1, 2, 3], load).await.unwrap();
    /// assert_eq!(values, HashMap::from([(1, 10), (2, 20), (3, 30)]));
    /// # }
    /// ```
    pub async fn get_many_with<I, F, Fut, E>(
        &self,
        keys: I,
        load: F,
    ) -> Result<HashMap<K, V>, CacheError<E>>
    where
        I: IntoIterator<Item = K>,
        F: FnOnce(Vec<K>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<HashMap<K, V>, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let fetched = bulk::get_many(&self.inner, keys, load).await?;
        Ok(fetched
            .into_iter()
            .filter_map(|(key, f)| Some((key, f.value?)))
            .collect())
    }

    /// [`get_many_with`](Cache::get_many_with) that says, key by key, how each answer was
    /// obtained (keys the loader left out come back as `value: None`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`get_many_with`](Cache::get_many_with).
    ///
    /// ```
    /// # use herder::Cache;
    /// # use herder::cache::Status;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache: Cache<u32, u32> = Cache::new(100);
    /// cache.insert(1, 10);
    /// let load = |missing: Vec<u32>| async move {
    ///     Ok::<_, std::io::Error>(missing.into_iter().map(|k| (k, k * 10)).collect())
    /// };
    /// let answers = cache.fetch_many_with([1, 2], load).await.unwrap();
    /// assert_eq!(answers[&1].status, Status::Hit);
    /// assert_eq!(answers[&2].status, Status::Miss);
    /// # }
    /// ```
    pub async fn fetch_many_with<I, F, Fut, E>(
        &self,
        keys: I,
        load: F,
    ) -> Result<HashMap<K, Fetched<V>>, CacheError<E>>
    where
        I: IntoIterator<Item = K>,
        F: FnOnce(Vec<K>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<HashMap<K, V>, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        bulk::get_many(&self.inner, keys, load).await
    }

    /// Stores `value` for the cache's time to live. A load of `key` under way still answers its
    /// callers but will not overwrite this value. With a shared [tier](Builder::tier), the other
    /// instances' copies and the shared one are invalidated.
    ///
    /// ```
    /// # use herder::Cache;
    /// let cache: Cache<u32, &str> = Cache::new(10);
    /// cache.insert(1, "one");
    /// cache.insert(1, "uno");
    /// assert_eq!(cache.get(&1), Some("uno"));
    /// ```
    pub fn insert(&self, key: K, value: V) {
        self.insert_entry(key, Some(value), None);
    }

    /// Stores `value` for `ttl`, whatever the cache's default.
    ///
    /// ```
    /// # use herder::Cache;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let cache: Cache<&str, &str> = Cache::new(10);
    /// cache.insert_with_ttl("session", "token", Duration::from_secs(60));
    /// tokio::time::advance(Duration::from_secs(61)).await;
    /// assert_eq!(cache.get(&"session"), None);
    /// # }
    /// ```
    pub fn insert_with_ttl(&self, key: K, value: V, ttl: Duration) {
        self.insert_entry(key, Some(value), Some(ttl));
    }

    fn insert_entry(&self, key: K, value: Option<V>, ttl: Option<Duration>) {
        self.inner.insert(key, value, ttl);
    }

    /// Removes `key`. A load of `key` under way still answers its callers, but its result is not
    /// stored: the next read loads again. With a shared [tier](Builder::tier), the key is also
    /// dropped from the tier and from every other instance's cache (in the background).
    ///
    /// Every read of `key` that starts after `invalidate` returns gets a value loaded after it
    /// (see "Invalidation is final" in the crate docs).
    ///
    /// ```
    /// # use herder::Cache;
    /// let cache: Cache<String, u32> = Cache::new(10);
    /// cache.insert("a".to_string(), 1);
    /// cache.invalidate("a");
    /// assert_eq!(cache.get("a"), None);
    /// ```
    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.remove(key);
    }

    /// [`invalidate`](Cache::invalidate) that returns the value `key` held, if it was still
    /// served (fresh or stale), as moka's `remove` does.
    ///
    /// ```
    /// # use herder::Cache;
    /// let cache: Cache<String, u32> = Cache::new(10);
    /// cache.insert("a".to_string(), 1);
    /// assert_eq!(cache.remove("a"), Some(1));
    /// assert_eq!(cache.remove("a"), None);
    /// ```
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.inner.invalidate(key)
    }

    /// [`invalidate`](Cache::invalidate) for every key.
    ///
    /// ```
    /// # use herder::Cache;
    /// let cache: Cache<u32, u32> = Cache::new(10);
    /// (0..5).for_each(|k| cache.insert(k, k));
    /// cache.invalidate_all();
    /// assert_eq!(cache.stats().entries, 0);
    /// ```
    pub fn invalidate_all(&self) {
        self.inner.invalidate_all();
    }

    /// `true` if `key` holds a fresh or stale value (not a cached absence); does not count as a
    /// use.
    ///
    /// ```
    /// # use herder::Cache;
    /// let cache: Cache<u32, u32> = Cache::new(10);
    /// cache.insert(1, 10);
    /// assert!(cache.contains_key(&1) && !cache.contains_key(&2));
    /// ```
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entry = match self.inner.storage.peek(key) {
            Some(entry) => entry,
            // See `Inner::reread`.
            None if self.inner.config.tti.is_some() => match self.inner.reread(key, true) {
                Some(entry) => entry,
                None => return false,
            },
            None => return false,
        };
        let now = self.inner.clock.now();
        entry.value().is_some()
            && matches!(
                entry.freshness(now, &self.inner.config),
                Freshness::Fresh { .. } | Freshness::Stale
            )
    }

    /// The entries that hold a value that would be served now (fresh or stale), cloned, in no
    /// particular order; cached absences and expired entries are skipped. Like moka's `iter`,
    /// it does not count as a use, and a write made while it runs may or may not be seen.
    ///
    /// ```
    /// # use herder::Cache;
    /// let cache: Cache<u32, u32> = Cache::new(10);
    /// (1..=3).for_each(|k| cache.insert(k, k * 10));
    /// let mut all: Vec<(u32, u32)> = cache.iter().collect();
    /// all.sort();
    /// assert_eq!(all, [(1, 10), (2, 20), (3, 30)]);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (K, V)> + '_ {
        let inner = &self.inner;
        let now = inner.clock.now();
        inner.storage.iter().filter_map(move |(key, entry)| {
            match entry.freshness(now, &inner.config) {
                Freshness::Fresh { .. } | Freshness::Stale => Some((key, entry.into_value()?)),
                Freshness::Kept | Freshness::Gone => None,
            }
        })
    }

    /// A snapshot of the counters.
    ///
    /// ```
    /// # use herder::Cache;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let cache: Cache<u32, u32> = Cache::new(10);
    /// cache.get_with(1, || async { 10 }).await;
    /// cache.get_with(1, || async { 10 }).await;
    /// let stats = cache.stats();
    /// assert_eq!((stats.misses, stats.hits, stats.loads, stats.entries), (1, 1, 1, 1));
    /// # }
    /// ```
    pub fn stats(&self) -> CacheStats {
        self.inner.snapshot()
    }
}

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// What [`Cache::stats`] reads.
    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            evictions: self.storage.evictions(),
            entries: self.storage.len(),
            weight: self.storage.weight(),
            in_flight: self.flights.len(),
            ..self.stats.snapshot()
        }
    }
}

#[cfg(feature = "metrics")]
impl<K, V> crate::metrics::Source for Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn publish(&self) {
        self.metrics.publish(&self.snapshot());
    }
}

impl<K, V> Clone for Cache<K, V> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
        }
    }
}

impl<K, V> fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.inner.name)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
