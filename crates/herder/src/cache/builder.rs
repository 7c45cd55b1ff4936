use super::listener::{Listener, RemovalCause};
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use super::config::{Config, EarlyRefresh, FailSafe};
use super::handle::Cache;
use super::storage::Storage;
use super::tier::Tier;
use crate::error::BuildError;

/// Configures a [`Cache`]; made by [`Cache::builder`].
///
/// ```
/// use herder::Cache;
/// use herder::cache::EarlyRefresh;
/// use std::time::Duration;
///
/// let cache: Cache<String, Vec<u8>> = Cache::builder()
///     .max_capacity(64 * 1024 * 1024)                       // 64 MiB...
///     .weigher(|key: &String, value: &Vec<u8>| (key.len() + value.len()) as u64) // ...of bytes
///     .time_to_live(Duration::from_secs(60))
///     .stale_while_revalidate(Duration::from_secs(30))      // serve stale, refresh behind
///     .fail_safe(Duration::from_secs(3600), Duration::from_secs(10))
///     .negative_ttl(Duration::from_secs(5))                 // cache "not found" briefly
///     .early_refresh(EarlyRefresh::Probabilistic { beta: 1.0 })
///     .wait_timeout(Duration::from_millis(250))
///     .load_timeout(Duration::from_secs(5))
///     .build()
///     .expect("valid settings");
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<K, V> {
    capacity: Option<u64>,
    estimated_items: Option<usize>,
    weigher: Option<super::storage::Weigher<K, V>>,
    config: Config,
    tier: Option<Arc<dyn Tier<K, V>>>,
    listener: Option<Listener<K, V>>,
    name: Option<Arc<str>>,
}

impl<K, V> Builder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(super) fn new() -> Self {
        Builder {
            capacity: None,
            estimated_items: None,
            weigher: None,
            config: Config::default(),
            tier: None,
            listener: None,
            name: None,
        }
    }

    /// The name of this cache in its metrics (the label `name`, as in
    /// `herder_cache_hits_total{name="authors"}`) and in its `Debug` output. Without the
    /// `metrics` feature it is only shown by `Debug`.
    ///
    /// ```
    /// let cache: herder::Cache<u64, String> =
    ///     herder::Cache::builder().name("authors").max_capacity(1_000).build().unwrap();
    /// assert!(format!("{cache:?}").contains("authors"));
    /// ```
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The most the cache holds: entries, or total weight with a [`weigher`](Builder::weigher).
    /// Required, at least 1.
    pub fn max_capacity(mut self, capacity: u64) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Weighs entries (in any unit: bytes, rows...) so that `max_capacity` bounds the total
    /// weight. Every entry weighs at least 1. An entry heavier than 97 % of the capacity
    /// (quick_cache's share for entries read more than once) is not kept, and neither is one whose
    /// weigher panics (the read that loaded it still gets its value). A weighted cache is one
    /// shard, so that any entry up to the capacity fits and the total never exceeds it; a
    /// capacity above 2^62 counts as 2^62.
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> u64 + Send + Sync + 'static) -> Self {
        self.weigher = Some(Arc::new(weigher));
        self
    }

    /// How many entries to size the tables for (default: `max_capacity` without a weigher, 1024
    /// with one).
    pub fn estimated_items(mut self, items: usize) -> Self {
        self.estimated_items = Some(items);
        self
    }

    /// How long a loaded or inserted value stays fresh (default: forever, until evicted). A
    /// loader can set its own per entry ([`Loaded::ttl`](super::Loaded::ttl)).
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.config.ttl = Some(ttl);
        self
    }

    /// How long an entry may go unread before it expires (default: no limit), as moka's
    /// `time_to_idle`; with a [`time_to_live`](Builder::time_to_live) too, the earlier of the two
    /// ends it. A read pushes the idle deadline back when it has moved by more than a sixteenth
    /// of `idle` (rewriting the entry at every read of a hot key would cost more than the read),
    /// so an entry may expire up to `idle / 16` early (plus the clock's resolution, see
    /// [`clock_resolution`](Builder::clock_resolution)). Cannot be combined with
    /// [`EarlyRefresh::Fraction`].
    ///
    /// ```
    /// # use herder::Cache;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let sessions: Cache<&str, u32> = Cache::builder()
    ///     .max_capacity(100)
    ///     .time_to_idle(Duration::from_secs(60))
    ///     .build()
    ///     .unwrap();
    /// sessions.insert("alice", 1);
    /// tokio::time::advance(Duration::from_secs(50)).await;
    /// assert_eq!(sessions.get("alice"), Some(1)); // read: idle again from here
    /// tokio::time::advance(Duration::from_secs(50)).await;
    /// assert_eq!(sessions.get("alice"), Some(1));
    /// tokio::time::advance(Duration::from_secs(61)).await;
    /// assert_eq!(sessions.get("alice"), None); // unread for 61 s
    /// # }
    /// ```
    pub fn time_to_idle(mut self, idle: Duration) -> Self {
        self.config.tti = Some(idle);
        self
    }

    /// How long a "not found" answer ([`Loaded::not_found`](super::Loaded::not_found)) is cached
    /// (default: not at all).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.config.negative_ttl = Some(ttl);
        self
    }

    /// After its TTL, an entry is served stale for `window` while one background refresh runs
    /// (default: no stale window).
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.config.stale_window = window;
        self
    }

    /// When a load fails (error, panic or timeout) and the key's last value is at most
    /// `max_stale` past its TTL, serve that value (`StaleOnError`) and keep serving it for
    /// `throttle` without asking the backend again (default: off).
    pub fn fail_safe(mut self, max_stale: Duration, throttle: Duration) -> Self {
        self.config.fail_safe = Some(FailSafe {
            max_stale,
            throttle,
        });
        self
    }

    /// Refresh fresh entries ahead of expiry (default: [`EarlyRefresh::Off`]).
    pub fn early_refresh(mut self, early: EarlyRefresh) -> Self {
        self.config.early_refresh = early;
        self
    }

    /// The longest a caller waits for a load (`try_get_with`, `fetch`, `get_many_with`). When
    /// it runs out, the caller gets the stale value if fail-safe kept one, or a timeout error;
    /// the load is never duplicated and goes on to fill the cache.
    ///
    /// Every duration this builder takes saturates: a TTL too long to add to the current time
    /// (`Duration::MAX`) means no expiry, a timeout of 30 years or more means none, never an
    /// overflow later.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.config.wait_timeout = Some(timeout);
        self
    }

    /// A hard limit on a load: past it, the load is dropped, every waiter gets the stale value
    /// (fail-safe) or a timeout error, and the next read loads again. A hung backend cannot hold
    /// a key forever.
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.config.load_timeout = Some(timeout);
        self
    }

    /// A soft limit on a load: past it, the waiters are answered (stale value or timeout error)
    /// but the load goes on and still fills the cache; callers arriving meanwhile get the same
    /// answer at once instead of starting another load. Pair it with a longer `load_timeout`.
    pub fn soft_load_timeout(mut self, timeout: Duration) -> Self {
        self.config.soft_load_timeout = Some(timeout);
        self
    }

    /// How finely a hit tells the time (default: 1 ms). Reading the OS clock costs more than a
    /// hit on an entry that expires (see `docs/BENCHMARKS.md`), so while the cache is read on a
    /// multi-thread Tokio runtime, a ticker task on that runtime stores the time every
    /// `resolution` and hits load it: an entry may then be served up to `resolution` past its
    /// deadline (never before it). The ticker starts with the first such hit, stops after a
    /// second without one (the next hit starts it again), when the cache is dropped, or when its
    /// runtime shuts down; it keeps time as well as the runtime polls its tasks (a runtime whose
    /// every worker is blocked delays it, as it delays its own timers).
    ///
    /// Outside a runtime, on a current-thread runtime, and with `Duration::ZERO`, the clock is
    /// read at every use, exactly. A paused Tokio clock (`start_paused`, `time::pause`, which
    /// only a current-thread runtime allows) is therefore followed exactly: tests that
    /// `advance` it see each entry expire at its deadline.
    ///
    /// `build` fails when `resolution` is longer than 1 s.
    ///
    /// ```
    /// # use herder::Cache;
    /// # use std::time::Duration;
    /// // Every hit reads the OS clock (slower hits, exact expiry).
    /// let exact: Cache<u64, String> = Cache::builder()
    ///     .max_capacity(1_000)
    ///     .time_to_live(Duration::from_millis(50))
    ///     .clock_resolution(Duration::ZERO)
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn clock_resolution(mut self, resolution: Duration) -> Self {
        self.config.clock_resolution = resolution;
        self
    }

    /// A shared second level (L2) for a fleet of instances, such as `herder-redis`'s: L1 misses
    /// read it before loading, one instance loads a cold key while the others wait for it, loaded
    /// values fill it, and invalidations reach every instance. A tier that is slow or down is
    /// skipped (fail-open).
    ///
    /// Single-key reads (`get_with`, `try_get_with`, `fetch`, refreshes) go through the tier;
    /// bulk reads and DataLoader batches use L1 only.
    pub fn tier(mut self, tier: Arc<dyn Tier<K, V>>) -> Self {
        self.tier = Some(tier);
        self
    }

    /// Calls `listener` with each value that leaves the cache and why ([`RemovalCause`]):
    /// expired, removed explicitly (an invalidation, local or from another instance), replaced,
    /// or evicted for size; as moka's `eviction_listener`. Cached absences are not reported.
    ///
    /// The listener runs on the thread that made the change, after the cache has released its
    /// locks (so it may call the cache), and should be quick. Expired entries are reported
    /// when a read finds them or when they are replaced, not on a timer. A panic in the
    /// listener is caught and ignored. Under capacity pressure, a value replaced at the moment
    /// it is evicted may be reported twice (as replaced and as evicted).
    ///
    /// ```
    /// use herder::Cache;
    /// use herder::cache::RemovalCause;
    /// use std::sync::{Arc, Mutex};
    ///
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let cache: Cache<u32, &str> = Cache::builder()
    ///     .max_capacity(100)
    ///     .eviction_listener(move |key, value, cause| log.lock().unwrap().push((key, value, cause)))
    ///     .build()
    ///     .unwrap();
    /// cache.insert(1, "one");
    /// cache.insert(1, "uno");
    /// cache.invalidate(&1);
    /// assert_eq!(
    ///     *seen.lock().unwrap(),
    ///     [(1, "one", RemovalCause::Replaced), (1, "uno", RemovalCause::Explicit)]
    /// );
    /// ```
    pub fn eviction_listener(
        mut self,
        listener: impl Fn(K, V, RemovalCause) + Send + Sync + 'static,
    ) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Builds the cache, or says which setting is invalid.
    pub fn build(self) -> Result<Cache<K, V>, BuildError> {
        let capacity = match self.capacity {
            None => return Err(BuildError::new("Cache", "max_capacity must be set")),
            Some(0) => return Err(BuildError::new("Cache", "max_capacity must be at least 1")),
            Some(capacity) => capacity,
        };
        if let Some(reason) = self.config.invalid() {
            return Err(BuildError::new("Cache", reason));
        }
        let mut config = self.config;
        for limit in [
            &mut config.wait_timeout,
            &mut config.load_timeout,
            &mut config.soft_load_timeout,
        ] {
            *limit = limit.and_then(crate::time::finite);
        }
        // Tables are sized for this many entries up front, and grow past it: a huge capacity
        // must not allocate a huge table.
        let estimated = self.estimated_items.unwrap_or(match self.weigher {
            Some(_) => 1024,
            None => usize::try_from(capacity).unwrap_or(usize::MAX),
        });
        let estimated = estimated.min(MAX_PRESIZED);
        let record = self.listener.is_some();
        let storage = Storage::new(capacity, estimated.max(1), self.weigher, record);
        Ok(Cache::from_parts(
            storage,
            config,
            self.tier,
            self.listener,
            self.name,
        ))
    }
}

/// The most entries the storage is sized for at build time (it grows beyond).
const MAX_PRESIZED: usize = 1 << 20;

impl<K, V> fmt::Debug for Builder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("capacity", &self.capacity)
            .field("weigher", &self.weigher.is_some())
            .field("config", &self.config)
            .field("tier", &self.tier.is_some())
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
