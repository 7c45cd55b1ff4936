//! What herder's tests and benches share: a `redis-server` of their own on a free loopback port,
//! which they can pause, kill and restart; a [`FaultProxy`] to put between it and herder; and the
//! invalidation-contract checker ([`History`], driven by a [`Workload`] over a versioned
//! [`Database`], with [`Chaos`] injecting faults).
//!
//! Without the binary, [`RedisServer::start`] returns `None` (the caller skips), unless
//! `HERDER_REQUIRE_REDIS=1` (set by `.ci/run`), in which case it panics.
#![forbid(unsafe_code)]
#![warn(
    missing_debug_implementations,
    missing_docs,
    rust_2018_idioms,
    unreachable_pub
)]

mod chaos;
mod database;
mod history;
mod proxy;
mod workload;

pub use chaos::{Chaos, Fault, Injected};
pub use database::{Database, RowGuard};
pub use history::{Bounds, FaultWindow, History, Read, Report, Rule, Violation, Write};
pub use proxy::{FaultProxy, Faults};
pub use workload::{Node, ReadFuture, Workload};

// One copy, in herder-redis's tests (which must build from the packaged crate, without this
// unpublished one). It allows its own unused items (`RedisServer`, which is also below).
#[path = "../../herder-redis/tests/support/servers.rs"]
mod servers;

pub use servers::{ConfiguredRedis, RedisCluster};

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts a server and waits until it listens, or returns `None` if `redis-server` is not
    /// installed (and `HERDER_REQUIRE_REDIS` is not `1`).
    ///
    /// # Panics
    ///
    /// When the server does not listen within 10 s, or when it is missing and required.
    pub fn start() -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let mut server = RedisServer { child: None, port };
        match server.spawn() {
            Ok(()) => Some(server),
            Err(err) if std::env::var("HERDER_REQUIRE_REDIS").as_deref() == Ok("1") => {
                panic!("redis-server is required (HERDER_REQUIRE_REDIS=1) but cannot start: {err}")
            }
            Err(err) => {
                eprintln!(
                    "redis-server cannot start ({err}): skipping (set HERDER_REQUIRE_REDIS=1 to fail instead)"
                );
                None
            }
        }
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        // Polled: a child process has no readiness event to wait on.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// The server's loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// SIGSTOP: the server keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A fresh, empty server on the same port.
    ///
    /// # Panics
    ///
    /// When it does not start.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn().expect("redis-server restarts");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused server does not die of SIGKILL until continued on some kernels.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}
