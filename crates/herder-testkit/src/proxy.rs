//! A fault-injecting TCP proxy for loopback tests: put it between a client and a real server
//! (a [`RedisServer`](crate::RedisServer), say) and, on command, slow, stall, blackhole or cut
//! the traffic.
//!
//! The proxy runs on an OS thread of its own with its own single-threaded Tokio runtime, so it
//! keeps real time whatever the test does to its own clock (paused, advanced) and works under
//! any runtime flavour, or none. Every command is applied when its method returns.
//!
//! ```no_run
//! use herder_testkit::{FaultProxy, RedisServer};
//! use std::time::Duration;
//!
//! let redis = RedisServer::start().expect("redis-server installed");
//! let proxy = FaultProxy::start(([127, 0, 0, 1], redis.port()).into());
//! // Point the client at `proxy.url()` instead of `redis.url()`, then:
//! proxy.set_latency(Duration::from_millis(20));
//! proxy.stall();
//! proxy.resume();
//! proxy.reset();
//! assert_eq!(proxy.faults().stalls, 1);
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle as TaskHandle;

/// What the proxy does to the bytes it forwards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Mode {
    /// Added before each chunk is forwarded, in both directions.
    latency: Duration,
    /// Hold every byte (connections stay open) until resumed.
    stalled: bool,
    /// Read and discard every byte; connections that lost bytes are cut when this ends, as a
    /// TCP stack would cut them after a partition (they could never be in sync again).
    dropping: bool,
    /// Accept new connections and reset them at once.
    refusing: bool,
    /// Bumped by each `reset`: connections accepted before it are cut.
    epoch: u64,
}

/// What a [`FaultProxy`] has injected so far, read with [`FaultProxy::faults`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Faults {
    /// Connections accepted and forwarded.
    pub connections: u64,
    /// Connections refused (reset at accept) while refusing, or because upstream was down.
    pub refused: u64,
    /// Connections cut by `reset` or after a blackhole.
    pub resets: u64,
    /// Times latency was set to a non-zero value.
    pub latencies: u64,
    /// Times traffic was stalled.
    pub stalls: u64,
    /// Times traffic was blackholed.
    pub drops: u64,
    /// Bytes forwarded.
    pub bytes_forwarded: u64,
    /// Bytes discarded while blackholed.
    pub bytes_dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    refused: AtomicU64,
    resets: AtomicU64,
    latencies: AtomicU64,
    stalls: AtomicU64,
    drops: AtomicU64,
    bytes_forwarded: AtomicU64,
    bytes_dropped: AtomicU64,
}

enum Command {
    Set(
        Box<dyn FnOnce(&mut Mode) + Send>,
        std::sync::mpsc::SyncSender<()>,
    ),
    Reset(std::sync::mpsc::SyncSender<()>),
    Stop,
}

/// A TCP proxy on `127.0.0.1:<port>` that forwards to one upstream address and injects faults
/// on command; stopped on drop.
pub struct FaultProxy {
    port: u16,
    commands: mpsc::UnboundedSender<Command>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("port", &self.port)
            .field("faults", &self.faults())
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream` (which
    /// must be a loopback address; it need not be up yet).
    ///
    /// # Panics
    ///
    /// If `upstream` is not a loopback address, or no loopback port is free.
    pub fn start(upstream: SocketAddr) -> Self {
        assert!(
            upstream.ip().is_loopback(),
            "the proxy forwards to loopback only"
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("a bound listener").port();
        let (commands, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let shared = counters.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the proxy's runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("a tokio listener");
                    serve(listener, upstream, rx, shared).await;
                });
            })
            .expect("the proxy's thread");
        FaultProxy {
            port,
            commands,
            counters,
            thread: Some(thread),
        }
    }

    /// The proxy's loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn set(&self, change: impl FnOnce(&mut Mode) + Send + 'static) {
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        if self
            .commands
            .send(Command::Set(Box::new(change), ack))
            .is_ok()
        {
            let _ = done.recv();
        }
    }

    /// Delays every chunk by `latency` in each direction (`Duration::ZERO` to stop).
    pub fn set_latency(&self, latency: Duration) {
        if !latency.is_zero() {
            self.counters.latencies.fetch_add(1, Relaxed);
        }
        self.set(move |mode| mode.latency = latency);
    }

    /// Holds every byte in both directions, keeping the connections open, until
    /// [`resume`](FaultProxy::resume).
    pub fn stall(&self) {
        self.counters.stalls.fetch_add(1, Relaxed);
        self.set(|mode| mode.stalled = true);
    }

    /// Reads and discards every byte (a network partition), until
    /// [`resume`](FaultProxy::resume); the connections that lost bytes are then cut.
    pub fn drop_traffic(&self) {
        self.counters.drops.fetch_add(1, Relaxed);
        self.set(|mode| mode.dropping = true);
    }

    /// Resets every new connection at accept, until [`resume`](FaultProxy::resume).
    pub fn refuse(&self) {
        self.set(|mode| mode.refusing = true);
    }

    /// Ends stall, drop, refuse and latency: held bytes are delivered, blackholed connections
    /// are cut.
    pub fn resume(&self) {
        self.set(|mode| {
            *mode = Mode {
                epoch: mode.epoch,
                ..Mode::default()
            };
        });
    }

    /// Cuts every open connection (RST); returns once they are closed. New connections are
    /// accepted as before.
    pub fn reset(&self) {
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        if self.commands.send(Command::Reset(ack)).is_ok() {
            let _ = done.recv();
        }
    }

    /// What was injected so far.
    pub fn faults(&self) -> Faults {
        let c = &self.counters;
        Faults {
            connections: c.connections.load(Relaxed),
            refused: c.refused.load(Relaxed),
            resets: c.resets.load(Relaxed),
            latencies: c.latencies.load(Relaxed),
            stalls: c.stalls.load(Relaxed),
            drops: c.drops.load(Relaxed),
            bytes_forwarded: c.bytes_forwarded.load(Relaxed),
            bytes_dropped: c.bytes_dropped.load(Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The accept and command loop.
async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    mut commands: mpsc::UnboundedReceiver<Command>,
    counters: Arc<Counters>,
) {
    let (mode_tx, _) = watch::channel(Mode::default());
    let mut live: HashMap<u64, (u64, TaskHandle<()>)> = HashMap::new();
    let mut next_id = 0_u64;
    loop {
        live.retain(|_, (_, task)| !task.is_finished());
        tokio::select! {
            command = commands.recv() => match command {
                None | Some(Command::Stop) => break,
                Some(Command::Set(change, ack)) => {
                    mode_tx.send_modify(|mode| change(mode));
                    let _ = ack.send(());
                }
                Some(Command::Reset(ack)) => {
                    let mut epoch = 0;
                    mode_tx.send_modify(|mode| {
                        mode.epoch += 1;
                        epoch = mode.epoch;
                    });
                    for (_, (_, task)) in live.extract_if(|_, (born, _)| *born < epoch) {
                        let _ = task.await;
                    }
                    let _ = ack.send(());
                }
            },
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let mode = *mode_tx.borrow();
                if mode.refusing {
                    counters.refused.fetch_add(1, Relaxed);
                    cut(client);
                    continue;
                }
                next_id += 1;
                let task = tokio::spawn(connection(
                    client,
                    upstream,
                    mode_tx.subscribe(),
                    counters.clone(),
                ));
                live.insert(next_id, (mode.epoch, task));
            }
        }
    }
    for (_, (_, task)) in live {
        task.abort();
    }
}

/// Closes with RST rather than FIN.
fn cut(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    counters: Arc<Counters>,
) {
    let born = mode.borrow().epoch;
    let server = match TcpStream::connect(upstream).await {
        Ok(server) => server,
        Err(_) => {
            counters.refused.fetch_add(1, Relaxed);
            cut(client);
            return;
        }
    };
    counters.connections.fetch_add(1, Relaxed);
    // Every close of this connection is a reset (RST), as a cut connection would be.
    for stream in [&client, &server] {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_zero_linger();
    }
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let poisoned = Arc::new(AtomicBool::new(false));
    let mut up = tokio::spawn(pump(
        client_read,
        server_write,
        mode.clone(),
        poisoned.clone(),
        counters.clone(),
    ));
    let mut down = tokio::spawn(pump(
        server_read,
        client_write,
        mode.clone(),
        poisoned.clone(),
        counters.clone(),
    ));
    let kill = mode.wait_for(|m| m.epoch > born || (!m.dropping && poisoned.load(Relaxed)));
    let (mut up_done, mut down_done) = (false, false);
    tokio::select! {
        _ = kill => {
            counters.resets.fetch_add(1, Relaxed);
        }
        _ = &mut up => up_done = true,
        _ = &mut down => down_done = true,
    }
    // Both halves of both sockets close now (dropped by the aborted pumps).
    up.abort();
    down.abort();
    if !up_done {
        let _ = up.await;
    }
    if !down_done {
        let _ = down.await;
    }
}

/// Forwards one direction until EOF or an error.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    poisoned: Arc<AtomicBool>,
    counters: Arc<Counters>,
) {
    let mut buf = vec![0_u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let Ok(now) = mode.wait_for(|m| !m.stalled).await.map(|m| *m) else {
            break;
        };
        // A connection that lost bytes never delivers again (it is cut as soon as the drop
        // ends): forwarding a later chunk would hand the other side a stream with a hole, which
        // TCP never does (a Redis client would pair replies with the wrong requests).
        if now.dropping || poisoned.load(Relaxed) {
            poisoned.store(true, Relaxed);
            counters.bytes_dropped.fetch_add(n as u64, Relaxed);
            continue;
        }
        if !now.latency.is_zero() {
            tokio::time::sleep(now.latency).await;
        }
        counters.bytes_forwarded.fetch_add(n as u64, Relaxed);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
