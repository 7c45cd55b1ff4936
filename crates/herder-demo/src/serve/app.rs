//! The router: `/`, `/graphql`, `/stats`.

use std::time::Instant;

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use herder_redis::{RedisStats, RedisTier};
use serde::Serialize;

use super::pages;
use crate::db::YearStats;
use crate::graphql::{Bookstore, BookstoreStats};

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    store: Bookstore,
    redis: Option<RedisTier<i64, YearStats>>,
    started: Instant,
}

impl AppState {
    /// The state for `store`, and the Redis tier under its aggregate cache, if any.
    pub fn new(store: Bookstore, redis: Option<RedisTier<i64, YearStats>>) -> Self {
        AppState {
            store,
            redis,
            started: Instant::now(),
        }
    }
}

/// `/stats`
#[derive(Debug, Serialize)]
struct Stats {
    uptime_ms: u64,
    database: String,
    #[serde(flatten)]
    store: BookstoreStats,
    redis: Option<RedisStats>,
}

/// The app.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/graphql", get(graphiql).post(graphql))
        .route("/stats", get(stats))
        .with_state(state)
}

async fn dashboard() -> Html<&'static str> {
    Html(pages::DASHBOARD)
}

async fn graphiql() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").finish())
}

async fn graphql(State(state): State<AppState>, request: GraphQLRequest) -> GraphQLResponse {
    state.store.execute(request.into_inner()).await.into()
}

async fn stats(State(state): State<AppState>) -> Json<Stats> {
    let redis = state.redis.as_ref().map(RedisTier::stats);
    Json(Stats {
        uptime_ms: u64::try_from(state.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        database: state.store.db().place().to_owned(),
        store: state.store.stats(),
        redis,
    })
}
