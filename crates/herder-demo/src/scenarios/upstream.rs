//! A simulated upstream API behind a token, for the recovery storm.
//!
//! It accepts one token at a time, checked when a call is answered. The token expires after a set
//! number of served calls (a counter, not a timer, so the expiry lands at the same point of every
//! run), and a login (which takes the login latency, ± 50%) issues a new token and revokes the
//! previous one, as many APIs do (one session per client). So clients that log in concurrently
//! revoke each other's fresh tokens, and the calls in flight with them.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The upstream's answer to a call with a token it does not accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unauthorized;

impl fmt::Display for Unauthorized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("401 unauthorized")
    }
}

/// The upstream API. Token 1 is valid at the start.
#[derive(Debug)]
pub struct Upstream {
    /// The one token accepted; 0 once it has expired.
    valid: AtomicU64,
    next_token: AtomicU64,
    served: AtomicU64,
    expire_after: u64,
    logins: AtomicU64,
    rejected: AtomicU64,
    call_latency: Duration,
    login_latency: Duration,
    jitter: Mutex<fastrand::Rng>,
}

impl Upstream {
    /// An upstream whose first token expires once `expire_after` calls were served.
    pub fn new(expire_after: u64, call_latency: Duration, login_latency: Duration) -> Self {
        Upstream {
            valid: AtomicU64::new(1),
            next_token: AtomicU64::new(2),
            served: AtomicU64::new(0),
            expire_after,
            logins: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            call_latency,
            login_latency,
            jitter: Mutex::new(fastrand::Rng::with_seed(7)),
        }
    }

    /// The token a client holds at the start.
    pub fn first_token(&self) -> u64 {
        1
    }

    /// A call: answered after the call latency, if the token is still the valid one then.
    pub async fn call(&self, token: u64) -> Result<u64, Unauthorized> {
        tokio::time::sleep(self.call_latency).await;
        if token == 0 || token != self.valid.load(SeqCst) {
            self.rejected.fetch_add(1, SeqCst);
            return Err(Unauthorized);
        }
        let served = self.served.fetch_add(1, SeqCst) + 1;
        if served == self.expire_after {
            // The token expires: every later answer to a call with it is a 401.
            let _ = self.valid.compare_exchange(token, 0, SeqCst, SeqCst);
        }
        Ok(served)
    }

    /// A login: takes the login latency (± 50%), then issues a new token and revokes the
    /// previous one.
    pub async fn login(&self) -> u64 {
        self.logins.fetch_add(1, SeqCst);
        let factor = 0.5
            + self
                .jitter
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .f64();
        tokio::time::sleep(self.login_latency.mul_f64(factor)).await;
        let token = self.next_token.fetch_add(1, SeqCst);
        self.valid.store(token, SeqCst);
        token
    }

    /// Logins so far: every one is a re-authentication, the client started with a token.
    pub fn logins(&self) -> u64 {
        self.logins.load(SeqCst)
    }

    /// Calls refused with 401.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(SeqCst)
    }

    /// Calls served.
    pub fn served(&self) -> u64 {
        self.served.load(SeqCst)
    }
}
