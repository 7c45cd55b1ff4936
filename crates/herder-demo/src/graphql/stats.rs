//! The bookstore's counters, for `/stats` and the report: herder's own stats types (with its
//! `serde` feature), and the DataLoaders' counters summed over requests.

use herder::batch::DataLoaderStats;
use herder::cache::CacheStats;
use serde::Serialize;

use super::store::{Loaders, RowCaches};
use crate::db::Db;

/// Everything `/stats` shows.
#[derive(Clone, Debug, Serialize)]
pub struct BookstoreStats {
    /// GraphQL requests executed.
    pub requests: u64,
    /// Database round trips, every query of every request (from [`Db::round_trips`]).
    pub db_round_trips: u64,
    /// Latency added to each round trip, in microseconds.
    pub db_latency_us: u64,
    /// The DataLoaders, summed over every request's own loaders.
    pub loaders: LoaderTotals,
    /// The row caches shared by every request, in DataLoader + Cache mode.
    pub caches: Option<RowCacheStats>,
    /// The cache in front of the year aggregate, if herder's.
    pub year_cache: Option<CacheStats>,
}

impl BookstoreStats {
    pub(crate) fn new(
        requests: u64,
        db: &Db,
        loaders: LoaderTotals,
        caches: Option<&RowCaches>,
        year_cache: Option<CacheStats>,
    ) -> Self {
        BookstoreStats {
            requests,
            db_round_trips: db.round_trips(),
            db_latency_us: u64::try_from(db.latency().as_micros()).unwrap_or(u64::MAX),
            loaders,
            caches: caches.map(|c| RowCacheStats {
                pages: c.pages.stats(),
                authors: c.authors.stats(),
                reviews: c.reviews.stats(),
                books_by_author: c.books_by_author.stats(),
            }),
            year_cache,
        }
    }
}

/// One loader's counters, summed over requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LoaderCounters {
    /// Keys asked for.
    pub requests: u64,
    /// Loader calls: one query each.
    pub batches: u64,
    /// Keys sent to the loader, over every batch.
    pub batched_keys: u64,
    /// The largest batch.
    pub largest_batch: u64,
    /// Keys answered by the cache in front.
    pub cache_hits: u64,
    /// Keys that joined a batch already holding them.
    pub joined: u64,
    /// Batches that failed.
    pub errors: u64,
}

impl LoaderCounters {
    fn add(&mut self, stats: DataLoaderStats) {
        self.requests += stats.requests;
        self.batches += stats.batches;
        self.batched_keys += stats.batched_keys;
        self.largest_batch = self.largest_batch.max(stats.largest_batch);
        self.cache_hits += stats.cache_hits;
        self.joined += stats.joined;
        self.errors += stats.errors + stats.panics;
    }
}

/// The three loaders of the API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LoaderTotals {
    /// `book.author`
    pub authors: LoaderCounters,
    /// `book.reviews`
    pub reviews: LoaderCounters,
    /// `author.books`
    pub books_by_author: LoaderCounters,
}

impl LoaderTotals {
    pub(crate) fn add(&mut self, loaders: &Loaders) {
        self.authors.add(loaders.authors.stats());
        self.reviews.add(loaders.reviews.stats());
        self.books_by_author.add(loaders.books_by_author.stats());
    }

    /// Loader calls over the three loaders.
    pub fn batches(&self) -> u64 {
        self.authors.batches + self.reviews.batches + self.books_by_author.batches
    }
}

/// The row caches of DataLoader + Cache mode.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RowCacheStats {
    /// Pages of books.
    pub pages: CacheStats,
    /// Authors.
    pub authors: CacheStats,
    /// Reviews of each book.
    pub reviews: CacheStats,
    /// Books of each author.
    pub books_by_author: CacheStats,
}
