//! The tables. The same DDL on both databases but for the primary key: SQLite's
//! `INTEGER PRIMARY KEY` is its row id (the fast path), PostgreSQL's is a `BIGINT`.

use super::Backend;

/// Statements that leave an empty bookstore: on PostgreSQL in a fresh schema of its own, on
/// SQLite in place of the demo's previous tables.
pub(super) fn recreate(backend: Backend, pg_schema: &str) -> Vec<String> {
    let key = match backend {
        Backend::Sqlite => "INTEGER PRIMARY KEY",
        Backend::Postgres => "BIGINT PRIMARY KEY",
    };
    let mut statements = match backend {
        Backend::Sqlite => vec![
            "DROP TABLE IF EXISTS reviews".to_owned(),
            "DROP TABLE IF EXISTS books".to_owned(),
            "DROP TABLE IF EXISTS authors".to_owned(),
        ],
        Backend::Postgres => vec![
            format!("DROP SCHEMA IF EXISTS {pg_schema} CASCADE"),
            format!("CREATE SCHEMA {pg_schema}"),
        ],
    };
    statements.extend([
        format!(
            "CREATE TABLE authors (id {key}, name TEXT NOT NULL, born BIGINT NOT NULL, \
             country TEXT NOT NULL)"
        ),
        format!(
            "CREATE TABLE books (id {key}, author_id BIGINT NOT NULL REFERENCES authors (id), \
             title TEXT NOT NULL, year BIGINT NOT NULL, pages BIGINT NOT NULL)"
        ),
        format!(
            "CREATE TABLE reviews (id {key}, book_id BIGINT NOT NULL REFERENCES books (id), \
             rating BIGINT NOT NULL, reviewer TEXT NOT NULL, body TEXT NOT NULL)"
        ),
    ]);
    statements
}

/// Indexes, created once the rows are in (faster than maintaining them during the load).
/// `books.year` has none on purpose: the year aggregate scans, as a report query would.
pub(super) const INDEXES: [&str; 2] = [
    "CREATE INDEX books_author ON books (author_id)",
    "CREATE INDEX reviews_book ON reviews (book_id)",
];
