//! [`Bookstore`]: what the resolvers read through, in the mode being shown; and the per-request
//! data every resolver finds in its context.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_graphql::{EmptyMutation, EmptySubscription, Schema};
use herder::{Cache, DataLoader};
use herder_redis::RedisTier;

use super::loaders::{AuthorsById, BooksByAuthor, ReviewsByBook};
use super::plain_cache::PlainCache;
use super::stats::{BookstoreStats, LoaderTotals};
use super::types::{MAX_LIST, Query};
use crate::DemoError;
use crate::db::{Author, Book, Db, Review, YearStats};
use crate::error::redact;

/// The year aggregate's cache: up to 1,000 years, each fresh for 60 s.
fn year_cache() -> herder::cache::Builder<i64, YearStats> {
    Cache::builder()
        .name("year_stats")
        .max_capacity(1_000)
        .time_to_live(Duration::from_secs(60))
}

/// The year aggregate's cache over a [`RedisTier`] in `namespace` (with the tier's default
/// budget unless `budget`), and the tier, for its stats.
pub fn year_cache_over_redis(
    url: &str,
    namespace: &str,
    budget: Option<Duration>,
) -> std::result::Result<(Cache<i64, YearStats>, RedisTier<i64, YearStats>), DemoError> {
    let mut tier = RedisTier::<i64, YearStats>::builder(url)
        .namespace(namespace)
        .name("year_stats");
    if let Some(budget) = budget {
        tier = tier.budget(budget);
    }
    let tier = tier
        .build()
        .map_err(|err| DemoError::with_cause(format!("redis at {}", redact(url)), err))?;
    let cache = year_cache()
        .tier(Arc::new(tier.clone()))
        .build()
        .map_err(|err| DemoError::with_cause("the year cache", err))?;
    Ok((cache, tier))
}

/// The deepest query the schema runs (`books { author { books { title } } }` is 4 deep).
pub const MAX_DEPTH: usize = 10;

/// The most a query may cost before it runs, every field costing 1 and a list multiplying what
/// is asked of each item by its size (`books(first:)`, `book.reviews(first:)` and
/// `author.books(first:)`, 100 by default): about the most values one answer may hold. The
/// report's front page of 100 books with their authors and reviews costs 20,600.
pub const MAX_COMPLEXITY: usize = 50_000;

/// What the demo answers instead of async-graphql's message for one of the two limits.
fn limit_message(message: &str) -> Option<String> {
    match message {
        "Query is too complex." => Some(format!(
            "query is too costly: the limit is {MAX_COMPLEXITY}, each field costs 1 and a list \
             multiplies the cost of its items by its size (books(first:), book.reviews(first:) \
             and author.books(first:), {MAX_LIST} by default)"
        )),
        "Query is nested too deep." => Some(format!(
            "query is nested too deep: at most {MAX_DEPTH} levels"
        )),
        _ => None,
    }
}

/// The bookstore's GraphQL schema.
pub type BookstoreSchema = Schema<Query, EmptyMutation, EmptySubscription>;

/// How resolvers read rows (pages of books, authors, reviews, books of an author).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowAccess {
    /// One query per resolver call: `book.author` over 100 books is 100 queries.
    Naive,
    /// A [`DataLoader`] per request: one query per level of the query.
    DataLoader,
    /// A DataLoader per request in front of [`Cache`]s shared by every request (the page of
    /// books too): rows loaded once are served from memory, and requests missing the same key at
    /// once share one load.
    DataLoaderCache,
}

/// How the year aggregate is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregateAccess {
    /// Every request queries.
    Direct,
    /// A [`PlainCache`]: check, load on a miss, store; no coalescing.
    PlainCache,
    /// herder's [`Cache`]: a miss loads once, every other request waits for that load.
    HerderCache,
}

/// The caches shared by every request in [`RowAccess::DataLoaderCache`] mode.
#[derive(Clone, Debug)]
pub struct RowCaches {
    /// Pages of books, by `(first, offset)`.
    pub pages: Cache<(i64, i64), Arc<[Book]>>,
    /// Authors by id.
    pub authors: Cache<i64, Author>,
    /// The reviews of each book.
    pub reviews: Cache<i64, Arc<[Review]>>,
    /// The books of each author.
    pub books_by_author: Cache<i64, Arc<[Book]>>,
}

impl RowCaches {
    fn new() -> Self {
        fn cache<K, V>(name: &'static str) -> Cache<K, V>
        where
            K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
            V: Clone + Send + Sync + 'static,
        {
            Cache::builder()
                .name(name)
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build()
                .expect("valid cache settings")
        }
        RowCaches {
            pages: cache("pages"),
            authors: cache("authors"),
            reviews: cache("reviews"),
            books_by_author: cache("books_by_author"),
        }
    }
}

enum Aggregates {
    Direct,
    Plain(PlainCache<i64, YearStats>),
    Herder(Cache<i64, YearStats>),
}

/// The bookstore's API over a [`Db`], in one mode: the schema, the shared caches, and counters.
/// Cheap to clone (clones share everything). Each [`execute`](Bookstore::execute) is one request,
/// with loaders of its own.
#[derive(Clone)]
pub struct Bookstore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    schema: BookstoreSchema,
    rows: RowAccess,
    caches: Option<RowCaches>,
    aggregates: Aggregates,
    requests: AtomicU64,
    loaders: Mutex<LoaderTotals>,
}

impl Bookstore {
    /// A bookstore whose resolvers read rows with `rows` and the aggregate with `aggregates`;
    /// its caches, if any, start empty.
    pub fn new(db: Db, rows: RowAccess, aggregates: AggregateAccess) -> Self {
        let aggregates = match aggregates {
            AggregateAccess::Direct => Aggregates::Direct,
            AggregateAccess::PlainCache => Aggregates::Plain(PlainCache::new()),
            AggregateAccess::HerderCache => {
                Aggregates::Herder(year_cache().build().expect("valid cache settings"))
            }
        };
        Self::from_parts(db, rows, aggregates)
    }

    /// A bookstore whose aggregate is read through `cache` (one with a Redis tier, say).
    pub fn with_year_cache(db: Db, rows: RowAccess, cache: Cache<i64, YearStats>) -> Self {
        Self::from_parts(db, rows, Aggregates::Herder(cache))
    }

    fn from_parts(db: Db, rows: RowAccess, aggregates: Aggregates) -> Self {
        let schema = Schema::build(Query, EmptyMutation, EmptySubscription)
            .limit_depth(MAX_DEPTH)
            .limit_complexity(MAX_COMPLEXITY)
            .finish();
        let caches = (rows == RowAccess::DataLoaderCache).then(RowCaches::new);
        Bookstore {
            inner: Arc::new(Inner {
                db,
                schema,
                rows,
                caches,
                aggregates,
                requests: AtomicU64::new(0),
                loaders: Mutex::new(LoaderTotals::default()),
            }),
        }
    }

    /// Runs one GraphQL request with loaders of its own, and adds their counters to the totals.
    pub async fn execute(
        &self,
        request: impl Into<async_graphql::Request>,
    ) -> async_graphql::Response {
        let data = RequestData::new(self.clone());
        let request = request.into().data(data.clone());
        let mut response = self.inner.schema.execute(request).await;
        for error in &mut response.errors {
            if let Some(ours) = limit_message(&error.message) {
                error.message = ours;
            }
        }
        self.inner.requests.fetch_add(1, Relaxed);
        if let Some(loaders) = &data.loaders {
            let mut totals = self
                .inner
                .loaders
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            totals.add(loaders);
        }
        response
    }

    /// The schema (for its SDL, say).
    pub fn schema(&self) -> &BookstoreSchema {
        &self.inner.schema
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The counters: requests, round trips, loaders (summed over requests), caches.
    pub fn stats(&self) -> BookstoreStats {
        let inner = &self.inner;
        let loaders = *inner.loaders.lock().unwrap_or_else(PoisonError::into_inner);
        let year_cache = match &inner.aggregates {
            Aggregates::Herder(cache) => Some(cache.stats()),
            _ => None,
        };
        BookstoreStats::new(
            inner.requests.load(Relaxed),
            &inner.db,
            loaders,
            inner.caches.as_ref(),
            year_cache,
        )
    }
}

impl fmt::Debug for Bookstore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bookstore")
            .field("db", &self.inner.db)
            .field("rows", &self.inner.rows)
            .finish_non_exhaustive()
    }
}

/// One request's loaders.
pub(crate) struct Loaders {
    pub(crate) authors: DataLoader<AuthorsById>,
    pub(crate) reviews: DataLoader<ReviewsByBook>,
    pub(crate) books_by_author: DataLoader<BooksByAuthor>,
}

impl Loaders {
    fn new(db: &Db, caches: Option<&RowCaches>) -> Self {
        // Named as their caches: `herder_dataloader_…{name="authors"}` next to
        // `herder_cache_…{name="authors"}`.
        let authors = DataLoader::builder(AuthorsById(db.clone())).name("authors");
        let reviews = DataLoader::builder(ReviewsByBook(db.clone())).name("reviews");
        let books_by_author =
            DataLoader::builder(BooksByAuthor(db.clone())).name("books_by_author");
        let (authors, reviews, books_by_author) = match caches {
            Some(caches) => (
                authors.cache(caches.authors.clone()),
                reviews.cache(caches.reviews.clone()),
                books_by_author.cache(caches.books_by_author.clone()),
            ),
            None => (authors, reviews, books_by_author),
        };
        Loaders {
            authors: authors.build().expect("valid loader settings"),
            reviews: reviews.build().expect("valid loader settings"),
            books_by_author: books_by_author.build().expect("valid loader settings"),
        }
    }
}

type Result<T> = std::result::Result<T, async_graphql::Error>;

fn failed(err: impl fmt::Display) -> async_graphql::Error {
    async_graphql::Error::new(err.to_string())
}

/// What every resolver finds in its context: the bookstore and this request's loaders.
#[derive(Clone)]
pub(crate) struct RequestData {
    store: Bookstore,
    loaders: Option<Arc<Loaders>>,
}

impl RequestData {
    fn new(store: Bookstore) -> Self {
        let loaders = match store.inner.rows {
            RowAccess::Naive => None,
            RowAccess::DataLoader | RowAccess::DataLoaderCache => Some(Arc::new(Loaders::new(
                &store.inner.db,
                store.inner.caches.as_ref(),
            ))),
        };
        RequestData { store, loaders }
    }

    fn db(&self) -> &Db {
        &self.store.inner.db
    }

    pub(crate) async fn page(&self, first: i64, offset: i64) -> Result<Vec<Book>> {
        match &self.store.inner.caches {
            Some(caches) => {
                let db = self.db().clone();
                let load = move || async move { db.books_page(first, offset).await.map(Arc::from) };
                let page = caches.pages.try_get_with((first, offset), load).await;
                Ok(page.map_err(failed)?.to_vec())
            }
            None => self.db().books_page(first, offset).await.map_err(failed),
        }
    }

    pub(crate) async fn book(&self, id: i64) -> Result<Option<Book>> {
        self.db().book(id).await.map_err(failed)
    }

    pub(crate) async fn author(&self, id: i64) -> Result<Option<Author>> {
        match &self.loaders {
            Some(loaders) => loaders.authors.load(id).await.map_err(failed),
            None => self.db().author(id).await.map_err(failed),
        }
    }

    pub(crate) async fn reviews(&self, book: i64) -> Result<Vec<Review>> {
        match &self.loaders {
            Some(loaders) => {
                let reviews = loaders.reviews.load(book).await.map_err(failed)?;
                Ok(reviews.map(|r| r.to_vec()).unwrap_or_default())
            }
            None => self.db().reviews_of_book(book).await.map_err(failed),
        }
    }

    pub(crate) async fn books_of(&self, author: i64) -> Result<Vec<Book>> {
        match &self.loaders {
            Some(loaders) => {
                let books = loaders.books_by_author.load(author).await.map_err(failed)?;
                Ok(books.map(|b| b.to_vec()).unwrap_or_default())
            }
            None => self.db().books_of_author(author).await.map_err(failed),
        }
    }

    pub(crate) async fn year_stats(&self, year: i64) -> Result<YearStats> {
        let db = self.db().clone();
        match &self.store.inner.aggregates {
            Aggregates::Direct => db.year_stats(year).await.map_err(failed),
            Aggregates::Plain(cache) => {
                let load = || async move { db.year_stats(year).await };
                cache.get_or_load(year, load).await.map_err(failed)
            }
            Aggregates::Herder(cache) => {
                let load = move || async move { db.year_stats(year).await };
                cache.try_get_with(year, load).await.map_err(failed)
            }
        }
    }
}
