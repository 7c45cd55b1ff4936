//! Cache time: nanoseconds since the cache was built, read through `tokio::time` so that tests run
//! on a paused clock. Entries store `u64` offsets instead of `Instant`s (8 bytes, not 16).
//!
//! Reading the OS clock costs more than a cache hit: besides its own ~25 ns, the read is ordered
//! with the loads around it (`rdtscp`/`lfence`), which stalls the hash lookup (2 threads: ~100 ns
//! a hit instead of ~35). So while a cache is hit on a multi-thread Tokio runtime, a ticker task
//! on that runtime stores the time every `resolution` (1 ms by default), and hits load it. Writes
//! always read the clock, so a deadline is never earlier than its TTL says and a hit serves an
//! entry at most a tick (plus the ticker's scheduling delay) past it, never before.
//!
//! ```text
//!          a hit on a multi-thread runtime (or, outside any runtime, with the cache built in one):
//!          read the clock, spawn the ticker on that runtime
//!   Exact ────────────────────────────────────────────────────→ Read ⇄ Unread
//!     ↑    the ticker: no hit for a second, or its runtime        (each tick: Unread;
//!     └─── shut down                                               a hit: Read)
//! ```
//!
//! In `Exact` (no ticker: outside a runtime, on a current-thread runtime, with a zero resolution,
//! or while the cache is idle) every hit reads `tokio::time::Instant::now()`. Only a
//! current-thread runtime can pause its clock (`start_paused`, `time::pause`), and its threads
//! never start a ticker, so a paused clock is read as it stands: tests that `advance` it see exact
//! expiry. A ticker keeps time as well as its runtime polls its tasks: a runtime whose every
//! worker is blocked delays expiry as long as it delays its own timers.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::time::{Instant, MissedTickBehavior};

/// A point in cache time that never comes.
pub(crate) const NEVER: u64 = u64::MAX;

/// The resolution of the default clock.
pub(crate) const DEFAULT_RESOLUTION: Duration = Duration::from_millis(1);

/// The longest clock resolution `Builder::clock_resolution` accepts.
pub(crate) const MAX_RESOLUTION: Duration = Duration::from_secs(1);

/// How long a ticker runs on without a read before it stops (the next read restarts it).
const IDLE: Duration = Duration::from_secs(1);

/// No ticker: read the clock.
const EXACT: u8 = 0;
/// A ticker runs, and the clock was read since its last tick.
const READ: u8 = 1;
/// A ticker runs, and the clock was not read since its last tick.
const UNREAD: u8 = 2;

#[derive(Debug)]
pub(crate) struct Clock {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    origin: Instant,
    /// The time stored by the ticker; current while `state` is not `EXACT`.
    now: AtomicU64,
    state: AtomicU8,
    /// The ticker's period; `None`: always read the clock.
    resolution: Option<Duration>,
    /// The multi-thread runtime the cache was built in, which runs the ticker for hits made
    /// outside any runtime (until it shuts down).
    home: Option<Handle>,
    home_gone: AtomicBool,
}

impl Shared {
    fn read(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.origin))
    }
}

impl Clock {
    /// A clock kept by a ticker every `resolution` when it can be (see the module docs), or read
    /// at every use with `None`.
    pub(crate) fn new(resolution: Option<Duration>) -> Self {
        Clock {
            shared: Arc::new(Shared {
                origin: Instant::now(),
                now: AtomicU64::new(0),
                state: AtomicU8::new(EXACT),
                home: resolution.and_then(|_| multi_thread(Handle::try_current().ok()?)),
                home_gone: AtomicBool::new(false),
                resolution,
            }),
        }
    }

    /// Now, in nanoseconds since the cache was built, read from the clock: for writes, so that
    /// a deadline is never earlier than its TTL says, and for everything but hits.
    pub(crate) fn now(&self) -> u64 {
        self.shared.read()
    }

    /// Now, for a hit on an entry that expires: the ticker's time if one runs (at most a tick
    /// behind the clock, so an entry is never served early, at most a tick late), else the
    /// clock, starting a ticker where one can run.
    #[inline]
    pub(crate) fn now_on_hit(&self) -> u64 {
        self.load().unwrap_or_else(|| self.exact())
    }

    /// The time stored by the ticker, if one runs.
    #[inline]
    fn load(&self) -> Option<u64> {
        let shared = &*self.shared;
        match shared.state.load(Ordering::Acquire) {
            READ => Some(shared.now.load(Ordering::Relaxed)),
            UNREAD
                if shared
                    .state
                    .compare_exchange(UNREAD, READ, Ordering::Acquire, Ordering::Acquire)
                    .map_or_else(|state| state == READ, |_| true) =>
            {
                Some(shared.now.load(Ordering::Relaxed))
            }
            _ => None,
        }
    }

    /// Reads the clock, and starts a ticker on this thread's runtime if it is a multi-thread
    /// one, or, outside any runtime, on the multi-thread runtime the cache was built in.
    #[cold]
    #[inline(never)]
    fn exact(&self) -> u64 {
        let shared = &*self.shared;
        let now = shared.read();
        let Some(resolution) = shared.resolution else {
            return now;
        };
        // A current-thread runtime may pause its clock: its threads read it as it stands.
        let (runtime, home) = match Handle::try_current() {
            Ok(current) => match multi_thread(current) {
                Some(current) => (current, false),
                None => return now,
            },
            Err(_) => match &shared.home {
                Some(home) if !shared.home_gone.load(Ordering::Relaxed) => (home.clone(), true),
                _ => return now,
            },
        };
        // The time is current before the state says so (readers load it after the state).
        shared.now.fetch_max(now, Ordering::Relaxed);
        if shared
            .state
            .compare_exchange(EXACT, READ, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            // The guard is made here, not in the task: a task dropped before its first poll
            // (its runtime shut down at once) still puts the clock back.
            let stopped = Stopped {
                clock: Arc::downgrade(&self.shared),
                armed: true,
                home,
            };
            runtime.spawn(tick(stopped, resolution));
        }
        now
    }

    /// `true` while a ticker keeps this clock (for tests).
    #[cfg(test)]
    fn ticking(&self) -> bool {
        self.shared.state.load(Ordering::Acquire) != EXACT
    }
}

fn multi_thread(runtime: Handle) -> Option<Handle> {
    matches!(runtime.runtime_flavor(), RuntimeFlavor::MultiThread).then_some(runtime)
}

/// Puts the clock back to `EXACT` if the ticker is dropped without stopping on its own (its
/// runtime shut down): the stored time would no longer move. A home runtime that shut down is
/// not asked again.
struct Stopped {
    clock: Weak<Shared>,
    armed: bool,
    home: bool,
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let (true, Some(shared)) = (self.armed, self.clock.upgrade()) {
            if self.home {
                shared.home_gone.store(true, Ordering::Relaxed);
            }
            shared.state.store(EXACT, Ordering::Release);
        }
    }
}

/// Keeps a clock current, every `resolution`, until it goes unread for `IDLE`, its cache is
/// dropped, or its runtime shuts down.
async fn tick(mut stopped: Stopped, resolution: Duration) {
    let clock = stopped.clock.clone();
    let mut interval = tokio::time::interval(resolution);
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let idle_ticks = (IDLE.as_nanos() / resolution.as_nanos()).max(1);
    let mut unread = 0;
    loop {
        interval.tick().await;
        let Some(shared) = clock.upgrade() else {
            return;
        };
        shared.now.fetch_max(shared.read(), Ordering::Relaxed);
        match shared
            .state
            .compare_exchange(READ, UNREAD, Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => unread = 0,
            Err(_) => unread += 1,
        }
        if unread >= idle_ticks
            && shared
                .state
                .compare_exchange(UNREAD, EXACT, Ordering::Release, Ordering::Relaxed)
                .is_ok()
        {
            // Stopped on its own: a read may already have started the next ticker.
            stopped.armed = false;
            return;
        }
    }
}

/// When a wait of `wait` from now ends, with the wait (for the error): `None` without a wait or
/// when it is too long to express as an instant (it never ends).
pub(crate) fn deadline(wait: Option<Duration>) -> Option<(Instant, Duration)> {
    let wait = wait?;
    Some((Instant::now().checked_add(wait)?, wait))
}

/// `d` in nanoseconds, saturating (a TTL of centuries is "never").
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(NEVER)
}

/// `at + d`, where `NEVER` stays `NEVER`.
pub(crate) fn after(at: u64, d: Duration) -> u64 {
    at.saturating_add(nanos(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_runtime_the_clock_is_read_at_every_use() {
        let clock = Clock::new(Some(DEFAULT_RESOLUTION));
        let before = clock.now_on_hit();
        std::thread::sleep(Duration::from_millis(2));
        assert!(clock.now_on_hit() >= before + 2_000_000);
        assert!(!clock.ticking());
    }

    #[tokio::test(start_paused = true)]
    async fn a_current_thread_runtime_reads_its_clock_exactly() {
        let clock = Clock::new(Some(DEFAULT_RESOLUTION));
        let before = clock.now_on_hit();
        tokio::time::advance(Duration::from_micros(3)).await;
        assert_eq!(clock.now_on_hit(), before + 3_000);
        assert!(!clock.ticking());
    }

    #[test]
    fn a_ticker_starts_on_a_multi_thread_runtime_and_stops_with_it() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let clock = Clock::new(Some(DEFAULT_RESOLUTION));
        runtime.block_on(async {
            clock.now();
            assert!(!clock.ticking(), "only a hit starts the ticker");
            clock.now_on_hit();
            assert!(clock.ticking());
        });
        // Without its runtime the stored time would stand still: the clock is read again.
        drop(runtime);
        assert!(!clock.ticking());
        let before = clock.now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(clock.now() >= before + 2_000_000);
    }

    #[test]
    fn hits_outside_a_runtime_tick_on_the_runtime_the_cache_was_built_in_while_it_lives() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let clock = runtime.block_on(async { Clock::new(Some(DEFAULT_RESOLUTION)) });
        clock.now_on_hit();
        assert!(clock.ticking());
        drop(runtime);
        assert!(!clock.ticking());
        // Its home is gone: read at every use, without trying to spawn there again.
        let before = clock.now_on_hit();
        assert!(!clock.ticking() && clock.shared.home_gone.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(2));
        assert!(clock.now_on_hit() >= before + 2_000_000);
    }

    #[test]
    fn a_zero_resolution_never_ticks() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let clock = Clock::new(None);
        runtime.block_on(async {
            clock.now_on_hit();
            assert!(!clock.ticking());
        });
    }
}
