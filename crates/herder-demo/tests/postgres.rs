//! The same scenarios on PostgreSQL (the machine's own; skipped with a message when it does not
//! answer, unless `HERDER_REQUIRE_POSTGRES=1`). Each test seeds a schema of its own and drops it.

mod support;

use std::time::Duration;

use async_graphql::Request;
use herder_demo::graphql::{AggregateAccess, Bookstore, RowAccess};
use herder_demo::scenarios::{n_plus_one, stampede};

#[tokio::test]
async fn the_n_plus_one_counts_hold_on_postgres() {
    let Some(db) = support::postgres(Duration::ZERO).await else {
        return;
    };
    let count = |mode| {
        let db = db.clone();
        async move {
            let store = Bookstore::new(db.clone(), mode, AggregateAccess::Direct);
            let before = db.round_trips();
            let response = store.execute(n_plus_one::request(20)).await;
            assert!(response.errors.is_empty(), "{:?}", response.errors);
            (
                db.round_trips() - before,
                response.data.into_json().unwrap(),
            )
        }
    };
    let (naive, naive_answer) = count(RowAccess::Naive).await;
    let (batched, batched_answer) = count(RowAccess::DataLoader).await;
    assert_eq!(naive, 1 + 2 * 20);
    assert_eq!(batched, 3);
    assert_eq!(naive_answer, batched_answer);
    db.drop_schema().await.unwrap();
}

#[tokio::test]
async fn both_databases_hold_the_same_bookstore() {
    let Some(pg) = support::postgres(Duration::ZERO).await else {
        return;
    };
    let sqlite = support::sqlite(Duration::ZERO).await;
    let query = "{ books(first: 30, offset: 500) { id title year pages author { name born country } \
                 reviews { id rating reviewer body } } yearStats(year: 1990) { books reviews averageRating } }";
    let answer = |db| async move {
        let store = Bookstore::new(db, RowAccess::DataLoader, AggregateAccess::Direct);
        let response = store.execute(Request::new(query)).await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        response.data.into_json().unwrap()
    };
    let on_pg = answer(pg.clone()).await;
    let on_sqlite = answer(sqlite).await;
    assert_eq!(
        on_pg, on_sqlite,
        "the seed is deterministic and the SQL the same"
    );
    pg.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_on_postgres_is_one_backend_call() {
    let Some(db) = support::postgres(Duration::from_millis(1)).await else {
        return;
    };
    let settings = stampede::Settings {
        requests: 100,
        year: 1987,
    };
    let run = stampede::run_mode(&db, AggregateAccess::HerderCache, settings)
        .await
        .unwrap();
    assert_eq!(run.backend_calls, 1);
    let run = stampede::run_mode(&db, AggregateAccess::Direct, settings)
        .await
        .unwrap();
    assert_eq!(run.backend_calls, 100);
    db.drop_schema().await.unwrap();
}
