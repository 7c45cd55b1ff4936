//! The report `herder-demo` prints by default: the database seeded, then one table per scenario,
//! each as soon as it is measured, with a progress bar on stderr meanwhile.
//!
//! Layout: `tables` (a table per scenario), `table` (plain-text rendering), `format` (numbers).

mod format;
mod table;
mod tables;

use std::io::Write;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

pub use table::Table;
pub use tables::{fleet as fleet_table, n_plus_one as n_plus_one_table};
pub use tables::{stampede as stampede_table, storm as storm_table};

use crate::DemoError;
use crate::db::{Db, DbOptions, SeedSize};
use crate::error::redact;
use crate::scenarios::{fleet, n_plus_one, stampede, storm};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The database.
    pub db: DbOptions,
    /// The bookstore's size.
    pub seed: SeedSize,
    /// The N+1 scenario's size.
    pub n_plus_one: n_plus_one::Settings,
    /// The stampede's size.
    pub stampede: stampede::Settings,
    /// The recovery storm's size.
    pub storm: storm::Settings,
    /// The fleet scenario, with the Redis URL, if asked for.
    pub fleet: Option<(String, fleet::Settings)>,
}

impl Options {
    /// The full report over `db`.
    pub fn full(db: DbOptions) -> Self {
        Options {
            db,
            seed: SeedSize::FULL,
            n_plus_one: n_plus_one::Settings::FULL,
            stampede: stampede::Settings::FULL,
            storm: storm::Settings::FULL,
            fleet: None,
        }
    }

    /// A small, fast report (`--quick`).
    pub fn quick(db: DbOptions) -> Self {
        Options {
            db,
            seed: SeedSize::SMALL,
            n_plus_one: n_plus_one::Settings::QUICK,
            stampede: stampede::Settings::QUICK,
            storm: storm::Settings::QUICK,
            fleet: None,
        }
    }
}

fn progress(steps: u64) -> ProgressBar {
    let bar = ProgressBar::new(steps);
    let style = ProgressStyle::with_template("{spinner} [{bar:24}] {pos}/{len} {msg} ({elapsed})")
        .map(|s| s.progress_chars("=> "));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar
}

/// Seeds the database and runs every scenario, writing each table to `out` as it is measured.
pub async fn run(options: &Options, out: &mut (impl Write + Send)) -> Result<(), DemoError> {
    let steps = 1 + 3 * 3 + if options.fleet.is_some() { 3 } else { 0 };
    let bar = progress(steps);
    let result = run_with(options, out, &bar).await;
    bar.finish_and_clear();
    result
}

async fn run_with(
    options: &Options,
    out: &mut (impl Write + Send),
    bar: &ProgressBar,
) -> Result<(), DemoError> {
    let mut print = |text: String| {
        bar.suspend(|| {
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        });
    };
    bar.set_message("connecting to the database");
    let db = Db::open(&options.db).await?;
    bar.set_message("seeding the bookstore");
    let seeding = Instant::now();
    db.seed(options.seed).await?;
    let seeded = seeding.elapsed();
    bar.inc(1);
    let s = options.seed;
    print(format!(
        "herder-demo: a GraphQL bookstore on {}: {} authors, {} books, {} reviews, seeded in {}.\n\
         Every database round trip first waits {} (--db-latency), standing for the network \
         that an embedded database does not have; the pool has {} connections.\n\
         Every number below was measured in this run: round trips are counted where each query \
         is sent, times are read from the clock.\n",
        db.place(),
        format::count(s.authors as u64),
        format::count(s.books as u64),
        format::count(s.reviews as u64),
        format::duration(seeded),
        format::duration(db.latency()),
        db.connections(),
    ));

    let runs = n_plus_one::run(&db, options.n_plus_one, |mode| {
        bar.set_message(format!("N+1: {}", n_plus_one::mode_name(mode)));
    })
    .await?;
    bar.inc(3);
    print(tables::n_plus_one(options.n_plus_one, &runs).to_string());

    let runs = stampede::run(&db, options.stampede, |mode| {
        bar.set_message(format!("stampede: {}", stampede::mode_name(mode)));
    })
    .await?;
    bar.inc(3);
    print(tables::stampede(options.stampede, &runs).to_string());

    let runs = storm::run(options.storm, |mode| {
        bar.set_message(format!("recovery storm: {}", storm::mode_name(mode)));
    })
    .await?;
    bar.inc(3);
    print(tables::storm(options.storm, &runs).to_string());

    if let Some((url, settings)) = &options.fleet {
        let runs = fleet::run(&db, url, *settings, |mode| {
            bar.set_message(format!("fleet: {}", fleet::mode_name(mode)));
        })
        .await?;
        bar.inc(3);
        print(tables::fleet(*settings, &redact(url), &runs).to_string());
    }
    Ok(())
}
