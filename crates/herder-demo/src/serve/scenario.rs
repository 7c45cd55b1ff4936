//! `POST /scenario/{name}`: one of the report's scenarios run inside the server, with the code
//! the CLI report runs ([`crate::scenarios`], tabulated by [`crate::report::tables`]), at its
//! `--quick` size so that a click answers within a few seconds. Its modes run in turn, side by
//! side, each on fresh state; the answer is JSON: per mode the measure that shows what herder
//! saves, latencies and wall time, and the report's table.
//!
//! The N+1 and stampede scenarios use the server's database (so the live chart shows their round
//! trips while they run); one scenario runs at a time, so that their counts are their own.

use std::time::Duration;

use serde::Serialize;

use crate::DemoError;
use crate::db::Db;
use crate::report::{Table, n_plus_one_table, stampede_table, storm_table};
use crate::scenarios::{Latencies, n_plus_one, stampede, storm};

/// The scenarios, by the name in their path.
pub(super) const NAMES: [&str; 3] = ["n_plus_one", "stampede", "storm"];

/// What one scenario measured, as the page shows it.
#[derive(Debug, Serialize)]
pub(super) struct ScenarioResult {
    scenario: &'static str,
    /// What the bars count (fewer is better).
    measure: &'static str,
    /// Its modes, baseline first, herder's full answer last.
    modes: Vec<ModeResult>,
    /// The report's table for the same runs.
    table: Table,
}

/// One mode.
#[derive(Debug, Serialize)]
struct ModeResult {
    mode: &'static str,
    /// `true` if the mode uses the herder primitive the scenario is about.
    herder: bool,
    /// The measure.
    value: u64,
    /// Requests that failed (the recovery storm's only).
    failed: u64,
    wall_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

impl ModeResult {
    fn new(
        mode: &'static str,
        herder: bool,
        value: u64,
        wall: Duration,
        latencies: &Latencies,
    ) -> Self {
        ModeResult {
            mode,
            herder,
            value,
            failed: 0,
            wall_ms: ms(wall),
            p50_ms: ms(latencies.p50()),
            p99_ms: ms(latencies.p99()),
        }
    }
}

/// Runs the scenario `name` (one of [`NAMES`]) on `db`; `None` for an unknown name.
pub(super) async fn run(db: &Db, name: &str) -> Option<Result<ScenarioResult, DemoError>> {
    Some(match name {
        "n_plus_one" => n_plus_one_result(db).await,
        "stampede" => stampede_result(db).await,
        "storm" => storm_result().await,
        _ => return None,
    })
}

async fn n_plus_one_result(db: &Db) -> Result<ScenarioResult, DemoError> {
    let settings = n_plus_one::Settings::QUICK;
    let runs = n_plus_one::run(db, settings, |_| {}).await?;
    let modes = runs
        .iter()
        .map(|r| {
            let herder = r.mode != crate::graphql::RowAccess::Naive;
            let name = n_plus_one::mode_name(r.mode);
            ModeResult::new(name, herder, r.round_trips, r.wall, &r.latencies)
        })
        .collect();
    Ok(ScenarioResult {
        scenario: "n_plus_one",
        measure: "DB round trips",
        modes,
        table: n_plus_one_table(settings, &runs),
    })
}

async fn stampede_result(db: &Db) -> Result<ScenarioResult, DemoError> {
    let settings = stampede::Settings::QUICK;
    let runs = stampede::run(db, settings, |_| {}).await?;
    let modes = runs
        .iter()
        .map(|r| {
            let herder = r.mode == crate::graphql::AggregateAccess::HerderCache;
            let name = stampede::mode_name(r.mode);
            ModeResult::new(name, herder, r.backend_calls, r.wall, &r.latencies)
        })
        .collect();
    Ok(ScenarioResult {
        scenario: "stampede",
        measure: "backend calls",
        modes,
        table: stampede_table(settings, &runs),
    })
}

async fn storm_result() -> Result<ScenarioResult, DemoError> {
    let settings = storm::Settings::QUICK;
    let runs = storm::run(settings, |_| {}).await?;
    let modes = runs
        .iter()
        .map(|r| {
            let herder = r.mode != storm::StormMode::NoQueue;
            let name = storm::mode_name(r.mode);
            let mode = ModeResult::new(name, herder, r.reauths, r.wall, &r.latencies);
            ModeResult {
                failed: r.failed,
                ..mode
            }
        })
        .collect();
    Ok(ScenarioResult {
        scenario: "storm",
        measure: "re-authentications",
        modes,
        table: storm_table(settings, &runs),
    })
}
