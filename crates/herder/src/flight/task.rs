//! Work runs as its own task, so it belongs to no caller: a caller that is dropped, times out or is
//! parked cannot stall, fail or poison the others (guarantee 1 of the flight contract).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc as StdArc;

use futures_util::FutureExt as _;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;

use super::slot::{Failure, Outcome, panic_message};

/// Calls its `finish` closure exactly once: with the work's outcome through
/// [`FinishGuard::finish`], or with [`Failure::Cancelled`] when dropped first (the task was
/// aborted or its runtime shut down). This is what keeps waiters from hanging and maps from
/// leaking whatever happens to the task.
pub(crate) struct FinishGuard<T, F: FnOnce(Outcome<T>)> {
    finish: Option<F>,
    _outcome: PhantomData<fn(T)>,
}

impl<T, F: FnOnce(Outcome<T>)> FinishGuard<T, F> {
    pub(crate) fn new(finish: F) -> Self {
        FinishGuard {
            finish: Some(finish),
            _outcome: PhantomData,
        }
    }

    pub(crate) fn finish(mut self, outcome: Outcome<T>) {
        if let Some(finish) = self.finish.take() {
            finish(outcome);
        }
    }
}

impl<T, F: FnOnce(Outcome<T>)> Drop for FinishGuard<T, F> {
    fn drop(&mut self) {
        if let Some(finish) = self.finish.take() {
            finish(Err(Failure::Cancelled));
        }
    }
}

impl<T, F: FnOnce(Outcome<T>)> fmt::Debug for FinishGuard<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FinishGuard")
            .field("armed", &self.finish.is_some())
            .finish()
    }
}

/// Runs `fut` to completion, turning a panic into its [message](panic_message).
pub(crate) async fn catch<T>(fut: impl Future<Output = T>) -> Result<T, StdArc<str>> {
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(panic_message)
}

/// The runtime that will carry spawned work.
///
/// # Panics
///
/// Outside a Tokio runtime, with a message naming `what` (before any state is touched, so
/// nothing is left half-registered).
pub(crate) fn runtime(what: &str) -> Handle {
    match Handle::try_current() {
        Ok(handle) => handle,
        Err(_) => panic!("{what} must be polled from within a Tokio runtime"),
    }
}

/// Spawns `work()` on `runtime`; its outcome, or its panic, goes to `finish`, which also runs
/// (with [`Failure::Cancelled`]) if the task is dropped before it ends.
pub(crate) fn spawn<T, W, Fut, F>(runtime: &Handle, work: W, finish: F) -> AbortHandle
where
    T: Send + 'static,
    W: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    F: FnOnce(Outcome<T>) + Send + 'static,
{
    let guard = FinishGuard::new(finish);
    let task = async move {
        // `work()` runs inside `catch`, so a panic while building the future is caught too.
        let outcome = catch(async move { work().await })
            .await
            .map_err(Failure::Panicked);
        guard.finish(outcome);
    };
    #[cfg(feature = "tracing")]
    let task = tracing::Instrument::in_current_span(task);
    runtime.spawn(task).abort_handle()
}
