//! N+1: a burst of concurrent requests for the same nested query over a page of books, with
//! their authors and reviews: naive resolvers, a DataLoader per request, and DataLoaders in front
//! of shared caches.
//!
//! Naive resolvers send `1 + 2N` queries per request (the page, then one author and one list of
//! reviews per book); a DataLoader sends one per level (3); with the caches, the burst shares one
//! load per key, and a request that comes after them sends none.

use std::time::Duration;

use async_graphql::{Request, Variables};
use serde_json::json;

use super::{Latencies, burst, response_error};
use crate::DemoError;
use crate::db::Db;
use crate::graphql::{AggregateAccess, Bookstore, BookstoreStats, RowAccess};

/// The nested query: a page of books, each with its author and its reviews.
pub const QUERY: &str = "query FrontPage($first: Int!) { \
    books(first: $first) { id title year author { id name } reviews { rating reviewer } } }";

/// The modes, in the report's order.
pub const MODES: [RowAccess; 3] = [
    RowAccess::Naive,
    RowAccess::DataLoader,
    RowAccess::DataLoaderCache,
];

/// The size of the scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Concurrent requests in the burst.
    pub requests: usize,
    /// Books per request (`books(first:)`).
    pub books: i64,
}

impl Settings {
    /// The report's: 50 concurrent requests over 100 books.
    pub const FULL: Settings = Settings {
        requests: 50,
        books: 100,
    };
    /// `--quick`: 10 requests over 20 books.
    pub const QUICK: Settings = Settings {
        requests: 10,
        books: 20,
    };
}

/// What one mode measured.
#[derive(Debug)]
pub struct ModeRun {
    /// The mode.
    pub mode: RowAccess,
    /// Database round trips during the burst, counted by [`Db`].
    pub round_trips: u64,
    /// From the burst's start to its last answer.
    pub wall: Duration,
    /// Per request.
    pub latencies: Latencies,
    /// The bookstore's counters after the burst (loaders, caches).
    pub stats: BookstoreStats,
    /// The first request's answer, to check that every mode answers the same.
    pub answer: serde_json::Value,
}

/// The request, for `books` books.
pub fn request(books: i64) -> Request {
    Request::new(QUERY).variables(Variables::from_json(json!({ "first": books })))
}

/// Runs one mode on a fresh bookstore (empty caches).
pub async fn run_mode(db: &Db, mode: RowAccess, settings: Settings) -> Result<ModeRun, DemoError> {
    let store = Bookstore::new(db.clone(), mode, AggregateAccess::Direct);
    let before = db.round_trips();
    let run = burst(settings.requests, |_| {
        let store = store.clone();
        async move { store.execute(request(settings.books)).await }
    })
    .await;
    let round_trips = db.round_trips() - before;
    for response in &run.outputs {
        if let Some(err) = response_error("N+1", response) {
            return Err(err);
        }
    }
    let answer = run
        .outputs
        .first()
        .map(|r| r.data.clone().into_json())
        .transpose();
    let answer = answer
        .map_err(|err| DemoError::with_cause("N+1: unreadable answer", err))?
        .unwrap_or_default();
    Ok(ModeRun {
        mode,
        round_trips,
        wall: run.wall,
        latencies: run.latencies,
        stats: store.stats(),
        answer,
    })
}

/// Runs the three modes in turn; `step` is called before each.
pub async fn run(
    db: &Db,
    settings: Settings,
    mut step: impl FnMut(RowAccess),
) -> Result<Vec<ModeRun>, DemoError> {
    let mut runs = Vec::new();
    for mode in MODES {
        step(mode);
        runs.push(run_mode(db, mode, settings).await?);
    }
    if runs.iter().any(|r| r.answer != runs[0].answer) {
        return Err(DemoError::new("N+1: the modes gave different answers"));
    }
    Ok(runs)
}

/// A human name for a mode.
pub fn mode_name(mode: RowAccess) -> &'static str {
    match mode {
        RowAccess::Naive => "naive resolvers",
        RowAccess::DataLoader => "DataLoader",
        RowAccess::DataLoaderCache => "DataLoader + Cache",
    }
}
