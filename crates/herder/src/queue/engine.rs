//! What both queue flavours share: the state machine under its lock, the capacity semaphore, the
//! runners' loop and the waits. The flavours ([`super::OperationQueue`],
//! [`super::LocalOperationQueue`]) only differ in the job type (`Send` or not) and in how they
//! spawn a runner.
//!
//! No lock is held across an `.await`; jobs are dropped, and runners woken, after the lock is
//! released.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::sync::{Notify, Semaphore, TryAcquireError};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::error::OperationError;
use super::job::{Job, Output, RunJob};
use super::state::{End, Next, State};
use super::stats::{OperationQueueStats, ShutdownReport};
use crate::flight::panic_message;
use crate::line::Gate;
use crate::sync::{Mutex, lock};

/// The settings a builder hands to a queue.
pub(crate) struct Config {
    pub(crate) runners: usize,
    pub(crate) capacity: Option<usize>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) gates: Vec<Arc<dyn Gate>>,
}

/// A live runner, as the state machine keeps it.
pub(crate) struct Runner {
    wake: Arc<Notify>,
    abort: Option<AbortHandle>,
}

/// A runner to spawn: its id and its wake-up signal.
pub(crate) type NewRunner = (usize, Arc<Notify>);

pub(crate) struct Core<J: ?Sized> {
    /// On a cache line of its own: the submitters and the runners of other threads take this
    /// lock for every operation, and must not also bounce the line holding the `Arc` counts that
    /// every new handle bumps.
    state: Padded<Mutex<State<Pin<Box<J>>, Runner>>>,
    /// One permit per free place in the queue; `None` for an unbounded queue.
    capacity: Option<Semaphore>,
    /// Woken (all waiters) when the queue may have become idle or drained.
    changed: Notify,
    gates: Box<[Arc<dyn Gate>]>,
    timeout: Option<Duration>,
}

/// Aligns its content to 128 bytes (two cache lines, for adjacent-line prefetching), as
/// crossbeam's `CachePadded` does on x86-64.
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Why a submission without waiting was refused.
pub(crate) enum Refused {
    Full,
    Closed,
}

impl<J: ?Sized> Core<J> {
    /// The core, and the runners to spawn.
    pub(crate) fn new(config: Config) -> (Self, Vec<NewRunner>) {
        let mut state = State::new(config.runners);
        let new = (0..config.runners).map(|_| register(&mut state)).collect();
        let core = Core {
            state: Padded(Mutex::new(state)),
            capacity: config.capacity.map(Semaphore::new),
            changed: Notify::new(),
            gates: config.gates.into_boxed_slice(),
            timeout: config.timeout,
        };
        (core, new)
    }

    /// Waits for a free place. `false` if the queue was closed meanwhile.
    pub(crate) async fn reserve(&self) -> bool {
        match &self.capacity {
            Some(capacity) => match capacity.acquire().await {
                Ok(permit) => {
                    permit.forget();
                    true
                }
                Err(_) => false,
            },
            // `push` checks under its lock.
            None => true,
        }
    }

    /// Takes a free place if there is one.
    pub(crate) fn try_reserve(&self) -> Result<(), Refused> {
        match &self.capacity {
            Some(capacity) => match capacity.try_acquire() {
                Ok(permit) => {
                    permit.forget();
                    Ok(())
                }
                Err(TryAcquireError::NoPermits) => Err(Refused::Full),
                Err(TryAcquireError::Closed) => Err(Refused::Closed),
            },
            None => Ok(()),
        }
    }

    /// Gives back `n` places (jobs that left the queue, or a reservation that was not used).
    pub(crate) fn release(&self, n: usize) {
        if let (Some(capacity), 1..) = (&self.capacity, n) {
            capacity.add_permits(n);
        }
    }

    /// Queues `op` (for which a place was reserved) at the back and wakes a parked runner.
    /// A closed queue hands `op` back, and the place is released.
    pub(crate) fn push<O>(
        &self,
        op: Box<O>,
        erase: impl FnOnce(Box<O>) -> Pin<Box<J>>,
    ) -> Result<u64, Box<O>> {
        let mut state = lock(&self.state);
        if state.is_closed() {
            drop(state);
            self.release(1);
            return Err(op);
        }
        let Ok((seq, wake)) = state.push(erase(op)) else {
            unreachable!("checked open under the same lock")
        };
        let wake = wake.and_then(|id| state.runner(id)).map(|r| r.wake.clone());
        drop(state);
        if let Some(wake) = wake {
            wake.notify_one();
        }
        Ok(seq)
    }

    /// Removes job `seq` if it has not started (its handle was dropped).
    pub(crate) fn remove(&self, seq: u64) {
        let (job, idle) = {
            let mut state = lock(&self.state);
            let job = state.remove(seq);
            let idle = job.is_some() && state.is_idle() && state.has_watchers();
            (job, idle)
        };
        if job.is_some() {
            self.release(1);
            if idle {
                self.changed.notify_waiters();
            }
            drop_quietly(job);
        }
    }

    /// Sets the target; returns the runners to spawn (runners in excess exit as they come free).
    pub(crate) fn set_runners(&self, target: usize) -> Vec<NewRunner> {
        let (new, wake) = {
            let mut state = lock(&self.state);
            let (add, wake) = state.set_target(target);
            let wake = wakers(&state, wake);
            let new: Vec<NewRunner> = (0..add).map(|_| register(&mut state)).collect();
            (new, wake)
        };
        for wake in wake {
            wake.notify_one();
        }
        new
    }

    pub(crate) fn set_abort(&self, id: usize, abort: AbortHandle) {
        if let Some(runner) = lock(&self.state).runner_mut(id) {
            runner.abort = Some(abort);
        }
    }

    pub(crate) fn target(&self) -> usize {
        lock(&self.state).target()
    }

    /// Refuses new operations; what is queued still runs, then the runners exit.
    pub(crate) fn close(&self) {
        let wake = {
            let mut state = lock(&self.state);
            let wake = state.close();
            wakers(&state, wake)
        };
        if let Some(capacity) = &self.capacity {
            capacity.close();
        }
        for wake in wake {
            wake.notify_one();
        }
        self.changed.notify_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.state).is_closed()
    }

    pub(crate) fn stats(&self) -> OperationQueueStats {
        let state = lock(&self.state);
        OperationQueueStats::new(
            state.queued(),
            state.running(),
            state.runners(),
            state.counters(),
        )
    }

    /// Waits until `done` holds. While a caller waits, every change that can make `idle` or
    /// `drained` true notifies `changed` after releasing the lock; the notification is enabled
    /// before the check.
    async fn wait_until(&self, done: fn(&State<Pin<Box<J>>, Runner>) -> bool) {
        lock(&self.state).watch();
        let _watching = Watching(self);
        loop {
            let mut notified = pin!(self.changed.notified());
            notified.as_mut().enable();
            if done(&lock(&self.state)) {
                return;
            }
            notified.await;
        }
    }

    pub(crate) async fn wait_idle(&self) {
        self.wait_until(State::is_idle).await;
    }

    pub(crate) async fn drain(&self) {
        self.close();
        self.wait_until(State::is_drained).await;
    }

    pub(crate) async fn shutdown(&self, deadline: Instant) -> ShutdownReport {
        self.close();
        if tokio::time::timeout_at(deadline, self.wait_until(State::is_drained))
            .await
            .is_ok()
        {
            return ShutdownReport::default();
        }
        let (jobs, aborts, aborted_before) = {
            let mut state = lock(&self.state);
            let jobs = state.take_queued();
            let aborts: Vec<AbortHandle> = state
                .runner_payloads()
                .filter_map(|runner| runner.abort.clone())
                .collect();
            (jobs, aborts, state.counters().aborted)
        };
        let cancelled = jobs.len();
        self.release(cancelled);
        drop_quietly(jobs);
        for abort in aborts {
            abort.abort();
        }
        self.wait_until(State::is_drained).await;
        let aborted = lock(&self.state).counters().aborted - aborted_before;
        ShutdownReport {
            cancelled,
            aborted: aborted as usize,
        }
    }

    pub(crate) fn finish(&self, id: usize, end: End) {
        let idle = {
            let mut state = lock(&self.state);
            state.finish(id, end);
            state.is_idle() && state.has_watchers()
        };
        if idle {
            self.changed.notify_waiters();
        }
    }
}

/// Unregisters a caller of `wait_until`, however its wait ends.
struct Watching<'a, J: ?Sized>(&'a Core<J>);

impl<J: ?Sized> Drop for Watching<'_, J> {
    fn drop(&mut self) {
        lock(&self.0.state).unwatch();
    }
}

fn register<J: ?Sized>(state: &mut State<Pin<Box<J>>, Runner>) -> NewRunner {
    let wake = Arc::new(Notify::new());
    let id = state.add_runner(Runner {
        wake: wake.clone(),
        abort: None,
    });
    (id, wake)
}

fn wakers<J: ?Sized>(state: &State<Pin<Box<J>>, Runner>, ids: Vec<usize>) -> Vec<Arc<Notify>> {
    ids.into_iter()
        .filter_map(|id| state.runner(id).map(|r| r.wake.clone()))
        .collect()
}

/// Drops `value`, ignoring a panic in its destructor (a user future's), so that a runner, or a
/// caller, is never taken down by it.
fn drop_quietly<T>(value: T) {
    let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(value)));
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
    pub(crate) fn new(core: Arc<Core<J>>, id: usize) -> Self {
        RunnerGuard {
            core,
            id,
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

/// Awaits a job's result; if dropped first, removes the job from the queue when it has not
/// started. Both handle types wrap one.
pub(crate) struct Ticket<T, J: ?Sized> {
    rx: tokio::sync::oneshot::Receiver<Output<T>>,
    /// Set while the result has not arrived and the handle is attached.
    core: Option<Arc<Core<J>>>,
    seq: u64,
}

impl<T, J: ?Sized> Ticket<T, J> {
    pub(crate) fn new(
        rx: tokio::sync::oneshot::Receiver<Output<T>>,
        core: Arc<Core<J>>,
        seq: u64,
    ) -> Self {
        Ticket {
            rx,
            core: Some(core),
            seq,
        }
    }

    /// Lets the job run without anyone awaiting it.
    pub(crate) fn detach(mut self) {
        self.core = None;
    }

    pub(crate) fn is_attached(&self) -> bool {
        self.core.is_some()
    }
}

impl<T, J: ?Sized> Future for Ticket<T, J> {
    type Output = Output<T>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Output<T>> {
        let result = std::task::ready!(Pin::new(&mut self.rx).poll(cx));
        self.core = None;
        // Every job sends exactly once, however it ends (see `job`); a closed channel without a
        // message would mean the job vanished, which counts as an abort.
        std::task::Poll::Ready(result.unwrap_or_else(|_| Err(OperationError::aborted())))
    }
}

impl<T, J: ?Sized> Drop for Ticket<T, J> {
    fn drop(&mut self) {
        if let Some(core) = self.core.take() {
            core.remove(self.seq);
        }
    }
}
