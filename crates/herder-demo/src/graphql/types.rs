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
const MAX_PAGE: i64 = 1_000;

/// The root of every query.
#[derive(Debug)]
pub struct Query;

#[Object]
impl Query {
    /// Books by id: `first` (at most 1000) from `offset`.
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

    /// Its reviews: one lookup per book (N+1) unless a DataLoader batches them.
    async fn reviews(&self, ctx: &Context<'_>) -> Result<Vec<Review>> {
        data(ctx).reviews(self.id).await
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

    /// Their books: one lookup per author (N+1) unless a DataLoader batches them.
    async fn books(&self, ctx: &Context<'_>) -> Result<Vec<Book>> {
        data(ctx).books_of(self.id).await
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
