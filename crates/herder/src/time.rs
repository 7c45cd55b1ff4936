//! Durations handed to tokio's timer.
//!
//! tokio's `timeout` and `sleep` take any `Duration`, but a deadline that lands within a
//! millisecond of the largest `Instant` overflows when the timer rounds it up: a panic in the
//! task that set the timer (the runner of an operation, a recovery's leader, a caller's load).
//! Every limit a builder takes, and every deadline a caller gives, goes through this module, so
//! that any setting a builder accepts is safe later: from [`NEVER`] on (about 30 years, where
//! tokio's own `sleep` puts a deadline it cannot represent) a limit never fires.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// About 30 years: no timer of herder's is set further away than this.
pub(crate) const NEVER: Duration = Duration::from_secs(30 * 365 * 86_400);

/// A limit (a timeout): `None`, no timer at all, from [`NEVER`] on.
pub(crate) fn finite(limit: Duration) -> Option<Duration> {
    (limit < NEVER).then_some(limit)
}

/// A wait that ends (a batching delay): at most [`NEVER`].
pub(crate) fn clamp(wait: Duration) -> Duration {
    wait.min(NEVER)
}

/// A deadline a caller gave: at most [`NEVER`] from now.
pub(crate) fn reachable(deadline: Instant) -> Instant {
    deadline.min(Instant::now() + NEVER)
}

/// What herder's own fallbacks sleep on (the DataLoader's janitor, a queue's shutdown deadline):
/// tokio's timer, which follows a paused clock; or, where there is none (a runtime built without
/// the time driver, no runtime at all), the one timer thread of `futures-timer`, shared by the
/// process and tied to no runtime (dropping a runtime never waits for it, a busy blocking pool
/// does not delay it). (Settings that set a timer on every use, a batching delay or a timeout,
/// need the time driver, as tokio's timers do.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    Tokio,
    Thread,
}

/// How many runtimes found to have no time driver are remembered, the newest: a runtime that
/// is forgotten is probed again (one more caught panic).
const REMEMBERED: usize = 1024;

/// The runtimes found to have no time driver, the newest last. Only those are kept: the test
/// costs a panic caught (which the panic hook reports).
static TIMERLESS: std::sync::Mutex<VecDeque<tokio::runtime::Id>> =
    std::sync::Mutex::new(VecDeque::new());

impl Timer {
    /// The timer of the current runtime, if any.
    ///
    /// tokio has no way to ask whether a runtime has the time driver: making a timer on one
    /// that has none panics, which this catches, once per runtime (under the lock, so that
    /// racing first uses panic once). A program built with `panic = "abort"` could not catch
    /// it: there herder always sleeps on the timer thread (a paused clock does not apply to
    /// these sleeps then). A panic hook that ends the process defeats the probe too: such a
    /// program must give its runtimes the time driver.
    pub(crate) fn current() -> Timer {
        if cfg!(panic = "abort") {
            return Timer::Thread;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Timer::Thread;
        };
        let id = runtime.id();
        let mut timerless = TIMERLESS.lock().unwrap_or_else(|e| e.into_inner());
        if timerless.contains(&id) {
            return Timer::Thread;
        }
        match std::panic::catch_unwind(|| drop(tokio::time::sleep(Duration::ZERO))) {
            Ok(()) => Timer::Tokio,
            Err(payload) => {
                crate::flight::quietly(move || drop(payload));
                if timerless.len() == REMEMBERED {
                    timerless.pop_front();
                }
                timerless.push_back(id);
                Timer::Thread
            }
        }
    }

    /// Runs `fut` for at most `limit` (limits from [`NEVER`] on do not fire): its output, or
    /// `None` past the limit (`fut` is dropped then). On a runtime without the time driver the
    /// limit is kept by the timer thread instead of panicking, as `tokio::time::timeout` would.
    pub(crate) async fn timeout<F: std::future::Future>(
        self,
        limit: Duration,
        fut: F,
    ) -> Option<F::Output> {
        let Some(limit) = finite(limit) else {
            return Some(fut.await);
        };
        match self {
            Timer::Tokio => tokio::time::timeout(limit, fut).await.ok(),
            Timer::Thread => {
                let fut = std::pin::pin!(fut);
                match futures_util::future::select(fut, futures_timer::Delay::new(limit)).await {
                    futures_util::future::Either::Left((output, _)) => Some(output),
                    futures_util::future::Either::Right(_) => None,
                }
            }
        }
    }

    /// Sleeps until `deadline` (at most [`NEVER`] from now).
    pub(crate) async fn sleep_until(self, deadline: Instant) {
        let deadline = reachable(deadline);
        match self {
            Timer::Tokio => tokio::time::sleep_until(deadline).await,
            Timer::Thread => {
                futures_timer::Delay::new(deadline.saturating_duration_since(Instant::now())).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_from_never_on_set_no_timer() {
        assert_eq!(finite(Duration::from_secs(1)), Some(Duration::from_secs(1)));
        assert_eq!(
            finite(NEVER - Duration::from_nanos(1)),
            Some(NEVER - Duration::from_nanos(1))
        );
        assert_eq!(finite(NEVER), None);
        assert_eq!(finite(Duration::MAX), None);
        assert_eq!(clamp(Duration::MAX), NEVER);
        assert_eq!(clamp(Duration::from_millis(3)), Duration::from_millis(3));
    }

    #[tokio::test(start_paused = true)]
    async fn far_deadlines_are_brought_within_reach() {
        let now = Instant::now();
        let soon = now + Duration::from_secs(5);
        assert_eq!(reachable(soon), soon);
        // The furthest instant the platform can represent from here.
        let mut far = now;
        let mut step = Duration::from_secs(u64::MAX / 2);
        while step > Duration::ZERO {
            if let Some(next) = far.checked_add(step) {
                far = next;
            } else {
                step /= 2;
            }
        }
        assert!(reachable(far) <= now + NEVER);
        // The deadline is usable: a timer set on it does not overflow.
        assert!(
            tokio::time::timeout_at(reachable(far), std::future::ready(()))
                .await
                .is_ok()
        );
    }

    #[test]
    fn a_runtime_without_the_time_driver_or_none_sleeps_on_the_timer_thread() {
        assert_eq!(Timer::current(), Timer::Thread, "outside a runtime");
        let timerless = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        timerless.block_on(async {
            assert_eq!(Timer::current(), Timer::Thread);
            // Remembered: no second panic.
            assert_eq!(Timer::current(), Timer::Thread);
            assert!(
                TIMERLESS
                    .lock()
                    .unwrap()
                    .contains(&tokio::runtime::Handle::current().id())
            );
            let start = Instant::now();
            Timer::current()
                .sleep_until(start + Duration::from_millis(20))
                .await;
            assert!(start.elapsed() >= Duration::from_millis(20));
            // A deadline past [`NEVER`] is brought within reach.
            let far = Timer::current().sleep_until(start + 2 * NEVER);
            assert!(futures_util::FutureExt::now_or_never(Box::pin(far)).is_none());
        });
        drop(timerless);
        let timed = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        timed.block_on(async { assert_eq!(Timer::current(), Timer::Tokio) });
    }

    #[test]
    fn only_the_newest_timerless_runtimes_are_remembered() {
        for _ in 0..REMEMBERED + 8 {
            let timerless = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            timerless.block_on(async { assert_eq!(Timer::current(), Timer::Thread) });
        }
        assert!(TIMERLESS.lock().unwrap().len() <= REMEMBERED);
    }
}
