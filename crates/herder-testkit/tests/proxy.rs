//! The fault proxy against a tiny echo server on loopback. Real sockets, so the real clock; every
//! wait has a deadline far above what loopback needs, and the order of steps comes from the
//! proxy's synchronous commands, not from sleeps.

use std::net::SocketAddr;
use std::time::Duration;

use herder_testkit::FaultProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

const PATIENCE: Duration = Duration::from_secs(5);

/// An echo server; returns its address.
async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0_u8; 1024];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn roundtrip(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(message).await?;
    let mut got = vec![0_u8; message.len()];
    stream.read_exact(&mut got).await?;
    Ok(got)
}

/// `true` if a connection through `proxy` is reset at connect or at its first exchange.
async fn is_refused(proxy: &FaultProxy) -> bool {
    let Ok(mut stream) = TcpStream::connect(proxy.addr()).await else {
        return true;
    };
    timeout(PATIENCE, roundtrip(&mut stream, b"x"))
        .await
        .expect("an answer or a reset")
        .is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_forwards_both_ways() {
    let proxy = FaultProxy::start(echo().await);
    assert!(proxy.url().starts_with("redis://127.0.0.1:"));
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(roundtrip(&mut stream, b"hello").await.unwrap(), b"hello");
    let faults = proxy.faults();
    assert_eq!(faults.connections, 1);
    assert_eq!(faults.bytes_forwarded, 10, "5 bytes each way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_each_chunk() {
    let proxy = FaultProxy::start(echo().await);
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    proxy.set_latency(Duration::from_millis(50));
    let start = Instant::now();
    roundtrip(&mut stream, b"slow").await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "50 ms each way, took {:?}",
        start.elapsed()
    );
    proxy.resume();
    assert_eq!(proxy.faults().latencies, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_holds_the_bytes_until_resumed() {
    let proxy = FaultProxy::start(echo().await);
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    roundtrip(&mut stream, b"warm").await.unwrap();
    proxy.stall();
    stream.write_all(b"held").await.unwrap();
    let mut got = [0_u8; 4];
    assert!(
        timeout(Duration::from_millis(200), stream.read_exact(&mut got))
            .await
            .is_err(),
        "nothing comes back while stalled"
    );
    proxy.resume();
    timeout(PATIENCE, stream.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        &got, b"held",
        "the held bytes arrive, the connection survived"
    );
    assert_eq!(proxy.faults().stalls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackhole_discards_then_cuts_the_connections_that_lost_bytes() {
    let proxy = FaultProxy::start(echo().await);
    let mut lost = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut idle = TcpStream::connect(proxy.addr()).await.unwrap();
    roundtrip(&mut lost, b"warm").await.unwrap();
    roundtrip(&mut idle, b"warm").await.unwrap();
    proxy.drop_traffic();
    lost.write_all(b"gone").await.unwrap();
    let mut got = [0_u8; 4];
    assert!(
        timeout(Duration::from_millis(200), lost.read_exact(&mut got))
            .await
            .is_err()
    );
    assert_eq!(proxy.faults().bytes_dropped, 4);
    proxy.resume();
    let read = timeout(PATIENCE, lost.read(&mut got)).await.unwrap();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the connection that lost bytes is cut: {read:?}"
    );
    assert_eq!(
        roundtrip(&mut idle, b"kept").await.unwrap(),
        b"kept",
        "a connection that lost nothing goes on"
    );
}

/// Regression: a chunk written between `resume` and the cut used to be forwarded, so the other
/// side saw a stream with a hole in it (a Redis client then paired replies with the wrong
/// requests, and a fleet check saw one key's value under another key). TCP never does that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_lost_bytes_never_delivers_later_ones() {
    let proxy = FaultProxy::start(echo().await);
    for round in 1..=50_u64 {
        let mut lost = TcpStream::connect(proxy.addr()).await.unwrap();
        roundtrip(&mut lost, b"warm").await.unwrap();
        proxy.drop_traffic();
        lost.write_all(b"gone").await.unwrap();
        let deadline = Instant::now() + PATIENCE;
        while proxy.faults().bytes_dropped < 4 * round {
            assert!(Instant::now() < deadline, "the proxy never read the bytes");
            tokio::task::yield_now().await;
        }
        proxy.resume();
        // Written at once, racing the cut: it must be dropped, never echoed.
        let _ = lost.write_all(b"next").await;
        let mut got = [0_u8; 8];
        let read = timeout(PATIENCE, lost.read(&mut got)).await.unwrap();
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "round {round}: bytes after the hole were delivered: {read:?} {:?}",
            &got[..]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_cuts_every_open_connection_and_accepts_new_ones() {
    let proxy = FaultProxy::start(echo().await);
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        roundtrip(&mut stream, b"up").await.unwrap();
        streams.push(stream);
    }
    proxy.reset();
    for stream in &mut streams {
        let mut got = [0_u8; 2];
        let read = timeout(PATIENCE, stream.read(&mut got)).await.unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "cut: {read:?}");
    }
    assert_eq!(proxy.faults().resets, 3);
    let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(roundtrip(&mut fresh, b"new").await.unwrap(), b"new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_cut_at_once_until_resumed() {
    let proxy = FaultProxy::start(echo().await);
    proxy.refuse();
    assert!(is_refused(&proxy).await);
    assert_eq!(proxy.faults().refused, 1);
    proxy.resume();
    let mut accepted = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(roundtrip(&mut accepted, b"yes").await.unwrap(), b"yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_is_a_refused_connection() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let proxy = FaultProxy::start(addr);
    assert!(is_refused(&proxy).await);
    assert_eq!(proxy.faults().refused, 1);
}

#[test]
fn it_runs_outside_any_runtime_and_under_a_paused_clock() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let proxy = FaultProxy::start(echo().await);
        proxy.set_latency(Duration::from_millis(20));
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        // The test's clock is paused; the proxy's own is not, so its latency still passes.
        assert_eq!(roundtrip(&mut stream, b"ok").await.unwrap(), b"ok");
    });
}

async fn ping(stream: &mut TcpStream) -> std::io::Result<[u8; 7]> {
    stream.write_all(b"PING\r\n").await?;
    let mut pong = [0_u8; 7];
    stream.read_exact(&mut pong).await?;
    Ok(pong)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_sits_between_a_client_and_a_real_redis_server() {
    let Some(redis) = herder_testkit::RedisServer::start() else {
        return;
    };
    let proxy = FaultProxy::start(([127, 0, 0, 1], redis.port()).into());
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(&ping(&mut stream).await.unwrap(), b"+PONG\r\n");
    proxy.stall();
    assert!(
        timeout(Duration::from_millis(200), ping(&mut stream))
            .await
            .is_err()
    );
    proxy.resume();
    // The stalled PING is answered first, then a new one.
    let mut pong = [0_u8; 7];
    timeout(PATIENCE, stream.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    assert_eq!(&ping(&mut stream).await.unwrap(), b"+PONG\r\n");
}
