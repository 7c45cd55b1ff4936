//! Line behaviour: the ported behaviours of operation-queue's `line_token` tests (acquire, release,
//! release on drop, status), epochs (staggered stale failures cause one recovery), failures and
//! panics reaching every joiner, a cancelled leader. Recoveries wait on semaphores the test opens;
//! the staggered scenario runs its simulated latencies on a paused clock.

#[macro_use]
mod support;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use herder::{Line, Recovery};
use support::{poll_once, until};
use tokio::sync::Semaphore;
use tokio::time::Instant;

on_both_runtimes!(
    a_failure_during_a_recovery_joins_it,
    a_cancelled_leaders_recovery_still_completes_once,
    many_concurrent_failures_cause_one_recovery,
    the_recovery_failure_reaches_every_joiner,
    a_recovery_that_never_returns_times_out_and_frees_the_line,
);

/// A recovery that counts its runs and ends when the test opens its gate.
#[derive(Clone)]
struct Relogin {
    runs: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

impl Relogin {
    fn new() -> Self {
        Relogin {
            runs: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
        }
    }

    fn work<O: Send + 'static>(
        &self,
        outcome: O,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = O> + Send>> + Send + 'static {
        let this = self.clone();
        move || {
            Box::pin(async move {
                this.runs.fetch_add(1, SeqCst);
                this.gate.acquire().await.unwrap().forget();
                outcome
            })
        }
    }

    fn runs(&self) -> usize {
        self.runs.load(SeqCst)
    }
}

// ---- ported from operation-queue's line_token tests ----

/// `acquire_token`: while one caller handles the failure, a second cannot take the line; here it
/// joins the recovery and gets its outcome.
async fn a_failure_during_a_recovery_joins_it() {
    let line: Line<&'static str> = Line::new();
    let relogin = Relogin::new();
    let seen = line.epoch();
    let leader = tokio::spawn({
        let (line, work) = (line.clone(), relogin.work("token-1"));
        async move { line.recover(seen, work).await }
    });
    until("the recovery runs", || relogin.runs() == 1).await;
    let joiner = tokio::spawn({
        let (line, work) = (line.clone(), relogin.work("never used"));
        async move { line.recover(seen, work).await }
    });
    until("the second caller joined", || line.stats().joined == 1).await;
    relogin.gate.add_permits(1);
    assert_eq!(leader.await.unwrap().unwrap(), Recovery::Led("token-1"));
    assert_eq!(joiner.await.unwrap().unwrap(), Recovery::Joined("token-1"));
    assert_eq!(relogin.runs(), 1);
    let stats = line.stats();
    assert_eq!((stats.recoveries, stats.joined, stats.epoch), (1, 1, 1));
}

/// `token_out_of_scope`: once the recovery is over, the line is free again: a failure of a
/// request sent after it leads the next recovery.
#[tokio::test(start_paused = true)]
async fn after_a_recovery_a_new_failure_leads_the_next_one() {
    let line: Line<u32> = Line::new();
    let first = line.recover(line.epoch(), || async { 1 }).await.unwrap();
    assert_eq!(first, Recovery::Led(1));
    let seen = line.epoch();
    assert_eq!(seen.get(), 1);
    let second = line.recover(seen, || async { 2 }).await.unwrap();
    assert_eq!(second, Recovery::Led(2));
    assert_eq!(line.epoch().get(), 2);
}

/// `line_release_on_drop`: the token holder going away releases the waiters. Here the leader's
/// task is aborted mid-recovery: the recovery still completes, once, and the joiner gets it.
async fn a_cancelled_leaders_recovery_still_completes_once() {
    let line: Line<&'static str> = Line::new();
    let relogin = Relogin::new();
    let seen = line.epoch();
    let leader = tokio::spawn({
        let (line, work) = (line.clone(), relogin.work("token-1"));
        async move { line.recover(seen, work).await }
    });
    until("the recovery runs", || relogin.runs() == 1).await;
    let joiner = tokio::spawn({
        let (line, work) = (line.clone(), relogin.work("never used"));
        async move { line.recover(seen, work).await }
    });
    until("the second caller joined", || line.stats().joined == 1).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    assert!(
        line.is_recovering(),
        "the leader's cancellation stopped the recovery"
    );
    relogin.gate.add_permits(1);
    assert_eq!(joiner.await.unwrap().unwrap(), Recovery::Joined("token-1"));
    assert_eq!(relogin.runs(), 1);
    assert!(!line.is_recovering());
    assert_eq!(line.epoch().get(), 1);
}

/// `line_status`: busy while a recovery runs, with a way to wait until it is free again.
#[tokio::test(start_paused = true)]
async fn the_line_is_busy_while_a_recovery_runs_and_wait_clear_holds_requests_back() {
    let line: Line<()> = Line::new();
    assert!(!line.is_recovering());
    assert_eq!(line.wait_clear().await.get(), 0);
    let relogin = Relogin::new();
    let seen = line.epoch();
    let mut recovery = pin!(line.recover(seen, relogin.work(())));
    assert!(poll_once(&mut recovery).await);
    assert!(line.is_recovering() && line.stats().recovering);
    let mut held = pin!(line.wait_clear());
    until("the recovery runs", || relogin.runs() == 1).await;
    assert!(
        poll_once(&mut held).await,
        "wait_clear returned during a recovery"
    );
    relogin.gate.add_permits(1);
    assert_eq!(held.await.get(), 1);
    assert_eq!(recovery.await.unwrap(), Recovery::Led(()));
    assert!(!line.is_recovering());
}

// ---- epochs ----

/// A server whose tokens expire: a request carrying an old token gets a 401 after its latency.
#[derive(Clone, Default)]
struct Server {
    token: Arc<AtomicU64>,
    logins: Arc<AtomicUsize>,
}

impl Server {
    async fn request(&self, token: u64, latency: Duration) -> Result<(), &'static str> {
        tokio::time::sleep(latency).await;
        if token == self.token.load(SeqCst) {
            Ok(())
        } else {
            Err("401 unauthorized")
        }
    }

    async fn login(&self) -> u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.logins.fetch_add(1, SeqCst);
        self.token.fetch_add(1, SeqCst) + 1
    }
}

/// The scenario: five requests sent together with stale credentials fail 30 ms apart.
/// operation-queue's line re-authenticates once per failure (five times, see
/// `benches/tests/line_peer.rs`); here the first failure leads one re-authentication, and the
/// four later failures, older than it, are told to retry.
#[tokio::test(start_paused = true)]
async fn staggered_stale_failures_cause_one_recovery() {
    let server = Server::default();
    server.token.store(1, SeqCst); // the client's token 0 has expired
    let line: Line<u64> = Line::new();
    let token = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    // All five are sent (epoch and token noted) before the first failure comes back.
    let sent = Arc::new(tokio::sync::Barrier::new(5));
    let requests: Vec<_> = (0..5u32)
        .map(|i| {
            let (server, line, token) = (server.clone(), line.clone(), token.clone());
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut latency = Duration::from_millis(30 * u64::from(i));
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    let seen = line.wait_clear().await;
                    let credentials = token.load(SeqCst);
                    if attempts == 1 {
                        sent.wait().await;
                    }
                    match server.request(credentials, latency).await {
                        Ok(()) => return attempts,
                        Err(_) => {
                            let (server, token) = (server.clone(), token.clone());
                            let recovery = line
                                .recover(seen, move || async move {
                                    let fresh = server.login().await;
                                    token.store(fresh, SeqCst);
                                    fresh
                                })
                                .await
                                .unwrap();
                            // The fresh token, or "retry": someone else already renewed it.
                            assert!(matches!(recovery, Recovery::Led(2) | Recovery::AlreadyDone));
                            latency = Duration::ZERO;
                        }
                    }
                }
            })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 2, "each request retries once");
    }
    assert_eq!(server.logins.load(SeqCst), 1);
    let stats = line.stats();
    assert_eq!(
        (stats.recoveries, stats.already_done, stats.joined),
        (1, 4, 0)
    );
    assert_eq!(start.elapsed(), Duration::from_millis(120));
}

/// A request sent (its epoch noted) while a recovery runs, failing after it finished, retries.
#[tokio::test(start_paused = true)]
async fn a_request_sent_during_a_recovery_retries_instead_of_recovering_again() {
    let line: Line<()> = Line::new();
    let relogin = Relogin::new();
    let mut recovery = pin!(line.recover(line.epoch(), relogin.work(())));
    assert!(poll_once(&mut recovery).await);
    let seen_during = line.epoch();
    relogin.gate.add_permits(1);
    assert_eq!(recovery.await.unwrap(), Recovery::Led(()));
    let late = line
        .recover(seen_during, || async { unreachable!() })
        .await
        .unwrap();
    assert!(late.is_already_done());
    assert_eq!(late.into_outcome(), None);
}

// ---- failures ----

async fn the_recovery_failure_reaches_every_joiner() {
    type Auth = Result<String, Arc<str>>;
    let line: Line<Auth> = Line::new();
    let relogin = Relogin::new();
    let seen = line.epoch();
    let denied: Auth = Err("password rejected".into());
    let leader = tokio::spawn({
        let (line, work) = (line.clone(), relogin.work(denied.clone()));
        async move { line.recover(seen, work).await }
    });
    until("the recovery runs", || relogin.runs() == 1).await;
    let joiners: Vec<_> = (0..3)
        .map(|_| {
            let (line, work) = (line.clone(), relogin.work(Ok("never".to_owned())));
            tokio::spawn(async move { line.recover(seen, work).await })
        })
        .collect();
    until("three joined", || line.stats().joined == 3).await;
    relogin.gate.add_permits(1);
    assert_eq!(
        leader.await.unwrap().unwrap(),
        Recovery::Led(denied.clone())
    );
    for joiner in joiners {
        assert_eq!(
            joiner.await.unwrap().unwrap(),
            Recovery::Joined(denied.clone())
        );
    }
    assert_eq!(relogin.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_recovery_reaches_every_joiner_as_an_error() {
    let line: Line<u8> = Line::new();
    let gate = Arc::new(Semaphore::new(0));
    let seen = line.epoch();
    let leader = tokio::spawn({
        let (line, gate) = (line.clone(), gate.clone());
        async move {
            line.recover(seen, move || async move {
                gate.acquire().await.unwrap().forget();
                panic!("identity provider returned garbage")
            })
            .await
        }
    });
    until("the recovery runs", || line.is_recovering()).await;
    let joiners: Vec<_> = (0..3)
        .map(|_| {
            let line = line.clone();
            tokio::spawn(async move { line.recover(seen, || async { 0 }).await })
        })
        .collect();
    until("three joined", || line.stats().joined == 3).await;
    gate.add_permits(1);
    for caller in std::iter::once(leader).chain(joiners) {
        let err = caller.await.unwrap().unwrap_err();
        assert!(err.is_panic());
        assert_eq!(
            err.panic_message(),
            Some("identity provider returned garbage")
        );
    }
    let stats = line.stats();
    assert_eq!(
        (stats.panicked, stats.epoch, stats.recovering),
        (1, 1, false)
    );
    // The line is usable afterwards.
    let next = line.recover(line.epoch(), || async { 5 }).await.unwrap();
    assert_eq!(next, Recovery::Led(5));
}

#[test]
fn a_recovery_whose_runtime_shuts_down_fails_its_waiters() {
    let line: Line<u8> = Line::new();
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut waiting = Box::pin(line.recover(line.epoch(), std::future::pending));
    first.block_on(async {
        assert!(poll_once(&mut waiting).await);
    });
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = second.block_on(waiting).unwrap_err();
    assert!(err.is_cancelled());
    assert!(!line.is_recovering());
    assert_eq!(line.epoch().get(), 1);
}

async fn many_concurrent_failures_cause_one_recovery() {
    let line: Line<u32> = Line::new();
    let relogin = Relogin::new();
    let seen = line.epoch();
    let callers: Vec<_> = (0..100)
        .map(|_| {
            let (line, work) = (line.clone(), relogin.work(42));
            tokio::spawn(async move { line.recover(seen, work).await })
        })
        .collect();
    until("every caller led, joined or was told done", || {
        let stats = line.stats();
        stats.recoveries + stats.joined + stats.already_done == 100
    })
    .await;
    relogin.gate.add_permits(1);
    let mut led = 0;
    for caller in callers {
        match caller.await.unwrap().unwrap() {
            Recovery::Led(v) => {
                led += 1;
                assert_eq!(v, 42);
            }
            Recovery::Joined(v) => assert_eq!(v, 42),
            Recovery::AlreadyDone => panic!("nothing finished before these callers"),
        }
    }
    assert_eq!((led, relogin.runs()), (1, 1));
}

// ---- recovery timeout ----

/// Regression (issue 11): a recovery that never returned kept `is_recovering()` true forever,
/// and every queue paused on the line with it. With a recovery timeout the leader and the
/// joiners get a timeout error, the line is free, the paused queue resumes, and the next
/// failure leads a new recovery. (On the paused clock the timeout elapses at once; on the
/// multi-thread runtime it takes its 100 ms.)
async fn a_recovery_that_never_returns_times_out_and_frees_the_line() {
    let line: Line<&'static str> = Line::builder()
        .recovery_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let queue = herder::OperationQueue::builder()
        .pause_while_recovering(&line)
        .build()
        .unwrap();
    let seen = line.epoch();
    let stuck = Relogin::new(); // its gate is never opened
    let leader = tokio::spawn({
        let (line, work) = (line.clone(), stuck.work("never"));
        async move { line.recover(seen, work).await }
    });
    until("the recovery runs", || stuck.runs() == 1).await;
    let joiner = tokio::spawn({
        let (line, work) = (line.clone(), stuck.work("never used"));
        async move { line.recover(seen, work).await }
    });
    until("the second caller joined", || line.stats().joined == 1).await;
    assert!(line.is_recovering());
    // Queued while the line recovers: held back until the line is free.
    let held = queue.submit(async { "sent" }).await.unwrap();

    let (led, joined) = (leader.await.unwrap(), joiner.await.unwrap());
    for err in [led.unwrap_err(), joined.unwrap_err()] {
        assert!(err.is_timeout(), "{err:?}");
        assert!(!err.is_panic() && !err.is_cancelled());
        assert_eq!(err.to_string(), "recovery timed out after 100ms");
    }
    assert!(!line.is_recovering());
    let stats = line.stats();
    assert_eq!((stats.recoveries, stats.timed_out, stats.epoch), (1, 1, 1));
    assert_eq!(held.await.unwrap(), "sent");
    // The line is free: the next failure leads a recovery of its own.
    let next = line
        .recover(line.epoch(), || async { "token-2" })
        .await
        .unwrap();
    assert_eq!(next, Recovery::Led("token-2"));
    assert_eq!(stuck.runs(), 1);
}

#[test]
fn line_settings_are_checked() {
    let err = Line::<u8>::builder()
        .recovery_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid Line setting: recovery_timeout must be more than zero"
    );
}

/// The extreme timeout never fires: a slow recovery still completes.
#[tokio::test(start_paused = true)]
async fn a_recovery_timeout_of_duration_max_never_fires() {
    let line: Line<u8> = Line::builder()
        .recovery_timeout(Duration::MAX)
        .build()
        .unwrap();
    let outcome = line
        .recover(line.epoch(), || async {
            tokio::time::sleep(Duration::from_secs(86_400 * 365)).await;
            7
        })
        .await
        .unwrap();
    assert_eq!(outcome, Recovery::Led(7));
    assert_eq!(line.stats().timed_out, 0);
}

// ---- Credential: the common case over a Line ----

mod credential {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};

    use herder::Line;
    use herder::line::{CallError, Credential};

    /// A server that accepts only its current token; each login issues the next one.
    #[derive(Clone, Default)]
    struct Server {
        token: Arc<AtomicU64>,
        logins: Arc<AtomicUsize>,
        requests: Arc<AtomicUsize>,
    }

    impl Server {
        async fn fetch(&self, token: u64) -> Result<u64, u16> {
            self.requests.fetch_add(1, SeqCst);
            tokio::task::yield_now().await;
            if token == self.token.load(SeqCst) {
                Ok(token)
            } else {
                Err(401)
            }
        }

        fn credential(&self) -> Credential<u64, String> {
            let server = self.clone();
            Credential::new(Line::new(), 0, move || {
                let server = server.clone();
                async move {
                    server.logins.fetch_add(1, SeqCst);
                    Ok(server.token.fetch_add(1, SeqCst) + 1)
                }
            })
        }
    }

    on_both_runtimes!(many_calls_failing_at_once_refresh_once);

    async fn many_calls_failing_at_once_refresh_once() {
        let server = Server::default();
        server.token.store(1, SeqCst);
        let auth = server.credential();
        let calls = (0..50).map(|_| {
            let (auth, server) = (auth.clone(), server.clone());
            tokio::spawn(async move {
                auth.call(|token| server.fetch(token), |status| *status == 401)
                    .await
            })
        });
        for call in futures_util::future::join_all(calls).await {
            assert_eq!(
                call.unwrap(),
                Ok(2),
                "every call succeeds with the new token"
            );
        }
        assert_eq!(server.logins.load(SeqCst), 1);
        assert_eq!(auth.current(), 2);
        assert_eq!(auth.line().stats().recoveries, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_that_needs_no_refresh_is_returned_at_once() {
        let server = Server::default();
        let auth = server.credential().attempts(5);
        let err = auth
            .call(|_| async { Err::<(), u16>(500) }, |status| *status == 401)
            .await;
        assert_eq!(err, Err(CallError::Request(500)));
        assert_eq!(server.logins.load(SeqCst), 0);
    }

    /// The token is revoked again after every login: each call tries `attempts` times, logs in
    /// between two tries, and returns the last 401.
    #[tokio::test(start_paused = true)]
    async fn the_last_attempts_error_is_returned() {
        let server = Server::default();
        let auth = Credential::new(Line::new(), 0u64, {
            let server = server.clone();
            move || {
                let server = server.clone();
                async move {
                    server.logins.fetch_add(1, SeqCst);
                    // The login works, but the server has moved on already.
                    Ok::<_, String>(server.token.fetch_add(2, SeqCst) + 1)
                }
            }
        })
        .attempts(3);
        server.token.store(1, SeqCst);
        let err = auth
            .call(|token| server.fetch(token), |status| *status == 401)
            .await;
        assert_eq!(err, Err(CallError::Request(401)));
        assert_eq!(server.requests.load(SeqCst), 3);
        assert_eq!(
            server.logins.load(SeqCst),
            2,
            "no refresh after the last attempt"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_that_panics_or_times_out_reaches_the_call() {
        let line: Line<Result<u64, String>> = Line::builder()
            .recovery_timeout(std::time::Duration::from_secs(1))
            .build()
            .unwrap();
        let hangs = Credential::new(line, 0u64, std::future::pending);
        let err = hangs
            .call(|_| async { Err::<(), u16>(401) }, |status| *status == 401)
            .await
            .unwrap_err();
        let CallError::Recovery(err) = err else {
            panic!("expected a recovery error, got {err:?}")
        };
        assert!(err.is_timeout());
        assert!(!hangs.line().is_recovering());

        let panics = Credential::new(Line::new(), 0u64, || async {
            panic!("login form changed");
            #[allow(unreachable_code)]
            Ok::<u64, String>(1)
        });
        let err = panics
            .call(|_| async { Err::<(), u16>(401) }, |status| *status == 401)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "credential refresh failed: recovery panicked: login form changed"
        );
        assert_eq!(panics.current(), 0);
    }
}
