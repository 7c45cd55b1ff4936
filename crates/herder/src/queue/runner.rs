//! A runner: the task that takes the oldest job, runs it, and so on, until the core tells it to
//! exit; and the guard that unregisters it however its task ends.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::core::{Core, Idle, NewRunner, RunnerCounts, drop_quietly};
use super::error::OperationError;
use super::job::{Job, Run, RunJob};
use super::state::{End, RunnerKey};
use crate::flight::panic_message;

/// How a flavour starts a runner task: on a runtime (`Send` jobs) or on the current
/// `LocalSet`.
pub(crate) trait Spawn<J: ?Sized + Job> {
    /// Spawns `run(guard, wake)` and returns its abort handle.
    fn spawn(&self, guard: RunnerGuard<J>, wake: Arc<Notify>) -> AbortHandle;
}

/// Spawns the runners registered in `new` and attaches their abort handles. A runner that
/// exits before its handle is attached, or a shutdown that aborts the runners meanwhile, are
/// handled by [`Core::attach`].
pub(crate) fn start<J, S>(core: &Arc<Core<J>>, spawner: &S, new: Vec<NewRunner>)
where
    J: ?Sized + Job,
    S: Spawn<J>,
{
    // Every guard is made before the first spawn: if a spawn panics (`spawn_local` outside a
    // `LocalSet`), the guards of the runners not spawned yet are dropped with this vector as it
    // unwinds, which unregisters them; none is left registered with no task to run it.
    let guards: Vec<_> = new
        .into_iter()
        .map(|(key, wake, counts)| (key, RunnerGuard::new(core.clone(), key, counts), wake))
        .collect();
    for (key, guard, wake) in guards {
        let abort = spawner.spawn(guard, wake);
        core.attach(key, abort);
    }
}

/// A runner's identity, and the duty to unregister it: if its task is dropped before it exits
/// (aborted by a shutdown, or dropped with its runtime), the core learns it, the job it was
/// running counts as aborted, and if it was the last runner the queued jobs are cancelled.
/// Made before the task is spawned, so it also covers a task dropped before its first poll.
pub(crate) struct RunnerGuard<J: ?Sized + Job> {
    core: Arc<Core<J>>,
    id: usize,
    counts: Arc<RunnerCounts>,
    exited: bool,
}

impl<J: ?Sized + Job> RunnerGuard<J> {
    fn new(core: Arc<Core<J>>, key: RunnerKey, counts: Arc<RunnerCounts>) -> Self {
        RunnerGuard {
            core,
            id: key.id,
            counts,
            exited: false,
        }
    }
}

impl<J: ?Sized + Job> Drop for RunnerGuard<J> {
    fn drop(&mut self) {
        if !self.exited {
            self.core.lost(self.id);
        }
    }
}

/// A runner: takes the oldest job, runs it, and so on, until it is told to exit.
pub(crate) async fn run<J: ?Sized + Job>(mut guard: RunnerGuard<J>, wake: Arc<Notify>) {
    let core = guard.core.clone();
    let counts = guard.counts.clone();
    let id = guard.id;
    // Woken to take a job: once it has one, it wakes the next parked runner if jobs remain.
    let mut woken = false;
    // The timer that keeps the operations' time limit: the runtime's, or the timer thread on a
    // runtime without the time driver (looked up once per runner, not per job).
    let timer = core.timeout.map(|_| crate::time::Timer::current());
    loop {
        if core.in_excess() && core.exit_if_excess(id) {
            guard.exited = true;
            return;
        }
        // While a line recovers, no job starts: the runner parks until the line is clear, where
        // `close`, `set_runners` and submissions still reach it (so a drained queue's runners
        // exit), and looks at every line again once woken. (The last job's end is already
        // counted, so `stats` and `wait_idle` do not count this runner as busy meanwhile.)
        let held_off = core.gates.iter().find(|gate| gate.is_recovering());
        let job = match held_off {
            None => core.next_job(&counts),
            Some(_) => None,
        };
        match job {
            Some(job) => {
                if std::mem::take(&mut woken) {
                    core.chain();
                }
                #[cfg(feature = "metrics")]
                let started = core.job_started(&job);
                let mut job = job.run;
                let end = execute(job.as_mut(), core.timeout.zip(timer)).await;
                #[cfg(feature = "metrics")]
                core.job_ended(started);
                core.finished(&counts, end);
                // Dropped once counted: this hands its result to its handle.
                drop_quietly(job);
            }
            None => match core.idle(id, held_off.is_some()) {
                Idle::Retry => {}
                Idle::Wait => {
                    match held_off {
                        None => wake.notified().await,
                        Some(gate) => {
                            let woken = std::pin::pin!(wake.notified());
                            futures_util::future::select(woken, gate.cleared()).await;
                        }
                    }
                    core.awake(id);
                    woken = true;
                }
                Idle::Exit => {
                    guard.exited = true;
                    return;
                }
            },
        }
    }
}

/// Runs one job to its end: its output, its panic or its timeout reaches its handle.
async fn execute<R: ?Sized + Run>(
    mut job: Pin<&mut R>,
    timeout: Option<(Duration, crate::time::Timer)>,
) -> End {
    let run = RunJob(job.as_mut());
    let ended = match timeout {
        None => AssertUnwindSafe(run)
            .catch_unwind()
            .await
            .map(|()| End::Completed),
        Some((limit, timer)) => AssertUnwindSafe(timer.timeout(limit, run))
            .catch_unwind()
            .await
            .map(|result| match result {
                Some(()) => End::Completed,
                None => End::TimedOut,
            }),
    };
    match ended {
        Ok(End::TimedOut) => {
            // Only a limit times out.
            let limit = timeout.map(|(limit, _)| limit).unwrap_or_default();
            job.as_mut().fail(OperationError::timed_out(limit));
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
