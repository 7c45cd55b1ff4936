//! The Redis servers the tests start: a plain `redis-server` (which a test can pause, kill and
//! restart), one with a password, one that speaks only TLS, and a 3-master cluster. Each runs on
//! free loopback ports and is killed on drop; without the binaries each returns `None` (the test
//! skips), unless `HERDER_REQUIRE_REDIS=1` (set by `.ci/run`), in which case it panics. Also what
//! tests read off them: a poll on the real clock, and the calls of `INFO commandstats`.
//!
//! Part of the packaged crate (its tests must build from the `.crate`), and the source of
//! `herder-testkit`'s `ConfiguredRedis` and `RedisCluster` (unpublished, which includes this
//! file), so that there is one copy.
#![allow(dead_code, unreachable_pub)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Polls `condition` every 5 ms for up to `within`; the real clock, since Redis is real.
pub async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    condition()
}

/// The calls of each command in the text of `INFO commandstats`
/// (`cmdstat_evalsha:calls=3,usec=…`), by command name (`evalsha`, `script|load`). Redis counts
/// the commands a script runs inside it as calls of their own.
pub fn command_calls(info: &str) -> impl Iterator<Item = (&str, u64)> + '_ {
    info.lines().filter_map(|line| {
        let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
        let calls = fields.strip_prefix("calls=")?.split(',').next()?;
        Some((name, calls.parse().ok()?))
    })
}

/// Script round trips (`EVAL`, `EVALSHA`, `SCRIPT …`) in the text of `INFO commandstats`.
pub fn script_calls(info: &str) -> u64 {
    command_calls(info)
        .filter(|(name, _)| name.starts_with("eval") || name.starts_with("script"))
        .map(|(_, calls)| calls)
        .sum()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `None` after a message, or a panic when Redis is required.
fn skip<T>(what: &str, err: impl std::fmt::Display) -> Option<T> {
    if std::env::var("HERDER_REQUIRE_REDIS").as_deref() == Ok("1") {
        panic!("{what} is required (HERDER_REQUIRE_REDIS=1) but cannot start: {err}");
    }
    eprintln!("{what} cannot start ({err}): skipping (set HERDER_REQUIRE_REDIS=1 to fail instead)");
    None
}

/// A scratch directory, removed on drop.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "herder-testkit-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spawn_server(args: &[String]) -> std::io::Result<Child> {
    Command::new("redis-server")
        .args(args)
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--daemonize", "no", "--loglevel", "warning"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// Starts `redis-server` with the arguments `args(port, bus_port)` makes for two free loopback
/// ports, and waits until it listens on `port`. A port found free can be taken before the
/// server binds it (by another test's server, or by a cluster node's outgoing connection, which
/// draws from the same ephemeral range): a server that exits before it listens is started again
/// on other ports, up to five times.
fn spawn_listening(args: impl Fn(u16, u16) -> Vec<String>) -> std::io::Result<(Child, u16)> {
    let mut attempts = 0;
    loop {
        let (port, bus) = (free_port(), free_port());
        let mut child = spawn_server(&args(port, bus))?;
        match wait_listening(&mut child, port) {
            Ok(()) => return Ok((child, port)),
            Err(err) if attempts < 4 && child.try_wait().is_ok_and(|s| s.is_some()) => {
                eprintln!("redis-server on port {port} did not start ({err}): another port");
                attempts += 1;
            }
            Err(err) => {
                kill(&mut child);
                return Err(err);
            }
        }
    }
}

/// Polled: a child process has no readiness event to wait on.
fn wait_listening(child: &mut Child, port: u16) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait()? {
            return Err(std::io::Error::other(format!(
                "redis-server exited with {status}"
            )));
        }
        assert!(
            Instant::now() < deadline,
            "redis-server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A `redis-server` that requires a password, or speaks only TLS.
#[derive(Debug)]
pub struct ConfiguredRedis {
    child: Child,
    port: u16,
    password: Option<String>,
    ca: Option<Vec<u8>>,
    _dir: Scratch,
}

impl ConfiguredRedis {
    /// A server that refuses every command until `AUTH password`.
    ///
    /// # Panics
    ///
    /// When the server does not listen within 10 s, or when it is missing and required.
    pub fn with_password(password: &str) -> Option<Self> {
        let run = || -> std::io::Result<Self> {
            let dir = Scratch::new("auth")?;
            let (child, port) = spawn_listening(|port, _| {
                vec![
                    "--port".into(),
                    port.to_string(),
                    "--requirepass".into(),
                    password.into(),
                    "--dir".into(),
                    dir.0.display().to_string(),
                ]
            })?;
            Ok(ConfiguredRedis {
                child,
                port,
                password: Some(password.into()),
                ca: None,
                _dir: dir,
            })
        };
        run()
            .or_else(|err| skip("redis-server", err).ok_or(()))
            .ok()
    }

    /// A server that speaks only TLS (no plain port), with a certificate for `127.0.0.1` and
    /// `localhost` signed by a certificate authority made for it (with the `openssl` command):
    /// trust [`ca_pem`](Self::ca_pem) to connect.
    ///
    /// # Panics
    ///
    /// When the server does not listen within 10 s, or when it or `openssl` is missing and
    /// required.
    pub fn with_tls() -> Option<Self> {
        let run = || -> std::io::Result<Self> {
            let dir = Scratch::new("tls")?;
            certificates(&dir.0)?;
            let file = |name: &str| dir.0.join(name).display().to_string();
            let (child, port) = spawn_listening(|port, _| {
                vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port.to_string(),
                    "--tls-cert-file".into(),
                    file("server.pem"),
                    "--tls-key-file".into(),
                    file("server.key"),
                    "--tls-ca-cert-file".into(),
                    file("ca.pem"),
                    "--tls-auth-clients".into(),
                    "no".into(),
                    "--dir".into(),
                    dir.0.display().to_string(),
                ]
            })?;
            Ok(ConfiguredRedis {
                child,
                port,
                password: None,
                ca: Some(std::fs::read(dir.0.join("ca.pem"))?),
                _dir: dir,
            })
        };
        run()
            .or_else(|err| skip("redis-server with TLS", err).ok_or(()))
            .ok()
    }

    /// The server's loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://:<password>@127.0.0.1:<port>/`, or `rediss://127.0.0.1:<port>/` for TLS.
    pub fn url(&self) -> String {
        match (&self.password, &self.ca) {
            (Some(password), _) => format!("redis://:{password}@127.0.0.1:{}/", self.port),
            (None, Some(_)) => format!("rediss://127.0.0.1:{}/", self.port),
            (None, None) => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// The certificate authority (PEM) that signed a TLS server's certificate.
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.ca.as_deref()
    }
}

impl Drop for ConfiguredRedis {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// A certificate authority and a server certificate for the loopback address, signed by it
/// (rustls refuses a self-signed certificate that is its own authority).
fn certificates(dir: &Path) -> std::io::Result<()> {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [&[&str]; 3] = [
        &[
            &["req", "-x509"][..],
            &ec[..],
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
            &["-subj", "/CN=herder test authority"],
        ]
        .concat(),
        &[
            &["req"][..],
            &ec[..],
            &["-keyout", "server.key", "-out", "server.csr"],
            &["-subj", "/CN=localhost"],
        ]
        .concat(),
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    ];
    for args in steps {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()?;
        if !output.status.success() {
            return Err(std::io::Error::other(format!(
                "openssl {}: {}",
                args[0],
                String::from_utf8_lossy(&output.stderr)
            )));
        }
    }
    Ok(())
}

/// A Redis Cluster of masters without replicas, made with `redis-cli --cluster create`.
#[derive(Debug)]
pub struct RedisCluster {
    children: Vec<Child>,
    ports: Vec<u16>,
    _dir: Scratch,
}

impl RedisCluster {
    /// Starts `masters` (at least 3) cluster-enabled servers, joins them into a cluster that
    /// covers every slot, and waits until each says `cluster_state:ok`.
    ///
    /// # Panics
    ///
    /// When the cluster is not ready within 30 s, or when `redis-server` or `redis-cli` is
    /// missing and required.
    pub fn start(masters: usize) -> Option<Self> {
        let run = || -> std::io::Result<Self> {
            let dir = Scratch::new("cluster")?;
            let mut cluster = RedisCluster {
                children: Vec::new(),
                ports: Vec::new(),
                _dir: dir,
            };
            for _ in 0..masters {
                let dir = &cluster._dir.0;
                let (child, port) = spawn_listening(|port, bus| {
                    vec![
                        "--port".into(),
                        port.to_string(),
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-port".into(),
                        bus.to_string(),
                        "--cluster-config-file".into(),
                        dir.join(format!("nodes-{port}.conf")).display().to_string(),
                        "--cluster-node-timeout".into(),
                        "2000".into(),
                        "--dir".into(),
                        dir.display().to_string(),
                    ]
                })?;
                cluster.children.push(child);
                cluster.ports.push(port);
            }
            let output = Command::new("redis-cli")
                .args(["--cluster", "create"])
                .args(cluster.ports.iter().map(|port| format!("127.0.0.1:{port}")))
                .args(["--cluster-replicas", "0", "--cluster-yes"])
                .stdin(Stdio::null())
                .output()?;
            if !output.status.success() {
                return Err(std::io::Error::other(format!(
                    "redis-cli --cluster create: {}",
                    String::from_utf8_lossy(&output.stdout)
                )));
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while !cluster.ports.iter().all(|&port| cluster_ok(port)) {
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not become ready"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(cluster)
        };
        run()
            .or_else(|err| skip("a redis cluster", err).ok_or(()))
            .ok()
    }

    /// `redis://127.0.0.1:<port>/` of every master.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}/"))
            .collect()
    }

    /// The masters' loopback ports.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }
}

fn cluster_ok(port: u16) -> bool {
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "cluster", "info"])
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains("cluster_state:ok"))
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            kill(child);
        }
    }
}

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
        match spawn_listening(|port, _| vec!["--port".into(), port.to_string()]) {
            Ok((child, port)) => Some(RedisServer {
                child: Some(child),
                port,
            }),
            Err(err) => skip("redis-server", err),
        }
    }

    /// Starts the server again on its port (after [`kill`](Self::kill)).
    fn spawn(&mut self) -> std::io::Result<()> {
        let mut child = spawn_server(&["--port".into(), self.port.to_string()])?;
        let listening = wait_listening(&mut child, self.port);
        self.child = Some(child);
        listening
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
