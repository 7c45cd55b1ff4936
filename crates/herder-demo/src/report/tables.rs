//! One table per scenario, from what it measured.

use super::format::{average, count, duration};
use super::table::Table;
use crate::scenarios::{fleet, n_plus_one, stampede, storm};

/// The N+1 table.
pub fn n_plus_one(settings: n_plus_one::Settings, runs: &[n_plus_one::ModeRun]) -> Table {
    let n = settings.requests;
    let cells = |f: &dyn Fn(&n_plus_one::ModeRun) -> String| runs.iter().map(f).collect::<Vec<_>>();
    Table::new(
        format!(
            "N+1 · {n} concurrent GraphQL requests, each for {} books with their authors and reviews",
            settings.books
        ),
        runs.iter().map(|r| n_plus_one::mode_name(r.mode)),
    )
    .note(format!("{}, $first = {}", n_plus_one::QUERY, settings.books))
    .row("DB round trips", cells(&|r| count(r.round_trips)))
    .row("  per request", cells(&|r| average(r.round_trips, n)))
    .row(
        "loader calls",
        cells(&|r| count(r.stats.loaders.batches())),
    )
    .row(
        "waits on a load under way",
        cells(&|r| match &r.stats.caches {
            Some(c) => count(c.authors.coalesced + c.reviews.coalesced + c.pages.coalesced),
            None => "-".to_owned(),
        }),
    )
    .row("wall time", cells(&|r| duration(r.wall)))
    .row("p50 per request", cells(&|r| duration(r.latencies.p50())))
    .row("p99 per request", cells(&|r| duration(r.latencies.p99())))
}

/// The stampede table.
pub fn stampede(settings: stampede::Settings, runs: &[stampede::ModeRun]) -> Table {
    let cells = |f: &dyn Fn(&stampede::ModeRun) -> String| runs.iter().map(f).collect::<Vec<_>>();
    Table::new(
        format!(
            "Stampede · {} concurrent requests for one cold, expensive aggregate",
            count(settings.requests as u64)
        ),
        runs.iter().map(|r| stampede::mode_name(r.mode)),
    )
    .note(format!(
        "{}: a scan of books joined with their reviews",
        stampede::query(settings.year)
    ))
    .row("backend calls", cells(&|r| count(r.backend_calls)))
    .row(
        "waits on a load under way",
        cells(&|r| match &r.stats.year_cache {
            Some(c) => count(c.coalesced),
            None => "-".to_owned(),
        }),
    )
    .row("wall time", cells(&|r| duration(r.wall)))
    .row("p50 per request", cells(&|r| duration(r.latencies.p50())))
    .row("p99 per request", cells(&|r| duration(r.latencies.p99())))
}

/// The recovery storm table.
pub fn storm(settings: storm::Settings, runs: &[storm::ModeRun]) -> Table {
    let cells = |f: &dyn Fn(&storm::ModeRun) -> String| runs.iter().map(f).collect::<Vec<_>>();
    Table::new(
        format!(
            "Recovery storm · {} requests to an API whose token expires after call {}; the queue has {} runners",
            settings.requests, settings.expire_after, settings.runners
        ),
        runs.iter().map(|r| storm::mode_name(r.mode)),
    )
    .note(format!(
        "{} per call, {} per login; a login revokes the previous token; {} attempts per request; without a Line each 401 logs in",
        duration(settings.call_latency),
        duration(settings.login_latency),
        settings.attempts
    ))
    .row("re-authentications", cells(&|r| count(r.reauths)))
    .row("failed requests", cells(&|r| count(r.failed)))
    .row("401 responses", cells(&|r| count(r.rejected)))
    .row("wall time", cells(&|r| duration(r.wall)))
    .row("p50 per request", cells(&|r| duration(r.latencies.p50())))
    .row("p99 per request", cells(&|r| duration(r.latencies.p99())))
}

/// The fleet table.
pub fn fleet(settings: fleet::Settings, redis: &str, runs: &[fleet::ModeRun]) -> Table {
    let cells = |f: &dyn Fn(&fleet::ModeRun) -> String| runs.iter().map(f).collect::<Vec<_>>();
    Table::new(
        format!(
            "Fleet · {} instances × {} concurrent requests for one cold aggregate, one database, Redis at {redis}",
            settings.instances, settings.requests_per_instance
        ),
        runs.iter().map(|r| fleet::mode_name(r.mode)),
    )
    .note(format!(
        "each instance: its own bookstore and herder Cache (and RedisTier); {{ yearStats(year: {}) {{ ... }} }}",
        settings.year
    ))
    .row("backend calls", cells(&|r| count(r.backend_calls)))
    .row(
        "redis leases / waits / hits",
        cells(&|r| match &r.redis {
            Some(s) => format!("{} / {} / {}", s.leases, s.lease_waits, s.l2_hits),
            None => "-".to_owned(),
        }),
    )
    .row("wall time", cells(&|r| duration(r.wall)))
    .row("p50 per request", cells(&|r| duration(r.latencies.p50())))
    .row("p99 per request", cells(&|r| duration(r.latencies.p99())))
}
