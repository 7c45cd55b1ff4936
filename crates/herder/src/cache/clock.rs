//! Cache time: nanoseconds since the cache was built, read through `tokio::time` so that tests run
//! on a paused clock. Entries store `u64` offsets instead of `Instant`s (8 bytes, not 16).

use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    origin: Instant,
}

/// A point in cache time that never comes.
pub(crate) const NEVER: u64 = u64::MAX;

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            origin: Instant::now(),
        }
    }

    /// Now, in nanoseconds since the cache was built.
    pub(crate) fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.origin))
    }
}

/// `d` in nanoseconds, saturating (a TTL of centuries is "never").
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(NEVER)
}

/// `at + d`, where `NEVER` stays `NEVER`.
pub(crate) fn after(at: u64, d: Duration) -> u64 {
    at.saturating_add(nanos(d))
}
