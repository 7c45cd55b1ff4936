//! [`RedisConnection`]: what every tier of a process shares.

mod commands;
mod subscriber;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Notify;

pub(crate) use commands::Commands;
pub(crate) use subscriber::{Listener, MAX_RETRY, Registry, Subscriber};

use crate::error::Error;

/// The connections to Redis that the tiers of a process share: one multiplexed command
/// connection and one pub/sub connection, however many tiers (namespaces, value types) use them.
///
/// [`RedisTier::builder`](crate::RedisTier::builder) with a URL makes a connection of its own
/// for its tier; make one `RedisConnection` instead and give it to every tier with
/// [`RedisTier::builder_with`](crate::RedisTier::builder_with). Cloning it is cheap (a handle).
/// The connections are made lazily and remade after a failure; [`ping`](Self::ping) tells
/// whether Redis answers, and why not.
///
/// ```no_run
/// use herder_redis::{RedisConnection, RedisTier};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), herder_redis::Error> {
/// let redis = RedisConnection::open("redis://127.0.0.1:6379")?;
/// redis.ping().await?; // fail at start-up on a wrong URL or password
/// let authors = RedisTier::<u64, String>::builder_with(&redis).namespace("authors").build()?;
/// let books = RedisTier::<u64, Vec<u64>>::builder_with(&redis).namespace("books").build()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisConnection {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) commands: Commands,
    /// Where the subscriber connects: the server, or each seed node of a cluster in turn.
    pub(crate) pubsub: Vec<redis::Client>,
    /// The connect and heartbeat timeout of the pub/sub connection.
    pub(crate) timeout: Duration,
    pub(crate) registry: Arc<Mutex<Registry>>,
    /// Wakes the subscriber when a tier registers, or when the connection is dropped.
    wake: Arc<Notify>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

/// The default connect timeout of a shared connection.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

impl RedisConnection {
    /// A connection to the Redis server at `url` (`redis://[:password@]host:port/db`, or
    /// `rediss://` with the `tls-rustls` feature), and its subscriber task, spawned on the
    /// current Tokio runtime. Connects lazily: call [`ping`](Self::ping) to check the server.
    ///
    /// # Errors
    ///
    /// An invalid URL, or no Tokio runtime.
    pub fn open(url: &str) -> Result<Self, Error> {
        let client = redis::Client::open(url).map_err(Error::redis)?;
        Self::from_client(client)
    }

    /// Like [`open`](Self::open), from a `redis::Client` the application already configured
    /// (custom TLS roots with `redis::Client::build_with_tls`, for example).
    ///
    /// ```no_run
    /// use herder_redis::RedisConnection;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = redis::Client::open("redis://127.0.0.1:6379/2")?;
    /// let redis = RedisConnection::from_client(client)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// No Tokio runtime.
    pub fn from_client(client: redis::Client) -> Result<Self, Error> {
        spawn(Self::single(client, CONNECT_TIMEOUT, None)?)
    }

    /// A connection to the Redis Cluster reached through `nodes` (seed URLs: any reachable node
    /// tells where the others are), and its subscriber task, spawned on the current Tokio
    /// runtime. Connects on first use.
    ///
    /// ```no_run
    /// use herder_redis::{RedisConnection, RedisTier};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), herder_redis::Error> {
    /// let redis = RedisConnection::open_cluster(&["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"])?;
    /// redis.ping().await?;
    /// let tier = RedisTier::<u64, String>::builder_with(&redis).namespace("authors").build()?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// No node, an invalid URL, or no Tokio runtime.
    #[cfg(feature = "cluster")]
    pub fn open_cluster<S: AsRef<str>>(nodes: &[S]) -> Result<Self, Error> {
        spawn(Self::cluster(nodes, CONNECT_TIMEOUT)?)
    }

    pub(crate) fn single(
        client: redis::Client,
        timeout: Duration,
        response_timeout: Option<Duration>,
    ) -> Result<(Self, Subscriber), Error> {
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(response_timeout)
            // No retry within a call: a refused connection is reported at once (and opens the
            // tiers' breakers); the next call after the cooldown tries again.
            .set_number_of_retries(0)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), manager)
            .map_err(Error::redis)?;
        Ok(Self::assemble(
            Commands::Single(connection),
            vec![client],
            timeout,
        ))
    }

    #[cfg(feature = "cluster")]
    pub(crate) fn cluster<S: AsRef<str>>(
        nodes: &[S],
        timeout: Duration,
    ) -> Result<(Self, Subscriber), Error> {
        if nodes.is_empty() {
            return Err(Error::setting("a cluster needs at least one node"));
        }
        let clients = nodes
            .iter()
            .map(|node| redis::Client::open(node.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::redis)?;
        let client = redis::cluster::ClusterClient::builder(nodes.iter().map(AsRef::as_ref))
            .connection_timeout(timeout)
            .retries(1)
            .build()
            .map_err(Error::redis)?;
        let lazy = commands::cluster::Lazy::new(client);
        Ok(Self::assemble(
            Commands::Cluster(Arc::new(lazy)),
            clients,
            timeout,
        ))
    }

    fn assemble(
        commands: Commands,
        pubsub: Vec<redis::Client>,
        timeout: Duration,
    ) -> (Self, Subscriber) {
        let wake = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            commands,
            pubsub,
            // A heartbeat that misses flushes every L1: not on a short stall of a loaded machine.
            timeout: timeout.max(CONNECT_TIMEOUT),
            registry: Arc::default(),
            wake: wake.clone(),
        });
        let subscriber = Subscriber {
            inner: Arc::downgrade(&inner),
            wake,
        };
        (RedisConnection { inner }, subscriber)
    }

    /// `Ok` if Redis answers a `PING` within `timeout`, otherwise why not: unreachable, refused
    /// credentials, no answer in time.
    pub(crate) async fn ping_within(&self, timeout: Duration) -> Result<(), Error> {
        let command = redis::cmd("PING");
        let ping = self.inner.commands.query::<String>(&command);
        match tokio::time::timeout(timeout, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(Error::connect(error)),
            Err(_) => Err(Error::timeout(timeout)),
        }
    }

    /// `Ok` if Redis answers a `PING` within 1 s, otherwise why not: unreachable, refused
    /// credentials, no answer in time. A readiness check for start-up and health endpoints;
    /// the tiers do not need it (they fail open either way).
    ///
    /// # Errors
    ///
    /// Why Redis did not answer: [`Error::is_auth`], [`Error::is_connect`],
    /// [`Error::is_timeout`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn ping(&self) -> Result<(), Error> {
        self.ping_within(Duration::from_secs(1)).await
    }

    pub(crate) fn is_cluster(&self) -> bool {
        self.inner.commands.is_cluster()
    }

    /// Tells the subscriber that a tier is gone (it unsubscribes the channels nobody listens to).
    pub(crate) fn forget(&self) {
        self.inner.wake.notify_one();
    }

    /// Hands the tier's messages to `listener` from now on.
    pub(crate) fn listen(&self, channel: String, listener: std::sync::Weak<dyn Listener>) {
        crate::tier::lock(&self.inner.registry).add(channel, listener);
        self.inner.wake.notify_one();
    }
}

fn spawn(
    (connection, subscriber): (RedisConnection, Subscriber),
) -> Result<RedisConnection, Error> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::no_runtime())?;
    runtime.spawn(subscriber.run());
    Ok(connection)
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("cluster", &self.is_cluster())
            .finish_non_exhaustive()
    }
}
