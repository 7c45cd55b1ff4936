//! The binary's command line: bad input is one line on stderr and a non-zero exit, never a panic
//! trace; `--quick` runs the whole report.

mod support;

use std::net::TcpListener;
use std::time::Duration;

use support::run_demo;

const WITHIN: Duration = Duration::from_secs(120);

/// Exactly one line on stderr, starting with `herder-demo: `, and no panic.
fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, not: {stderr:?}");
    assert!(lines[0].starts_with("herder-demo: "), "{stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr:?}");
    lines[0]
}

#[test]
fn an_unknown_flag_is_one_line() {
    let out = run_demo(&["--bogus"], WITHIN);
    assert_eq!(out.code, Some(2));
    let line = one_line(&out.stderr);
    assert!(line.contains("unexpected argument '--bogus'"), "{line}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_bad_latency_is_one_line() {
    let out = run_demo(&["--db-latency", "fast"], WITHIN);
    assert_eq!(out.code, Some(2));
    let line = one_line(&out.stderr);
    assert!(line.contains("--db-latency"), "{line}");
}

#[test]
fn instances_without_redis_is_one_line() {
    let out = run_demo(&["--instances", "3"], WITHIN);
    assert_eq!(out.code, Some(2));
    let line = one_line(&out.stderr);
    assert!(line.contains("--redis-url"), "{line}");
}

#[test]
fn an_unreachable_database_is_one_line() {
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/nowhere",
        support::free_port()
    );
    let out = run_demo(&["--database-url", &url], WITHIN);
    assert_eq!(out.code, Some(1));
    let line = one_line(&out.stderr);
    assert!(
        line.starts_with("herder-demo: cannot connect to the database at postgres://"),
        "{line}"
    );
}

#[test]
fn an_unsupported_database_url_is_one_line() {
    let out = run_demo(&["--database-url", "mysql://root@127.0.0.1/test"], WITHIN);
    assert_eq!(out.code, Some(1));
    let line = one_line(&out.stderr);
    assert!(line.contains("unsupported database URL"), "{line}");
}

#[test]
fn a_port_in_use_is_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_demo(&["serve", "--quick", "--addr", &addr], WITHIN);
    assert_eq!(out.code, Some(1));
    let line = one_line(&out.stderr);
    assert!(
        line.starts_with(&format!("herder-demo: cannot listen on {addr}: ")),
        "{line}"
    );
}

#[test]
fn a_bad_address_is_one_line() {
    let out = run_demo(&["serve", "--addr", "localhost"], WITHIN);
    assert_eq!(out.code, Some(2));
    one_line(&out.stderr);
}

#[test]
fn help_is_not_an_error() {
    let out = run_demo(&["--help"], WITHIN);
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.contains("--database-url"));
    assert!(out.stdout.contains("--db-latency"));
}

#[test]
fn the_quick_report_prints_every_table() {
    let out = run_demo(&["--quick"], WITHIN);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for title in ["N+1 · ", "Stampede · ", "Recovery storm · "] {
        assert!(
            out.stdout.contains(title),
            "no {title:?} table in:\n{}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("waits 1 ms (--db-latency)"));
    assert!(
        !out.stdout.contains("Fleet · "),
        "no fleet without --redis-url"
    );
}
