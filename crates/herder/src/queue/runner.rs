//! A runner: the task that takes the oldest job, runs it, and so on, until the state machine
//! tells it to exit; and the guard that unregisters it however its task ends.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::core::{Core, NewRunner, drop_quietly, wakers};
use super::error::OperationError;
use super::job::{Job, RunJob};
use super::state::{End, Next, RunnerKey};
use crate::flight::panic_message;
use crate::sync::lock;

/// How a flavour starts a runner task: on a runtime (`Send` jobs) or on the current
/// `LocalSet`.
pub(crate) trait Spawn<J: ?Sized> {
    /// Spawns `run(guard, wake)` and returns its abort handle.
    fn spawn(&self, guard: RunnerGuard<J>, wake: Arc<Notify>) -> AbortHandle;
}

/// Spawns the runners registered in `new` and attaches their abort handles. A runner that
/// exits before its handle is attached, or a shutdown that aborts the runners meanwhile, are
/// handled by [`Core::attach`].
pub(crate) fn start<J: ?Sized, S: Spawn<J>>(core: &Arc<Core<J>>, spawner: &S, new: Vec<NewRunner>) {
    for (key, wake) in new {
        let abort = spawner.spawn(RunnerGuard::new(core.clone(), key), wake);
        core.attach(key, abort);
    }
}

/// A runner's identity, and the duty to unregister it: if its task is dropped before it exits
/// (aborted by a shutdown, or dropped with its runtime), the state machine learns it, the job it
/// was running counts as aborted, and if it was the last runner the queued jobs are cancelled.
/// Made before the task is spawned, so it also covers a task dropped before its first poll.
pub(crate) struct RunnerGuard<J: ?Sized> {
    core: Arc<Core<J>>,
    id: usize,
    exited: bool,
}

impl<J: ?Sized> RunnerGuard<J> {
    fn new(core: Arc<Core<J>>, key: RunnerKey) -> Self {
        RunnerGuard {
            core,
            id: key.id,
            exited: false,
        }
    }
}

impl<J: ?Sized> Drop for RunnerGuard<J> {
    fn drop(&mut self) {
        if self.exited {
            return;
        }
        let (lost, wake, closed) = {
            let mut state = lock(&self.core.state);
            let (lost, wake) = state.lost(self.id);
            let wake = wakers(&state, wake.into_iter().collect());
            (lost, wake, state.is_closed())
        };
        for wake in wake {
            wake.notify_one();
        }
        if let (true, Some(capacity)) = (closed, &self.core.capacity) {
            // The last runner is gone: callers waiting for a place are refused.
            capacity.close();
        }
        self.core.release(lost.len());
        self.core.changed.notify_waiters();
        drop_quietly(lost);
    }
}

/// A runner: takes the oldest job, runs it, and so on, until it is told to exit.
pub(crate) async fn run<J: ?Sized + Job>(mut guard: RunnerGuard<J>, wake: Arc<Notify>) {
    let core = guard.core.clone();
    let id = guard.id;
    // The job that just ended. It is dropped, which hands its result to its handle, only once
    // its end is recorded, so that a caller holding its result sees it in `stats`.
    let mut finished: Option<(End, Pin<Box<J>>)> = None;
    loop {
        if core.gates.iter().any(|gate| gate.is_recovering()) {
            // Hold off while a line recovers, with the last job's end recorded first, so that
            // `stats` and `wait_idle` do not count this runner as busy meanwhile.
            if let Some((end, job)) = finished.take() {
                core.finish(id, end);
                drop_quietly(job);
            }
            for gate in core.gates.iter() {
                while gate.is_recovering() {
                    gate.cleared().await;
                }
            }
            continue;
        }
        let ended = finished.as_ref().map(|(end, _)| *end);
        let (next, chained, notify) = {
            let mut state = lock(&core.state);
            let next = state.next(id, ended);
            let notify = state.has_watchers()
                && (matches!(next, Next::Exit(_)) || (ended.is_some() && state.is_idle()));
            let chained = match &next {
                Next::Run(_, Some(other)) | Next::Exit(Some(other)) => {
                    state.runner(*other).map(|r| r.wake.clone())
                }
                _ => None,
            };
            (next, chained, notify)
        };
        if let Some(other) = chained {
            other.notify_one();
        }
        drop_quietly(finished.take());
        if notify {
            core.changed.notify_waiters();
        }
        match next {
            Next::Run(mut job, _) => {
                core.release(1);
                let end = execute(job.as_mut(), core.timeout).await;
                finished = Some((end, job));
            }
            Next::Park => wake.notified().await,
            Next::Exit(_) => {
                guard.exited = true;
                return;
            }
        }
    }
}

/// Runs one job to its end: its output, its panic or its timeout reaches its handle.
async fn execute<J: ?Sized + Job>(mut job: Pin<&mut J>, timeout: Option<Duration>) -> End {
    let run = RunJob(job.as_mut());
    let ended = match timeout {
        None => AssertUnwindSafe(run)
            .catch_unwind()
            .await
            .map(|()| End::Completed),
        Some(limit) => AssertUnwindSafe(tokio::time::timeout(limit, run))
            .catch_unwind()
            .await
            .map(|result| match result {
                Ok(()) => End::Completed,
                Err(_) => End::TimedOut,
            }),
    };
    match ended {
        Ok(End::TimedOut) => {
            job.as_mut().fail(OperationError::timed_out());
            End::TimedOut
        }
        Ok(end) => end,
        Err(payload) => {
            let message = panic_message(payload);
            #[cfg(feature = "tracing")]
            tracing::warn!(%message, "queued operation panicked");
            job.as_mut().fail(OperationError::panicked(message));
            End::Panicked
        }
    }
}
