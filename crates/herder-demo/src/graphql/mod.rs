//! The bookstore's GraphQL API (async-graphql): `books(first:, offset:)`, `book.author`,
//! `book.reviews`, `author.books`, and `yearStats(year:)`, an expensive aggregate.
//!
//! A list query fans out: `books(first: 100) { author { name } }` resolves `author` once per
//! book. How each resolver reaches the database is the mode of the [`Bookstore`]: a query per
//! call ([`RowAccess::Naive`]), a [`herder::DataLoader`] per request, or DataLoaders in front of
//! shared [`herder::Cache`]s; the aggregate directly, through a plain cache, or through herder's.
//!
//! Layout: `types` (objects and resolvers), `store` ([`Bookstore`] and the per-request data),
//! `loaders` (the batch functions), `plain_cache` (the cache without coalescing), `stats`.

mod loaders;
mod plain_cache;
mod stats;
mod store;
mod types;

pub use loaders::{AuthorsById, BooksByAuthor, ReviewsByBook};
pub use plain_cache::PlainCache;
pub use stats::{BookstoreStats, LoaderCounters, LoaderTotals, RowCacheStats};
pub use store::{
    AggregateAccess, Bookstore, BookstoreSchema, MAX_COMPLEXITY, MAX_DEPTH, RowAccess, RowCaches,
    year_cache_over_redis,
};
pub use types::{MAX_LIST, MAX_PAGE, Query};
