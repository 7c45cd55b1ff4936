//! `herder-demo serve` over real HTTP on a loopback port: a GraphQL query, `/stats`, the pages;
//! and the stats page rendered by a headless Chromium (skipped with a message when chromium is
//! missing, unless `HERDER_REQUIRE_CHROMIUM=1`).

mod support;

use std::process::Command;

use serde_json::Value;
use support::Server;

const FRONT_PAGE: &str =
    r#"{"query": "{ books(first: 10) { id title author { name } reviews { rating } } }"}"#;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|err| panic!("{err}: {body}"))
}

#[test]
fn serves_graphql_and_live_stats() {
    let server = Server::start();

    let (status, body) = server.post_json("/graphql", FRONT_PAGE);
    assert_eq!(status, 200);
    let answer = json(&body);
    assert!(answer.get("errors").is_none(), "{answer}");
    let books = answer["data"]["books"].as_array().expect("books");
    assert_eq!(books.len(), 10);
    assert!(books[0]["author"]["name"].is_string());

    let (status, body) = server.get("/stats");
    assert_eq!(status, 200);
    let stats = json(&body);
    assert_eq!(stats["requests"], 1);
    // The page, then the authors and the reviews through the loaders: one round trip per loader
    // call (a level is one call, or a few when the server's two workers split it), every key
    // sent once.
    let loaders = &stats["loaders"];
    let calls = loaders["authors"]["batches"].as_u64().unwrap()
        + loaders["reviews"]["batches"].as_u64().unwrap();
    assert!((2..=20).contains(&calls), "{stats}");
    assert_eq!(stats["db_round_trips"].as_u64(), Some(1 + calls));
    assert_eq!(loaders["reviews"]["batched_keys"], 10);
    assert_eq!(stats["caches"]["pages"]["loads"], 1);
    let round_trips = stats["db_round_trips"].clone();

    // The same query again: answered from the caches, no round trip.
    let (status, _) = server.post_json("/graphql", FRONT_PAGE);
    assert_eq!(status, 200);
    let stats = json(&server.get("/stats").1);
    assert_eq!(stats["requests"], 2);
    assert_eq!(stats["db_round_trips"], round_trips);
    assert_eq!(stats["caches"]["reviews"]["hits"], 10);

    // A bad query is a GraphQL error, not a failed server.
    let (status, body) =
        server.post_json("/graphql", r#"{"query": "{ books(first: -1) { id } }"}"#);
    assert_eq!(status, 200);
    assert!(json(&body)["errors"].is_array());
}

#[test]
fn serves_the_chart_and_graphiql_pages() {
    let server = Server::start();
    let (status, page) = server.get("/");
    assert_eq!(status, 200);
    assert!(page.contains("<svg id=\"rates\""));
    assert!(page.contains("fetch(\"/stats\""));
    assert!(
        !page.contains("https://"),
        "the chart page loads nothing from elsewhere"
    );
    let (status, page) = server.get("/graphql");
    assert_eq!(status, 200);
    assert!(page.to_lowercase().contains("graphiql"));
}

/// The chart page as a browser runs it: Chromium loads it headless, lets its script poll
/// `/stats` for a few (virtual) seconds, and prints the DOM.
#[test]
fn the_stats_page_draws_its_chart_in_a_browser() {
    if Command::new("chromium").arg("--version").output().is_err() {
        support::missing::<()>("chromium", "not installed", "HERDER_REQUIRE_CHROMIUM");
        return;
    }
    let server = Server::start();
    // Traffic, so that the counters have something to show.
    for _ in 0..3 {
        assert_eq!(server.post_json("/graphql", FRONT_PAGE).0, 200);
    }
    let profile = std::env::temp_dir().join(format!("herder-demo-chromium-{}", std::process::id()));
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=4000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://{}/", server.addr))
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The script polled /stats at least twice (a rate needs two samples) and drew the lines.
    let samples: u32 = dom
        .split("data-samples=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no data-samples in the DOM: {dom}"));
    assert!(samples >= 2, "polled {samples} times");
    assert!(
        dom.contains("<polyline data-series=\"round_trips\" points=\""),
        "{dom}"
    );
    assert!(dom.contains("live, every second"));
    // The totals table shows the requests sent above.
    assert!(dom.contains("<td>GraphQL requests</td><td>3</td>"), "{dom}");
}
