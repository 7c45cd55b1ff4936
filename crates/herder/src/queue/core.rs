//! The queue's core, shared by both flavours, the handles and the runners: the jobs in a
//! lock-free FIFO with their count, the runners' lifecycle (`state`) under a lock, the capacity
//! semaphore, the counters, and the waits (`wait_idle`, `drain`, `shutdown`). The runner loop
//! is in `runner`, the future a handle awaits in `future`, the front both public flavours
//! delegate to in `shared`.
//!
//! Submitting a job and taking one take no lock: a compare-and-swap on the count (refused once
//! the queue is closed), a push or pop on the FIFO, a few loads. The lock is taken when a runner
//! parks or is woken, when runners come and go, and by the waits. No lock is held across an
//! `.await`; jobs are dropped, and runners woken, after the lock is released.
//!
//! **No lost wake-up.** A submission pushes its job, then (after a `SeqCst` fence) looks for a
//! parked runner; a runner publishes its parking (under the lock, then a fence), then looks at
//! the FIFO once more before it sleeps. One of the two sees the other. A submission that finds
//! a runner already waking leaves it to that runner, which looks for queued jobs (and wakes the
//! next parked runner) after it has taken its own.

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use tokio::sync::{Notify, Semaphore, TryAcquireError};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::atomics::{AtomicU64, AtomicUsize, Relaxed, Release, SeqCst, fence};
use super::fifo::Fifo;
use super::job::{Entry, Job};
use super::state::{Attach, End, RunnerKey, State};
use super::stats::{self, OperationQueueStats, ShutdownReport};
use crate::line::Gate;
use crate::sync::{Mutex, lock};

/// The settings a builder hands to a queue.
pub(crate) struct Config {
    pub(crate) runners: usize,
    pub(crate) capacity: Option<usize>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) gates: Vec<Arc<dyn Gate>>,
    pub(crate) name: Option<Arc<str>>,
}

/// A live runner, as the lifecycle state keeps it.
pub(crate) struct Runner {
    wake: Arc<Notify>,
    abort: Option<AbortHandle>,
    counts: Arc<RunnerCounts>,
}

/// A runner to spawn: its key, its wake-up signal and its counts.
pub(crate) type NewRunner = (RunnerKey, Arc<Notify>, Arc<RunnerCounts>);

/// [`Front::gate`]'s layout: the pushes under way in the low bits, then [`CLOSED`], then the
/// jobs ever pushed (counted with the push's announcement, so one atomic operation does both;
/// the count wraps at the top, harmlessly: `stats` reads it modulo its width).
const IN_FLIGHT: u64 = (1 << 24) - 1;
/// The bit of [`Front::gate`] that says the queue is closed.
const CLOSED: u64 = 1 << 24;
/// One job pushed, in [`Front::gate`].
const PUSHED_ONE: u64 = 1 << 25;

/// What a runner that found the FIFO empty does.
pub(crate) enum Idle {
    /// A job arrived meanwhile: look again.
    Retry,
    /// Parked: wait to be woken.
    Wait,
    /// The queue is closed and empty, or has runners in excess: leave.
    Exit,
}

/// What each runner counts on a cache line of its own, so that runners on different threads
/// never write the same line for a job; read (summed) under the lock.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct RunnerCounts {
    /// Jobs this runner took from the queue.
    taken: AtomicU64,
    /// 1 while it runs a job.
    running: AtomicUsize,
    completed: AtomicU64,
    panicked: AtomicU64,
    timed_out: AtomicU64,
}

/// Written by the submitters only.
#[derive(Default)]
#[repr(align(128))]
struct Front {
    /// The pushes under way (a runner does not exit while one may still land), [`CLOSED`], and
    /// the jobs ever pushed.
    gate: AtomicU64,
}

/// Read on every job, written rarely (under the lock, but for `watchers`).
#[derive(Default)]
#[repr(align(128))]
struct Hints {
    parked: AtomicUsize,
    waking: AtomicUsize,
    /// Runners alive and the target, for the runners' check before each job.
    live: AtomicUsize,
    target: AtomicUsize,
    /// Callers waiting for the queue to become idle or drained: only then do changes notify.
    watchers: AtomicUsize,
}

/// Written rarely: cancellations, aborts, and the counts of runners that have exited.
#[derive(Default)]
struct Totals {
    cancelled: AtomicU64,
    aborted: AtomicU64,
    taken: AtomicU64,
    completed: AtomicU64,
    panicked: AtomicU64,
    timed_out: AtomicU64,
}

pub(crate) struct Core<J: ?Sized + Job> {
    fifo: Padded<Fifo<Entry<J>>>,
    front: Front,
    hints: Hints,
    totals: Totals,
    state: Mutex<State<Runner>>,
    /// One permit per free place in the queue; `None` for an unbounded queue.
    capacity: Option<Semaphore>,
    /// Woken (all waiters) when the queue may have become idle or drained.
    changed: Notify,
    pub(super) gates: Box<[Arc<dyn Gate>]>,
    pub(super) timeout: Option<Duration>,
    /// The wait and run histograms, for the flavours that record metrics.
    #[cfg(feature = "metrics")]
    pub(crate) histograms: std::sync::OnceLock<crate::metrics::QueueHistograms>,
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

/// A job a runner has taken: the started operation, and when it was queued.
pub(crate) struct Started<J: ?Sized + Job> {
    pub(crate) run: Pin<Box<J::Run>>,
    #[cfg(feature = "metrics")]
    queued_at: Option<Instant>,
}

/// Why a submission without waiting was refused.
pub(crate) enum Refused {
    Full,
    Closed,
}

impl<J: ?Sized + Job> Core<J> {
    /// The core, and the runners to spawn.
    pub(crate) fn new(config: Config) -> (Self, Vec<NewRunner>) {
        let mut state = State::new(config.runners);
        let new = (0..config.runners).map(|_| register(&mut state)).collect();
        let core = Core {
            fifo: Padded(Fifo::new()),
            front: Front::default(),
            hints: Hints::default(),
            totals: Totals::default(),
            state: Mutex::new(state),
            capacity: config.capacity.map(Semaphore::new),
            changed: Notify::new(),
            gates: config.gates.into_boxed_slice(),
            timeout: config.timeout,
            #[cfg(feature = "metrics")]
            histograms: std::sync::OnceLock::new(),
        };
        core.publish(&lock(&core.state));
        (core, new)
    }

    /// Publishes what the submitters and runners read without the lock. Called under the lock
    /// after every change of the lifecycle state.
    fn publish(&self, state: &State<Runner>) {
        let hints = &self.hints;
        hints.parked.store(state.parked(), SeqCst);
        hints.waking.store(state.waking(), SeqCst);
        hints.live.store(state.runners(), SeqCst);
        hints.target.store(state.target(), SeqCst);
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
            // `push` checks.
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

    /// Queues the job `make` makes of `op` (for which a place was reserved) at the back and
    /// wakes a parked runner if needed. A closed queue hands `op` back, and the place is
    /// released.
    pub(crate) fn push<O>(&self, op: O, make: impl FnOnce(O) -> Arc<J>) -> Result<(), O> {
        let front = &self.front;
        // Announced before it is pushed, so that no runner takes the queue for closed and empty
        // and exits while the job is on its way.
        let open = front
            .gate
            .fetch_update(SeqCst, SeqCst, |gate| {
                (gate & CLOSED == 0).then_some(gate.wrapping_add(PUSHED_ONE + 1))
            })
            .is_ok();
        if !open {
            self.release(1);
            return Err(op);
        }
        self.fifo.push(Entry::new(make(op)));
        front.gate.fetch_sub(1, SeqCst);
        fence(SeqCst);
        self.wake_if_parked();
        Ok(())
    }

    /// Wakes a parked runner if some runner is parked and none is waking.
    fn wake_if_parked(&self) {
        if self.hints.parked.load(SeqCst) == 0 || self.hints.waking.load(SeqCst) != 0 {
            return;
        }
        let wake = {
            let mut state = lock(&self.state);
            let wake = state
                .wake_one()
                .and_then(|id| state.runner(id))
                .map(|r| r.wake.clone());
            self.publish(&state);
            wake
        };
        if let Some(wake) = wake {
            wake.notify_one();
        }
    }

    /// A runner that was woken took a job, or exits: if jobs are still queued and runners
    /// parked, wakes the next one.
    pub(crate) fn chain(&self) {
        fence(SeqCst);
        if !self.fifo.is_empty() {
            self.wake_if_parked();
        }
    }

    /// The next job for a runner, if one is queued, counted as taken and running. Jobs
    /// cancelled while queued are dropped on the way (their handles counted them).
    pub(crate) fn next_job(&self, counts: &RunnerCounts) -> Option<Started<J>> {
        loop {
            let entry = self.fifo.pop()?;
            #[cfg(feature = "metrics")]
            let queued_at = entry.queued_at();
            if let Some(run) = entry.start() {
                // Running before it counts as taken, so that the queue never looks idle while
                // the job is on its way to its runner.
                counts.running.store(1, Relaxed);
                bump(&counts.taken);
                self.release(1);
                return Some(Started {
                    run,
                    #[cfg(feature = "metrics")]
                    queued_at,
                });
            }
        }
    }

    /// A job a runner ran has ended: counted before its result reaches its handle.
    pub(crate) fn finished(&self, counts: &RunnerCounts, end: End) {
        let counter = match end {
            End::Completed => &counts.completed,
            End::Panicked => &counts.panicked,
            End::TimedOut => &counts.timed_out,
        };
        bump(counter);
        // `SeqCst`: ordered before the look at `watchers` below, against a watcher that
        // registers, then reads the counts.
        counts.running.store(0, SeqCst);
        self.notify_watchers();
    }

    /// A handle cancelled its job before it started: it leaves the count and frees its place
    /// (the job itself is dropped when a runner meets it in the FIFO).
    pub(crate) fn cancelled(&self) {
        self.totals.cancelled.fetch_add(1, SeqCst);
        self.release(1);
        self.notify_watchers();
    }

    fn notify_watchers(&self) {
        if self.hints.watchers.load(SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }

    /// `true` if the runner should leave before taking a job: more runners than the target.
    pub(crate) fn in_excess(&self) -> bool {
        self.hints.live.load(SeqCst) > self.hints.target.load(SeqCst)
    }

    /// Runner `id` checks, under the lock, whether it is in excess; if so it exits.
    pub(crate) fn exit_if_excess(&self, id: usize) -> bool {
        let mut state = lock(&self.state);
        if !state.excess() {
            return false;
        }
        self.retire(state.exit(id));
        self.publish(&state);
        drop(state);
        self.chain();
        self.changed.notify_waiters();
        true
    }

    /// Keeps the counts of a runner that leaves. Under the lock.
    fn retire(&self, runner: Runner) {
        let (counts, totals) = (&runner.counts, &self.totals);
        totals.taken.fetch_add(counts.taken.load(SeqCst), SeqCst);
        totals
            .completed
            .fetch_add(counts.completed.load(SeqCst), SeqCst);
        totals
            .panicked
            .fetch_add(counts.panicked.load(SeqCst), SeqCst);
        totals
            .timed_out
            .fetch_add(counts.timed_out.load(SeqCst), SeqCst);
    }

    /// Runner `id` was woken (or woke spuriously): back to work.
    pub(crate) fn awake(&self, id: usize) {
        let mut state = lock(&self.state);
        state.awake(id);
        self.publish(&state);
    }

    /// Runner `id` found the FIFO empty, or is `held_off` by a recovering line: it parks, unless
    /// a job arrived meanwhile (that it may start), or it should exit (the queue is closed and
    /// nothing is queued or on its way, or it is in excess).
    pub(crate) fn idle(&self, id: usize, held_off: bool) -> Idle {
        let mut state = lock(&self.state);
        if state.excess() {
            self.retire(state.exit(id));
            self.publish(&state);
            drop(state);
            self.chain();
            self.changed.notify_waiters();
            return Idle::Exit;
        }
        state.park(id);
        self.publish(&state);
        fence(SeqCst);
        // The gate before the FIFO: a submission leaves the gate only after its push, so if no
        // push is under way now, every accepted job is in the FIFO for the check below.
        let gate = self.front.gate.load(SeqCst);
        let empty = self.fifo.is_empty();
        if !empty && !held_off {
            state.unpark(id);
            self.publish(&state);
            return Idle::Retry;
        }
        if empty && gate & CLOSED != 0 && gate & IN_FLIGHT == 0 {
            // Closed, nothing queued, no push under way: nothing will come.
            self.retire(state.exit(id));
            self.publish(&state);
            drop(state);
            self.changed.notify_waiters();
            return Idle::Exit;
        }
        Idle::Wait
    }

    /// Sets the target; returns the runners to spawn (runners in excess exit as they come free).
    pub(crate) fn set_runners(&self, target: usize) -> Vec<NewRunner> {
        let (new, wake) = {
            let mut state = lock(&self.state);
            let (add, wake) = state.set_target(target);
            let wake = wakers(&state, wake);
            let new: Vec<NewRunner> = (0..add).map(|_| register(&mut state)).collect();
            self.publish(&state);
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

    /// Parked and waking runners, for the loom models.
    #[cfg(all(test, herder_loom))]
    pub(crate) fn lifecycle(&self) -> (usize, usize) {
        let state = lock(&self.state);
        (state.parked(), state.waking())
    }

    /// Refuses new operations; what is queued still runs, then the runners exit.
    pub(crate) fn close(&self) {
        let wake = {
            let mut state = lock(&self.state);
            self.front.gate.fetch_or(CLOSED, SeqCst);
            let wake = state.close();
            let wake = wakers(&state, wake);
            self.publish(&state);
            wake
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
        self.front.gate.load(SeqCst) & CLOSED != 0
    }

    /// A runner took `job`: records how long it waited; the start, to time its run.
    #[cfg(feature = "metrics")]
    pub(crate) fn job_started(&self, job: &Started<J>) -> Option<Instant> {
        let histograms = self.histograms.get()?;
        let now = Instant::now();
        if let Some(queued_at) = job.queued_at {
            histograms.waited(now.saturating_duration_since(queued_at));
        }
        Some(now)
    }

    /// The job taken at `started` ended.
    #[cfg(feature = "metrics")]
    pub(crate) fn job_ended(&self, started: Option<Instant>) {
        if let (Some(histograms), Some(started)) = (self.histograms.get(), started) {
            histograms.ran(started.elapsed());
        }
    }

    /// The counts, summed under the lock: (queued, running, runners, counters).
    fn tally(&self) -> (usize, usize, usize, stats::Counters) {
        let state = lock(&self.state);
        let totals = &self.totals;
        let mut taken = totals.taken.load(SeqCst);
        let mut running = 0;
        let mut counters = stats::Counters {
            completed: totals.completed.load(SeqCst),
            panicked: totals.panicked.load(SeqCst),
            timed_out: totals.timed_out.load(SeqCst),
            aborted: totals.aborted.load(SeqCst),
            cancelled: totals.cancelled.load(SeqCst),
        };
        for runner in state.payloads() {
            let counts = &runner.counts;
            // `taken` first: a job runs before it counts as taken, so a job seen taken is seen
            // running (or done), never neither.
            taken += counts.taken.load(SeqCst);
            running += counts.running.load(SeqCst);
            counters.completed += counts.completed.load(SeqCst);
            counters.panicked += counts.panicked.load(SeqCst);
            counters.timed_out += counts.timed_out.load(SeqCst);
        }
        // Last: a job is counted as pushed before any runner can take it.
        let pushed = self.front.gate.load(SeqCst) / PUSHED_ONE;
        let queued = pushed.wrapping_sub(taken + counters.cancelled) & (u64::MAX / PUSHED_ONE);
        (queued as usize, running, state.runners(), counters)
    }

    /// Nothing queued and nothing running.
    fn is_idle(&self) -> bool {
        let (queued, running, _, _) = self.tally();
        queued == 0 && running == 0
    }

    /// Closed, nothing queued, every runner gone.
    fn is_drained(&self) -> bool {
        if !self.is_closed() || self.hints.live.load(SeqCst) != 0 {
            // Not yet, and no need to sum every runner's counts to know it.
            return false;
        }
        let (queued, _, runners, _) = self.tally();
        self.is_closed() && queued == 0 && runners == 0
    }

    pub(crate) fn stats(&self) -> OperationQueueStats {
        let (queued, running, runners, counters) = self.tally();
        OperationQueueStats::new(queued, running, runners, counters)
    }

    /// Waits until `done` holds. While a caller waits, every change that can make `idle` or
    /// `drained` true notifies `changed`; the notification is enabled before the check.
    async fn wait_until(&self, done: fn(&Self) -> bool) {
        self.hints.watchers.fetch_add(1, SeqCst);
        let _watching = Watching(self);
        loop {
            let mut notified = pin!(self.changed.notified());
            notified.as_mut().enable();
            if done(self) {
                return;
            }
            notified.await;
        }
    }

    pub(crate) async fn wait_idle(&self) {
        self.wait_until(Self::is_idle).await;
    }

    pub(crate) async fn drain(&self) {
        self.close();
        self.wait_until(Self::is_drained).await;
    }

    pub(crate) async fn shutdown(&self, deadline: Instant) -> ShutdownReport {
        self.close();
        let drained = pin!(self.wait_until(Self::is_drained));
        let timer = pin!(crate::time::Timer::current().sleep_until(deadline));
        if let Either::Left(_) = futures_util::future::select(drained, timer).await {
            return ShutdownReport::default();
        }
        let aborted_before = self.totals.aborted.load(SeqCst);
        let cancelled = self.cancel_queued();
        // Concurrent shutdowns all abort (an abort is idempotent), but the aborts are reported by
        // the first only, so that reports never count an operation twice.
        let (first, aborts) = {
            let mut state = lock(&self.state);
            let first = !state.is_aborting();
            let aborts: Vec<AbortHandle> = state
                .begin_abort()
                .filter_map(|runner| runner.abort.clone())
                .collect();
            (first, aborts)
        };
        for abort in aborts {
            abort.abort();
        }
        self.wait_until(Self::is_drained).await;
        let aborted = match first {
            true => self.totals.aborted.load(SeqCst) - aborted_before,
            false => 0,
        };
        ShutdownReport {
            cancelled,
            aborted: aborted as usize,
        }
    }

    /// Cancels every job still queued; returns how many.
    fn cancel_queued(&self) -> usize {
        let mut jobs = Vec::new();
        while let Some(job) = self.fifo.pop() {
            jobs.push(job);
        }
        let cancelled = jobs.iter().filter(|job| job.cancel()).count();
        self.totals.cancelled.fetch_add(cancelled as u64, SeqCst);
        self.release(cancelled);
        drop_quietly(jobs);
        self.changed.notify_waiters();
        cancelled
    }

    /// Runner `id`'s task is gone before it exited (aborted, or dropped with its runtime). The
    /// job it was running counts as aborted. If it was the last runner, nothing will run jobs
    /// any more: the queue closes and what is queued is cancelled.
    pub(crate) fn lost(&self, id: usize) {
        let last = {
            let mut state = lock(&self.state);
            let Some((runner, last)) = state.lost(id) else {
                return;
            };
            let was_running = runner.counts.running.swap(0, SeqCst);
            self.totals.aborted.fetch_add(was_running as u64, SeqCst);
            self.retire(runner);
            if last {
                self.front.gate.fetch_or(CLOSED, SeqCst);
            }
            self.publish(&state);
            last
        };
        if last {
            if let Some(capacity) = &self.capacity {
                // Callers waiting for a place are refused.
                capacity.close();
            }
            self.cancel_queued();
        } else {
            self.chain();
        }
        self.changed.notify_waiters();
    }
}

/// Unregisters a caller of `wait_until`, however its wait ends.
struct Watching<'a, J: ?Sized + Job>(&'a Core<J>);

impl<J: ?Sized + Job> Drop for Watching<'_, J> {
    fn drop(&mut self) {
        self.0.hints.watchers.fetch_sub(1, SeqCst);
    }
}

fn register(state: &mut State<Runner>) -> NewRunner {
    let wake = Arc::new(Notify::new());
    let counts = Arc::new(RunnerCounts::default());
    let key = state.add_runner(Runner {
        wake: wake.clone(),
        abort: None,
        counts: counts.clone(),
    });
    (key, wake, counts)
}

fn wakers(state: &State<Runner>, ids: Vec<usize>) -> Vec<Arc<Notify>> {
    ids.into_iter()
        .filter_map(|id| state.runner(id).map(|r| r.wake.clone()))
        .collect()
}

/// Adds one to a counter that only its runner writes: a plain store, no locked instruction.
/// `Release`, so that whoever reads the new count (`Acquire`) sees what the runner did before.
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Relaxed) + 1, Release);
}

/// Drops `value`, ignoring a panic in its destructor (a user future's), so that a runner, or a
/// caller, is never taken down by it.
pub(super) fn drop_quietly<T>(value: T) {
    crate::flight::quietly(move || drop(value));
}
