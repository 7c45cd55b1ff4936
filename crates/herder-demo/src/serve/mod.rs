//! `herder-demo serve`: the bookstore's GraphQL API over HTTP, with its live herder stats.
//!
//! * `POST /graphql`: the GraphQL endpoint (async-graphql's axum integration); `GET /graphql`:
//!   the GraphiQL page (its scripts come from a CDN, so it needs a browser with internet);
//! * `GET /stats`: the live counters as JSON: requests, database round trips, every loader's
//!   batches and batch sizes, every cache's hits, misses and coalesced waits;
//! * `GET /`: a page that charts those counters as they change (plain HTML and JS polling
//!   `/stats`, drawn in SVG, no build step, nothing fetched from elsewhere), with buttons that
//!   send queries, and buttons that run a scenario;
//! * `POST /scenario/{n_plus_one,stampede,storm}`: runs one of the report's scenarios inside the
//!   server, its modes side by side, and answers what each measured as JSON.
//!
//! * `GET /metrics`: herder's metrics in Prometheus text (`herder_cache_hits_total{name="authors"}`
//!   ...): herder and herder-redis with their `metrics` feature, every primitive named, into a
//!   global `metrics-exporter-prometheus` recorder installed before they are built; each scrape
//!   flushes herder's counters and renders.
//!
//! Rows are read through DataLoaders in front of shared caches, the aggregate through herder's
//! `Cache` (with a Redis tier if `--redis-url` is given).
//!
//! Layout: `app` (the router and handlers), `scenario` (the scenarios run on a click), `metrics`
//! (the Prometheus text), `pages` (the HTML).

mod app;
mod metrics;
mod pages;
mod scenario;

pub(crate) use metrics::install as install_metrics;

use std::net::SocketAddr;

use herder::Cache;
use herder_redis::RedisTier;
use tokio::net::TcpListener;

pub use app::{AppState, router};

use crate::DemoError;
use crate::db::YearStats;
use crate::graphql::{Bookstore, year_cache_over_redis};

/// Listens on `addr`; a port in use or an address not of this machine is a one-line error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, DemoError> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| DemoError::with_cause(format!("cannot listen on {addr}"), err))
}

/// The aggregate's cache over a Redis tier shared by every `serve` of the same bookstore
/// (`books` books) pointed at the same Redis.
pub fn year_cache_with_redis(
    url: &str,
    books: i64,
) -> Result<(Cache<i64, YearStats>, RedisTier<i64, YearStats>), DemoError> {
    year_cache_over_redis(url, &format!("herder-demo:{books}-books:year-stats"), None)
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, so that the server stops cleanly and the embedded
/// database's file is removed.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Serves `store` on `listener` until Ctrl-C or SIGTERM. Prints the address once ready.
pub async fn run(
    listener: TcpListener,
    store: Bookstore,
    redis: Option<RedisTier<i64, YearStats>>,
) -> Result<(), DemoError> {
    let addr = listener
        .local_addr()
        .map_err(|err| DemoError::with_cause("cannot read the listening address", err))?;
    let app = router(AppState::new(store, redis));
    println!(
        "herder-demo: serving on http://{addr}/ (chart), http://{addr}/graphql (GraphiQL), \
         http://{addr}/stats (JSON); Ctrl-C stops"
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(stop_signal())
        .await
        .map_err(|err| DemoError::with_cause("the server failed", err))
}
