//! The GraphQL types and their resolvers. Resolvers that reach the database go through the
//! request's [`RequestData`], which decides, by mode, whether a lookup is a query of its own, a
//! key in a DataLoader batch, or a cache read.

use async_graphql::{Context, Object, Result};

use super::store::RequestData;
use crate::db::{Author, Book, Review, YearStats};

fn data<'a>(ctx: &Context<'a>) -> &'a RequestData {
    ctx.data_unchecked::<RequestData>()
}

/// The most books one `books` call returns.
pub const MAX_PAGE: i64 = 100;

/// The most items a nested list (`book.reviews`, `author.books`) returns, and its default size.
pub const MAX_LIST: i64 = 100;

/// The cost of a list field of `size` items of `child` cost each, for the schema's complexity
/// limit: a list multiplies what is asked of each item by its size. Bounded (out-of-range sizes
/// are refused by the resolver, but the estimate runs first), so that sums stay far from overflow.
fn list_cost(size: i64, child: usize) -> usize {
    let size = usize::try_from(size.max(0)).unwrap_or(usize::MAX);
    size.max(1).saturating_mul(child.max(1)).min(1 << 40)
}

/// `first` in `0..=max`, or a GraphQL error that says so.
fn check_size(first: i64, max: i64) -> Result<usize> {
    if (0..=max).contains(&first) {
        Ok(usize::try_from(first).unwrap_or(0))
    } else {
        Err(format!("first must be 0 to {max}").into())
    }
}

/// The root of every query.
#[derive(Debug)]
pub struct Query;

#[Object]
impl Query {
    /// Books by id: `first` (at most 100) from `offset`.
    #[graphql(complexity = "list_cost(first, child_complexity)")]
    async fn books(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 10)] first: i64,
        #[graphql(default = 0)] offset: i64,
    ) -> Result<Vec<Book>> {
        if !(0..=MAX_PAGE).contains(&first) || offset < 0 {
            return Err(format!("first must be 0 to {MAX_PAGE}, and offset 0 or more").into());
        }
        data(ctx).page(first, offset).await
    }

    /// One book.
    async fn book(&self, ctx: &Context<'_>, id: i64) -> Result<Option<Book>> {
        data(ctx).book(id).await
    }

    /// One author.
    async fn author(&self, ctx: &Context<'_>, id: i64) -> Result<Option<Author>> {
        data(ctx).author(id).await
    }

    /// The books of one year and their reviews, aggregated: an expensive query.
    async fn year_stats(&self, ctx: &Context<'_>, year: i64) -> Result<YearStats> {
        data(ctx).year_stats(year).await
    }
}

/// A book.
#[Object]
impl Book {
    async fn id(&self) -> i64 {
        self.id
    }

    async fn title(&self) -> &str {
        &self.title
    }

    async fn year(&self) -> i64 {
        self.year
    }

    async fn pages(&self) -> i64 {
        self.pages
    }

    /// Who wrote it: one lookup per book (N+1) unless a DataLoader batches them.
    async fn author(&self, ctx: &Context<'_>) -> Result<Option<Author>> {
        data(ctx).author(self.author_id).await
    }

    /// Its first `first` reviews (at most 100, all of them by default): one lookup per book
    /// (N+1) unless a DataLoader batches them.
    #[graphql(complexity = "list_cost(first, child_complexity)")]
    async fn reviews(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "MAX_LIST")] first: i64,
    ) -> Result<Vec<Review>> {
        let first = check_size(first, MAX_LIST)?;
        let mut reviews = data(ctx).reviews(self.id).await?;
        reviews.truncate(first);
        Ok(reviews)
    }
}

/// An author.
#[Object]
impl Author {
    async fn id(&self) -> i64 {
        self.id
    }

    async fn name(&self) -> &str {
        &self.name
    }

    async fn born(&self) -> i64 {
        self.born
    }

    async fn country(&self) -> &str {
        &self.country
    }

    /// Their first `first` books (at most 100, all of them by default): one lookup per author
    /// (N+1) unless a DataLoader batches them.
    #[graphql(complexity = "list_cost(first, child_complexity)")]
    async fn books(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "MAX_LIST")] first: i64,
    ) -> Result<Vec<Book>> {
        let first = check_size(first, MAX_LIST)?;
        let mut books = data(ctx).books_of(self.id).await?;
        books.truncate(first);
        Ok(books)
    }
}

/// A review of a book.
#[Object]
impl Review {
    async fn id(&self) -> i64 {
        self.id
    }

    async fn rating(&self) -> i64 {
        self.rating
    }

    async fn reviewer(&self) -> &str {
        &self.reviewer
    }

    async fn body(&self) -> &str {
        &self.body
    }
}

/// The books of a year and their reviews.
#[Object]
impl YearStats {
    async fn year(&self) -> i64 {
        self.year
    }

    async fn books(&self) -> i64 {
        self.books
    }

    async fn reviews(&self) -> i64 {
        self.reviews
    }

    async fn average_rating(&self) -> Option<f64> {
        self.average_rating
    }
}
