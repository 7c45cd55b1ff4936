//! The rows of the bookstore, as the queries return them. Serde types, so that a Redis tier can
//! store them.

use serde::{Deserialize, Serialize};

/// A row of `authors`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Author {
    /// Primary key.
    pub id: i64,
    /// Full name.
    pub name: String,
    /// Year of birth.
    pub born: i64,
    /// Country.
    pub country: String,
}

/// A row of `books`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    /// Primary key.
    pub id: i64,
    /// Who wrote it (`authors.id`).
    pub author_id: i64,
    /// Title.
    pub title: String,
    /// Year of publication.
    pub year: i64,
    /// Page count.
    pub pages: i64,
}

/// A row of `reviews`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// Primary key.
    pub id: i64,
    /// The book reviewed (`books.id`).
    pub book_id: i64,
    /// 1 to 5 stars.
    pub rating: i64,
    /// Who wrote the review.
    pub reviewer: String,
    /// The review.
    pub body: String,
}

/// An aggregate over the books of one year and their reviews: the demo's expensive query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct YearStats {
    /// The year.
    pub year: i64,
    /// Books published that year.
    pub books: i64,
    /// Reviews of those books.
    pub reviews: i64,
    /// Their average rating (`None` without reviews).
    pub average_rating: Option<f64>,
}
