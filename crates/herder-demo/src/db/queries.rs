//! Every query the API sends, each one round trip through [`Db::fetch_all`] (which counts it).
//! The `*_of_*` and plural forms take many keys at once: they are what the loaders call.

use std::fmt::Write as _;

use sqlx::Any;
use sqlx::Row;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;

use super::model::{Author, Book, Review, YearStats};
use super::{Backend, Db};

type Result<T> = std::result::Result<T, sqlx::Error>;

const BOOK: &str = "SELECT id, author_id, title, year, pages FROM books";
const AUTHOR: &str = "SELECT id, name, born, country FROM authors";
const REVIEW: &str = "SELECT id, book_id, rating, reviewer, body FROM reviews";

/// `$1, $2, ..., $n` on PostgreSQL, `?, ?, ..., ?` on SQLite.
///
/// SQLite looks each named parameter (`$7`) up in a list of the statement's names, which costs
/// `n²` for a long list; anonymous ones (`?`) are numbered as they come.
pub(super) fn placeholders(backend: Backend, n: usize) -> String {
    let mut list = String::new();
    for i in 1..=n {
        let separator = if i == 1 { "" } else { ", " };
        let _ = match backend {
            Backend::Postgres => write!(list, "{separator}${i}"),
            Backend::Sqlite => write!(list, "{separator}?"),
        };
    }
    list
}

/// `sql` with `ids` bound to its placeholders.
fn with_ids<'q>(sql: &'q str, ids: &[i64]) -> Query<'q, Any, AnyArguments<'q>> {
    ids.iter()
        .fold(sqlx::query(sql), |query, id| query.bind(*id))
}

fn book(row: &AnyRow) -> Result<Book> {
    Ok(Book {
        id: row.try_get("id")?,
        author_id: row.try_get("author_id")?,
        title: row.try_get("title")?,
        year: row.try_get("year")?,
        pages: row.try_get("pages")?,
    })
}

fn author(row: &AnyRow) -> Result<Author> {
    Ok(Author {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        born: row.try_get("born")?,
        country: row.try_get("country")?,
    })
}

fn review(row: &AnyRow) -> Result<Review> {
    Ok(Review {
        id: row.try_get("id")?,
        book_id: row.try_get("book_id")?,
        rating: row.try_get("rating")?,
        reviewer: row.try_get("reviewer")?,
        body: row.try_get("body")?,
    })
}

impl Db {
    /// `{select} WHERE {column} IN (...n placeholders) ORDER BY id`
    fn in_list(&self, select: &str, column: &str, n: usize) -> String {
        let list = placeholders(self.backend(), n);
        format!("{select} WHERE {column} IN ({list}) ORDER BY id")
    }

    /// `books(first:, offset:)`: a page of books by id.
    pub async fn books_page(&self, first: i64, offset: i64) -> Result<Vec<Book>> {
        let sql = format!("{BOOK} ORDER BY id LIMIT $1 OFFSET $2");
        let rows = self
            .fetch_all(sqlx::query(&sql).bind(first).bind(offset))
            .await?;
        rows.iter().map(book).collect()
    }

    /// One book.
    pub async fn book(&self, id: i64) -> Result<Option<Book>> {
        let sql = format!("{BOOK} WHERE id = $1");
        let rows = self.fetch_all(sqlx::query(&sql).bind(id)).await?;
        rows.first().map(book).transpose()
    }

    /// One author: what a naive `book.author` resolver sends, once per book.
    pub async fn author(&self, id: i64) -> Result<Option<Author>> {
        let sql = format!("{AUTHOR} WHERE id = $1");
        let rows = self.fetch_all(sqlx::query(&sql).bind(id)).await?;
        rows.first().map(author).transpose()
    }

    /// Many authors in one round trip.
    pub async fn authors(&self, ids: &[i64]) -> Result<Vec<Author>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = self.in_list(AUTHOR, "id", ids.len());
        let rows = self.fetch_all(with_ids(&sql, ids)).await?;
        rows.iter().map(author).collect()
    }

    /// The reviews of one book: what a naive `book.reviews` resolver sends, once per book.
    pub async fn reviews_of_book(&self, book: i64) -> Result<Vec<Review>> {
        let sql = format!("{REVIEW} WHERE book_id = $1 ORDER BY id");
        let rows = self.fetch_all(sqlx::query(&sql).bind(book)).await?;
        rows.iter().map(review).collect()
    }

    /// The reviews of many books in one round trip.
    pub async fn reviews_of_books(&self, books: &[i64]) -> Result<Vec<Review>> {
        if books.is_empty() {
            return Ok(Vec::new());
        }
        let sql = self.in_list(REVIEW, "book_id", books.len());
        let rows = self.fetch_all(with_ids(&sql, books)).await?;
        rows.iter().map(review).collect()
    }

    /// The books of one author.
    pub async fn books_of_author(&self, author: i64) -> Result<Vec<Book>> {
        let sql = format!("{BOOK} WHERE author_id = $1 ORDER BY id");
        let rows = self.fetch_all(sqlx::query(&sql).bind(author)).await?;
        rows.iter().map(book).collect()
    }

    /// The books of many authors in one round trip.
    pub async fn books_of_authors(&self, authors: &[i64]) -> Result<Vec<Book>> {
        if authors.is_empty() {
            return Ok(Vec::new());
        }
        let sql = self.in_list(BOOK, "author_id", authors.len());
        let rows = self.fetch_all(with_ids(&sql, authors)).await?;
        rows.iter().map(book).collect()
    }

    /// The expensive aggregate: every book of a year and its reviews (no index on `year`: a scan
    /// of `books`, then a join).
    pub async fn year_stats(&self, year: i64) -> Result<YearStats> {
        let sql = "SELECT COUNT(DISTINCT b.id) AS books, COUNT(r.id) AS reviews, \
                   CAST(AVG(r.rating) AS DOUBLE PRECISION) AS average \
                   FROM books b LEFT JOIN reviews r ON r.book_id = b.id WHERE b.year = $1";
        let rows = self.fetch_all(sqlx::query(sql).bind(year)).await?;
        let row = rows.first().ok_or(sqlx::Error::RowNotFound)?;
        Ok(YearStats {
            year,
            books: row.try_get("books")?,
            reviews: row.try_get("reviews")?,
            average_rating: row.try_get("average")?,
        })
    }
}
