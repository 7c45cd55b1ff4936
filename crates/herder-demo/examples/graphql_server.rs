//! The main use of herder in a GraphQL service: an axum + async-graphql server with a
//! DataLoader per request in the GraphQL context, in front of a `Cache` shared by every request.
//!
//! ```sh
//! cargo run -p herder-demo --example graphql_server
//! curl -s 127.0.0.1:8080/graphql -H 'content-type: application/json' \
//!   -d '{"query":"{ books { title author { name } } }"}'
//! ```
//!
//! Each request resolves 20 books and their authors: one batch for the authors it misses, none
//! for those another request already cached; an author invalidated by `updateAuthor` is
//! reloaded by the next request that asks for it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::{Context, EmptySubscription, Object, Schema, SimpleObject};
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use herder::{Cache, DataLoader, Loader};

/// The database: author names by id, with a round trip of 2 ms per query.
#[derive(Clone, Default)]
struct Db(Arc<Mutex<HashMap<u64, String>>>);

impl Db {
    async fn authors(&self, ids: &[u64]) -> HashMap<u64, String> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let rows = self.0.lock().unwrap();
        ids.iter()
            .filter_map(|id| Some((*id, rows.get(id)?.clone())))
            .collect()
    }
}

/// `SELECT id, name FROM authors WHERE id = ANY($1)`: one query for a whole batch.
struct Authors(Db);

impl Loader for Authors {
    type Key = u64;
    type Value = String;
    type Error = Infallible;

    async fn load(&self, ids: &[u64]) -> Result<HashMap<u64, String>, Infallible> {
        Ok(self.0.authors(ids).await)
    }
}

#[derive(SimpleObject)]
struct Author {
    id: u64,
    name: String,
}

struct Book {
    title: String,
    author_id: u64,
}

#[Object]
impl Book {
    async fn title(&self) -> &str {
        &self.title
    }

    /// Every book of the page asks for its author; the request's DataLoader batches them.
    async fn author(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Author>> {
        let authors = ctx.data::<DataLoader<Authors>>()?;
        let name = authors.load(self.author_id).await?;
        Ok(name.map(|name| Author {
            id: self.author_id,
            name,
        }))
    }
}

struct Query;

#[Object]
impl Query {
    async fn books(&self) -> Vec<Book> {
        (0..20)
            .map(|i| Book {
                title: format!("Book {i}"),
                author_id: i % 7,
            })
            .collect()
    }
}

struct Mutation;

#[Object]
impl Mutation {
    /// Writes the row, then invalidates the shared cache: the next read loads the new name.
    async fn update_author(&self, ctx: &Context<'_>, id: u64, name: String) -> bool {
        let app = ctx.data_unchecked::<App>();
        app.db.0.lock().unwrap().insert(id, name);
        app.authors.invalidate(&id);
        true
    }
}

/// What every request shares.
#[derive(Clone)]
struct App {
    db: Db,
    authors: Cache<u64, String>,
    schema: Schema<Query, Mutation, EmptySubscription>,
}

async fn graphql(State(app): State<App>, request: GraphQLRequest) -> GraphQLResponse {
    // A DataLoader per request (its batches are the request's), in front of the shared cache.
    let authors = DataLoader::builder(Authors(app.db.clone()))
        .cache(app.authors.clone())
        .build()
        .expect("valid settings");
    let request = request.into_inner().data(authors).data(app.clone());
    app.schema.execute(request).await.into()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = Db::default();
    db.0.lock()
        .unwrap()
        .extend((0..7).map(|id| (id, format!("Author {id}"))));
    let authors = Cache::builder()
        .max_capacity(100_000)
        .time_to_live(Duration::from_secs(60))
        .build()?;
    let schema = Schema::build(Query, Mutation, EmptySubscription).finish();
    let app = App {
        db,
        authors,
        schema,
    };
    let router = Router::new()
        .route("/graphql", post(graphql))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    println!("GraphQL on http://127.0.0.1:8080/graphql");
    axum::serve(listener, router).await?;
    Ok(())
}
