//! The command connection: one multiplexed connection for every tier of a process, to a single
//! server (redis-rs's `ConnectionManager`, which reconnects) or to a cluster (redis-rs's
//! `ClusterConnection`, made on first use so that a cluster that is down at start-up only means
//! running without it).

use redis::aio::ConnectionManager;
use redis::{Cmd, FromRedisValue, RedisResult, ScriptInvocation};

#[derive(Clone)]
pub(crate) enum Commands {
    Single(ConnectionManager),
    #[cfg(feature = "cluster")]
    Cluster(std::sync::Arc<cluster::Lazy>),
}

impl Commands {
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        script: &ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        match self {
            Commands::Single(connection) => script.invoke_async(&mut connection.clone()).await,
            #[cfg(feature = "cluster")]
            Commands::Cluster(lazy) => script.invoke_async(&mut lazy.get().await?).await,
        }
    }

    pub(crate) async fn query<T: FromRedisValue>(&self, command: &Cmd) -> RedisResult<T> {
        match self {
            Commands::Single(connection) => command.query_async(&mut connection.clone()).await,
            #[cfg(feature = "cluster")]
            Commands::Cluster(lazy) => command.query_async(&mut lazy.get().await?).await,
        }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        !matches!(self, Commands::Single(_))
    }
}

#[cfg(feature = "cluster")]
pub(crate) mod cluster {
    use redis::RedisResult;
    use redis::cluster::ClusterClient;
    use redis::cluster_async::ClusterConnection;
    use tokio::sync::OnceCell;

    /// A cluster connection, made on first use (and again if making it failed); once made, it
    /// reconnects to the nodes by itself.
    pub(crate) struct Lazy {
        client: ClusterClient,
        connection: OnceCell<ClusterConnection>,
    }

    impl Lazy {
        pub(crate) fn new(client: ClusterClient) -> Self {
            Lazy {
                client,
                connection: OnceCell::new(),
            }
        }

        /// The connection (a cheap clone of a multiplexed one). Cancel safe: a cancelled
        /// attempt leaves the cell empty for the next caller.
        pub(crate) async fn get(&self) -> RedisResult<ClusterConnection> {
            self.connection
                .get_or_try_init(|| self.client.get_async_connection())
                .await
                .cloned()
        }
    }
}
