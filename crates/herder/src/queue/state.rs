//! The runners' lifecycle: who is alive, parked or being woken, the target count, closing and
//! aborting. Pure state, no I/O, no time: every method runs under the queue's lock and reports
//! what must happen next (wake this runner) for the caller to do once the lock is released.
//! `proptest` checks it against a plain model (`proptests` below).
//!
//! The jobs are not here: they sit in a lock-free FIFO (`fifo`) with a count next to it in the
//! core (`core`), so that submitting and taking a job take no lock. The lock is taken when a
//! runner parks or wakes, when runners come and go, and by the waits.
//!
//! * **Idle runners park** in a list. A submission that finds a parked runner and none waking
//!   claims one for the caller to wake; a woken runner, once it has taken its job, claims the
//!   next parked runner if jobs are still queued (chained wake-ups, as tokio's workers do when
//!   they search for work), so a burst of submissions does not wake every runner from the
//!   submitter's thread. A runner parks only after checking, with its parking published, that
//!   the FIFO is empty; a submission checks for parked runners after its push: one of the two
//!   sees the other, so a queued job never waits for a runner nobody will wake.
//! * **The target.** Lowering it never interrupts a job: the runners in excess exit as they
//!   come free (each checks before taking a job), and parked ones are woken to exit.
//! * **Runner lifecycle.** A runner is registered before its task is spawned, under a
//!   [`RunnerKey`]: its slab index and a serial number never reused, so a late call about a
//!   runner that has exited cannot reach a new runner that took its index. The task's abort
//!   handle is [attached](State::attach) after the spawn; once a shutdown has started
//!   [aborting](State::begin_abort), an attach is answered with [`Attach::AbortNow`]. So
//!   whichever comes first, the shutdown's collection or the attach, every live runner is
//!   aborted.

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
    parked: bool,
    /// Claimed out of the idle list and not yet back in its loop.
    waking: bool,
}

pub(crate) struct State<R> {
    /// How many runners the queue should have.
    target: usize,
    /// Live runners (registered, spawned or about to be).
    runners: Slab<Runner<R>>,
    /// Parked runners, most recent last.
    idle: Vec<usize>,
    /// Runners claimed and not yet back in their loop.
    waking: usize,
    closed: bool,
    /// A shutdown has collected the abort handles: runners attached from now on are aborted.
    aborting: bool,
    /// The serial number of the next runner.
    serials: u64,
}

impl<R> State<R> {
    pub(crate) fn new(target: usize) -> Self {
        State {
            target,
            runners: Slab::new(),
            idle: Vec::new(),
            waking: 0,
            closed: false,
            aborting: false,
            serials: 0,
        }
    }

    /// Registers a new runner; the caller spawns it, then [attaches](State::attach) its task.
    pub(crate) fn add_runner(&mut self, payload: R) -> RunnerKey {
        let serial = self.serials;
        self.serials += 1;
        let id = self.runners.insert(Runner {
            payload,
            serial,
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

    pub(crate) fn is_aborting(&self) -> bool {
        self.aborting
    }

    pub(crate) fn runner(&self, id: usize) -> Option<&R> {
        self.runners.get(id).map(|runner| &runner.payload)
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

    /// A parked runner to wake for a queued job, unless a runner is waking up already (that
    /// one chains the next wake-up once it has taken its job).
    pub(crate) fn wake_one(&mut self) -> Option<usize> {
        if self.waking == 0 {
            self.claim_idle()
        } else {
            None
        }
    }

    /// Runner `id` is back in its loop (woken, or spuriously): out of the idle list and no
    /// longer waking.
    pub(crate) fn awake(&mut self, id: usize) {
        let runner = &mut self.runners[id];
        if std::mem::take(&mut runner.parked) {
            // A spurious wake-up: it was not claimed.
            self.idle.retain(|parked| *parked != id);
        }
        if std::mem::take(&mut self.runners[id].waking) {
            self.waking -= 1;
        }
    }

    /// The queue has more runners than its target: one of them should exit.
    pub(crate) fn excess(&self) -> bool {
        self.runners.len() > self.target
    }

    /// Runner `id` found nothing to do: it parks (the caller then checks the FIFO once more and
    /// [unparks](State::unpark) it if a job arrived meanwhile).
    pub(crate) fn park(&mut self, id: usize) {
        let runner = &mut self.runners[id];
        debug_assert!(!runner.parked && !runner.waking, "runner {id} parks twice");
        runner.parked = true;
        self.idle.push(id);
    }

    /// Runner `id` parked, then saw a job: back to work without being woken.
    pub(crate) fn unpark(&mut self, id: usize) {
        if std::mem::take(&mut self.runners[id].parked) {
            self.idle.retain(|parked| *parked != id);
        }
    }

    /// Runner `id` exits (in excess, or the queue is closed and empty); returns its payload.
    pub(crate) fn exit(&mut self, id: usize) -> R {
        self.awake(id);
        self.runners.remove(id).payload
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

    /// Refuses new jobs from now on; returns the parked runners to wake (they exit once the
    /// queue is empty).
    pub(crate) fn close(&mut self) -> Vec<usize> {
        self.closed = true;
        std::iter::from_fn(|| self.claim_idle()).collect()
    }

    /// Runner `id`'s task is gone before it exited (aborted by a shutdown, or dropped with its
    /// runtime): its payload, and `true` if it was the last runner: nothing will run jobs any
    /// more, so the queue closes (and the caller cancels what is queued).
    pub(crate) fn lost(&mut self, id: usize) -> Option<(R, bool)> {
        let runner = self.runners.try_remove(id)?;
        if runner.parked {
            self.idle.retain(|parked| *parked != id);
        }
        if runner.waking {
            self.waking -= 1;
        }
        let last = self.runners.is_empty();
        if last {
            self.closed = true;
        }
        Some((runner.payload, last))
    }

    /// The payloads of the live runners.
    pub(crate) fn payloads(&self) -> impl Iterator<Item = &R> {
        self.runners.iter().map(|(_, runner)| &runner.payload)
    }

    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    pub(crate) fn runners(&self) -> usize {
        self.runners.len()
    }

    pub(crate) fn target(&self) -> usize {
        self.target
    }

    pub(crate) fn parked(&self) -> usize {
        self.idle.len()
    }

    pub(crate) fn waking(&self) -> usize {
        self.waking
    }
}

#[cfg(test)]
mod proptests;
