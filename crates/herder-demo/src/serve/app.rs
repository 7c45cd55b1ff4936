//! The router: `/`, `/graphql`, `/stats`.

use std::sync::Arc;
use std::time::Instant;

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use herder_redis::RedisTier;
use serde::Serialize;

use super::pages;
use crate::db::YearStats;
use crate::graphql::{Bookstore, BookstoreStats};

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    store: Bookstore,
    redis: Option<RedisTier<i64, YearStats>>,
    started: Arc<Instant>,
}

impl AppState {
    /// The state for `store`, and the Redis tier under its aggregate cache, if any.
    pub fn new(store: Bookstore, redis: Option<RedisTier<i64, YearStats>>) -> Self {
        AppState {
            store,
            redis,
            started: Arc::new(Instant::now()),
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
    redis: Option<RedisCounters>,
}

/// The Redis tier's counters.
#[derive(Debug, Serialize)]
struct RedisCounters {
    l2_hits: u64,
    leases: u64,
    lease_waits: u64,
    takeovers: u64,
    errors: u64,
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
    let redis = state.redis.as_ref().map(|tier| {
        let s = tier.stats();
        RedisCounters {
            l2_hits: s.l2_hits,
            leases: s.leases,
            lease_waits: s.lease_waits,
            takeovers: s.takeovers,
            errors: s.errors,
        }
    });
    Json(Stats {
        uptime_ms: u64::try_from(state.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        database: state.store.db().place().to_owned(),
        store: state.store.stats(),
        redis,
    })
}
