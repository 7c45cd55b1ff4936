use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{Codec, FORMAT, Postcard};
use crate::connection::RedisConnection;
use crate::error::Error;
use crate::layout::Layout;
use crate::tier::{RedisTier, Shared};
use crate::worker::Worker;

/// Where a tier's Redis is.
#[derive(Debug)]
pub(crate) enum Source {
    Url(String),
    #[cfg(feature = "cluster")]
    Cluster(Vec<String>),
    Shared(RedisConnection),
}

/// Settings of a [`RedisTier`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) lease_ttl: Duration,
    pub(crate) budget: Duration,
    pub(crate) max_wait: Duration,
    pub(crate) breaker_threshold: u32,
    pub(crate) breaker_cooldown: Duration,
    pub(crate) max_pending: usize,
}

/// Configures a [`RedisTier`]; made by [`RedisTier::builder`] (a URL) or
/// [`RedisTier::builder_with`] (a shared [`RedisConnection`]).
///
/// ```no_run
/// use herder_redis::RedisTier;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), herder_redis::Error> {
/// let tier = RedisTier::<u64, String>::builder("redis://127.0.0.1:6379")
///     .namespace("bookstore:authors")
///     .lease_ttl(Duration::from_secs(2))          // a dead holder's lease is taken over after 2 s
///     .budget(Duration::from_millis(50))          // every Redis call: 50 ms, then fail open
///     .build()?;
/// # Ok(())
/// # }
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<K, V> {
    source: Source,
    namespace: String,
    codec: Arc<dyn Codec<V>>,
    config: Config,
    name: Option<Arc<str>>,
    _keys: PhantomData<fn(K)>,
}

impl<K, V> Builder<K, V>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    pub(crate) fn new(source: Source) -> Self {
        Builder {
            source,
            namespace: "herder".to_owned(),
            codec: Arc::new(Postcard),
            config: Config {
                lease_ttl: Duration::from_secs(5),
                budget: Duration::from_millis(100),
                max_wait: Duration::from_secs(30),
                breaker_threshold: 3,
                breaker_cooldown: Duration::from_secs(1),
                max_pending: 10_000,
            },
            name: None,
            _keys: PhantomData,
        }
    }
}

impl<K, V> Builder<K, V>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The name of this tier in its metrics (the label `name`, as in
    /// `herder_redis_l2_hits_total{name="authors"}`; give the cache in front the same name)
    /// and in its `Debug` output. Without the `metrics` feature it is only shown by `Debug`.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), herder_redis::Error> {
    /// let tier = herder_redis::RedisTier::<u64, String>::builder("redis://127.0.0.1:6379")
    ///     .name("authors")
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The prefix of every Redis key and channel of this cache (default `"herder"`). Caches of
    /// different value types must use different namespaces. The envelope's format version is
    /// appended, so a new format never reads an old one.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How values become bytes (default [`Postcard`]).
    pub fn codec(mut self, codec: impl Codec<V>) -> Self {
        self.codec = Arc::new(codec);
        self
    }

    /// How long a lease lasts unless its holder extends it (default 5 s). The holder's watchdog
    /// extends it every third of this while the load runs, so a long load keeps its lease; a
    /// holder that dies loses it after this long, and another instance takes over. From 30 ms
    /// to 24 h: `build` refuses others (a dead holder's lease must end).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.config.lease_ttl = ttl;
        self
    }

    /// The time budget of every Redis call (default 100 ms): past it the call counts as failed
    /// and the cache goes on without Redis.
    pub fn budget(mut self, budget: Duration) -> Self {
        self.config.budget = budget;
        self
    }

    /// How long an instance waits for another instance's load of a key before loading it
    /// itself (default 30 s; the cache's own wait and load timeouts apply too).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.config.max_wait = wait;
        self
    }

    /// After `failures` failed calls in a row, skip Redis for `cooldown` (default 3 and 1 s).
    pub fn circuit_breaker(mut self, failures: u32, cooldown: Duration) -> Self {
        self.config.breaker_threshold = failures;
        self.config.breaker_cooldown = cooldown;
        self
    }

    /// How many invalidated keys this instance keeps while Redis cannot be reached (default
    /// 10,000). Each is replayed when Redis answers again, and until then this instance does not
    /// read the key from Redis. Past the bound the pending keys are folded into one
    /// `invalidate_all` of the namespace (Redis cannot be told which keys to drop without
    /// keeping them): correct, but every instance then reloads every key. Must be at least 1.
    pub fn max_pending_invalidations(mut self, keys: usize) -> Self {
        self.config.max_pending = keys;
        self
    }

    /// Builds the tier, checks that Redis answers a `PING`, and says why not: a server that
    /// cannot be reached, refused credentials, no answer within the budget (or 1 s, if longer).
    /// For start-up, where a misconfiguration should stop the process; [`build`](Self::build)
    /// runs without Redis instead, until it is back.
    ///
    /// ```no_run
    /// use herder_redis::RedisTier;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// match RedisTier::<u64, String>::builder("redis://:wrong@127.0.0.1:6379").connect().await {
    ///     Ok(_tier) => {}
    ///     Err(error) if error.is_auth() => eprintln!("check REDIS_PASSWORD: {error}"),
    ///     Err(error) => eprintln!("{error}"),
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// What [`build`](Self::build) reports, and why Redis did not answer
    /// ([`Error::is_connect`], [`Error::is_auth`], [`Error::is_timeout`]).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled call drops the tier it built.
    pub async fn connect(self) -> Result<RedisTier<K, V>, Error> {
        let tier = self.build()?;
        let within = tier
            .shared
            .config
            .budget
            .max(std::time::Duration::from_secs(1));
        tier.shared.connection.ping_within(within).await?;
        Ok(tier)
    }

    /// Builds the tier and spawns its background worker (pub/sub and invalidations) on the
    /// current Tokio runtime. Connects lazily: a Redis that is down at start-up only means the
    /// cache runs without it until it is back (see [`connect`](Self::connect) to fail instead).
    ///
    /// # Errors
    ///
    /// An invalid URL or setting, or no Tokio runtime to spawn the worker on.
    pub fn build(self) -> Result<RedisTier<K, V>, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::no_runtime())?;
        let (tier, worker) = self.build_with_worker()?;
        runtime.spawn(worker.run());
        Ok(tier)
    }

    /// Builds the tier and hands back its background worker, for the caller to run (on a runtime
    /// of its choice). Until the worker runs, no invalidation is sent, and, unless the tier is
    /// on a shared [`RedisConnection`] (whose subscriber runs on its own), none reaches this
    /// instance.
    ///
    /// # Errors
    ///
    /// An invalid URL or setting.
    pub fn build_with_worker(mut self) -> Result<(RedisTier<K, V>, Worker<K, V>), Error> {
        // The limits handed to tokio's timer saturate at about 30 years ("never"): tokio's timer
        // overflows on a deadline within a millisecond of the largest instant.
        const NEVER: Duration = Duration::from_secs(30 * 365 * 86_400);
        self.config.budget = self.config.budget.min(NEVER);
        self.config.max_wait = self.config.max_wait.min(NEVER);
        let Config {
            lease_ttl,
            budget,
            max_wait,
            breaker_threshold,
            ..
        } = self.config;
        if lease_ttl < Duration::from_millis(30) {
            return Err(Error::setting("lease_ttl must be at least 30 ms"));
        }
        if lease_ttl > Duration::from_secs(24 * 3600) {
            return Err(Error::setting("lease_ttl must be at most 24 h"));
        }
        if budget.is_zero() || max_wait.is_zero() {
            return Err(Error::setting("budget and max_wait must be positive"));
        }
        if self.config.max_pending == 0 {
            return Err(Error::setting(
                "max_pending_invalidations must be at least 1",
            ));
        }
        if breaker_threshold == 0 {
            return Err(Error::setting("circuit_breaker needs at least 1 failure"));
        }
        let connect = budget.max(Duration::from_millis(250));
        let (connection, subscriber) = match self.source {
            Source::Url(url) => {
                let client = redis::Client::open(url.as_str()).map_err(Error::redis)?;
                let (connection, subscriber) =
                    RedisConnection::single(client, connect, Some(budget))?;
                (connection, Some(subscriber))
            }
            #[cfg(feature = "cluster")]
            Source::Cluster(nodes) => {
                let (connection, subscriber) = RedisConnection::cluster(&nodes, connect)?;
                (connection, Some(subscriber))
            }
            Source::Shared(connection) => (connection, None),
        };
        if connection.is_cluster() && self.namespace.contains(['{', '}']) {
            return Err(Error::setting(
                "a namespace on a cluster cannot contain `{` or `}` (hash tags)",
            ));
        }
        let layout = Layout::new(
            format!("{}:h{FORMAT}:", self.namespace),
            connection.is_cluster(),
        );
        let shared = Shared::new(connection, layout, self.codec, self.config, self.name);
        #[cfg(feature = "metrics")]
        herder::metrics::register(Arc::downgrade(&shared) as _);
        let worker = Worker::new(&shared, subscriber);
        Ok((RedisTier { shared }, worker))
    }
}

impl<K, V> fmt::Debug for Builder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("namespace", &self.namespace)
            .field("config", &self.config)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
