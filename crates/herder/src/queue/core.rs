//! The queue's core, shared by both flavours and by the runners: the state machine under its
//! lock, the capacity semaphore, and the waits (`wait_idle`, `drain`, `shutdown`). The runner
//! loop is in `runner`, the future a handle awaits in `future`, the front both public flavours
//! delegate to in `shared`.
//!
//! No lock is held across an `.await`; jobs are dropped, and runners woken, after the lock is
//! released.

use std::panic::{self, AssertUnwindSafe};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, TryAcquireError};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::state::{Attach, End, RunnerKey, State};
use super::stats::{OperationQueueStats, ShutdownReport};
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
    pub(super) wake: Arc<Notify>,
    abort: Option<AbortHandle>,
}

/// A runner to spawn: its key and its wake-up signal.
pub(crate) type NewRunner = (RunnerKey, Arc<Notify>);

pub(crate) struct Core<J: ?Sized> {
    /// On a cache line of its own: the submitters and the runners of other threads take this
    /// lock for every operation, and must not also bounce the line holding the `Arc` counts that
    /// every new handle bumps.
    pub(super) state: Padded<Mutex<State<Pin<Box<J>>, Runner>>>,
    /// One permit per free place in the queue; `None` for an unbounded queue.
    pub(super) capacity: Option<Semaphore>,
    /// Woken (all waiters) when the queue may have become idle or drained.
    pub(super) changed: Notify,
    pub(super) gates: Box<[Arc<dyn Gate>]>,
    pub(super) timeout: Option<Duration>,
}

/// Aligns its content to 128 bytes (two cache lines, for adjacent-line prefetching), as
/// crossbeam's `CachePadded` does on x86-64.
#[repr(align(128))]
pub(super) struct Padded<T>(T);

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

    /// Runner `key`'s task is spawned: keeps its abort handle for a shutdown, or aborts it at
    /// once if a shutdown is aborting the runners already. A runner that has exited meanwhile
    /// is left alone, even if its index has been reused.
    pub(crate) fn attach(&self, key: RunnerKey, abort: AbortHandle) {
        let mut state = lock(&self.state);
        let abort_now = match state.attach(key) {
            Attach::Keep(runner) => {
                runner.abort = Some(abort);
                None
            }
            Attach::AbortNow => Some(abort),
            Attach::Gone => None,
        };
        drop(state);
        if let Some(abort) = abort_now {
            abort.abort();
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
                .begin_abort()
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
    let key = state.add_runner(Runner {
        wake: wake.clone(),
        abort: None,
    });
    (key, wake)
}

pub(super) fn wakers<J: ?Sized>(
    state: &State<Pin<Box<J>>, Runner>,
    ids: Vec<usize>,
) -> Vec<Arc<Notify>> {
    ids.into_iter()
        .filter_map(|id| state.runner(id).map(|r| r.wake.clone()))
        .collect()
}

/// Drops `value`, ignoring a panic in its destructor (a user future's), so that a runner, or a
/// caller, is never taken down by it.
pub(super) fn drop_quietly<T>(value: T) {
    let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(value)));
}
