//! herder keeps a service from hammering its slow backends.
//!
//! A GraphQL resolver that asks the database once per row (N+1), ten thousand requests that miss
//! the same key at once (a stampede), fifty calls that all find an expired token and all
//! re-authenticate (a recovery storm): herder turns each of these into one backend call.
//!
//! | primitive | what it does |
//! |---|---|
//! | [`DataLoader`] | batches the keys asked for in one scheduler pass into one [`Loader`] call |
//! | [`SingleFlight`] | concurrent calls for one key share one execution |
//! | [`Cache`] | read-through cache: a miss loads once, everyone else waits for that load |
//! | [`OperationQueue`] | runs queued operations in FIFO order on N runners, hands each caller its result |
//! | [`Line`] | when many requests hit the same failure, one recovers, the others wait and retry |
//!
//! All of them rest on one core: the work never belongs to the caller that happened to start
//! it. It runs as its own task (a [`DataLoader`] batch is first polled in the poll of the caller
//! that closes its window, so that a loader that answers at once costs no thread hop, and moves
//! to its own task if that poll does not finish it), so a cancelled, timed-out or parked caller
//! cannot stall, fail or poison the others, and a panic reaches every waiter as an error instead
//! of a hang.
//!
//! # Quickstart
//!
//! ```
//! use herder::{DataLoader, Loader, SingleFlight};
//! use std::collections::HashMap;
//!
//! /// One query for many authors: `SELECT id, name FROM authors WHERE id = ANY($1)`.
//! struct AuthorNames;
//!
//! impl Loader for AuthorNames {
//!     type Key = u64;
//!     type Value = String;
//!     type Error = std::io::Error;
//!
//!     async fn load(&self, ids: &[u64]) -> Result<HashMap<u64, String>, Self::Error> {
//!         Ok(ids.iter().map(|id| (*id, format!("author #{id}"))).collect())
//!     }
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // N+1: a hundred books each resolve their author; the loader is called once.
//!     let authors = DataLoader::new(AuthorNames);
//!     let books: Vec<u64> = (0..100).collect();
//!     let names = futures_util::future::join_all(books.iter().map(|b| authors.load(b % 7))).await;
//!     assert_eq!(names[8].as_ref().unwrap().as_deref(), Some("author #1"));
//!     assert_eq!(authors.stats().batches, 1);
//!
//!     // Duplicate work: concurrent calls for one key share one execution.
//!     let tokens = SingleFlight::new();
//!     let refresh = || async { "token-42".to_string() };
//!     let (a, b) = tokio::join!(tokens.run("auth", refresh), tokens.run("auth", refresh));
//!     assert_eq!(a?, b?);
//!     assert_eq!(tokens.stats().started, 1);
//!     Ok(())
//! }
//! ```
//!
//! # Feature flags
//!
//! | flag | default | what it enables |
//! |---|---|---|
//! | `tracing` | on | `tracing` spans for batches and loads, events for panics; never a global subscriber |
//! | `serde` | off | `serde::Serialize` for every stats struct |
//! | `metrics` | off | counters, gauges and histograms of every primitive through the `metrics` facade, labelled by the name each builder's `name(…)` gives; see the `metrics` module |
//!
//! # Invalidation is final
//!
//! On a [`Cache`], every read of a key that starts after [`Cache::invalidate`] (or
//! [`insert`](Cache::insert), [`remove`](Cache::remove), [`invalidate_all`](Cache::invalidate_all))
//! has returned gets a value loaded after that call, or the value inserted, whatever path the
//! read takes: `get`, `get_with`, `try_get_with`, `fetch`, the bulk reads, a [`DataLoader`] with
//! that cache in front, a stale-while-revalidate or early refresh, a fail-safe fallback, a wait or
//! load timeout. A load that was under way when the invalidation came still answers the callers
//! that were waiting for it (they asked before the invalidation), but stores nothing, and no
//! later reader joins it. Fail-safe and stale-while-revalidate never serve a value older than the
//! last invalidation of its key.
//!
//! How: every write of a key — a load's store step, an invalidation, an insert, an eviction
//! ordered by another instance — runs under the key's lock in the flight map, which retires the
//! load under way in the same step; a new load reads the stale value it may fall back on under
//! that lock too. loom models check the protocol (`flight::loom_tests`), and a randomized checker
//! of cancels, panics, errors, inserts and invalidations on a multi-thread runtime checks the
//! contract on every read (`benches/tests/invalidation_contract.rs` in the repository). With a
//! shared tier (`herder-redis`), the other instances' copies follow within the bound that crate
//! documents.
//!
//! # Errors
//!
//! Shared work that fails to finish is a [`TaskError`], as a task is a `JoinError` in tokio: it
//! panicked, was cancelled (its runtime shut down) or timed out. [`SingleFlight::run`] and
//! [`Line::recover`] return it ([`RunError`] and [`RecoverError`] are its former names); the errors
//! that add their own cases embed it: [`LoadError`] and [`CacheError`] are the loader's error
//! (shared as an `Arc<E>`) or a `TaskError` ([`LoadError::task_error`]), and an
//! [`OperationError`] is an operation that never started or a `TaskError`. Every error implements
//! `std::error::Error`, with the loader's error as its `source()`, so `?` takes it into
//! `Box<dyn Error>`.
//!
//! # Runtime
//!
//! herder runs on Tokio. All time goes through `tokio::time`, so tests can run on a paused clock.
//! On a multi-thread runtime, a [`Cache`] with expiring entries tells the time on a hit from a
//! clock that a ticker task keeps every millisecond while the cache is read (reading the OS clock
//! would cost more than the hit); elsewhere, and under a paused clock, it reads the clock exactly
//! (see [`Builder::clock_resolution`](cache::Builder::clock_resolution)).

#![forbid(unsafe_code)]
#![warn(
    missing_debug_implementations,
    missing_docs,
    rust_2018_idioms,
    unreachable_pub
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod batch;
pub mod cache;
mod error;
pub(crate) mod flight;
pub mod line;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
pub mod queue;
pub mod single_flight;
mod sync;
mod time;

pub use batch::{DataLoader, LoadError, Loader};
pub use cache::{Cache, CacheError};
pub use error::{BuildError, TaskError};
pub use line::{Epoch, Line, RecoverError, Recovery};
pub use queue::{LocalOperationQueue, OperationError, OperationHandle, OperationQueue};
pub use single_flight::{RunError, SingleFlight};
