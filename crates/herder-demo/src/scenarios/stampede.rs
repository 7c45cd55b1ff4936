//! Stampede: a burst of concurrent requests for one cold, expensive item (the year aggregate):
//! no cache, a plain cache without coalescing, and herder's `Cache`.
//!
//! Without a cache every request queries. A plain cache does not help a cold burst: requests
//! that miss before the first load has finished all load (most of them, in the report). herder's `Cache`
//! loads once; every other request waits for that load.

use std::time::Duration;

use async_graphql::Request;

use super::{Latencies, burst, response_error};
use crate::DemoError;
use crate::db::Db;
use crate::graphql::{AggregateAccess, Bookstore, BookstoreStats, RowAccess};

/// The modes, in the report's order.
pub const MODES: [AggregateAccess; 3] = [
    AggregateAccess::Direct,
    AggregateAccess::PlainCache,
    AggregateAccess::HerderCache,
];

/// The size of the scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Concurrent requests in the burst.
    pub requests: usize,
    /// The year whose aggregate they all ask for.
    pub year: i64,
}

impl Settings {
    /// The report's: 1,000 requests.
    pub const FULL: Settings = Settings {
        requests: 1_000,
        year: 1987,
    };
    /// `--quick`: 100 requests.
    pub const QUICK: Settings = Settings {
        requests: 100,
        year: 1987,
    };
}

/// The query: one year's aggregate.
pub fn query(year: i64) -> String {
    format!("{{ yearStats(year: {year}) {{ year books reviews averageRating }} }}")
}

/// The request: [`query`].
pub fn request(year: i64) -> Request {
    Request::new(query(year))
}

/// What one mode measured.
#[derive(Debug)]
pub struct ModeRun {
    /// The mode.
    pub mode: AggregateAccess,
    /// Aggregate queries sent to the database during the burst.
    pub backend_calls: u64,
    /// From the burst's start to its last answer.
    pub wall: Duration,
    /// Per request.
    pub latencies: Latencies,
    /// The bookstore's counters after the burst.
    pub stats: BookstoreStats,
}

/// Runs one mode on a fresh bookstore (a cold cache).
pub async fn run_mode(
    db: &Db,
    mode: AggregateAccess,
    settings: Settings,
) -> Result<ModeRun, DemoError> {
    let store = Bookstore::new(db.clone(), RowAccess::Naive, mode);
    let before = db.round_trips();
    let run = burst(settings.requests, |_| {
        let store = store.clone();
        async move { store.execute(request(settings.year)).await }
    })
    .await;
    let backend_calls = db.round_trips() - before;
    let first = run.outputs.first().map(|r| r.data.clone());
    for response in &run.outputs {
        if let Some(err) = response_error("stampede", response) {
            return Err(err);
        }
        if Some(&response.data) != first.as_ref() {
            return Err(DemoError::new("stampede: requests got different answers"));
        }
    }
    Ok(ModeRun {
        mode,
        backend_calls,
        wall: run.wall,
        latencies: run.latencies,
        stats: store.stats(),
    })
}

/// Runs the three modes in turn; `step` is called before each.
pub async fn run(
    db: &Db,
    settings: Settings,
    mut step: impl FnMut(AggregateAccess),
) -> Result<Vec<ModeRun>, DemoError> {
    let mut runs = Vec::new();
    for mode in MODES {
        step(mode);
        runs.push(run_mode(db, mode, settings).await?);
    }
    Ok(runs)
}

/// A human name for a mode.
pub fn mode_name(mode: AggregateAccess) -> &'static str {
    match mode {
        AggregateAccess::Direct => "no cache",
        AggregateAccess::PlainCache => "plain cache",
        AggregateAccess::HerderCache => "herder Cache",
    }
}
