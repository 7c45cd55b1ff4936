//! The batch scheduler: which batch a key goes to, when a batch closes, when it runs.
//!
//! Pure state, no I/O: every method runs under the loader's lock and reports what must happen
//! next (run a batch, start a delay window's task or dismiss it, start the loader's janitor) for
//! the caller to do once the lock is released. `proptests` checks it against a plain model.
//!
//! A key is looked up in the memo (which `load` has already looked at without the lock: see
//! `memo`), then in the index of keys whose batch is open or running
//! (in-flight dedup), and only then added to the open batch. The open batch closes when it is full
//! or when its window has elapsed and a batch slot is free; while every slot is busy, keys keep
//! accumulating in it (natural batching), and batches that fill up meanwhile queue in FIFO order.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc as StdArc;
use std::time::Duration;

use super::memo::Memo;
use super::stats::{Counters, DataLoaderStats};
use super::window::WindowCtl;
use crate::cache::{CacheFront, Consult, JoinedLoad, LoadTicket};
use crate::flight::{Failure, Outcome, Slot};
use crate::sync::Arc;

/// What a batch's waiters receive: the values in the order of the batch's keys (`None` where the
/// loader left a key out), or the loader's error, both shared. Each waiter knows its key's
/// position, so reading its value costs no hashing.
pub(crate) type BatchResult<V, E> = Result<StdArc<[Option<V>]>, StdArc<E>>;

/// What a batch's slot carries: the batch's result, or the load timeout it hit.
#[derive(Debug)]
pub(crate) enum Landed<V, E> {
    Done(BatchResult<V, E>),
    TimedOut(Duration),
}

impl<V, E> Clone for Landed<V, E> {
    fn clone(&self) -> Self {
        match self {
            Landed::Done(result) => Landed::Done(result.clone()),
            Landed::TimedOut(after) => Landed::TimedOut(*after),
        }
    }
}

/// One batch's in-flight slot; its address is the batch's identity.
pub(crate) type BatchSlot<V, E> = Arc<Slot<Landed<V, E>>>;

/// The period of a loader's janitor (see [`State::sweep`]): a yield window that is still open at
/// two of its looks in a row, one period apart, is closed for the other callers, so a window
/// whose opener does not come round is closed between one and two periods after it opened. That
/// only happens when the opener is parked (polled once, never again), when its task waited that
/// long for a worker (a saturated runtime), or when keys kept arriving at every scheduler pass
/// for that long without filling the batch.
pub(crate) const JANITOR_PERIOD: Duration = Duration::from_millis(100);

/// How many looks in a row a janitor makes with no window opened and none open before it
/// retires: 5 s. A load after a shorter quiet spell finds it alive, and does not pay for
/// spawning another (tens of microseconds from the `block_on` thread, which must wake a
/// parked worker).
pub(crate) const JANITOR_IDLE_LOOKS: u32 = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Window {
    /// The caller that opened the batch yields to the scheduler (`tokio::task::yield_now`) and
    /// looks again: keys arrived during that pass → one more pass; a quiet pass → close. The
    /// loader's janitor is the fallback ([`JANITOR_PERIOD`]).
    Yield,
    /// Close after a fixed delay.
    Delay(Duration),
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) window: Window,
    pub(crate) max_batch_size: usize,
    pub(crate) max_concurrent_batches: usize,
    pub(crate) memo: bool,
    /// How long a loader call may take before its callers get a timeout error.
    pub(crate) load_timeout: Option<Duration>,
}

/// A batch: its slot, its keys, and the cache flights it leads (with a cache in front).
pub(crate) struct Closed<K, V, E> {
    pub(crate) slot: BatchSlot<V, E>,
    pub(crate) keys: Vec<K>,
    /// Cache flights to finish when the batch ends, with their key's position.
    pub(crate) tickets: Vec<(usize, LoadTicket<K, V>)>,
}

impl<K, V, E> std::fmt::Debug for Closed<K, V, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Closed")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// The batch accepting keys, and its window.
struct Open<K, V, E> {
    batch: Closed<K, V, E>,
    /// The window has elapsed; the batch waits for a free slot.
    elapsed: bool,
    /// Keys present at the opener's last look.
    seen: usize,
    /// Tells the window task of a delay window to close (a yield window has no task: its opener
    /// closes it, or the janitor).
    ctl: Option<Arc<WindowCtl>>,
    /// The runtime its opener was polled on (see [`State::janitor_lost`]).
    runtime: Option<RuntimeId>,
}

/// Which runtime a window's opener was polled on.
pub(crate) type RuntimeId = tokio::runtime::Id;

/// Where a key's value comes from.
pub(crate) enum Found<V, E> {
    /// The memo or the cache had it.
    Memo(Option<V>),
    /// The batch, and the key's position in it.
    Batch(BatchSlot<V, E>, usize),
    /// A load of the cache in front (another caller's) has it.
    Flight(JoinedLoad<V>),
}

/// Work for the caller to do after releasing the lock.
#[derive(Debug)]
pub(crate) struct Actions<K, V, E> {
    /// A batch was opened, with the close signal of its window task if it has a delay window (a
    /// yield window is driven by its opener).
    pub(crate) window: Option<(BatchSlot<V, E>, Option<Arc<WindowCtl>>)>,
    /// Batches that may run now.
    pub(crate) run: Vec<Closed<K, V, E>>,
    /// Window tasks of batches that closed early (full): tell them to end.
    pub(crate) dismiss: Vec<Arc<WindowCtl>>,
}

impl<K, V, E> Default for Actions<K, V, E> {
    fn default() -> Self {
        Actions {
            window: None,
            run: Vec::new(),
            dismiss: Vec::new(),
        }
    }
}

impl<K, V, E> Actions<K, V, E> {
    /// `true` if there is nothing to do.
    pub(crate) fn is_empty(&self) -> bool {
        self.window.is_none() && self.run.is_empty() && self.dismiss.is_empty()
    }
}

/// What one look at a yield window finds (see [`State::window_pass`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Keys arrived since the last look: wait one more pass.
    Grew,
    /// No key arrived during the last pass: close the window.
    Quiet,
    /// The batch is no longer open (it filled up, or closed).
    Gone,
}

/// What one look of the loader's janitor decides (see [`State::sweep`]).
#[derive(Debug)]
pub(crate) enum Sweep<K, V, E> {
    /// Look again one period later.
    Watch,
    /// The open window's opener has not come round for a whole period: it is closed
    /// (unattended) and this batch is to run now.
    Run(Closed<K, V, E>),
    /// The same, but every batch slot is busy: the batch runs when one frees.
    Parked,
    /// No window opened and none open for [`JANITOR_IDLE_LOOKS`] looks in a row: the janitor
    /// ends (the next window starts another).
    Retire,
}

/// What the end of a window decides.
#[derive(Debug)]
pub(crate) enum WindowEnd<K, V, E> {
    /// Run the batch now.
    Run(Closed<K, V, E>),
    /// Every batch slot is busy: the batch stays open and runs when a slot frees.
    Parked,
    /// The batch already closed (it filled up).
    Gone,
}

pub(crate) struct State<K, V, E> {
    /// Keys whose batch is open or running: the batch and the key's position in it.
    index: HashMap<K, (BatchSlot<V, E>, usize)>,
    /// Shared with the handle, which reads it without this state's lock (see `memo`); written
    /// only under it.
    memo: Option<StdArc<Memo<K, V>>>,
    open: Option<Open<K, V, E>>,
    ready: VecDeque<Closed<K, V, E>>,
    running: usize,
    counters: Counters,
    /// Windows opened so far: the janitors compare it between their looks.
    windows_opened: u64,
    /// The janitor tasks alive: one per runtime that openers were polled on (a janitor on a
    /// runtime that is no longer driven cannot close the windows opened on another).
    janitors: Vec<Janitor>,
    /// Janitors started so far (their numbers).
    janitors_started: u64,
}

/// A janitor task alive (see [`State::sweep`]).
#[derive(Debug)]
struct Janitor {
    /// Its number.
    id: u64,
    /// The runtime it runs on: it looks after the windows whose opener was polled there.
    runtime: Option<RuntimeId>,
    /// `windows_opened` at its last look.
    seen: u64,
    /// Its looks in a row with no window opened and none open.
    idle: u32,
}

impl<K, V, E> State<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(config: &Config) -> Self {
        State {
            index: HashMap::new(),
            memo: config.memo.then(|| StdArc::new(Memo::new())),
            open: None,
            ready: VecDeque::new(),
            running: 0,
            counters: Counters::default(),
            windows_opened: 0,
            janitors: Vec::new(),
            janitors_started: 0,
        }
    }

    /// The memo, for the handle's lookups without the lock ([`Memo::hit`]).
    pub(crate) fn memo(&self) -> Option<&StdArc<Memo<K, V>>> {
        self.memo.as_ref()
    }

    /// Finds where `key`'s value comes from: the memo, a batch already holding it, the cache in
    /// front (if any), or, for a new key, the open batch.
    ///
    /// `again`: the cache load this caller joined for `key` failed with an error of another
    /// call site's type, which this loader cannot report: the key is looked up again (not
    /// counted as a new request), and if another reader's load of it is under way by now, this
    /// loader does not join it but loads the key in its own batch (whose value then reaches its
    /// own callers only: the cache's flight for the key is that other reader's).
    pub(crate) fn find(
        &mut self,
        key: &K,
        config: &Config,
        cache: Option<&CacheFront<K, V>>,
        again: bool,
        actions: &mut Actions<K, V, E>,
    ) -> Found<V, E> {
        if !again {
            self.counters.requests += 1;
        }
        // Looked at again under the lock: a batch may have memoized the key since the caller's
        // look without it.
        if let Some(value) = self.memo.as_ref().and_then(|memo| memo.get(key)) {
            self.counters.memo_hits += 1;
            return Found::Memo(value);
        }
        if let Some((slot, position)) = self.index.get(key) {
            // With a cache in front, a batch that is already loading may have read the key
            // before an invalidation of the cache (local or from another instance): the cache's
            // flight for the key, which the batch leads until a write retires it, decides. A
            // batch that has not started loading is joined either way: its load is fresh.
            if cache.is_none() || self.is_pending(slot) {
                // With a cache in front, a value written since the batch opened (`prime`, an
                // insert) answers this load, as the memo's does without one.
                if let Some(value) = cache.and_then(|cache| cache.fresh(key)) {
                    self.counters.cache_hits += 1;
                    return Found::Memo(value);
                }
                self.counters.joined += 1;
                return Found::Batch(slot.clone(), *position);
            }
        }
        let ticket = match cache.map(|cache| cache.consult(key)) {
            None => None,
            Some(Consult::Hit(value)) => {
                self.counters.cache_hits += 1;
                return Found::Memo(value);
            }
            Some(Consult::HitAndRefresh(value, ticket)) => {
                self.counters.cache_hits += 1;
                self.enqueue(key, Some(ticket), config, actions);
                return Found::Memo(value);
            }
            Some(Consult::Wait(_)) if again => None,
            Some(Consult::Wait(waiter)) => {
                self.counters.joined += 1;
                return Found::Flight(waiter);
            }
            Some(Consult::Lead(ticket)) => Some(ticket),
        };
        let (slot, position) = self.enqueue(key, ticket, config, actions);
        Found::Batch(slot, position)
    }

    /// Adds a new key to the open batch (opening one if needed), closing the batch if full.
    fn enqueue(
        &mut self,
        key: &K,
        ticket: Option<LoadTicket<K, V>>,
        config: &Config,
        actions: &mut Actions<K, V, E>,
    ) -> (BatchSlot<V, E>, usize) {
        let open = self.open.get_or_insert_with(|| {
            self.windows_opened += 1;
            let slot = Arc::new(Slot::new());
            let ctl = match config.window {
                Window::Yield => None,
                Window::Delay(_) => Some(Arc::new(WindowCtl::new())),
            };
            actions.window = Some((slot.clone(), ctl.clone()));
            let batch = Closed {
                slot,
                keys: Vec::new(),
                tickets: Vec::new(),
            };
            Open {
                batch,
                elapsed: false,
                seen: 0,
                ctl,
                runtime: None,
            }
        });
        let slot = open.batch.slot.clone();
        let position = open.batch.keys.len();
        open.batch.keys.push(key.clone());
        open.batch
            .tickets
            .extend(ticket.map(|ticket| (position, ticket)));
        let full = open.batch.keys.len() >= config.max_batch_size;
        self.index.insert(key.clone(), (slot.clone(), position));
        if full {
            self.close_open(config, actions);
        }
        (slot, position)
    }

    /// Closes the open batch: runs it if a slot is free, queues it otherwise.
    fn close_open(&mut self, config: &Config, actions: &mut Actions<K, V, E>) {
        let Some(open) = self.open.take() else { return };
        actions.dismiss.extend(open.ctl);
        let closed = open.batch;
        if self.running < config.max_concurrent_batches {
            self.start(&closed);
            actions.run.push(closed);
        } else {
            self.ready.push_back(closed);
        }
    }

    fn is_open(&self, slot: &BatchSlot<V, E>) -> bool {
        self.open
            .as_ref()
            .is_some_and(|open| Arc::ptr_eq(&open.batch.slot, slot))
    }

    /// Where the opener's looks start: the keys the batch holds when its opener's call is done
    /// looking its own keys up (one for a `load`, more for a `load_many`), and the runtime the
    /// opener runs on. `false` if the batch is no longer open (that very call filled it).
    pub(crate) fn window_opened(
        &mut self,
        slot: &BatchSlot<V, E>,
        runtime: Option<RuntimeId>,
    ) -> bool {
        let Some(open) = self
            .open
            .as_mut()
            .filter(|open| Arc::ptr_eq(&open.batch.slot, slot))
        else {
            return false;
        };
        open.seen = open.batch.keys.len();
        open.runtime = runtime;
        true
    }

    /// The number of a janitor to start on `runtime`, that of a caller whose key is in the
    /// open yield window (its opener, or a caller that joined it), if no janitor is alive
    /// there: the window just opened, the janitor that was watching that runtime went with
    /// it, or the caller is on another runtime than the opener (which may not be driven any
    /// more: a janitor there could not close the window for this caller).
    pub(crate) fn needs_janitor(&mut self, runtime: Option<RuntimeId>) -> Option<u64> {
        let open = self.open.as_ref()?;
        if open.ctl.is_some() || open.elapsed || self.janitors.iter().any(|j| j.runtime == runtime)
        {
            return None;
        }
        self.janitors_started += 1;
        let id = self.janitors_started;
        self.janitors.push(Janitor {
            id,
            runtime,
            // Its first look, one period from now, closes the open window if it is still open.
            seen: self.windows_opened,
            idle: 0,
        });
        Some(id)
    }

    /// One look of the loader's janitor `janitor`, one [`JANITOR_PERIOD`] after its previous
    /// one (or after it started). No window opened since that look, yet a yield window is open:
    /// that window was open then too, so its opener has not come round for a whole period, and
    /// the janitor closes it ([`Sweep::Run`] or, every batch slot busy, it waits for a slot).
    /// No window opened and none open at [`JANITOR_IDLE_LOOKS`] looks in a row:
    /// [`Sweep::Retire`]. Otherwise [`Sweep::Watch`].
    ///
    /// Any janitor closes a window found open at two looks in a row, whichever runtime its
    /// opener was polled on (and the batch runs on the janitor's runtime): that opener has
    /// not come round for a whole period, and its runtime may not be driven at all.
    pub(crate) fn sweep(&mut self, janitor: u64, config: &Config) -> Sweep<K, V, E> {
        let Some(at) = self.janitors.iter().position(|j| j.id == janitor) else {
            // Replaced (its runtime dropped it and another started): a stray look.
            return Sweep::Retire;
        };
        let me = &mut self.janitors[at];
        let quiet = self.windows_opened == me.seen;
        me.seen = self.windows_opened;
        let Some(open) = &self.open else {
            me.idle = if quiet { me.idle + 1 } else { 0 };
            if me.idle >= JANITOR_IDLE_LOOKS {
                self.janitors.swap_remove(at);
                return Sweep::Retire;
            }
            return Sweep::Watch;
        };
        me.idle = 0;
        if !quiet || open.elapsed || open.ctl.is_some() {
            return Sweep::Watch;
        }
        let slot = open.batch.slot.clone();
        match self.window_elapsed(&slot, config, true) {
            WindowEnd::Run(closed) => Sweep::Run(closed),
            WindowEnd::Parked => Sweep::Parked,
            WindowEnd::Gone => unreachable!("the window is open"),
        }
    }

    /// The janitor `janitor` is gone without retiring: its runtime, `runtime`, dropped it (the
    /// next lookup starts another). A yield window whose opener was polled on that runtime
    /// too will not be looked at again by anyone there: it is abandoned and returned,
    /// unindexed, to be failed, as a window task dropped with its runtime fails its batch
    /// (`abandon_open`), unless a janitor on another runtime is alive to close it (a caller
    /// there joined it). A window opened on another runtime stays with its opener.
    pub(crate) fn janitor_lost(
        &mut self,
        janitor: u64,
        runtime: RuntimeId,
    ) -> Option<Closed<K, V, E>> {
        let at = self.janitors.iter().position(|j| j.id == janitor)?;
        self.janitors.swap_remove(at);
        let open = self.open.as_ref()?;
        if open.ctl.is_some()
            || open.elapsed
            || open.runtime != Some(runtime)
            || !self.janitors.is_empty()
        {
            return None;
        }
        let slot = open.batch.slot.clone();
        self.abandon_open(&slot)
    }

    /// One look at the yield window of `slot`'s batch, by its opener, after a scheduler pass:
    /// keys arrived during the pass → [`Pass::Grew`], none → [`Pass::Quiet`]. There is no cap on
    /// passes: a batch that keeps growing fills up (and dispatches at once), and the fallback
    /// timer bounds the rest.
    pub(crate) fn window_pass(&mut self, slot: &BatchSlot<V, E>) -> Pass {
        let Some(open) = self
            .open
            .as_mut()
            .filter(|open| Arc::ptr_eq(&open.batch.slot, slot))
        else {
            return Pass::Gone;
        };
        if open.batch.keys.len() > open.seen {
            open.seen = open.batch.keys.len();
            Pass::Grew
        } else {
            Pass::Quiet
        }
    }

    /// The window of `slot`'s batch has elapsed: its opener found a quiet pass or was dropped,
    /// its delay passed, or the janitor closed it. `unattended`: a yield window closed by the
    /// janitor, not by its opener.
    pub(crate) fn window_elapsed(
        &mut self,
        slot: &BatchSlot<V, E>,
        config: &Config,
        unattended: bool,
    ) -> WindowEnd<K, V, E> {
        if !self.is_open(slot) {
            return WindowEnd::Gone;
        }
        if unattended {
            self.counters.unattended_windows += 1;
        }
        let open = self.open.as_mut().expect("checked above");
        if self.running < config.max_concurrent_batches && self.ready.is_empty() {
            let closed = self.open.take().expect("checked above").batch;
            self.start(&closed);
            WindowEnd::Run(closed)
        } else {
            open.elapsed = true;
            WindowEnd::Parked
        }
    }

    /// A batch has finished: unindexes its keys, memoizes its values (only if it succeeded, only
    /// for keys not cleared meanwhile, never over a primed value), and returns the next batch to
    /// run in the slot it frees.
    pub(crate) fn finished(
        &mut self,
        closed: &Closed<K, V, E>,
        outcome: &Outcome<Landed<V, E>>,
        config: &Config,
    ) -> Option<Closed<K, V, E>> {
        let values = match outcome {
            Ok(Landed::Done(Ok(values))) => Some(&**values),
            Ok(Landed::Done(Err(_))) => {
                self.counters.errors += 1;
                None
            }
            Ok(Landed::TimedOut(_)) => {
                self.counters.timeouts += 1;
                None
            }
            Err(Failure::Panicked(_)) => {
                self.counters.panics += 1;
                None
            }
            Err(Failure::Cancelled) => {
                self.counters.cancelled += 1;
                None
            }
        };
        for (position, key) in closed.keys.iter().enumerate() {
            let Some((key, entry)) = self.index.remove_entry(key) else {
                continue;
            };
            if !Arc::ptr_eq(&entry.0, &closed.slot) {
                // Cleared during the load and asked for again: that newer batch keeps the key.
                self.index.insert(key, entry);
                continue;
            }
            if let (Some(memo), Some(values)) = (&self.memo, values) {
                // A memoized key never joins a batch, so an entry here was primed during the
                // load: the primed value wins.
                memo.insert_if_absent(key, || values[position].clone());
            }
        }
        self.running -= 1;
        self.next(config)
    }

    fn next(&mut self, config: &Config) -> Option<Closed<K, V, E>> {
        if self.running >= config.max_concurrent_batches {
            return None;
        }
        let next = match self.ready.pop_front() {
            Some(closed) => closed,
            None => match self.open.take_if(|open| open.elapsed) {
                Some(open) => open.batch,
                None => return None,
            },
        };
        self.start(&next);
        Some(next)
    }

    fn start(&mut self, closed: &Closed<K, V, E>) {
        self.running += 1;
        self.counters.batch_started(closed.keys.len());
    }

    /// The task running `closed` is gone (its runtime is shutting down): the batch, and every batch
    /// that was waiting for a slot, will never run. Returns them all, unindexed, to be failed.
    pub(crate) fn abandon_running(&mut self, closed: Closed<K, V, E>) -> Vec<Closed<K, V, E>> {
        self.running -= 1;
        let mut lost = vec![closed];
        lost.extend(self.ready.drain(..));
        if let Some(open) = self.open.take_if(|open| open.elapsed) {
            lost.push(open.batch);
        }
        for closed in &lost {
            self.unindex(closed);
        }
        self.counters.cancelled += lost.len() as u64;
        lost
    }

    /// The window task of `slot`'s delay window is gone before the window ended (or was never
    /// spawned: the runtime refused it).
    pub(crate) fn abandon_open(&mut self, slot: &BatchSlot<V, E>) -> Option<Closed<K, V, E>> {
        if !self.is_open(slot) {
            return None;
        }
        let closed = self.open.take().expect("checked above").batch;
        self.unindex(&closed);
        self.counters.cancelled += 1;
        Some(closed)
    }

    fn unindex(&mut self, closed: &Closed<K, V, E>) {
        for key in &closed.keys {
            if self
                .index
                .get(key)
                .is_some_and(|(slot, _)| Arc::ptr_eq(slot, &closed.slot))
            {
                self.index.remove(key);
            }
        }
    }

    /// `true` while `slot`'s batch has not started loading (open, or queued for a slot).
    fn is_pending(&self, slot: &BatchSlot<V, E>) -> bool {
        self.is_open(slot)
            || self
                .ready
                .iter()
                .any(|closed| Arc::ptr_eq(&closed.slot, slot))
    }

    /// Stores `value` for `key` in the memo, when there is one. A load of `key` under way still
    /// answers its own callers but does not replace the primed value (see [`State::finished`]).
    pub(crate) fn prime(&mut self, key: K, value: V) {
        if let Some(memo) = &self.memo {
            memo.insert(key, Some(value));
        }
    }

    /// Forgets `key`'s memoized value, and the load of `key` under way, if any: its callers
    /// still get its result, but the result is not memoized and the next load asks the loader
    /// again. A key whose batch has not started loading stays in it: that load is fresh anyway.
    pub(crate) fn clear(&mut self, key: &K) {
        if let Some(memo) = &self.memo {
            memo.remove(key);
        }
        if self
            .index
            .get(key)
            .is_some_and(|(slot, _)| !self.is_pending(slot))
        {
            self.index.remove(key);
        }
    }

    /// [`State::clear`] for every key.
    pub(crate) fn clear_all(&mut self) {
        if let Some(memo) = &self.memo {
            memo.clear();
        }
        let pending: Vec<BatchSlot<V, E>> = self
            .open
            .iter()
            .map(|open| open.batch.slot.clone())
            .chain(self.ready.iter().map(|closed| closed.slot.clone()))
            .collect();
        self.index
            .retain(|_, (slot, _)| pending.iter().any(|p| Arc::ptr_eq(p, slot)));
    }

    /// The counters, with the memo's hits outside the lock added in.
    pub(crate) fn stats(&self) -> DataLoaderStats {
        let (memoized, hits) = self.memo.as_ref().map_or((0, 0), |memo| memo.counts());
        let mut counters = self.counters;
        counters.requests += hits;
        counters.memo_hits += hits;
        counters.snapshot(self.index.len(), memoized)
    }
}

/// Turns a finished load into what its waiters receive: the loader's map is consumed into the
/// batch's key order (values move, nothing is cloned; keys nobody asked for are dropped).
pub(crate) fn batch_outcome<K, V, E>(
    keys: &[K],
    outcome: Outcome<Result<HashMap<K, V>, E>>,
) -> Outcome<BatchResult<V, E>>
where
    K: Hash + Eq,
{
    outcome.map(|result| match result {
        Ok(mut values) => Ok(keys.iter().map(|key| values.remove(key)).collect()),
        Err(error) => Err(StdArc::new(error)),
    })
}

#[cfg(test)]
mod proptests;
