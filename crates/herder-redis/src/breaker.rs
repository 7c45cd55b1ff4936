//! A circuit breaker: after `threshold` failures in a row the tier is skipped for `cooldown`,
//! then tried again (one more failure reopens it at once).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    origin: Instant,
    failures: AtomicU32,
    /// Nanoseconds since `origin` until which calls are skipped.
    open_until: AtomicU64,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold,
            cooldown,
            origin: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// `false` while the circuit is open.
    pub(crate) fn allows(&self) -> bool {
        self.now() >= self.open_until.load(Relaxed)
    }

    /// Records a success, which closes the circuit (a background call may succeed while it is
    /// open: Redis is back).
    pub(crate) fn succeeded(&self) {
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
        if self.open_until.load(Relaxed) != 0 {
            self.open_until.store(0, Relaxed);
        }
    }

    /// Records a failure; `true` if it opened the circuit.
    pub(crate) fn failed(&self) -> bool {
        let failures = self.failures.fetch_add(1, Relaxed) + 1;
        if failures < self.threshold {
            return false;
        }
        self.open();
        true
    }

    /// Records a failure that says Redis is down (a refused or dropped connection): opens the
    /// circuit at once, rather than after `threshold` misses that each pay for the failure.
    /// `true` if it was closed.
    pub(crate) fn tripped(&self) -> bool {
        let closed = self.allows();
        self.failures.fetch_add(1, Relaxed);
        self.open();
        closed
    }

    fn open(&self) {
        let until = self
            .now()
            .saturating_add(u64::try_from(self.cooldown.as_nanos()).unwrap_or(u64::MAX));
        self.open_until.store(until, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_circuit_opens_after_the_threshold_and_closes_after_the_cooldown() {
        let breaker = Breaker::new(3, Duration::from_secs(1));
        assert!(!breaker.failed() && !breaker.failed());
        assert!(breaker.allows());
        assert!(breaker.failed());
        assert!(!breaker.allows());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(breaker.allows(), "half-open after the cooldown");
        assert!(breaker.failed(), "one more failure reopens it");
        tokio::time::advance(Duration::from_secs(1)).await;
        breaker.succeeded();
        assert!(!breaker.failed(), "a success closed it");
        let opened = (0..3).map(|_| breaker.failed()).last();
        assert!(opened == Some(true) && !breaker.allows(), "open again");
        breaker.succeeded();
        assert!(breaker.allows(), "a success while open closes it at once");
        assert!(breaker.tripped(), "a refused connection opens it at once");
        assert!(!breaker.allows() && !breaker.tripped());
    }
}
