use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use herder::cache::{Acquired, Acquisition, Loaded, LocalCache, Tier, TierFuture};
use redis::{FromRedisValue, Script, ScriptInvocation, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};

use crate::breaker::Breaker;
use crate::builder::{Builder, Config, Source};
use crate::codec::Codec;
use crate::connection::RedisConnection;
use crate::error::Error;
use crate::events::{self, Kind};
use crate::layout::Layout;
use crate::nodes::{Nodes, Route};
use crate::pending::{Added, Pending};
use crate::stats::{Counters, RedisStats, bump};

/// A Redis tier under a [`herder::Cache`]: give it to
/// [`Builder::tier`](herder::cache::Builder::tier) on every instance of a fleet.
///
/// * **Shared L2.** An L1 miss reads Redis before loading; loaded values are written with their
///   TTL plus the stale window, so that the fleet serves them stale while one instance refreshes.
/// * **Leases.** One atomic script answers: the value, or a lease (`SET NX PX` with a random
///   token) for this instance to load the key, or "wait". The holder's watchdog extends the lease
///   while it loads; its fill only lands while the token matches and no invalidation came in
///   between; waiters wake on a pub/sub message and also poll with backoff; a dead holder's lease
///   expires and is taken over. N instances × M callers on a cold key: one backend call.
/// * **Batches.** A DataLoader batch over the cache (or a `get_many_with`) asks for all its keys
///   in one script (one per master on a cluster), loads the keys it leased with one loader
///   call, fills them with one script, and waits for the keys other instances hold together:
///   N instances batching the same cold keys load each key once.
/// * **Invalidation backplane.** [`Cache::invalidate`](herder::Cache::invalidate) deletes the
///   value and the lease in Redis, bumps the key's epoch and publishes; every other instance
///   evicts its L1 copy. After a lost pub/sub connection an instance flushes its L1 and
///   resubscribes (pub/sub is at most once).
/// * **Fail-open.** Every call has a time budget; failures open a circuit breaker; a slow, down or
///   restarting Redis means each instance loads on its own, never a failed request.
/// * **One tier per cache.** A tier evicts from the L1 of the one cache it was given to first,
///   and tags what it publishes as that instance's: a second cache built on the same tier would
///   hear no invalidation, neither the fleet's nor the first cache's. Build one tier per cache
///   (with [`builder_with`](RedisTier::builder_with) they share one connection); a second
///   attach is ignored (and logged with the `tracing` feature).
///
/// ```no_run
/// use herder::Cache;
/// use herder_redis::RedisTier;
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tier = RedisTier::<u64, String>::builder("redis://127.0.0.1:6379")
///     .namespace("bookstore:authors")
///     .build()?;
/// let authors: Cache<u64, String> = Cache::builder()
///     .max_capacity(10_000)
///     .time_to_live(Duration::from_secs(60))
///     .tier(Arc::new(tier.clone()))
///     .build()?;
/// let name = authors.get_with(7, || async { "Ursula K. Le Guin".to_string() }).await;
/// # Ok(())
/// # }
/// ```
pub struct RedisTier<K, V> {
    pub(crate) shared: Arc<Shared<K, V>>,
}

pub(crate) struct Shared<K, V> {
    pub(crate) connection: RedisConnection,
    /// Where the namespace's keys live.
    pub(crate) layout: Layout,
    /// `{namespace}:h{FORMAT}:events`
    pub(crate) channel: String,
    /// Tags this instance's messages, so that it does not evict what it just wrote.
    pub(crate) instance: u64,
    pub(crate) codec: Arc<dyn Codec<V>>,
    pub(crate) config: Config,
    pub(crate) breaker: Breaker,
    pub(crate) stats: Counters,
    pub(crate) local: OnceLock<LocalCache<K, V>>,
    /// Keys this instance waits for, woken by pub/sub messages.
    pub(crate) waiters: Mutex<HashMap<Vec<u8>, Arc<Notify>>>,
    /// Keys whose lease this instance released and Redis may not have dropped yet: the
    /// release's batch write says when it is sent (see `group.rs`). Asking for such a key
    /// again waits for it, or the ask would be told to wait for this instance's own old lease.
    pub(crate) releasing: Mutex<HashMap<Vec<u8>, watch::Receiver<bool>>>,
    /// Invalidations Redis has not applied yet (see `pending.rs`).
    pub(crate) pending: Mutex<Pending>,
    /// Which cluster node serves which slot, for batches (see `nodes.rs`).
    pub(crate) nodes: Nodes,
    /// Wakes the worker when an invalidation is added, or when the tier is dropped.
    pub(crate) pending_added: Arc<Notify>,
    /// Set by whatever may put a value in L1 (a read through the tier, an insert) before the
    /// first subscription; that subscription then flushes L1 (see `Listener::subscribed`).
    pub(crate) exposed: AtomicBool,
    pub(crate) name: Option<Arc<str>>,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: crate::metrics::RedisMetrics,
    _keys: PhantomData<fn(K)>,
}

impl<K, V> Drop for Shared<K, V> {
    fn drop(&mut self) {
        // The worker holds no strong reference while it waits: wake it so that it ends.
        self.pending_added.notify_one();
        self.connection.forget();
    }
}

/// What ACQUIRE_MANY answered for one key.
pub(crate) enum Reply {
    Fresh(Vec<u8>, u64),
    /// The lease: epoch, generation, and whether an unreadable stored value was dropped.
    Lease(String, String, bool),
    Stale(Vec<u8>),
    Wait(u64),
}

impl<K, V> RedisTier<K, V>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// A builder for the tier on the Redis at `url` (`redis://[:password@]host:port/db`, or
    /// `rediss://...` with the `tls-rustls` feature), with connections of its own. Tiers of one
    /// process should share theirs: see [`builder_with`](Self::builder_with).
    pub fn builder(url: &str) -> Builder<K, V> {
        Builder::new(Source::Url(url.to_owned()))
    }

    /// A builder for the tier on a shared [`RedisConnection`]: every tier built on it uses its
    /// one command connection and its one pub/sub connection.
    ///
    /// ```no_run
    /// use herder_redis::{RedisConnection, RedisTier};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), herder_redis::Error> {
    /// let redis = RedisConnection::open("redis://127.0.0.1:6379")?;
    /// let ratings = RedisTier::<u64, f32>::builder_with(&redis).namespace("ratings").build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder_with(connection: &RedisConnection) -> Builder<K, V> {
        Builder::new(Source::Shared(connection.clone()))
    }

    /// A builder for the tier on the Redis Cluster reached through `nodes` (seed URLs), with
    /// connections of its own; [`RedisConnection::open_cluster`] makes a shared one.
    ///
    /// ```no_run
    /// use herder_redis::RedisTier;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), herder_redis::Error> {
    /// let tier = RedisTier::<u64, String>::builder_cluster(&[
    ///     "redis://10.0.0.1:6379",
    ///     "redis://10.0.0.2:6379",
    /// ])
    /// .namespace("authors")
    /// .build()?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "cluster")]
    pub fn builder_cluster<S: AsRef<str>>(nodes: &[S]) -> Builder<K, V> {
        Builder::new(Source::Cluster(
            nodes.iter().map(|node| node.as_ref().to_owned()).collect(),
        ))
    }
}

impl<K, V> RedisTier<K, V> {
    /// A snapshot of the counters.
    pub fn stats(&self) -> RedisStats {
        RedisStats {
            invalidations_pending: lock(&self.shared.pending).len() as u64,
            ..self.shared.stats.snapshot()
        }
    }

    /// `Ok` if Redis answers a `PING` within the time budget, otherwise why not: a readiness
    /// check for start-up logs and health endpoints. The tier does not need it (it fails open
    /// either way).
    ///
    /// ```no_run
    /// # use herder_redis::RedisTier;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), herder_redis::Error> {
    /// let tier = RedisTier::<u64, String>::builder("redis://127.0.0.1:6379").build()?;
    /// if let Err(error) = tier.ping().await {
    ///     eprintln!("running without redis for now: {error}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// Why Redis did not answer: [`Error::is_connect`], [`Error::is_auth`],
    /// [`Error::is_timeout`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn ping(&self) -> Result<(), Error> {
        self.shared
            .connection
            .ping_within(self.shared.config.budget)
            .await
    }

    /// The connection this tier uses (shared with other tiers, or its own).
    pub fn connection(&self) -> &RedisConnection {
        &self.shared.connection
    }
}

impl<K, V> Clone for RedisTier<K, V> {
    fn clone(&self) -> Self {
        RedisTier {
            shared: self.shared.clone(),
        }
    }
}

impl<K, V> fmt::Debug for RedisTier<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTier")
            .field("name", &self.shared.name)
            .field("prefix", &self.shared.layout.prefix())
            .field("instance", &self.shared.instance)
            .finish_non_exhaustive()
    }
}

impl<K, V> Shared<K, V> {
    pub(crate) fn new(
        connection: RedisConnection,
        layout: Layout,
        codec: Arc<dyn Codec<V>>,
        config: Config,
        name: Option<Arc<str>>,
    ) -> Arc<Self> {
        Arc::new(Shared {
            connection,
            channel: format!("{}events", layout.prefix()),
            layout,
            instance: fastrand::u64(..),
            codec,
            breaker: Breaker::new(config.breaker_threshold, config.breaker_cooldown),
            config,
            stats: Counters::default(),
            local: OnceLock::new(),
            waiters: Mutex::new(HashMap::new()),
            releasing: Mutex::new(HashMap::new()),
            pending: Mutex::new(Pending::new(config.max_pending)),
            nodes: Nodes::default(),
            pending_added: Arc::new(Notify::new()),
            exposed: AtomicBool::new(false),
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::RedisMetrics::new(name.as_ref()),
            name,
            _keys: PhantomData,
        })
    }

    /// Keeps an invalidation until Redis applies it, and wakes the worker.
    pub(crate) fn add_pending(&self, key: Option<Vec<u8>>) {
        let added = {
            let mut pending = lock(&self.pending);
            match key {
                Some(key) => pending.add_key(key),
                None => {
                    pending.add_all();
                    Added::Key
                }
            }
        };
        if let Added::Collapsed(keys) = added {
            self.stats
                .invalidations_collapsed
                .fetch_add(keys as u64, std::sync::atomic::Ordering::Relaxed);
            #[cfg(feature = "tracing")]
            tracing::warn!(prefix = %self.layout.prefix(), keys, "redis tier: too many pending invalidations, invalidating every key instead");
        }
        self.pending_added.notify_one();
    }

    /// Runs a script within the time budget, through the circuit breaker.
    pub(crate) async fn run<T: FromRedisValue>(&self, script: ScriptInvocation<'_>) -> Option<T> {
        if !self.breaker.allows() {
            bump(&self.stats.skipped);
            return None;
        }
        self.run_unguarded(script).await
    }

    /// Runs a script within the time budget even while the circuit is open (background work,
    /// which then also probes whether Redis is back: a success closes the circuit).
    pub(crate) async fn run_unguarded<T: FromRedisValue>(
        &self,
        script: ScriptInvocation<'_>,
    ) -> Option<T> {
        let invoke = self.connection.inner.commands.invoke(&script);
        match tokio::time::timeout(self.config.budget, invoke).await {
            Ok(Ok(value)) => {
                self.breaker.succeeded();
                Some(value)
            }
            Ok(Err(error))
                if error.is_connection_refusal()
                    || error.is_connection_dropped()
                    || error.kind() == redis::ErrorKind::AuthenticationFailed =>
            {
                // Redis is down or refuses us: waiting out `threshold` misses would cost each
                // its time, and a wrong password does not fix itself.
                bump(&self.stats.errors);
                if self.breaker.tripped() {
                    bump(&self.stats.circuit_opens);
                    #[cfg(feature = "tracing")]
                    tracing::warn!(prefix = %self.layout.prefix(), %error, "redis tier: redis is down, going on without it");
                }
                None
            }
            Ok(Err(_)) | Err(_) => {
                bump(&self.stats.errors);
                if self.breaker.failed() {
                    bump(&self.stats.circuit_opens);
                    #[cfg(feature = "tracing")]
                    tracing::warn!(prefix = %self.layout.prefix(), "redis tier: circuit opened, going on without redis");
                }
                None
            }
        }
    }

    /// How to group a batch's Redis keys into scripts: on a cluster, by the node that serves
    /// them (when the slot map is known), else by hash tag; on a single server, all together.
    pub(crate) async fn routes(&self) -> Option<Arc<Vec<(u16, u16, usize)>>> {
        if !self.connection.is_cluster() {
            return None;
        }
        self.nodes.map(&self.connection.inner.commands).await
    }

    /// The script group of a key whose generation key is `generation` (see [`Shared::routes`]).
    pub(crate) fn route(&self, map: Option<&[(u16, u16, usize)]>, generation: &[u8]) -> Route {
        if self.connection.is_cluster() {
            Nodes::route(map, generation)
        } else {
            Route::Node(0)
        }
    }

    /// Whether a batch's scripts may span hash slots (on a cluster, with a slot map), and the
    /// flavour of a script to run: `declared` (its keys declared, one slot per call) or
    /// `cross` (flagged `allow-cross-slot-keys`).
    pub(crate) fn script_for<'s>(
        &self,
        map: Option<&[(u16, u16, usize)]>,
        declared: &'s Script,
        cross: &'s Script,
    ) -> (bool, &'s Script) {
        if self.connection.is_cluster() && map.is_some() {
            (true, cross)
        } else {
            (false, declared)
        }
    }

    /// Notes that L1 may get a value now: if this instance has never subscribed, invalidations
    /// published from now on may be missed until it does, so its first subscription flushes L1.
    /// Called before the value is read from Redis (or written): a subscription that completes
    /// first has seen the mark, or was in place before the read.
    pub(crate) fn expose(&self) {
        if self.stats.subscriptions.load(SeqCst) == 0 && !self.exposed.load(SeqCst) {
            self.exposed.store(true, SeqCst);
        }
    }

    pub(crate) fn message(&self, kind: Kind, key: &[u8]) -> Vec<u8> {
        events::encode(kind, self.instance, key)
    }

    /// The notifier of `key`'s waiters; removed again by [`WaitGuard`].
    pub(crate) fn waiter(self: &Arc<Self>, key: &[u8]) -> WaitGuard<K, V> {
        let notify = lock(&self.waiters).entry(key.to_vec()).or_default().clone();
        WaitGuard {
            shared: self.clone(),
            key: key.to_vec(),
            notify,
        }
    }

    /// Wakes the instance's waiters of `key` (all waiters if `key` is `None`).
    pub(crate) fn wake(&self, key: Option<&[u8]>) {
        let waiters = lock(&self.waiters);
        match key {
            Some(key) => {
                if let Some(notify) = waiters.get(key) {
                    notify.notify_waiters();
                }
            }
            None => waiters.values().for_each(|notify| notify.notify_waiters()),
        }
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes a key's notifier when its last waiter leaves.
pub(crate) struct WaitGuard<K, V> {
    shared: Arc<Shared<K, V>>,
    key: Vec<u8>,
    pub(crate) notify: Arc<Notify>,
}

impl<K, V> Drop for WaitGuard<K, V> {
    fn drop(&mut self) {
        let mut waiters = lock(&self.shared.waiters);
        // The map's reference and ours: nobody else waits.
        if Arc::strong_count(&self.notify) == 2 {
            waiters.remove(&self.key);
        }
    }
}

/// The `count` answers of an ACQUIRE_MANY made with `token`, if `value` is that call's reply:
/// the answers, then the token (see the script).
pub(crate) fn answers_of(value: Value, token: &str, count: usize) -> Option<Vec<Value>> {
    let Value::Array(mut items) = value else {
        return None;
    };
    if items.len() != count + 1 {
        return None;
    }
    let echoed = items.pop().and_then(|t| String::from_redis_value(t).ok())?;
    (echoed == token).then_some(items)
}

pub(crate) fn parse(value: Value) -> Option<Reply> {
    let Value::Array(items) = value else {
        return None;
    };
    let mut items = items.into_iter();
    let code = i64::from_redis_value(items.next()?).ok()?;
    let mut next = || items.next();
    match code {
        1 => Some(Reply::Fresh(
            Vec::<u8>::from_redis_value(next()?).ok()?,
            u64::from_redis_value(next()?).ok()?,
        )),
        2 => Some(Reply::Lease(
            String::from_redis_value(next()?).ok()?,
            String::from_redis_value(next()?).ok()?,
            next().and_then(|v| i64::from_redis_value(v).ok()) == Some(1),
        )),
        3 => Some(Reply::Stale(Vec::<u8>::from_redis_value(next()?).ok()?)),
        4 => Some(Reply::Wait(
            u64::try_from(i64::from_redis_value(next()?).ok()?).unwrap_or(0),
        )),
        _ => None,
    }
}

impl<K, V> Shared<K, V>
where
    K: Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The acquire protocol (see [`RedisTier`]): a batch of one key, so that both paths run
    /// one protocol (`many.rs`): the answer of its first round that has one.
    async fn acquire(self: &Arc<Self>, key: &K) -> Acquired<V> {
        let mut round = self.acquire_many(std::slice::from_ref(key)).await;
        loop {
            if let Some((_, answer)) = round.answers.pop() {
                return answer;
            }
            match round.later {
                Some(later) => round = later.await,
                None => return Acquired::Unavailable,
            }
        }
    }
}

pub(crate) fn loaded<V>(value: Option<V>, ttl: Duration) -> Loaded<V> {
    match value {
        Some(value) => Loaded::found(value).ttl(ttl),
        None => Loaded::not_found().ttl(ttl),
    }
}

impl<K, V> Tier<K, V> for RedisTier<K, V>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn attach(&self, local: LocalCache<K, V>) {
        // A tier serves one cache; a second attach keeps the first.
        if self.shared.local.set(local).is_err() {
            #[cfg(feature = "tracing")]
            tracing::error!(prefix = %self.shared.layout.prefix(), "redis tier: given to a second cache, which will hear no invalidation; build one tier per cache");
        }
    }

    fn acquire<'a>(&'a self, key: &'a K) -> TierFuture<'a, Acquired<V>> {
        Box::pin(self.shared.acquire(key))
    }

    fn acquire_many<'a>(&'a self, keys: &'a [K]) -> TierFuture<'a, Acquisition<V>> {
        Box::pin(self.shared.acquire_many(keys))
    }

    fn invalidate(&self, key: &K) {
        // An insert invalidates, then writes L1.
        self.shared.expose();
        // A key that does not serialize was never read from or written to Redis.
        if let Ok(key) = postcard::to_stdvec(key) {
            self.shared.add_pending(Some(key));
        }
    }

    fn invalidate_all(&self) {
        self.shared.add_pending(None);
    }
}

/// Adds a batch script's Redis keys, after its `args` other arguments: declared, or, in a
/// cross-slot script (`cross`), the first declared (it routes the script) and all of them at the
/// end of ARGV, followed by the index of the first (see `scripts.rs`).
pub(crate) fn batch_keys(
    invocation: &mut ScriptInvocation<'_>,
    cross: bool,
    names: &[&[u8]],
    args: usize,
) {
    if !cross {
        for name in names {
            invocation.key(*name);
        }
        return;
    }
    if let Some(first) = names.first() {
        invocation.key(*first);
    }
    for name in names {
        invocation.arg(*name);
    }
    invocation.arg(args + 1);
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::{Reply, answers_of, parse};

    /// The answer of an ACQUIRE_MANY of one key made with `token`, as `many.rs` reads it.
    fn parse_one(value: Value, token: &str) -> Option<Reply> {
        answers_of(value, token, 1)?.pop().and_then(parse)
    }

    fn fresh(body: &[u8]) -> Value {
        Value::Array(vec![
            Value::Int(1),
            Value::BulkString(body.to_vec()),
            Value::Int(500),
        ])
    }

    fn reply(answers: Vec<Value>, token: &str) -> Value {
        let mut items = answers;
        items.push(Value::BulkString(token.as_bytes().to_vec()));
        Value::Array(items)
    }

    #[test]
    fn an_acquire_reply_is_taken_only_from_the_call_that_made_it() {
        let ours = reply(vec![fresh(b"v31")], "token-a");
        assert!(matches!(
            parse_one(ours.clone(), "token-a"),
            Some(Reply::Fresh(body, 500)) if body == b"v31"
        ));
        // Another call's reply (replies out of step with requests): no answer, not its value.
        assert!(parse_one(ours, "token-b").is_none());
        // The token missing, or a reply of another shape.
        assert!(parse_one(Value::Array(vec![fresh(b"v31")]), "token-a").is_none());
        assert!(parse_one(Value::Int(1), "token-a").is_none());
        // A batch's reply must carry one answer per key.
        let two = reply(vec![fresh(b"a"), fresh(b"b")], "t");
        assert_eq!(answers_of(two.clone(), "t", 2).map(|a| a.len()), Some(2));
        assert!(answers_of(two, "t", 3).is_none());
    }
}
