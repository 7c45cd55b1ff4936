//! The herder demo: a GraphQL bookstore on an embedded database that shows what herder is for.
//!
//! `herder-demo` seeds a bookstore (1,000 authors, 20,000 books, 100,000 reviews) into an
//! embedded SQLite database, or into PostgreSQL with `--database-url`, and runs three scenarios,
//! each in three modes side by side, with every number measured in that run:
//!
//! 1. **N+1** ([`scenarios::n_plus_one`]): a nested GraphQL query over 100 books with their
//!    authors and reviews, with naive resolvers, with a [`herder::DataLoader`], and with a
//!    DataLoader in front of a shared [`herder::Cache`];
//! 2. **stampede** ([`scenarios::stampede`]): 1,000 concurrent requests for one cold aggregate,
//!    with no cache, a plain cache without coalescing, and herder's `Cache`;
//! 3. **recovery storm** ([`scenarios::storm`]): requests through a [`herder::OperationQueue`] to
//!    an upstream API whose token expires mid-run, without and with a [`herder::Line`];
//!
//! and, with `--redis-url`, a fleet of instances sharing one Redis ([`scenarios::fleet`]).
//! `herder-demo serve` serves the GraphQL API with live herder stats ([`serve`]).
//!
//! Layout: [`cli`] (flags), [`db`] (schema, seed, queries, the round-trip counter), [`graphql`]
//! (schema, resolvers, loaders), [`scenarios`] (one file each), [`report`] (the tables),
//! [`serve`] (the HTTP app and its pages).

#![forbid(unsafe_code)]
#![warn(
    missing_debug_implementations,
    missing_docs,
    rust_2018_idioms,
    unreachable_pub
)]

pub mod cli;
pub mod db;
mod error;
pub mod graphql;
pub mod report;
pub mod scenarios;
pub mod serve;

pub use error::DemoError;
