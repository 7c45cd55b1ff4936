//! The batch functions behind the resolvers: each turns the keys a request asked for in one
//! scheduler pass into one query.
//!
//! Every loader answers every key it was given (an author without books gets an empty list), so
//! that a [`Cache`](herder::Cache) in front stores an answer for each key instead of asking again.

use std::collections::HashMap;
use std::sync::Arc;

use herder::Loader;

use crate::db::{Author, Book, Db, Review};

/// `book.author`: authors by id.
#[derive(Debug)]
pub struct AuthorsById(pub Db);

impl Loader for AuthorsById {
    type Key = i64;
    type Value = Author;
    type Error = sqlx::Error;

    async fn load(&self, ids: &[i64]) -> Result<HashMap<i64, Author>, sqlx::Error> {
        let authors = self.0.authors(ids).await?;
        Ok(authors.into_iter().map(|a| (a.id, a)).collect())
    }
}

/// `book.reviews`: the reviews of each book.
#[derive(Debug)]
pub struct ReviewsByBook(pub Db);

impl Loader for ReviewsByBook {
    type Key = i64;
    type Value = Arc<[Review]>;
    type Error = sqlx::Error;

    async fn load(&self, books: &[i64]) -> Result<HashMap<i64, Arc<[Review]>>, sqlx::Error> {
        let reviews = self.0.reviews_of_books(books).await?;
        Ok(group(books, reviews, |r| r.book_id))
    }
}

/// `author.books`: the books of each author.
#[derive(Debug)]
pub struct BooksByAuthor(pub Db);

impl Loader for BooksByAuthor {
    type Key = i64;
    type Value = Arc<[Book]>;
    type Error = sqlx::Error;

    async fn load(&self, authors: &[i64]) -> Result<HashMap<i64, Arc<[Book]>>, sqlx::Error> {
        let books = self.0.books_of_authors(authors).await?;
        Ok(group(authors, books, |b| b.author_id))
    }
}

/// Groups `rows` under their parent's key, with an empty list for every key without rows.
fn group<T>(keys: &[i64], rows: Vec<T>, parent: impl Fn(&T) -> i64) -> HashMap<i64, Arc<[T]>> {
    let mut groups: HashMap<i64, Vec<T>> = keys.iter().map(|k| (*k, Vec::new())).collect();
    for row in rows {
        groups.entry(parent(&row)).or_default().push(row);
    }
    groups
        .into_iter()
        .map(|(k, rows)| (k, Arc::from(rows)))
        .collect()
}
