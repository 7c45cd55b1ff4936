use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::builder::Builder;
use super::state::{Begin, Recoveries};
use super::stats::{Counters, LineStats};
use crate::error::{Origin, TaskError};
use crate::flight::{Failure, Outcome, task};

/// When many requests hit the same failure (an expired token), exactly one recovers; the others
/// wait for that recovery and retry.
///
/// A request notes the line's [`epoch`](Line::epoch) when it is sent. If it fails with the
/// failure the line is about, it calls [`recover`](Line::recover) with that epoch:
///
/// * no recovery runs and none finished since the epoch: this caller **leads** one;
/// * a recovery runs: the caller **joins** it and gets the same outcome;
/// * a recovery finished since the epoch (the request was sent with the old credentials, but
///   they were renewed meanwhile): [`Recovery::AlreadyDone`], just retry.
///
/// So requests failing one after another with stale credentials cause one recovery, not one
/// each. The recovery runs as its own task: a leader that is cancelled does not cancel it, and
/// its outcome (or its panic, as a [`TaskError`]) reaches every caller that joined.
/// [`wait_clear`](Line::wait_clear) holds new requests back while a recovery runs, and an
/// [`OperationQueue`](crate::OperationQueue) can be told to
/// [pause](crate::queue::Builder::pause_while_recovering) while it does.
///
/// The line is owned (`'static`), cheap to clone (clones share the line), `Send` and `Sync`;
/// dropping it never blocks.
///
/// ```
/// use herder::{Line, Recovery};
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
///
/// /// A server that accepts only the current token.
/// #[derive(Clone, Default)]
/// struct Server { token: Arc<AtomicU64>, logins: Arc<AtomicU64> }
///
/// impl Server {
///     async fn fetch(&self, token: u64) -> Result<&'static str, &'static str> {
///         if token == self.token.load(SeqCst) { Ok("mail") } else { Err("401") }
///     }
///     async fn login(&self) -> u64 {
///         self.logins.fetch_add(1, SeqCst);
///         self.token.fetch_add(1, SeqCst) + 1
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let server = Server::default();
/// server.token.store(1, SeqCst); // our token 0 has expired
/// let auth: Line<u64> = Line::new();
/// let token = Arc::new(AtomicU64::new(0));
///
/// let request = |server: Server, auth: Line<u64>, token: Arc<AtomicU64>| async move {
///     loop {
///         let seen = auth.wait_clear().await;
///         match server.fetch(token.load(SeqCst)).await {
///             Ok(body) => return body,
///             Err(_) => {
///                 let (server, token) = (server.clone(), token.clone());
///                 let recovery = auth.recover(seen, move || async move {
///                     let fresh = server.login().await;
///                     token.store(fresh, SeqCst);
///                     fresh
///                 });
///                 // Led, joined or already done: the token is fresh now, retry.
///                 let _: Recovery<u64> = recovery.await.unwrap();
///             }
///         }
///     }
/// };
/// let bodies = futures_util::future::join_all(
///     (0..5).map(|_| request(server.clone(), auth.clone(), token.clone())),
/// )
/// .await;
/// assert_eq!(bodies, ["mail"; 5]);
/// assert_eq!(server.logins.load(SeqCst), 1);
/// # }
/// ```
pub struct Line<O> {
    inner: Arc<Inner<O>>,
}

struct Inner<O> {
    /// A recovery's outcome, or `None` if it ran past `timeout` and was dropped.
    recoveries: Recoveries<Option<O>>,
    /// Woken (all waiters) when a recovery finishes.
    cleared: Notify,
    counters: Counters,
    timeout: Option<Duration>,
    name: Option<Arc<str>>,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::LineMetrics,
}

#[cfg(feature = "metrics")]
impl<O: Clone + Send + 'static> crate::metrics::Source for Inner<O> {
    fn publish(&self) {
        let recoveries = &self.recoveries;
        self.metrics.publish(
            &self
                .counters
                .snapshot(recoveries.epoch(), recoveries.is_recovering()),
        );
    }
}

/// A line's count of finished recoveries, noted when a request is sent and handed to
/// [`Line::recover`] if the request fails.
///
/// ```
/// let line: herder::Line<()> = herder::Line::new();
/// let epoch: herder::Epoch = line.epoch();
/// assert_eq!(epoch.get(), 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(u64);

impl Epoch {
    /// How many recoveries had finished when this epoch was read.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// What [`Line::recover`] did.
///
/// ```
/// use herder::{Line, Recovery};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let line = Line::new();
/// let seen = line.epoch();
/// let first = line.recover(seen, || async { "token-2" }).await.unwrap();
/// assert_eq!(first, Recovery::Led("token-2"));
/// assert_eq!(first.into_outcome(), Some("token-2"));
/// // A request that failed with the old epoch is told to retry.
/// let late = line.recover(seen, || async { unreachable!() }).await.unwrap();
/// assert!(late.is_already_done());
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a recovery tells whether to retry or what the recovery gave"]
pub enum Recovery<O> {
    /// This caller started the recovery; its outcome.
    Led(O),
    /// A recovery was under way; its outcome, shared with the others who waited for it.
    Joined(O),
    /// A recovery finished after the caller's epoch: retry, the failure is already dealt with.
    AlreadyDone,
}

impl<O> Recovery<O> {
    /// The recovery's outcome, unless this caller was told [`Recovery::AlreadyDone`].
    pub fn outcome(&self) -> Option<&O> {
        match self {
            Recovery::Led(outcome) | Recovery::Joined(outcome) => Some(outcome),
            Recovery::AlreadyDone => None,
        }
    }

    /// The recovery's outcome, unless this caller was told [`Recovery::AlreadyDone`].
    pub fn into_outcome(self) -> Option<O> {
        match self {
            Recovery::Led(outcome) | Recovery::Joined(outcome) => Some(outcome),
            Recovery::AlreadyDone => None,
        }
    }

    /// `true` if a recovery had already finished since the caller's epoch.
    pub fn is_already_done(&self) -> bool {
        matches!(self, Recovery::AlreadyDone)
    }
}

impl<O> Line<O>
where
    O: Clone + Send + 'static,
{
    /// A line with no recovery yet (epoch 0) and no recovery timeout.
    pub fn new() -> Self {
        Self::with_settings(None, None)
    }

    /// A builder for the settings: the recovery timeout.
    pub fn builder() -> Builder<O> {
        Builder::new()
    }

    pub(super) fn with_settings(timeout: Option<Duration>, name: Option<Arc<str>>) -> Self {
        let inner = Arc::new(Inner {
            recoveries: Recoveries::new(),
            cleared: Notify::new(),
            counters: Counters::default(),
            timeout,
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::LineMetrics::new(name.as_ref()),
            name,
        });
        #[cfg(feature = "metrics")]
        crate::metrics::register(Arc::downgrade(&inner) as _);
        Line { inner }
    }

    /// The current epoch: note it when sending a request, hand it to
    /// [`recover`](Line::recover) if the request fails.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.inner.recoveries.epoch())
    }

    /// `true` while a recovery runs.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let line: herder::Line<()> = herder::Line::new();
    /// assert!(!line.is_recovering());
    /// # }
    /// ```
    pub fn is_recovering(&self) -> bool {
        self.inner.recoveries.is_recovering()
    }

    /// A request sent at epoch `seen` failed: leads a recovery running `recovery()`, joins the
    /// one under way, or reports that one finished since `seen` ([`Recovery::AlreadyDone`]).
    ///
    /// `recovery` is only called by the leader. It runs as its own task, so it completes (once)
    /// for the callers that joined even if the leader is cancelled. When it finishes, however
    /// it finishes, the epoch goes up by one. A panic reaches the leader and every joiner as a
    /// [`TaskError`], and so does a recovery that runs past the line's
    /// [`recovery_timeout`](Builder::recovery_timeout) (it is dropped, and the line freed).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only stops this caller from waiting. The recovery and
    /// the other callers are unaffected.
    ///
    /// # Panics
    ///
    /// When polled outside a Tokio runtime.
    ///
    /// ```
    /// use herder::{Line, Recovery};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let line: Line<Result<String, String>> = Line::new();
    /// let seen = line.epoch();
    /// let relogin = || async { Ok::<_, String>("token-2".to_string()) };
    /// // Two requests failed at once: one login.
    /// let (a, b) = tokio::join!(line.recover(seen, relogin), line.recover(seen, relogin));
    /// assert_eq!(a.unwrap(), Recovery::Led(Ok("token-2".to_string())));
    /// assert_eq!(b.unwrap(), Recovery::Joined(Ok("token-2".to_string())));
    /// assert_eq!(line.epoch().get(), 1);
    /// # }
    /// ```
    pub async fn recover<F, Fut>(&self, seen: Epoch, recovery: F) -> Result<Recovery<O>, TaskError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = O> + Send + 'static,
    {
        let runtime = task::runtime("Line::recover");
        let inner = &self.inner;
        match inner.recoveries.begin(seen.0) {
            Begin::Lead(ticket, waiter) => {
                Counters::bump(&inner.counters.recoveries);
                #[cfg(feature = "tracing")]
                tracing::debug!(epoch = seen.0, "line recovery started");
                let owner = inner.clone();
                let limit = inner.timeout;
                #[cfg(feature = "metrics")]
                let started = tokio::time::Instant::now();
                // The runtime's timer, or the timer thread on a runtime without the time driver.
                let timer = limit.map(|limit| (limit, crate::time::Timer::current()));
                let work = move || async move {
                    match timer {
                        Some((limit, timer)) => timer.timeout(limit, recovery()).await,
                        None => Some(recovery().await),
                    }
                };
                task::spawn(&runtime, work, move |outcome: Outcome<Option<O>>| {
                    #[cfg(feature = "metrics")]
                    owner.metrics.recovered(started.elapsed());
                    match &outcome {
                        Err(Failure::Panicked(_message)) => {
                            Counters::bump(&owner.counters.panicked);
                            #[cfg(feature = "tracing")]
                            tracing::warn!(message = %_message, "line recovery panicked");
                        }
                        Ok(None) => {
                            Counters::bump(&owner.counters.timed_out);
                            #[cfg(feature = "tracing")]
                            tracing::warn!(timeout = ?limit, "line recovery timed out");
                        }
                        _ => {}
                    }
                    owner.recoveries.finish(ticket, outcome);
                    owner.cleared.notify_waiters();
                });
                settle(waiter.await, inner.timeout).map(Recovery::Led)
            }
            Begin::Join(waiter) => {
                Counters::bump(&inner.counters.joined);
                settle(waiter.await, inner.timeout).map(Recovery::Joined)
            }
            Begin::AlreadyDone => {
                Counters::bump(&inner.counters.already_done);
                Ok(Recovery::AlreadyDone)
            }
        }
    }

    /// Waits until no recovery runs, then returns the epoch to note for the next request.
    /// Returns at once if no recovery runs.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only watches the line.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let line: herder::Line<()> = herder::Line::new();
    /// let seen = line.wait_clear().await; // nothing to wait for
    /// assert_eq!(seen, line.epoch());
    /// # }
    /// ```
    pub async fn wait_clear(&self) -> Epoch {
        self.inner.wait_cleared().await;
        self.epoch()
    }

    /// The outcome of the recovery that ended at `epoch`, as its callers saw it, if it is the
    /// newest recovery to have ended.
    pub(crate) fn outcome_at(&self, epoch: Epoch) -> Option<Result<O, TaskError>> {
        let outcome = self.inner.recoveries.outcome_at(epoch.0)?;
        Some(settle(outcome, self.inner.timeout))
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> LineStats {
        let inner = &self.inner;
        inner
            .counters
            .snapshot(inner.recoveries.epoch(), inner.recoveries.is_recovering())
    }

    /// The line as a queue sees it.
    pub(crate) fn gate(&self) -> Arc<dyn Gate> {
        self.inner.clone()
    }
}

/// A recovery's outcome as its callers see it.
fn settle<O>(outcome: Outcome<Option<O>>, timeout: Option<Duration>) -> Result<O, TaskError> {
    match outcome {
        Ok(Some(outcome)) => Ok(outcome),
        Ok(None) => Err(TaskError::timed_out(
            Origin::Recovery,
            timeout.unwrap_or(Duration::MAX),
        )),
        Err(failure) => Err(TaskError::failed(Origin::Recovery, failure)),
    }
}

/// What a queue told to pause while a line recovers needs of the line, whatever its outcome
/// type.
pub(crate) trait Gate: Send + Sync {
    fn is_recovering(&self) -> bool;
    /// Resolves once no recovery runs.
    fn cleared(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

impl<O: Clone + Send + 'static> Gate for Inner<O> {
    fn is_recovering(&self) -> bool {
        self.recoveries.is_recovering()
    }

    fn cleared(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.wait_cleared())
    }
}

impl<O: Clone + Send + 'static> Inner<O> {
    /// Resolves once no recovery runs. The notification is enabled before the check, and a
    /// finishing recovery unregisters before it notifies, so no wake-up is lost.
    async fn wait_cleared(&self) {
        loop {
            let mut cleared = pin!(self.cleared.notified());
            cleared.as_mut().enable();
            if !self.recoveries.is_recovering() {
                return;
            }
            cleared.await;
        }
    }
}

impl<O: Clone + Send + 'static> Default for Line<O> {
    fn default() -> Self {
        Self::new()
    }
}

impl<O> Clone for Line<O> {
    fn clone(&self) -> Self {
        Line {
            inner: self.inner.clone(),
        }
    }
}

impl<O> fmt::Debug for Line<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Line")
            .field("name", &self.inner.name)
            .field("epoch", &self.inner.recoveries.epoch())
            .finish_non_exhaustive()
    }
}
