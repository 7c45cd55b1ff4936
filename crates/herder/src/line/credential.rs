//! [`Credential`]: the common use of a [`Line`], ready-made. A credential (a token) that
//! requests use, and that a request failing because of it refreshes once for everyone.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use super::handle::{Epoch, Line, Recovery};
use crate::TaskError;

type Refresh<C, E> = dyn Fn() -> Pin<Box<dyn Future<Output = Result<C, E>> + Send>> + Send + Sync;

/// A credential that requests use and that a failed request refreshes, once for everyone, over
/// a [`Line`].
///
/// [`call`](Credential::call) runs a request with the current credential. If the request fails
/// with an error your predicate says calls for a refresh (a 401), the credential is refreshed
/// (one refresh however many requests fail at once; a request that failed with a credential
/// already replaced just retries) and the request is tried again, up to
/// [`attempts`](Credential::attempts) tries in all. While a refresh runs, new calls wait for it
/// instead of sending a request bound to fail. A refresh that fails (or panics, or runs past
/// the line's [`recovery_timeout`](super::Builder::recovery_timeout)) ends every call that
/// waited for it, the ones that joined it and the ones that arrived while it ran, with its
/// error: fifty calls on an expired credential whose refresh is refused make one refresh, not
/// one per call. The next call after that tries again.
///
/// It is the loop the [`Line`] documentation writes by hand (epoch, `wait_clear`, `recover`,
/// retry) with the credential kept for you. The line stays available: pause an
/// [`OperationQueue`](crate::OperationQueue) on it with
/// [`pause_while_recovering`](crate::queue::Builder::pause_while_recovering)`(credential.line())`,
/// give it a [`recovery_timeout`](super::Builder::recovery_timeout), or read its stats.
///
/// # Examples
///
/// ```
/// use herder::{Line, line::Credential};
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
///
/// /// A server that accepts only the current token.
/// #[derive(Clone, Default)]
/// struct Server { token: Arc<AtomicU64>, logins: Arc<AtomicU64> }
///
/// impl Server {
///     async fn fetch(&self, token: u64) -> Result<&'static str, u16> {
///         if token == self.token.load(SeqCst) { Ok("mail") } else { Err(401) }
///     }
///     async fn login(&self) -> Result<u64, String> {
///         self.logins.fetch_add(1, SeqCst);
///         Ok(self.token.fetch_add(1, SeqCst) + 1)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let server = Server::default();
/// server.token.store(1, SeqCst); // our token 0 has expired
/// let auth = Credential::new(Line::new(), 0, {
///     let server = server.clone();
///     move || {
///         let server = server.clone();
///         async move { server.login().await }
///     }
/// });
///
/// // Five requests fail with the expired token: one login, five answers.
/// let bodies = futures_util::future::join_all((0..5).map(|_| {
///     auth.call(|token| server.fetch(token), |status| *status == 401)
/// }))
/// .await;
/// assert!(bodies.iter().all(|body| body == &Ok("mail")));
/// assert_eq!(server.logins.load(SeqCst), 1);
/// assert_eq!(auth.current(), 2);
/// # }
/// ```
pub struct Credential<C, E> {
    line: Line<Result<C, E>>,
    current: Arc<Mutex<Current<C>>>,
    refresh: Arc<Refresh<C, E>>,
    attempts: usize,
}

impl<C, E> Credential<C, E>
where
    C: Clone + Send + 'static,
    E: Clone + Send + 'static,
{
    /// A credential starting as `initial`, refreshed over `line` by `refresh()`; 2 attempts per
    /// call (the request, and once more after a refresh).
    ///
    /// A refresh that fails leaves the credential as it was and hands its error to every call
    /// that waited for it ([`CallError::Refresh`]).
    pub fn new<R, Fut>(line: Line<Result<C, E>>, initial: C, refresh: R) -> Self
    where
        R: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<C, E>> + Send + 'static,
    {
        Credential {
            line,
            current: Arc::new(Mutex::new(Current {
                credential: initial,
                refreshes: 0,
            })),
            refresh: Arc::new(move || Box::pin(refresh())),
            attempts: 2,
        }
    }

    /// How many times [`call`](Credential::call) sends a request at most (default 2). A refresh
    /// happens only between two attempts: a request failing on its last attempt returns its
    /// error.
    ///
    /// # Panics
    ///
    /// If `attempts` is 0.
    ///
    /// ```
    /// use herder::{Line, line::Credential};
    ///
    /// let auth = Credential::new(Line::new(), "token-0", || async { Ok::<_, ()>("token-1") })
    ///     .attempts(3);
    /// assert_eq!(auth.current(), "token-0");
    /// ```
    pub fn attempts(mut self, attempts: usize) -> Self {
        assert!(attempts > 0, "Credential::attempts must be at least 1");
        self.attempts = attempts;
        self
    }

    /// The credential the next request will use.
    pub fn current(&self) -> C {
        self.now().credential
    }

    /// The credential, and how many refreshes have replaced it so far.
    fn now(&self) -> Current<C> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The error of the refresh that ended at `epoch`, if that refresh failed (gave no
    /// credential) and is the newest to have ended.
    fn failed_at<RE>(&self, epoch: Epoch) -> Option<CallError<RE, E>> {
        match self.line.outcome_at(epoch)? {
            Ok(Ok(_)) => None,
            Ok(Err(err)) => Some(CallError::Refresh(err)),
            Err(err) => Some(CallError::Recovery(err)),
        }
    }

    /// The line the refreshes run on.
    pub fn line(&self) -> &Line<Result<C, E>> {
        &self.line
    }

    /// Runs `request` with the current credential; if it fails with an error for which
    /// `needs_refresh` is `true`, refreshes the credential (or joins the refresh under way, or
    /// sees it already done) and tries again, up to [`attempts`](Credential::attempts) tries.
    ///
    /// Returns the request's output, or the error that ended the call: the request's own
    /// (not calling for a refresh, or on the last attempt), the refresh's, or why the refresh
    /// gave no outcome (it panicked or timed out), for a refresh this call started, joined, or
    /// waited for before sending its request, or one that ended, without replacing the
    /// credential, after this call's request failed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe as far as the credential goes: a refresh this call started runs on for the
    /// others and stores its credential. The request future in flight is dropped.
    ///
    /// # Panics
    ///
    /// When a refresh is needed and this is polled outside a Tokio runtime.
    pub async fn call<T, RE, Req, Fut, P>(
        &self,
        mut request: Req,
        needs_refresh: P,
    ) -> Result<T, CallError<RE, E>>
    where
        Req: FnMut(C) -> Fut,
        Fut: Future<Output = Result<T, RE>>,
        P: Fn(&RE) -> bool,
    {
        let mut attempt = 1;
        loop {
            let (before, refreshes) = (self.line.epoch(), self.now().refreshes);
            let seen = self.line.wait_clear().await;
            // A refresh ended while this call waited for it, and it failed (none replaced the
            // credential meanwhile): its error is this call's too. Sending the request would
            // fail again and start a refresh per waiting call, one after the other.
            if seen != before
                && self.now().refreshes == refreshes
                && let Some(err) = self.failed_at(seen)
            {
                return Err(err);
            }
            let Current {
                credential,
                refreshes,
            } = self.now();
            let err = match request(credential).await {
                Ok(output) => return Ok(output),
                Err(err) => err,
            };
            if attempt >= self.attempts || !needs_refresh(&err) {
                return Err(CallError::Request(err));
            }
            attempt += 1;
            let (refresh, current) = (self.refresh.clone(), self.current.clone());
            let recovery = self.line.recover(seen, move || async move {
                let fresh = refresh().await;
                if let Ok(credential) = &fresh {
                    // Stored before the recovery ends, so that every retry uses it.
                    let mut current = current.lock().unwrap_or_else(PoisonError::into_inner);
                    current.credential = credential.clone();
                    current.refreshes += 1;
                }
                fresh
            });
            match recovery.await {
                Ok(Recovery::Led(Err(err)) | Recovery::Joined(Err(err))) => {
                    return Err(CallError::Refresh(err));
                }
                Ok(Recovery::AlreadyDone) => {
                    // A refresh ended since the request was sent. If none replaced the
                    // credential it used, the newest failed: its error, not one more try.
                    if self.now().refreshes == refreshes
                        && let Some(err) = self.failed_at(self.line.epoch())
                    {
                        return Err(err);
                    }
                }
                Ok(_) => {}
                Err(err) => return Err(CallError::Recovery(err)),
            }
        }
    }
}

impl<C, E> Clone for Credential<C, E> {
    fn clone(&self) -> Self {
        Credential {
            line: self.line.clone(),
            current: self.current.clone(),
            refresh: self.refresh.clone(),
            attempts: self.attempts,
        }
    }
}

/// The credential, and how many refreshes have replaced it.
#[derive(Clone)]
struct Current<C> {
    credential: C,
    refreshes: u64,
}

impl<C, E> fmt::Debug for Credential<C, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("line", &self.line)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Why [`Credential::call`] gave no output.
///
/// ```
/// use herder::{Line, line::{CallError, Credential}};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let auth = Credential::new(Line::new(), 0u64, || async { Err("login refused".to_string()) });
/// let err = auth.call(|_token| async { Err::<(), u16>(401) }, |status| *status == 401).await;
/// assert_eq!(err, Err(CallError::Refresh("login refused".to_string())));
/// let err = auth.call(|_token| async { Err::<(), u16>(500) }, |status| *status == 401).await;
/// assert_eq!(err, Err(CallError::Request(500)));
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError<RE, E> {
    /// The request failed with an error that calls for no refresh, or on its last attempt.
    Request(RE),
    /// The refresh failed; every call that waited for it gets a clone of its error.
    Refresh(E),
    /// The refresh gave no outcome: it panicked, timed out, or its runtime shut down.
    Recovery(TaskError),
}

impl<RE: fmt::Display, E: fmt::Display> fmt::Display for CallError<RE, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Request(err) => write!(f, "request failed: {err}"),
            CallError::Refresh(err) => write!(f, "credential refresh failed: {err}"),
            CallError::Recovery(err) => write!(f, "credential refresh failed: {err}"),
        }
    }
}

impl<RE, E> Error for CallError<RE, E>
where
    RE: Error + 'static,
    E: Error + 'static,
{
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            CallError::Request(err) => Some(err),
            CallError::Refresh(err) => Some(err),
            CallError::Recovery(err) => Some(err),
        }
    }
}
