//! What herder is for, in one run: an N+1 fan-out and a burst of duplicate requests against a
//! simulated database (a pool of 10 connections, 2 ms per query, 5 ms per aggregate), with and
//! without herder.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use futures_util::future::join_all;
use herder::{DataLoader, Loader, SingleFlight};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// A database behind a pool of 10 connections that answers a query in 2 ms, an aggregate in
/// 5 ms, and counts its round trips.
#[derive(Clone)]
struct Database {
    round_trips: Arc<AtomicUsize>,
    pool: Arc<Semaphore>,
}

impl Database {
    const LATENCY: Duration = Duration::from_millis(2);
    const AGGREGATE: Duration = Duration::from_millis(5);
    const CONNECTIONS: usize = 10;

    fn new() -> Self {
        Database {
            round_trips: Arc::default(),
            pool: Arc::new(Semaphore::new(Self::CONNECTIONS)),
        }
    }

    /// `SELECT id, name FROM authors WHERE id = ANY($1)`
    async fn author_names(&self, ids: &[u64]) -> HashMap<u64, String> {
        let _connection = self.pool.acquire().await.unwrap();
        self.round_trips.fetch_add(1, Relaxed);
        tokio::time::sleep(Self::LATENCY).await;
        ids.iter()
            .map(|id| (*id, format!("author #{id}")))
            .collect()
    }

    /// An expensive aggregate: `SELECT avg(rating) FROM reviews WHERE book_id = $1`
    async fn average_rating(&self, book: u64) -> f64 {
        let _connection = self.pool.acquire().await.unwrap();
        self.round_trips.fetch_add(1, Relaxed);
        tokio::time::sleep(Self::AGGREGATE).await;
        3.0 + (book % 20) as f64 / 10.0
    }

    fn take_round_trips(&self) -> usize {
        self.round_trips.swap(0, Relaxed)
    }
}

/// The batch function: one query for every author asked for in one scheduler pass.
struct Authors(Database);

impl Loader for Authors {
    type Key = u64;
    type Value = String;
    type Error = std::convert::Infallible;

    async fn load(&self, ids: &[u64]) -> Result<HashMap<u64, String>, Self::Error> {
        Ok(self.0.author_names(ids).await)
    }
}

struct Row {
    scenario: &'static str,
    mode: &'static str,
    round_trips: usize,
    elapsed: Duration,
}

#[tokio::main]
async fn main() {
    let db = Database::new();
    let mut rows = Vec::new();
    // 100 books, written by 37 authors.
    let books: Vec<u64> = (0..100).collect();
    let author_of = |book: &u64| book % 37;

    // N+1: each book resolves its author with its own query.
    let start = Instant::now();
    let naive = join_all(books.iter().map(|book| {
        let db = db.clone();
        async move { db.author_names(&[author_of(book)]).await }
    }))
    .await;
    assert_eq!(naive.len(), 100);
    rows.push(Row {
        scenario: "100 books → their authors",
        mode: "one query per book",
        round_trips: db.take_round_trips(),
        elapsed: start.elapsed(),
    });

    // The same resolvers through a DataLoader: one query for all of them.
    let authors = DataLoader::new(Authors(db.clone()));
    let start = Instant::now();
    let batched = join_all(books.iter().map(|book| authors.load(author_of(book)))).await;
    assert!(batched.iter().all(|name| matches!(name, Ok(Some(_)))));
    rows.push(Row {
        scenario: "100 books → their authors",
        mode: "herder::DataLoader",
        round_trips: db.take_round_trips(),
        elapsed: start.elapsed(),
    });

    // A stampede: 1,000 concurrent requests for one expensive aggregate.
    let start = Instant::now();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { db.average_rating(42).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    rows.push(Row {
        scenario: "1,000 requests → one aggregate",
        mode: "every request queries",
        round_trips: db.take_round_trips(),
        elapsed: start.elapsed(),
    });

    let flights = SingleFlight::new();
    let start = Instant::now();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (db, flights) = (db.clone(), flights.clone());
            tokio::spawn(async move {
                flights
                    .run(42, move || async move { db.average_rating(42).await })
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    rows.push(Row {
        scenario: "1,000 requests → one aggregate",
        mode: "herder::SingleFlight",
        round_trips: db.take_round_trips(),
        elapsed: start.elapsed(),
    });

    println!(
        "simulated database: {} connections, {:?} per query, {:?} per aggregate\n",
        Database::CONNECTIONS,
        Database::LATENCY,
        Database::AGGREGATE
    );
    println!("| scenario | mode | round trips | wall time |");
    println!("|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {:.1} ms |",
            row.scenario,
            row.mode,
            row.round_trips,
            row.elapsed.as_secs_f64() * 1e3
        );
    }
}
