//! Cache time: nanoseconds since the cache was built, read through `tokio::time` so that tests run
//! on a paused clock. Entries store `u64` offsets instead of `Instant`s (8 bytes, not 16).
//!
//! Reading the OS clock costs more than a cache hit (and serialises the CPU), so a cache can opt
//! into a coarse clock: a ticker task stores the time every `resolution`, and reads load it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

#[derive(Debug)]
pub(crate) struct Clock {
    origin: Instant,
    /// The time stored by the ticker, with a coarse clock.
    coarse: Option<AtomicU64>,
}

/// A point in cache time that never comes.
pub(crate) const NEVER: u64 = u64::MAX;

impl Clock {
    /// A clock read at every use, or, with `coarse`, one stored by [`tick`].
    pub(crate) fn new(coarse: bool) -> Self {
        Clock {
            origin: Instant::now(),
            coarse: coarse.then(|| AtomicU64::new(0)),
        }
    }

    fn read(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.origin))
    }

    /// Now, in nanoseconds since the cache was built.
    pub(crate) fn now(&self) -> u64 {
        match &self.coarse {
            Some(coarse) => coarse.load(Relaxed),
            None => self.read(),
        }
    }
}

/// Keeps a coarse clock current, every `resolution`, until its owner is dropped.
pub(crate) async fn tick<T>(owner: Weak<T>, resolution: Duration, clock: impl Fn(&T) -> &Clock) {
    let mut interval = tokio::time::interval(resolution);
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        let Some(owner) = owner.upgrade() else { return };
        let clock = clock(&owner);
        if let Some(coarse) = &clock.coarse {
            coarse.store(clock.read(), Relaxed);
        }
        drop::<Arc<T>>(owner);
    }
}

/// When a wait of `wait` from now ends, with the wait (for the error): `None` without a wait or
/// when it is too long to express as an instant (it never ends).
pub(crate) fn deadline(wait: Option<Duration>) -> Option<(Instant, Duration)> {
    let wait = wait?;
    Some((Instant::now().checked_add(wait)?, wait))
}

/// The longest clock resolution `Builder::clock_resolution` accepts.
pub(crate) const MAX_RESOLUTION: Duration = Duration::from_secs(1);

/// `d` in nanoseconds, saturating (a TTL of centuries is "never").
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(NEVER)
}

/// `at + d`, where `NEVER` stays `NEVER`.
pub(crate) fn after(at: u64, d: Duration) -> u64 {
    at.saturating_add(nanos(d))
}
