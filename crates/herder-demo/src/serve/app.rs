//! The router: `/`, `/graphql`, `/stats`, `/metrics`, `/scenario/{name}`.

use std::sync::Arc;
use std::time::Instant;

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use herder_redis::{RedisStats, RedisTier};
use serde::Serialize;

use super::{pages, scenario};
use crate::db::YearStats;
use crate::graphql::{Bookstore, BookstoreStats};

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    store: Bookstore,
    redis: Option<RedisTier<i64, YearStats>>,
    started: Instant,
    /// Held while a scenario runs: one at a time, so that each counts its own round trips.
    scenario: Arc<tokio::sync::Mutex<()>>,
}

impl AppState {
    /// The state for `store`, and the Redis tier under its aggregate cache, if any.
    pub fn new(store: Bookstore, redis: Option<RedisTier<i64, YearStats>>) -> Self {
        AppState {
            store,
            redis,
            started: Instant::now(),
            scenario: Arc::default(),
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
        .route("/metrics", get(prometheus))
        .route("/scenario/{name}", post(run_scenario))
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

async fn run_scenario(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let _one_at_a_time = state.scenario.lock().await;
    match scenario::run(state.store.db(), &name).await {
        Some(Ok(result)) => Json(result).into_response(),
        Some(Err(err)) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!(
                "no scenario {name:?}: the scenarios are {}",
                scenario::NAMES.join(", ")
            ),
        )
            .into_response(),
    }
}

async fn stats(State(state): State<AppState>) -> Json<Stats> {
    Json(snapshot(&state))
}

fn snapshot(state: &AppState) -> Stats {
    let redis = state.redis.as_ref().map(RedisTier::stats);
    Stats {
        uptime_ms: u64::try_from(state.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        database: state.store.db().place().to_owned(),
        store: state.store.stats(),
        redis,
    }
}

/// `/metrics`: the same counters in Prometheus text.
async fn prometheus(State(state): State<AppState>) -> Response {
    let document = serde_json::to_value(snapshot(&state)).unwrap_or_default();
    let body = super::metrics::render(&document);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
