//! The queue's state machine: queued jobs in FIFO order, the runners, what each runner does next.
//!
//! Pure state, no I/O, no time: every method runs under the queue's lock and reports what must
//! happen next (wake this runner, drop these jobs) for the caller to do once the lock is released.
//! `proptest` checks it against a plain model (`tests` below).
//!
//! * **FIFO.** Jobs get consecutive sequence numbers and sit in a deque indexed by
//!   `seq - head`; a job removed before it started leaves a hole that the front skips, so a
//!   removal is O(1) and sequence numbers are never reused.
//! * **The cap.** A runner takes a job only while no more runners are alive than the target, and
//!   each runner runs one job at a time, so no job starts while `target` jobs are running.
//!   Lowering the target never interrupts a job: the runners in excess exit as they come free.
//! * **Idle runners park** in a list. A push claims one of them for the caller to wake, unless a
//!   runner is already waking up: that one, once it has taken its job, claims the next parked
//!   runner if jobs are still queued (chained wake-ups, as tokio's workers do when they search
//!   for work). So a queued job never waits for a runner that nobody will wake, and a burst of
//!   pushes does not wake every parked runner from the submitter's thread at once.
//! * **Runner lifecycle.** A runner is registered before its task is spawned, under a
//!   [`RunnerKey`]: its slab index and a serial number never reused, so a late call about a
//!   runner that has exited cannot reach a new runner that took its index. The task's abort
//!   handle is [attached](State::attach) after the spawn; once a shutdown has started
//!   [aborting](State::begin_abort), an attach is answered with [`Attach::AbortNow`]. So
//!   whichever comes first, the shutdown's collection or the attach, every live runner is
//!   aborted.

use std::collections::VecDeque;

use slab::Slab;

/// How a job that started ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// It ran to the end and handed over its output.
    Completed,
    /// It panicked.
    Panicked,
    /// It ran past the queue's per-operation timeout.
    TimedOut,
}

/// What a runner does next.
#[derive(Debug)]
pub(crate) enum Next<J> {
    /// Run this job, after waking this parked runner if there is one (more jobs are queued).
    Run(J, Option<usize>),
    /// Nothing to do: wait to be woken (the runner is now in the idle list).
    Park,
    /// Leave: the queue has more runners than its target, or it is closed and empty. Wake this
    /// parked runner first, if there is one (jobs are queued and this runner was the one waking).
    Exit(Option<usize>),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) completed: u64,
    pub(crate) panicked: u64,
    pub(crate) timed_out: u64,
    pub(crate) aborted: u64,
    pub(crate) cancelled: u64,
}

/// A registered runner: its slab index and a serial number that is never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunnerKey {
    pub(crate) id: usize,
    serial: u64,
}

/// What to do with a runner's abort handle, once its task is spawned.
#[derive(Debug)]
pub(crate) enum Attach<'a, R> {
    /// The runner is live and no shutdown is aborting: keep the handle in its payload.
    Keep(&'a mut R),
    /// A shutdown is aborting the runners: abort this one now.
    AbortNow,
    /// The runner has exited already (its index may belong to another runner by now).
    Gone,
}

#[derive(Debug)]
struct Runner<R> {
    payload: R,
    serial: u64,
    running: bool,
    parked: bool,
    /// Claimed out of the idle list and not yet back in `next`.
    waking: bool,
}

pub(crate) struct State<J, R> {
    /// Queued jobs, oldest first; `None` where a job was removed before it started.
    slots: VecDeque<Option<J>>,
    /// The sequence number of `slots[0]`.
    head: u64,
    /// `Some` entries in `slots`.
    queued: usize,
    /// How many runners the queue should have.
    target: usize,
    /// Live runners (registered, spawned or about to be).
    runners: Slab<Runner<R>>,
    /// Parked runners, most recent last.
    idle: Vec<usize>,
    /// Runners claimed and not yet back in `next`.
    waking: usize,
    running: usize,
    closed: bool,
    /// Callers waiting for the queue to become idle or drained: only then do state changes
    /// need to notify anyone.
    watchers: usize,
    counters: Counters,
    /// The serial number of the next runner.
    serials: u64,
    /// A shutdown has collected the abort handles: runners attached from now on are aborted.
    aborting: bool,
}

impl<J, R> State<J, R> {
    pub(crate) fn new(target: usize) -> Self {
        State {
            slots: VecDeque::new(),
            head: 0,
            queued: 0,
            target,
            runners: Slab::new(),
            idle: Vec::new(),
            waking: 0,
            running: 0,
            closed: false,
            watchers: 0,
            counters: Counters::default(),
            serials: 0,
            aborting: false,
        }
    }

    pub(crate) fn watch(&mut self) {
        self.watchers += 1;
    }

    pub(crate) fn unwatch(&mut self) {
        self.watchers -= 1;
    }

    pub(crate) fn has_watchers(&self) -> bool {
        self.watchers > 0
    }

    /// Queues `job` at the back; returns its sequence number and the parked runner to wake, if
    /// any. A closed queue hands the job back.
    pub(crate) fn push(&mut self, job: J) -> Result<(u64, Option<usize>), J> {
        if self.closed {
            return Err(job);
        }
        let seq = self.head + self.slots.len() as u64;
        self.slots.push_back(Some(job));
        self.queued += 1;
        let wake = if self.waking == 0 {
            self.claim_idle()
        } else {
            None
        };
        Ok((seq, wake))
    }

    /// Takes a parked runner out of the idle list, for the caller to wake.
    fn claim_idle(&mut self) -> Option<usize> {
        let id = self.idle.pop()?;
        let runner = &mut self.runners[id];
        runner.parked = false;
        runner.waking = true;
        self.waking += 1;
        Some(id)
    }

    /// The next parked runner to wake, if jobs are queued and no runner is waking up already.
    fn chain(&mut self) -> Option<usize> {
        if self.queued > 0 && self.waking == 0 {
            self.claim_idle()
        } else {
            None
        }
    }

    /// Removes the job `seq` if it is still queued (its handle was dropped).
    pub(crate) fn remove(&mut self, seq: u64) -> Option<J> {
        let index = usize::try_from(seq.checked_sub(self.head)?).ok()?;
        let job = self.slots.get_mut(index)?.take()?;
        self.queued -= 1;
        self.counters.cancelled += 1;
        self.trim();
        Some(job)
    }

    /// Drops the holes at the front, so that the deque never holds more than the queued jobs
    /// and the holes between them.
    fn trim(&mut self) {
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.head += 1;
        }
    }

    fn pop(&mut self) -> Option<J> {
        while let Some(front) = self.slots.pop_front() {
            self.head += 1;
            if let Some(job) = front {
                self.queued -= 1;
                return Some(job);
            }
        }
        None
    }

    /// Runner `id` is free (having ended a job, if `finished`): what does it do next?
    pub(crate) fn next(&mut self, id: usize, finished: Option<End>) -> Next<J> {
        if let Some(end) = finished {
            self.finish(id, end);
        }
        if self.runners[id].parked {
            // Stepped without being claimed (a spurious wake-up): out of the idle list first.
            self.runners[id].parked = false;
            self.idle.retain(|parked| *parked != id);
        }
        if std::mem::take(&mut self.runners[id].waking) {
            self.waking -= 1;
        }
        if self.runners.len() > self.target {
            self.runners.remove(id);
            return Next::Exit(self.chain());
        }
        if let Some(job) = self.pop() {
            self.runners[id].running = true;
            self.running += 1;
            return Next::Run(job, self.chain());
        }
        if self.closed {
            self.runners.remove(id);
            return Next::Exit(None);
        }
        self.runners[id].parked = true;
        self.idle.push(id);
        Next::Park
    }

    /// Records how runner `id`'s job ended.
    pub(crate) fn finish(&mut self, id: usize, end: End) {
        let runner = &mut self.runners[id];
        debug_assert!(runner.running, "runner {id} finished a job it did not run");
        runner.running = false;
        self.running -= 1;
        match end {
            End::Completed => self.counters.completed += 1,
            End::Panicked => self.counters.panicked += 1,
            End::TimedOut => self.counters.timed_out += 1,
        }
    }

    /// Registers a new runner; the caller spawns it, then [attaches](State::attach) its task.
    pub(crate) fn add_runner(&mut self, payload: R) -> RunnerKey {
        let serial = self.serials;
        self.serials += 1;
        let id = self.runners.insert(Runner {
            payload,
            serial,
            running: false,
            parked: false,
            waking: false,
        });
        RunnerKey { id, serial }
    }

    /// The runner registered as `key` has been spawned: where its abort handle goes.
    pub(crate) fn attach(&mut self, key: RunnerKey) -> Attach<'_, R> {
        match self.runners.get_mut(key.id) {
            Some(runner) if runner.serial == key.serial => {
                if self.aborting {
                    Attach::AbortNow
                } else {
                    Attach::Keep(&mut runner.payload)
                }
            }
            _ => Attach::Gone,
        }
    }

    /// A shutdown aborts every runner: the payloads of the live ones, whose attached handles it
    /// aborts. Runners attached later are told to abort at once.
    pub(crate) fn begin_abort(&mut self) -> impl Iterator<Item = &R> {
        self.aborting = true;
        self.runners.iter().map(|(_, runner)| &runner.payload)
    }

    #[cfg(test)]
    pub(crate) fn is_aborting(&self) -> bool {
        self.aborting
    }

    pub(crate) fn runner(&self, id: usize) -> Option<&R> {
        self.runners.get(id).map(|runner| &runner.payload)
    }

    /// Sets the target; returns how many runners to add and which parked runners to wake so that
    /// they exit. A closed queue gets no new runner: its runners are on their way out.
    pub(crate) fn set_target(&mut self, target: usize) -> (usize, Vec<usize>) {
        self.target = target;
        let live = self.runners.len();
        if live < target {
            if self.closed {
                return (0, Vec::new());
            }
            return (target - live, Vec::new());
        }
        let excess = live - target;
        let wake = (0..excess).map_while(|_| self.claim_idle()).collect();
        (0, wake)
    }

    /// Refuses new jobs from now on; returns the parked runners to wake (a parked runner only
    /// exists while nothing is queued, so they all exit).
    pub(crate) fn close(&mut self) -> Vec<usize> {
        self.closed = true;
        std::iter::from_fn(|| self.claim_idle()).collect()
    }

    /// Takes every queued job out, to be cancelled.
    pub(crate) fn take_queued(&mut self) -> Vec<J> {
        self.head += self.slots.len() as u64;
        let jobs: Vec<J> = self.slots.drain(..).flatten().collect();
        self.queued = 0;
        self.counters.cancelled += jobs.len() as u64;
        jobs
    }

    /// Runner `id`'s task is gone before it exited (aborted by a shutdown, or dropped with its
    /// runtime). If it was running a job, that job is aborted. If it was the last runner,
    /// nothing will run jobs any more: the queue closes, and the queued jobs are returned, to be
    /// cancelled. If it was waking up, the parked runner to wake in its place is returned.
    pub(crate) fn lost(&mut self, id: usize) -> (Vec<J>, Option<usize>) {
        let Some(runner) = self.runners.try_remove(id) else {
            return (Vec::new(), None);
        };
        if runner.running {
            self.running -= 1;
            self.counters.aborted += 1;
        }
        if runner.parked {
            self.idle.retain(|parked| *parked != id);
        }
        if runner.waking {
            self.waking -= 1;
        }
        if self.runners.is_empty() {
            self.closed = true;
            (self.take_queued(), None)
        } else {
            (Vec::new(), self.chain())
        }
    }

    /// Nothing queued and nothing running.
    pub(crate) fn is_idle(&self) -> bool {
        self.queued == 0 && self.running == 0
    }

    /// Closed, nothing queued, every runner gone.
    pub(crate) fn is_drained(&self) -> bool {
        self.closed && self.queued == 0 && self.runners.is_empty()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    pub(crate) fn running(&self) -> usize {
        self.running
    }

    pub(crate) fn runners(&self) -> usize {
        self.runners.len()
    }

    pub(crate) fn target(&self) -> usize {
        self.target
    }

    /// Parked runners, and runners claimed but not yet back: for the model's invariant that a
    /// queued job never waits while every other runner sleeps unclaimed.
    #[cfg(test)]
    pub(crate) fn parked_and_waking(&self) -> (usize, usize) {
        (self.idle.len(), self.waking)
    }

    pub(crate) fn counters(&self) -> Counters {
        self.counters
    }
}

#[cfg(test)]
mod proptests;
