//! Recovery storm: a burst of requests to an [`Upstream`] whose token expires mid-run: all at once
//! with each failing request logging in on its own, through an [`OperationQueue`] (a bounded
//! number in flight) still logging in on their own, and through the queue with a [`Line`].
//!
//! Without a Line every request that meets the expired token logs in, and since each login
//! revokes the previous token, requests keep failing with tokens that were fresh a moment ago
//! until they run out of attempts; the queue only bounds how many do so at once. With a Line one
//! request logs in, the others wait for it (or, sent before the recovery and failing after it,
//! are told to just retry): one re-authentication, no failed request. The queue is also told to
//! start no request while the line recovers.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use herder::{Line, OperationQueue};

use super::upstream::{Unauthorized, Upstream};
use super::{Latencies, burst};
use crate::DemoError;

/// How requests reach the upstream and deal with a 401.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StormMode {
    /// All at once; each request that gets a 401 logs in and retries.
    NoQueue,
    /// Through an [`OperationQueue`]; each request that gets a 401 logs in and retries.
    Queue,
    /// Through the queue, recovering through a [`Line`]: one request logs in, the others wait
    /// for it and retry; the queue starts no request while the line recovers.
    QueueLine,
}

/// The modes, in the report's order.
pub const MODES: [StormMode; 3] = [StormMode::NoQueue, StormMode::Queue, StormMode::QueueLine];

/// The size of the scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Requests sent (or submitted to the queue) at once.
    pub requests: usize,
    /// The queue's runners: requests in flight at once through the queue.
    pub runners: usize,
    /// The token expires after this many served calls.
    pub expire_after: u64,
    /// Attempts per request before it fails.
    pub attempts: u32,
    /// Each call's latency.
    pub call_latency: Duration,
    /// Each login's latency.
    pub login_latency: Duration,
}

impl Settings {
    /// The report's: 500 requests, 16 runners, the token expiring after 200 calls, 2 ms per
    /// call, 20 ms per login, 3 attempts.
    pub const FULL: Settings = Settings {
        requests: 500,
        runners: 16,
        expire_after: 200,
        attempts: 3,
        call_latency: Duration::from_millis(2),
        login_latency: Duration::from_millis(20),
    };
    /// `--quick`: 100 requests.
    pub const QUICK: Settings = Settings {
        requests: 100,
        expire_after: 40,
        ..Settings::FULL
    };
}

/// What one mode measured.
#[derive(Debug)]
pub struct ModeRun {
    /// The mode.
    pub mode: StormMode,
    /// Logins after the start (the client started with a valid token).
    pub reauths: u64,
    /// Requests that ran out of attempts.
    pub failed: u64,
    /// Calls the upstream refused with 401.
    pub rejected: u64,
    /// Calls the upstream served.
    pub served: u64,
    /// From the burst's start to its last answer.
    pub wall: Duration,
    /// Per request, queueing included.
    pub latencies: Latencies,
}

/// The token the client sends.
#[derive(Debug)]
struct Client {
    token: AtomicU64,
}

/// One request, logging in itself on a 401.
async fn alone(
    api: Arc<Upstream>,
    client: Arc<Client>,
    attempts: u32,
) -> Result<u64, Unauthorized> {
    for _ in 1..attempts {
        match api.call(client.token.load(SeqCst)).await {
            Ok(body) => return Ok(body),
            Err(Unauthorized) => {
                let token = api.login().await;
                client.token.store(token, SeqCst);
            }
        }
    }
    api.call(client.token.load(SeqCst)).await
}

/// One request, recovering from a 401 through `line`.
async fn in_line(
    api: Arc<Upstream>,
    client: Arc<Client>,
    line: Line<u64>,
    attempts: u32,
) -> Result<u64, Unauthorized> {
    for _ in 1..attempts {
        // Note the epoch before reading the token it goes with.
        let seen = line.epoch();
        match api.call(client.token.load(SeqCst)).await {
            Ok(body) => return Ok(body),
            Err(Unauthorized) => {
                let (api, client) = (api.clone(), client.clone());
                let relogin = move || async move {
                    let token = api.login().await;
                    client.token.store(token, SeqCst);
                    token
                };
                // Led, joined, or already done by another request: the token is fresh, retry.
                if line.recover(seen, relogin).await.is_err() {
                    return Err(Unauthorized);
                }
            }
        }
    }
    api.call(client.token.load(SeqCst)).await
}

/// Runs `request` through `queue` and hands back its answer (or why the queue failed it).
async fn submit<T: Send + 'static>(
    queue: &OperationQueue,
    request: impl Future<Output = T> + Send + 'static,
) -> Result<T, String> {
    match queue.submit(request).await {
        Ok(handle) => handle.await.map_err(|err| err.to_string()),
        Err(err) => Err(err.to_string()),
    }
}

/// Runs one mode against a fresh upstream.
pub async fn run_mode(mode: StormMode, settings: Settings) -> Result<ModeRun, DemoError> {
    let api = Arc::new(Upstream::new(
        settings.expire_after,
        settings.call_latency,
        settings.login_latency,
    ));
    let client = Arc::new(Client {
        token: AtomicU64::new(api.first_token()),
    });
    let line: Line<u64> = Line::new();
    let mut queue = OperationQueue::builder().runners(settings.runners);
    if mode == StormMode::QueueLine {
        queue = queue.pause_while_recovering(&line);
    }
    let queue = queue
        .build()
        .map_err(|err| DemoError::with_cause("storm", err))?;
    let attempts = settings.attempts.max(1);
    let run = burst(settings.requests, |_| {
        let (api, client, line, queue) = (api.clone(), client.clone(), line.clone(), queue.clone());
        async move {
            match mode {
                StormMode::NoQueue => Ok(alone(api, client, attempts).await),
                StormMode::Queue => submit(&queue, alone(api, client, attempts)).await,
                StormMode::QueueLine => submit(&queue, in_line(api, client, line, attempts)).await,
            }
        }
    })
    .await;
    let mut failed = 0;
    for output in run.outputs {
        match output {
            Ok(Ok(_)) => {}
            Ok(Err(Unauthorized)) => failed += 1,
            Err(err) => return Err(DemoError::new(format!("storm: the queue failed: {err}"))),
        }
    }
    Ok(ModeRun {
        mode,
        reauths: api.logins(),
        failed,
        rejected: api.rejected(),
        served: api.served(),
        wall: run.wall,
        latencies: run.latencies,
    })
}

/// Runs the three modes in turn; `step` is called before each.
pub async fn run(
    settings: Settings,
    mut step: impl FnMut(StormMode),
) -> Result<Vec<ModeRun>, DemoError> {
    let mut runs = Vec::new();
    for mode in MODES {
        step(mode);
        runs.push(run_mode(mode, settings).await?);
    }
    Ok(runs)
}

/// A human name for a mode.
pub fn mode_name(mode: StormMode) -> &'static str {
    match mode {
        StormMode::NoQueue => "no queue",
        StormMode::Queue => "OperationQueue",
        StormMode::QueueLine => "OperationQueue + Line",
    }
}
