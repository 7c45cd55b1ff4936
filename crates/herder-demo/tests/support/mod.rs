//! What the demo's integration tests share: small seeded databases, the demo binary as a child
//! process, and a minimal HTTP client (a `redis-server` of the test's own is
//! [`herder_testkit::RedisServer`]).
//!
//! External services are used for real. Without them a test says so and is skipped, unless the
//! variable that requires it is set (`.ci/run` sets them): `HERDER_REQUIRE_POSTGRES=1`,
//! `HERDER_REQUIRE_REDIS=1`, `HERDER_REQUIRE_CHROMIUM=1`.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use herder_demo::db::{Db, DbOptions, SeedSize};

/// The PostgreSQL the tests use (the machine's own, trust auth), unless
/// `HERDER_DEMO_POSTGRES_URL` names another.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// `true` if `variable` is set to 1.
pub fn required(variable: &str) -> bool {
    std::env::var(variable).as_deref() == Ok("1")
}

/// Skips (returns `None`, with a message) or fails (panics) when `what` is missing.
pub fn missing<T>(what: &str, why: impl std::fmt::Display, variable: &str) -> Option<T> {
    if required(variable) {
        panic!("{what} is required ({variable}=1) but unavailable: {why}");
    }
    eprintln!("{what} unavailable ({why}): skipping this test (set {variable}=1 to fail instead)");
    None
}

/// An embedded SQLite with the small bookstore and `latency` per round trip.
pub async fn sqlite(latency: Duration) -> Db {
    let db = Db::open(&DbOptions::embedded(latency))
        .await
        .expect("sqlite opens");
    db.seed(SeedSize::SMALL).await.expect("seeds");
    db
}

/// A schema name no other test (or process) uses.
pub fn unique_schema() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "herder_demo_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Relaxed)
    )
}

/// The small bookstore in a schema of its own on PostgreSQL, or `None` (skipped) if PostgreSQL
/// does not answer. Call [`Db::drop_schema`] when done.
pub async fn postgres(latency: Duration) -> Option<Db> {
    let url = std::env::var("HERDER_DEMO_POSTGRES_URL")
        .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
    let options = DbOptions {
        url: Some(url.clone()),
        pg_schema: unique_schema(),
        ..DbOptions::embedded(latency)
    };
    let db = match Db::open(&options).await {
        Ok(db) => db,
        Err(err) => {
            return missing(
                &format!("PostgreSQL at {url}"),
                err,
                "HERDER_REQUIRE_POSTGRES",
            );
        }
    };
    db.seed(SeedSize::SMALL).await.expect("seeds");
    Some(db)
}

/// A free loopback port (free when asked; good enough for a test).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The demo binary.
pub fn demo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_herder-demo"))
}

/// What a finished run of the demo printed.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the demo with `args` to the end (killed after `within`).
pub fn run_demo(args: &[&str], within: Duration) -> Output {
    let mut child = demo()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the demo starts");
    let deadline = Instant::now() + within;
    loop {
        if child.try_wait().expect("waits").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("herder-demo {args:?} did not finish within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    Output {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `herder-demo serve` on a port of its own, killed on drop.
pub struct Server {
    child: Child,
    pub addr: String,
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    /// Starts `herder-demo serve --quick --addr 127.0.0.1:0` and waits for its address.
    pub fn start() -> Server {
        let mut child = demo()
            .args(["serve", "--quick", "--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the demo starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("the demo prints its address");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Server {
            child,
            addr,
            _stdout: stdout,
        }
    }

    /// `GET path`: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        http(&self.addr, "GET", path, None)
    }

    /// `POST path` with a JSON body: status and body.
    pub fn post_json(&self, path: &str, body: &str) -> (u16, String) {
        http(&self.addr, "POST", path, Some(body))
    }
}

impl Drop for Server {
    /// SIGTERM, so that the server stops cleanly (and removes its database file); SIGKILL if it
    /// has not stopped within 10 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 request (`Connection: close`): the status and the body.
pub fn http(addr: &str, method: &str, path: &str, json: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = json.unwrap_or("");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if json.is_some() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).expect("sends");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("reads");
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, rest) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    (status, body)
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        body.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    body
}
