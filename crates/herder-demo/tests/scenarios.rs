//! The report's scenarios in a small mode, on the embedded SQLite: the counts they show come
//! from real counters and are what they claim. Counts only, never speed.

mod support;

use std::time::Duration;

use async_graphql::Request;
use herder_demo::db::Db;
use herder_demo::graphql::{AggregateAccess, Bookstore, RowAccess};
use herder_demo::scenarios::{n_plus_one, stampede, storm};

const N: i64 = 20;

/// Round trips of one request in `mode`, and its answer.
async fn one_request(
    db: &Db,
    mode: RowAccess,
    query: impl Into<Request>,
) -> (u64, serde_json::Value) {
    let store = Bookstore::new(db.clone(), mode, AggregateAccess::Direct);
    round_trips(db, &store, query).await
}

async fn round_trips(
    db: &Db,
    store: &Bookstore,
    query: impl Into<Request>,
) -> (u64, serde_json::Value) {
    let before = db.round_trips();
    let response = store.execute(query).await;
    assert!(response.errors.is_empty(), "{:?}", response.errors);
    (
        db.round_trips() - before,
        response.data.into_json().unwrap(),
    )
}

#[tokio::test]
async fn naive_resolvers_send_one_query_for_the_list_and_one_per_book() {
    let db = support::sqlite(Duration::ZERO).await;
    let query = format!("{{ books(first: {N}) {{ title author {{ name }} }} }}");
    let (trips, _) = one_request(&db, RowAccess::Naive, query.as_str()).await;
    assert_eq!(trips, 1 + N as u64);

    let query = format!("{{ books(first: {N}) {{ author {{ name }} reviews {{ rating }} }} }}");
    let (trips, _) = one_request(&db, RowAccess::Naive, query.as_str()).await;
    assert_eq!(trips, 1 + 2 * N as u64);
}

#[tokio::test]
async fn a_dataloader_sends_one_query_per_level() {
    let db = support::sqlite(Duration::ZERO).await;
    // books → (author → their books) and reviews: the list, then one query per loader.
    let query = format!(
        "{{ books(first: {N}) {{ author {{ name books {{ title }} }} reviews {{ rating }} }} }}"
    );
    let (naive, naive_answer) = one_request(&db, RowAccess::Naive, query.as_str()).await;
    let (batched, batched_answer) = one_request(&db, RowAccess::DataLoader, query.as_str()).await;
    assert_eq!(batched, 4, "books, authors, reviews, books of the authors");
    assert!(naive > 3 * N as u64, "{naive}");
    assert_eq!(naive_answer, batched_answer);
}

#[tokio::test]
async fn the_report_query_costs_three_round_trips_with_a_dataloader() {
    let db = support::sqlite(Duration::ZERO).await;
    let (naive, _) = one_request(&db, RowAccess::Naive, n_plus_one::request(N)).await;
    let (batched, _) = one_request(&db, RowAccess::DataLoader, n_plus_one::request(N)).await;
    assert_eq!(naive, 1 + 2 * N as u64);
    assert_eq!(batched, 3);
}

#[tokio::test]
async fn with_the_cache_a_warm_request_sends_nothing() {
    let db = support::sqlite(Duration::ZERO).await;
    let store = Bookstore::new(
        db.clone(),
        RowAccess::DataLoaderCache,
        AggregateAccess::Direct,
    );
    let query = format!("{{ books(first: {N}) {{ author {{ name }} reviews {{ rating }} }} }}");
    let (cold, answer) = round_trips(&db, &store, query.as_str()).await;
    assert_eq!(cold, 3, "the page, the authors, the reviews");
    let (warm, warm_answer) = round_trips(&db, &store, query.as_str()).await;
    assert_eq!(warm, 0);
    assert_eq!(answer, warm_answer);
    let stats = store.stats();
    let caches = stats.caches.expect("DataLoader + Cache mode has caches");
    assert_eq!(caches.pages.hits, 1);
    assert!(caches.authors.hits > 0 && caches.reviews.hits == N as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_of_the_n_plus_one_scenario_gives_the_same_answer() {
    let db = support::sqlite(Duration::from_millis(1)).await;
    let settings = n_plus_one::Settings {
        requests: 8,
        books: N,
    };
    let runs = n_plus_one::run(&db, settings, |_| {}).await.expect("runs");
    let trips: Vec<u64> = runs.iter().map(|r| r.round_trips).collect();
    // Naive: exactly 1 + 2N per request, whatever the timing.
    assert_eq!(trips[0], 8 * (1 + 2 * N as u64));
    // A DataLoader per request: at least one query per level, far fewer than naive.
    assert!((8 * 3..trips[0] / 4).contains(&trips[1]), "{trips:?}");
    // The caches: each key loaded once for the whole burst, one round trip per loader call.
    let caches = runs[2]
        .stats
        .caches
        .expect("DataLoader + Cache mode has caches");
    assert_eq!(caches.pages.loads, 1);
    assert_eq!(caches.reviews.loads, N as u64);
    assert_eq!(trips[2], 1 + runs[2].stats.loaders.batches(), "{trips:?}");
    assert!(runs.iter().all(|r| r.latencies.len() == 8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_on_herders_cache_is_one_backend_call() {
    let db = support::sqlite(Duration::from_millis(1)).await;
    let settings = stampede::Settings {
        requests: 200,
        year: 1987,
    };
    let runs = stampede::run(&db, settings, |_| {}).await.expect("runs");
    let calls: Vec<u64> = runs.iter().map(|r| r.backend_calls).collect();
    assert_eq!(calls[0], 200, "no cache: every request queries");
    assert!((1..=200).contains(&calls[1]), "a plain cache: {calls:?}");
    assert_eq!(calls[2], 1, "herder's Cache: one load for all");
    let cache = runs[2].stats.year_cache.expect("herder's cache");
    assert_eq!(cache.loads, 1);
    // Every other read was a hit or waited for the load. (Not `== 200`: herder counts a read
    // that misses, then finds the value stored as it joins the flight, as neither.)
    assert!(cache.hits + cache.misses <= 200, "{cache:?}");
    assert_eq!(
        cache.misses,
        cache.coalesced + 1,
        "one leader, the other misses waited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_through_a_line_is_one_reauthentication() {
    let settings = storm::Settings {
        requests: 120,
        runners: 8,
        expire_after: 30,
        attempts: 3,
        call_latency: Duration::from_millis(1),
        login_latency: Duration::from_millis(5),
    };
    let lined = storm::run_mode(storm::StormMode::QueueLine, settings)
        .await
        .expect("runs");
    assert_eq!(lined.reauths, 1);
    assert_eq!(lined.failed, 0);
    assert_eq!(lined.served, 120, "every request served once");

    for mode in [storm::StormMode::NoQueue, storm::StormMode::Queue] {
        let run = storm::run_mode(mode, settings).await.expect("runs");
        assert!(run.reauths >= 1, "{mode:?}: the token expired");
        assert_eq!(
            run.served + run.failed,
            120,
            "{mode:?}: served or failed, once each"
        );
    }
}

#[tokio::test]
async fn the_api_refuses_bad_pages_without_a_query() {
    let db = support::sqlite(Duration::ZERO).await;
    let store = Bookstore::new(db.clone(), RowAccess::Naive, AggregateAccess::Direct);
    let response = store
        .execute(Request::new("{ books(first: 5000) { id } }"))
        .await;
    assert_eq!(response.errors.len(), 1);
    assert_eq!(db.round_trips(), 0);
}

/// The limits on what one request may cost (issue 14) let the report's queries through, at the
/// report's full size: the front page of 100 books, and the aggregate.
#[tokio::test]
async fn the_report_queries_pass_the_cost_limits() {
    let db = support::sqlite(Duration::ZERO).await;
    let store = Bookstore::new(db.clone(), RowAccess::DataLoader, AggregateAccess::Direct);
    let settings = n_plus_one::Settings::FULL;
    let response = store.execute(n_plus_one::request(settings.books)).await;
    assert!(response.errors.is_empty(), "{:?}", response.errors);
    let response = store
        .execute(stampede::request(stampede::Settings::FULL.year))
        .await;
    assert!(response.errors.is_empty(), "{:?}", response.errors);
    // Nested lists default to their cap, and say how large they may be.
    let response = store
        .execute(Request::new(
            "{ books(first: 100) { author { name books { title } } reviews { rating } } }",
        ))
        .await;
    assert!(response.errors.is_empty(), "{:?}", response.errors);
    let response = store
        .execute(Request::new(
            "{ books(first: 1) { reviews(first: 101) { rating } } }",
        ))
        .await;
    assert_eq!(response.errors.len(), 1);
    assert!(
        response.errors[0]
            .message
            .contains("first must be 0 to 100")
    );
}

/// A list's size given as a variable is weighted as a literal one: refused before it runs.
#[tokio::test]
async fn a_costly_query_through_variables_is_refused_before_it_runs() {
    let db = support::sqlite(Duration::ZERO).await;
    let store = Bookstore::new(db.clone(), RowAccess::DataLoader, AggregateAccess::Direct);
    let query = "query Deep($n: Int!) { books(first: $n) { author { books(first: $n) { \
                 author { books(first: $n) { title } } } } } }";
    let request = Request::new(query).variables(async_graphql::Variables::from_json(
        serde_json::json!({ "n": 100 }),
    ));
    let response = store.execute(request).await;
    assert_eq!(response.errors.len(), 1, "{:?}", response.errors);
    assert!(
        response.errors[0]
            .message
            .starts_with("query is too costly: the limit is 50000"),
        "{}",
        response.errors[0].message
    );
    assert_eq!(db.round_trips(), 0, "nothing ran");
}
