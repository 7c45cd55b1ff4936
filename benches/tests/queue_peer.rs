//! What the OperationQueue/Line issue states about thunderbird's `operation-queue`, checked
//! against the version in `Cargo.lock` (if it changes behaviour, this test fails and the docs must
//! change), next to herder's behaviour in the same scenario. Paused clock; simulated latencies.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Barrier, oneshot};

/// A server whose tokens expire: a request with an old token gets a 401 after its latency; a
/// login takes 10 ms and issues the next token.
#[derive(Clone, Default)]
struct Server {
    token: Arc<AtomicU64>,
    logins: Arc<AtomicUsize>,
}

impl Server {
    async fn request(&self, token: u64, latency: Duration) -> Result<(), ()> {
        tokio::time::sleep(latency).await;
        if token == self.token.load(SeqCst) {
            Ok(())
        } else {
            Err(())
        }
    }

    async fn login(&self) -> u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.logins.fetch_add(1, SeqCst);
        self.token.fetch_add(1, SeqCst) + 1
    }
}

/// Five requests sent together with an expired token, failing 30 ms apart. `note` runs when a
/// request is sent, `handle` deals with its failure (given what `note` returned). Returns how
/// many logins happened.
async fn staggered_failures<N, H, Fut>(
    note: impl Fn() -> N + Clone + Send + 'static,
    handle: H,
) -> usize
where
    N: Send + 'static,
    H: Fn(Server, Arc<AtomicU64>, N) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let server = Server::default();
    server.token.store(1, SeqCst);
    let token = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(Barrier::new(5));
    let requests: Vec<_> = (0..5u64)
        .map(|i| {
            let (server, token, sent) = (server.clone(), token.clone(), sent.clone());
            let (note, handle) = (note.clone(), handle.clone());
            tokio::spawn(async move {
                let mut latency = Duration::from_millis(30 * i);
                for attempt in 0.. {
                    assert!(attempt < 10, "request {i} never succeeded");
                    let noted = note();
                    let credentials = token.load(SeqCst);
                    if attempt == 0 {
                        sent.wait().await;
                    }
                    match server.request(credentials, latency).await {
                        Ok(()) => return,
                        Err(()) => {
                            handle(server.clone(), token.clone(), noted).await;
                            latency = Duration::ZERO;
                        }
                    }
                }
            })
        })
        .collect();
    for request in requests {
        request.await.unwrap();
    }
    server.logins.load(SeqCst)
}

/// operation-queue's `line_token`: the first request to fail takes the token and logs in; a
/// request whose failure arrives after that login finished finds the line free and logs in again.
#[tokio::test(start_paused = true)]
async fn operation_queue_line_logs_in_once_per_staggered_failure() {
    use operation_queue::line_token::{AcquireOutcome, Line};
    let line = Arc::new(Line::new());
    let logins = staggered_failures(
        || (),
        move |server, token, ()| {
            let line = line.clone();
            async move {
                match line.try_acquire_token().await {
                    AcquireOutcome::Success(_held) => {
                        let fresh = server.login().await;
                        token.store(fresh, SeqCst);
                    }
                    AcquireOutcome::Failure(released) => {
                        let _ = released.await;
                    }
                }
            }
        },
    )
    .await;
    assert_eq!(logins, 5);
}

/// herder's `Line`: each request notes the line's epoch when sent; the failures older than the
/// finished login are told to retry.
#[tokio::test(start_paused = true)]
async fn herder_line_logs_in_once() {
    let line: herder::Line<u64> = herder::Line::new();
    let noting = line.clone();
    let logins = staggered_failures(
        move || noting.epoch(),
        move |server, token, seen| {
            let line = line.clone();
            async move {
                let _ = line
                    .recover(seen, move || async move {
                        let fresh = server.login().await;
                        token.store(fresh, SeqCst);
                        fresh
                    })
                    .await
                    .unwrap();
            }
        },
    )
    .await;
    assert_eq!(logins, 1);
}

#[derive(Debug)]
struct Report {
    value: Option<u32>,
    result: Mutex<Option<oneshot::Sender<u32>>>,
}

impl operation_queue::QueuedOperation for Report {
    fn perform(&self) -> impl Future<Output = ()> + Send {
        let value = self.value;
        let sender = self.result.lock().unwrap().take();
        async move {
            let Some(value) = value else {
                panic!("malformed response")
            };
            if let Some(sender) = sender {
                let _ = sender.send(value);
            }
        }
    }
}

/// operation-queue: a panicking operation kills its runner for good; with one runner, nothing
/// queued after it ever runs, and the queue still reports the dead runner as busy.
#[tokio::test(start_paused = true)]
async fn operation_queue_loses_a_runner_to_a_panic() {
    let queue = operation_queue::OperationQueue::new(|runner| {
        drop(tokio::spawn(runner));
    });
    queue.start(1).unwrap();
    let (tx, _) = oneshot::channel();
    let panics = Report {
        value: None,
        result: Mutex::new(Some(tx)),
    };
    queue.enqueue(Box::new(panics)).await.unwrap();
    let (tx, rx) = oneshot::channel();
    let after = Report {
        value: Some(7),
        result: Mutex::new(Some(tx)),
    };
    queue.enqueue(Box::new(after)).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(3600), rx).await;
    assert!(waited.is_err(), "the operation after the panic ran");
    assert!(
        queue.running() && !queue.idle(),
        "the dead runner is reported as busy"
    );
}

#[tokio::test(start_paused = true)]
async fn herder_keeps_its_runner_after_a_panic() {
    let queue = herder::OperationQueue::new(1);
    let panics = queue
        .submit(async { panic!("malformed response") })
        .await
        .unwrap();
    let after = queue.submit(async { 7 }).await.unwrap();
    assert!(panics.await.unwrap_err().is_panic());
    assert_eq!(after.await.unwrap(), 7);
    assert_eq!(queue.stats().runners, 1);
}
