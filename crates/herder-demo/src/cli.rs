//! The command line: `herder-demo [report]` and `herder-demo serve`, and what each runs.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::DemoError;
use crate::db::{Db, DbOptions, SeedSize};
use crate::graphql::{AggregateAccess, Bookstore, RowAccess};
use crate::report;
use crate::scenarios::fleet;
use crate::serve;

/// A GraphQL bookstore that shows N+1 queries, cache stampedes and recovery storms, with and
/// without herder. With no command, runs the report.
#[derive(Debug, Parser)]
#[command(name = "herder-demo", version, about, long_about = None)]
pub struct Cli {
    /// What to do (default: the report).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Database options (for both commands).
    #[command(flatten)]
    pub db: DbArgs,
    /// Redis options (for both commands).
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs every scenario and prints one table each (the default).
    Report,
    /// Serves the GraphQL API (GraphiQL at /graphql), live stats at /stats and a chart at /.
    Serve(ServeArgs),
}

/// Where the bookstore lives.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// A PostgreSQL URL (postgres://user@host/db; the demo's tables go in a schema
    /// `herder_demo`, dropped and recreated) or a SQLite one (sqlite:path). Default: an embedded
    /// SQLite in a temporary file.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Latency added to every database round trip, standing for the network (e.g. 1ms, 250us,
    /// 0).
    #[arg(long, global = true, value_name = "DURATION", default_value = "1ms", value_parser = parse_duration)]
    pub db_latency: Duration,
    /// Connections in the database pool.
    #[arg(long, global = true, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub connections: u32,
    /// A small bookstore and small bursts, for a quick check.
    #[arg(long, global = true)]
    pub quick: bool,
}

/// Redis, for a fleet.
#[derive(Debug, Default, Args)]
pub struct RedisArgs {
    /// A Redis URL (redis://host:port). The report adds the fleet scenario (instances sharing
    /// one Redis); `serve` puts a Redis tier under its aggregate cache.
    #[arg(long, global = true, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Instances in the fleet scenario (default 4; needs --redis-url).
    #[arg(long, global = true, value_name = "N", requires = "redis_url", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub instances: Option<u16>,
}

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8000")]
    pub addr: SocketAddr,
}

/// `1ms`, `250us`, `1.5ms`, `2s`, `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} has no unit: use us, ms or s (e.g. 1ms)"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 1ms)"))?;
    let seconds = match unit.trim() {
        "us" | "µs" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        other => return Err(format!("unknown unit {other:?}: use us, ms or s")),
    };
    if !(0.0..=60.0).contains(&seconds) {
        return Err(format!("{text:?} is out of range (0 to 60 s)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

impl DbArgs {
    fn options(&self) -> DbOptions {
        DbOptions {
            url: self.database_url.clone(),
            connections: self.connections,
            ..DbOptions::embedded(self.db_latency)
        }
    }
}

impl Cli {
    /// Runs the command.
    pub async fn run(self) -> Result<(), DemoError> {
        match self.command {
            None | Some(Command::Report) => run_report(&self.db, &self.redis).await,
            Some(Command::Serve(args)) => run_serve(&self.db, &self.redis, &args).await,
        }
    }
}

async fn run_report(db: &DbArgs, args: &RedisArgs) -> Result<(), DemoError> {
    let mut options = match db.quick {
        true => report::Options::quick(db.options()),
        false => report::Options::full(db.options()),
    };
    if let Some(url) = &args.redis_url {
        let mut settings = match db.quick {
            true => fleet::Settings::QUICK,
            false => fleet::Settings::FULL,
        };
        if let Some(instances) = args.instances {
            // The same burst in all, spread over the instances.
            let total = settings.instances * settings.requests_per_instance;
            settings.instances = usize::from(instances);
            settings.requests_per_instance = (total / settings.instances).max(1);
        }
        options.fleet = Some((url.clone(), settings));
    }
    report::run(&options, &mut io::stdout()).await
}

async fn run_serve(db: &DbArgs, redis: &RedisArgs, args: &ServeArgs) -> Result<(), DemoError> {
    // Listen first: a port in use is reported before the seeding.
    let listener = serve::bind(args.addr).await?;
    // Before the caches and the tier are built: they take their metric handles from it.
    serve::install_metrics();
    let database = Db::open(&db.options()).await?;
    let size = if db.quick {
        SeedSize::SMALL
    } else {
        SeedSize::FULL
    };
    database.seed(size).await?;
    let (store, tier) = match &redis.redis_url {
        None => {
            let store = Bookstore::new(
                database,
                RowAccess::DataLoaderCache,
                AggregateAccess::HerderCache,
            );
            (store, None)
        }
        Some(url) => {
            let (cache, tier) = serve::year_cache_with_redis(url, size.books)?;
            let store = Bookstore::with_year_cache(database, RowAccess::DataLoaderCache, cache);
            (store, Some(tier))
        }
    };
    serve::run(listener, store, tier).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("1.5ms"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("1").is_err());
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("100s").is_err());
    }

    #[test]
    fn flags_parse() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
