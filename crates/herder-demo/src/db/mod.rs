//! The bookstore's database: one handle over SQLite or PostgreSQL, and the round-trip counter.
//!
//! Every query goes through [`Db`], which takes a connection from the pool, waits the configured
//! latency (an embedded SQLite answers in microseconds; a database across a network does not),
//! counts one round trip, and runs the query. The counts the demo prints come from here.
//!
//! The same SQL runs on both databases through sqlx's `Any` driver: `$1` placeholders, `BIGINT`
//! columns, no arrays (`IN ($1, $2, ...)` lists instead of `= ANY($1)`).
//!
//! Layout: `schema` (tables), `seed` (the deterministic bookstore), `queries` (every query the
//! API sends), `model` (the rows).

mod model;
mod queries;
mod schema;
mod seed;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor};

use crate::error::{DemoError, redact};
pub use model::{Author, Book, Review, YearStats};
pub use seed::SeedSize;

/// How long the database has to answer a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which database a [`Db`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite: embedded (a temporary file) by default, or the file of a `sqlite:` URL.
    Sqlite,
    /// PostgreSQL, from a `postgres://` URL; the demo's tables live in a schema of their own.
    Postgres,
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct DbOptions {
    /// `postgres://...` or `sqlite:...`; `None` for an embedded SQLite in a temporary file.
    pub url: Option<String>,
    /// Waited before every round trip, to stand for the network.
    pub latency: Duration,
    /// The most connections in the pool (each round trip holds one for its whole length).
    pub connections: u32,
    /// On PostgreSQL, the schema the demo drops, creates and seeds (`herder_demo`).
    pub pg_schema: String,
}

impl DbOptions {
    /// An embedded SQLite with `latency` per round trip and 10 connections.
    pub fn embedded(latency: Duration) -> Self {
        DbOptions {
            url: None,
            latency,
            connections: 10,
            pg_schema: "herder_demo".to_owned(),
        }
    }
}

/// A handle on the bookstore's database that counts its round trips. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    pool: AnyPool,
    backend: Backend,
    latency: Duration,
    connections: u32,
    round_trips: AtomicU64,
    /// What to print: "SQLite (embedded)" or the URL without its password.
    place: String,
    pg_schema: String,
    /// The embedded database's file, removed on drop.
    _file: Option<TempFile>,
}

impl Db {
    /// Connects (the database must answer within 5 s). Creates nothing: see [`Db::seed`].
    pub async fn open(options: &DbOptions) -> Result<Db, DemoError> {
        sqlx::any::install_default_drivers();
        let (url, backend, file, place) = match &options.url {
            None => {
                let file = TempFile::new();
                let url = format!("sqlite://{}?mode=rwc", file.path.display());
                (
                    url,
                    Backend::Sqlite,
                    Some(file),
                    "SQLite (embedded)".to_owned(),
                )
            }
            Some(url) if url.starts_with("sqlite:") => (
                url.clone(),
                Backend::Sqlite,
                None,
                format!("SQLite at {url}"),
            ),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let place = format!("PostgreSQL at {}", redact(url));
                (url.clone(), Backend::Postgres, None, place)
            }
            Some(url) => {
                return Err(DemoError::new(format!(
                    "unsupported database URL {}: use postgres://... or sqlite:...",
                    redact(url)
                )));
            }
        };
        let schema = &options.pg_schema;
        if !schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(DemoError::new(format!("invalid schema name {schema:?}")));
        }
        let set_path = format!("SET search_path TO {schema}");
        let connections = options.connections.max(1);
        let mut pool = AnyPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(CONNECT_TIMEOUT);
        if backend == Backend::Postgres {
            pool = pool.after_connect(move |conn, _| {
                let set_path = set_path.clone();
                Box::pin(async move {
                    conn.execute(set_path.as_str()).await?;
                    Ok(())
                })
            });
        }
        // One plain connection first: a pool would only say that it timed out, not why.
        let cannot = format!("cannot connect to the database at {}", redact(&url));
        match tokio::time::timeout(CONNECT_TIMEOUT, AnyConnection::connect(&url)).await {
            Ok(Ok(conn)) => drop(conn.close().await),
            Ok(Err(err)) => return Err(DemoError::with_cause(cannot, err)),
            Err(_) => {
                let waited = CONNECT_TIMEOUT.as_secs();
                return Err(DemoError::new(format!(
                    "{cannot}: no answer within {waited} s"
                )));
            }
        }
        let pool = pool
            .connect(&url)
            .await
            .map_err(|err| DemoError::with_cause(cannot, err))?;
        Ok(Db {
            inner: Arc::new(Inner {
                pool,
                backend,
                latency: options.latency,
                connections,
                round_trips: AtomicU64::new(0),
                place,
                pg_schema: options.pg_schema.clone(),
                _file: file,
            }),
        })
    }

    /// Drops the demo's tables if they exist, creates them and fills them with `size` rows,
    /// deterministically (the same rows on every run), in one transaction. Round trips made here
    /// are not counted.
    pub async fn seed(&self, size: SeedSize) -> Result<(), DemoError> {
        seed::seed(
            &self.inner.pool,
            self.inner.backend,
            &self.inner.pg_schema,
            size,
        )
        .await
        .map_err(|err| DemoError::with_cause("cannot seed the database", err))
    }

    /// On PostgreSQL, drops the demo's schema (tests call this when done); closes the pool.
    pub async fn drop_schema(&self) -> Result<(), DemoError> {
        if self.inner.backend == Backend::Postgres {
            let drop = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.inner.pg_schema);
            self.inner
                .pool
                .execute(drop.as_str())
                .await
                .map_err(|err| DemoError::with_cause("cannot drop the demo schema", err))?;
        }
        self.inner.pool.close().await;
        Ok(())
    }

    /// Round trips so far (every query of the API; not the seeding).
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Relaxed)
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The latency added to every round trip.
    pub fn latency(&self) -> Duration {
        self.inner.latency
    }

    /// The pool's size.
    pub fn connections(&self) -> u32 {
        self.inner.connections
    }

    /// Where the data is, for humans: "SQLite (embedded)", "PostgreSQL at postgres://...".
    pub fn place(&self) -> &str {
        &self.inner.place
    }

    /// One round trip: a connection from the pool, the latency, the count, the query.
    pub(crate) async fn fetch_all<'q>(
        &self,
        query: Query<'q, Any, AnyArguments<'q>>,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        let mut conn = self.inner.pool.acquire().await?;
        if !self.inner.latency.is_zero() {
            tokio::time::sleep(self.inner.latency).await;
        }
        self.inner.round_trips.fetch_add(1, Relaxed);
        query.fetch_all(&mut *conn).await
    }
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("place", &self.inner.place)
            .field("latency", &self.inner.latency)
            .field("round_trips", &self.round_trips())
            .finish_non_exhaustive()
    }
}

/// The embedded database's file in the temporary directory, removed (with SQLite's side files)
/// when the last handle goes.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "herder-demo-{}-{}.sqlite",
            std::process::id(),
            NEXT.fetch_add(1, Relaxed)
        );
        TempFile {
            path: std::env::temp_dir().join(name),
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}
