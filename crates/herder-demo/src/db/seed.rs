//! The bookstore's rows: generated from a fixed seed (the same rows on every run and on both
//! databases) and inserted in multi-row `INSERT`s inside one transaction.

use std::fmt::Write as _;

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyPool, Executor};

use super::queries::placeholders;
use super::{Backend, schema};

/// How many rows to seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedSize {
    /// Rows of `authors`.
    pub authors: i64,
    /// Rows of `books`.
    pub books: i64,
    /// Rows of `reviews`.
    pub reviews: i64,
}

impl SeedSize {
    /// The default bookstore: 1,000 authors, 20,000 books, 100,000 reviews.
    pub const FULL: SeedSize = SeedSize {
        authors: 1_000,
        books: 20_000,
        reviews: 100_000,
    };

    /// A small bookstore for tests and `--quick`: 50 authors, 1,000 books, 5,000 reviews.
    pub const SMALL: SeedSize = SeedSize {
        authors: 50,
        books: 1_000,
        reviews: 5_000,
    };
}

const SEED: u64 = 0x6865_7264_6572; // "herder"
/// Rows per `INSERT`: at most 5,000 parameters, well under SQLite's 32,766 and PostgreSQL's 65,535.
const CHUNK: usize = 1_000;
/// Books are published from this year on, one of `YEARS` years.
pub(crate) const FIRST_YEAR: i64 = 1950;
const YEARS: i64 = 75;

const FIRST_NAMES: &[&str] = &[
    "Ada", "Amara", "Bruno", "Chiara", "Dmitri", "Elif", "Farah", "Gustav", "Hana", "Ines",
    "Jonas", "Kenji", "Leila", "Mateo", "Nadia", "Olu", "Priya", "Quentin", "Rosa", "Soren",
    "Tomas", "Ursula", "Vera", "Wen", "Xavier", "Yara", "Zofia", "Arjun", "Beatriz", "Cyril",
];
const LAST_NAMES: &[&str] = &[
    "Abara",
    "Bergström",
    "Castillo",
    "Dubois",
    "Eriksen",
    "Fontaine",
    "Gallagher",
    "Haddad",
    "Ishikawa",
    "Jovanović",
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Petrova",
    "Quispe",
    "Rossi",
    "Schneider",
    "Tanaka",
    "Urquhart",
    "Varga",
    "Whitfield",
    "Xu",
    "Yilmaz",
    "Zamora",
    "Achebe",
    "Brennan",
    "Costa",
    "Delacroix",
];
const COUNTRIES: &[&str] = &[
    "Argentina",
    "Brazil",
    "Canada",
    "Egypt",
    "France",
    "Germany",
    "India",
    "Italy",
    "Japan",
    "Kenya",
    "Nigeria",
    "Norway",
    "Poland",
    "Spain",
    "Sweden",
    "Turkey",
    "United Kingdom",
];
const ADJECTIVES: &[&str] = &[
    "Silent",
    "Crimson",
    "Hidden",
    "Last",
    "Broken",
    "Golden",
    "Distant",
    "Quiet",
    "Burning",
    "Forgotten",
    "Northern",
    "Paper",
    "Glass",
    "Hollow",
    "Midnight",
    "Salt",
    "Winter",
    "Wild",
];
const NOUNS: &[&str] = &[
    "River",
    "Garden",
    "Orchard",
    "Lighthouse",
    "Library",
    "Harbor",
    "Mountain",
    "Letter",
    "Kingdom",
    "Archive",
    "Compass",
    "Tide",
    "Signal",
    "Meridian",
    "Atlas",
    "Lantern",
    "Bridge",
];
const PLACES: &[&str] = &[
    "Lisbon",
    "the North",
    "Kyoto",
    "the Delta",
    "Marrakesh",
    "the Steppe",
    "Valparaíso",
    "the Islands",
    "Prague",
    "the Valley",
    "Odessa",
    "the Coast",
];
const OPENINGS: &[&str] = &[
    "A slow start, but",
    "From the first page",
    "I expected little, yet",
    "Honestly,",
    "Read it in one sitting:",
    "My book club agreed:",
    "Second time through,",
    "Surprisingly,",
];
const VERDICTS: &[&str] = &[
    "the characters stay with you.",
    "the ending did not land for me.",
    "the prose is gorgeous.",
    "it drags in the middle.",
    "a perfect travel read.",
    "the plot twists are earned.",
    "too long by a hundred pages.",
    "I recommend it to everyone.",
];

fn pick<'a>(rng: &mut fastrand::Rng, words: &[&'a str]) -> &'a str {
    words[rng.usize(..words.len())]
}

/// A value to bind.
enum Value {
    Int(i64),
    Text(String),
}

/// Creates the tables and inserts the rows, in one transaction; then the indexes.
pub(super) async fn seed(
    pool: &AnyPool,
    backend: Backend,
    pg_schema: &str,
    size: SeedSize,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for statement in schema::recreate(backend, pg_schema) {
        tx.execute(statement.as_str()).await?;
    }
    let mut rng = fastrand::Rng::with_seed(SEED);
    let authors = (1..=size.authors).map(|id| {
        let name = format!(
            "{} {}",
            pick(&mut rng, FIRST_NAMES),
            pick(&mut rng, LAST_NAMES)
        );
        let born = 1900 + rng.i64(0..90);
        let country = pick(&mut rng, COUNTRIES).to_owned();
        vec![
            Value::Int(id),
            Value::Text(name),
            Value::Int(born),
            Value::Text(country),
        ]
    });
    insert(
        &mut tx,
        backend,
        "authors (id, name, born, country)",
        authors.collect(),
    )
    .await?;

    let mut rng = fastrand::Rng::with_seed(SEED + 1);
    let books = (1..=size.books).map(|id| {
        let author = rng.i64(1..=size.authors);
        let title = match rng.u8(0..3) {
            0 => format!(
                "The {} {}",
                pick(&mut rng, ADJECTIVES),
                pick(&mut rng, NOUNS)
            ),
            1 => format!("{} of {}", pick(&mut rng, NOUNS), pick(&mut rng, PLACES)),
            _ => format!("A {} in {}", pick(&mut rng, NOUNS), pick(&mut rng, PLACES)),
        };
        let year = FIRST_YEAR + rng.i64(0..YEARS);
        let pages = rng.i64(90..900);
        vec![
            Value::Int(id),
            Value::Int(author),
            Value::Text(title),
            Value::Int(year),
            Value::Int(pages),
        ]
    });
    insert(
        &mut tx,
        backend,
        "books (id, author_id, title, year, pages)",
        books.collect(),
    )
    .await?;

    let mut rng = fastrand::Rng::with_seed(SEED + 2);
    let reviews = (1..=size.reviews).map(|id| {
        let book = rng.i64(1..=size.books);
        // Mostly good reviews, as on any bookstore: 5% one star, 10% two, 20% three, 35% four.
        let rating = match rng.u8(0..100) {
            0..5 => 1,
            5..15 => 2,
            15..35 => 3,
            35..70 => 4,
            _ => 5,
        };
        let reviewer = format!(
            "{} {}.",
            pick(&mut rng, FIRST_NAMES),
            &pick(&mut rng, LAST_NAMES)[..1]
        );
        let body = format!("{} {}", pick(&mut rng, OPENINGS), pick(&mut rng, VERDICTS));
        vec![
            Value::Int(id),
            Value::Int(book),
            Value::Int(rating),
            Value::Text(reviewer),
            Value::Text(body),
        ]
    });
    insert(
        &mut tx,
        backend,
        "reviews (id, book_id, rating, reviewer, body)",
        reviews.collect(),
    )
    .await?;

    for index in schema::INDEXES {
        tx.execute(index).await?;
    }
    tx.commit().await?;
    if backend == Backend::Postgres {
        for table in ["authors", "books", "reviews"] {
            pool.execute(format!("ANALYZE {table}").as_str()).await?;
        }
    }
    Ok(())
}

/// `INSERT INTO {table} VALUES (...), (...)`, `CHUNK` rows at a time.
async fn insert(
    tx: &mut sqlx::Transaction<'_, Any>,
    backend: Backend,
    table: &str,
    rows: Vec<Vec<Value>>,
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(CHUNK) {
        let columns = chunk[0].len();
        let values = placeholders(backend, chunk.len() * columns);
        let mut params = values.split(", ");
        let mut sql = format!("INSERT INTO {table} VALUES ");
        for row in 0..chunk.len() {
            let row_params: Vec<&str> = params.by_ref().take(columns).collect();
            let separator = if row == 0 { "" } else { ", " };
            let _ = write!(sql, "{separator}({})", row_params.join(", "));
        }
        let mut query: Query<'_, Any, AnyArguments<'_>> = sqlx::query(&sql);
        for row in chunk {
            for value in row {
                query = match value {
                    Value::Int(v) => query.bind(*v),
                    Value::Text(v) => query.bind(v.clone()),
                };
            }
        }
        tx.execute(query).await?;
    }
    Ok(())
}
