//! `herder-demo serve` over real HTTP on a loopback port: a GraphQL query, `/stats`, the pages;
//! and the stats page rendered by a headless Chromium (skipped with a message when chromium is
//! missing, unless `HERDER_REQUIRE_CHROMIUM=1`).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

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

    // herder's metrics (its `metrics` feature), named as the demo named each primitive, in
    // Prometheus text.
    let (status, metrics) = server.get("/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("herder_demo_requests 2"), "{metrics}");
    for line in [
        "herder_cache_hits_total{name=\"reviews\"} 10",
        "herder_cache_loads_total{name=\"pages\"} 1",
        "herder_dataloader_keys_loaded_total{name=\"reviews\"} 10",
        "herder_cache_entries{name=\"year_stats\"} 0",
        "# TYPE herder_cache_entries gauge",
        "# TYPE herder_cache_hits_total counter",
        "# TYPE herder_dataloader_batch_size histogram",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    // A bad query is a GraphQL error, not a failed server.
    let (status, body) =
        server.post_json("/graphql", r#"{"query": "{ books(first: -1) { id } }"}"#);
    assert_eq!(status, 200);
    assert!(json(&body)["errors"].is_array());
}

/// Issue 14: 90 bytes that used to run 14–25 s, answer 353 MB and leave 5.5 GB resident.
const HOSTILE: &str = "{ books(first: 1000) { author { books { author { books { author { books \
                       { title } } } } } } } }";

#[test]
fn a_query_too_costly_is_refused_before_it_runs() {
    let server = Server::start();
    let body = serde_json::json!({ "query": HOSTILE }).to_string();
    let started = Instant::now();
    let (status, answer) = server.post_json("/graphql", &body);
    let took = started.elapsed();
    eprintln!(
        "the hostile query was refused in {took:?} ({} bytes)",
        answer.len()
    );
    assert_eq!(status, 200);
    let answer = json(&answer);
    let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("query is too costly"), "{answer}");
    assert!(answer.get("data").is_none_or(Value::is_null), "{answer}");
    // Generous: the limit is checked before anything runs (milliseconds); this only catches a
    // query that runs.
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // Nothing ran: no database round trip.
    let stats = json(&server.get("/stats").1);
    assert_eq!(stats["db_round_trips"], 0, "{stats}");

    // Too deep is refused as well, and the front page still runs.
    let deep = format!(
        "{{ books(first: 1) {} title {} }}",
        "{ author { books(first: 1) ".repeat(5),
        "} } ".repeat(5)
    );
    let body = serde_json::json!({ "query": deep }).to_string();
    let answer = json(&server.post_json("/graphql", &body).1);
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("query is nested too deep")),
        "{answer}"
    );
    let (status, answer) = server.post_json("/graphql", FRONT_PAGE);
    assert_eq!(status, 200);
    assert!(json(&answer).get("errors").is_none(), "{answer}");
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
    assert!(
        page.contains("needs internet"),
        "the GraphiQL link says it needs internet"
    );
    assert!(
        page.contains("<textarea id=\"query\""),
        "and the page has a query box of its own"
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

/// Each scenario button's endpoint: the report's scenario run inside the server, its three modes
/// side by side, herder's last and lower than the baseline.
#[test]
fn runs_each_scenario_inside_the_server() {
    let server = Server::start();
    for (name, measure) in [
        ("n_plus_one", "DB round trips"),
        ("stampede", "backend calls"),
        ("storm", "re-authentications"),
    ] {
        let started = Instant::now();
        let (status, body) = server.post_json(&format!("/scenario/{name}"), "");
        eprintln!("{name}: answered in {:?}", started.elapsed());
        assert_eq!(status, 200, "{body}");
        let result = json(&body);
        assert_eq!(result["measure"], measure);
        let modes = result["modes"].as_array().expect("modes");
        assert_eq!(modes.len(), 3, "{result}");
        assert_eq!(modes[0]["herder"], false, "{result}");
        assert_eq!(modes[2]["herder"], true, "{result}");
        let value = |i: usize| modes[i]["value"].as_u64().expect("a count");
        assert!(
            value(2) < value(0),
            "{name}: herder's side is lower: {result}"
        );
        assert!(value(2) >= 1, "{name}: something was measured: {result}");
        for mode in modes {
            assert!(
                mode["p99_ms"].as_f64() >= mode["p50_ms"].as_f64(),
                "{result}"
            );
            assert!(
                mode["wall_ms"].as_f64().is_some_and(|w| w > 0.0),
                "{result}"
            );
        }
        // The report's table for the same runs.
        assert_eq!(result["table"]["columns"].as_array().map(Vec::len), Some(3));
    }
    let (status, body) = server.post_json("/scenario/nope", "");
    assert_eq!(status, 404);
    assert!(body.contains("n_plus_one, stampede, storm"), "{body}");
}

fn chromium(args: &[&str], url: &str) -> std::process::Output {
    let profile = std::env::temp_dir().join(format!(
        "herder-demo-chromium-{}-{}",
        std::process::id(),
        args.len()
    ));
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
            "--hide-scrollbars",
        ])
        .args(args)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The page presses each scenario button (`?press=`, as a click would) and shows both sides,
/// herder's lower; then a screenshot of it goes to docs/demo-page.png.
#[test]
fn the_page_shows_each_scenario_side_by_side_in_a_browser() {
    if Command::new("chromium").arg("--version").output().is_err() {
        support::missing::<()>("chromium", "not installed", "HERDER_REQUIRE_CHROMIUM");
        return;
    }
    let server = Server::start();
    let url = format!("http://{}/?press=n_plus_one,stampede,storm", server.addr);
    let output = chromium(&["--virtual-time-budget=5000", "--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        dom.contains("data-pressed=\"n_plus_one,stampede,storm\""),
        "the page pressed every button: {dom}"
    );
    for name in ["n_plus_one", "stampede", "storm"] {
        let attribute = |key: &str| -> u64 {
            let tag = dom
                .split(&format!("data-scenario=\"{name}\" data-without=\""))
                .nth(1)
                .unwrap_or_else(|| panic!("no result for {name}: {dom}"));
            let tag = &tag[..tag.find('>').expect("a tag")];
            let value = if key == "without" {
                tag.split('"').next()
            } else {
                tag.split("data-with=\"")
                    .nth(1)
                    .and_then(|v| v.split('"').next())
            };
            value
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no data-{key} for {name}: {tag}"))
        };
        let (without, with) = (attribute("without"), attribute("with"));
        assert!(
            with < without,
            "{name}: with herder {with}, without {without}"
        );
    }
    assert!(dom.contains("without herder</span>: <b"), "{dom}");
    assert!(dom.contains("with herder</span>: <b"), "{dom}");
    // The live charts kept polling while the scenarios ran (the N+1 and stampede scenarios' round
    // trips go through the server's database), and the one with nothing to show says so: the
    // scenarios' loaders are their own, not the server's.
    assert!(
        dom.contains("<polyline data-series=\"round_trips\" points=\""),
        "{dom}"
    );
    assert!(dom.contains("nothing to show: no loader calls"), "{dom}");

    let screenshot =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/demo-page.png");
    let target = format!("--screenshot={}", screenshot.display());
    chromium(
        &[
            "--virtual-time-budget=5000",
            "--window-size=1100,1500",
            &target,
        ],
        &url,
    );
    let png = std::fs::read(&screenshot).expect("the screenshot is written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
}
