//! The batch scheduler against a plain model (as `queue/state/proptests.rs`): random sequences
//! of lookups, opener looks (closing at a quiet pass), dropped openers, janitor looks and lost
//! janitors, finished batches (values, error, panic, timeout), lost run tasks, `clear`,
//! `clear_all` and `prime`, with random batch sizes, caps and memo; lookups as `load` makes
//! them (the memo without the lock first, `Memo::hit`, then `State::find`) or as the lock
//! alone. After each step: the same answers, the same requests and memo hits counted, the same
//! batches run in the same order, the same janitors started and retired, the cap respected, the
//! same keys in flight and memoized, the same unattended windows; at the end, every slot a
//! caller was handed is completed (no caller waits for a batch nobody runs).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc as StdArc;
use std::time::Duration;

use proptest::prelude::*;

use super::{
    Actions, BatchSlot, Closed, Config, Found, JANITOR_IDLE_LOOKS, Landed, Pass, RuntimeId, State,
    Sweep, Window, WindowEnd,
};
use crate::flight::Failure;
use crate::sync::Arc;

type S = BatchSlot<u64, ()>;
type C = Closed<u64, u64, ()>;

#[derive(Clone, Debug)]
enum Step {
    /// A lookup under the lock (`State::find`).
    Find(u64),
    /// A lookup as `load` makes it: the memo without the lock, then, if it misses, `Find`.
    Load(u64),
    /// The opener of the open window (if it still drives it) looks after a pass.
    Look,
    /// The opener at this index is dropped (it closes its window).
    DropOpener(usize),
    /// The janitor looks (a period has passed).
    Sweep,
    /// The janitor is dropped with its runtime, which the openers run on.
    LoseJanitor,
    /// The running batch at this index ends: 0 values, 1 error, 2 panic, 3 timeout.
    Finish(usize, u8),
    /// The task running the batch at this index is dropped with its runtime.
    LoseRun(usize),
    Clear(u64),
    ClearAll,
    Prime(u64, u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..8u64).prop_map(Step::Find),
        4 => (0..8u64).prop_map(Step::Load),
        3 => Just(Step::Look),
        1 => any::<usize>().prop_map(Step::DropOpener),
        2 => Just(Step::Sweep),
        4 => (any::<usize>(), prop_oneof![6 => Just(0u8), 1 => Just(1), 1 => Just(2), 1 => Just(3)])
            .prop_map(|(i, k)| Step::Finish(i, k)),
        1 => prop_oneof![9 => Just(None), 1 => any::<usize>().prop_map(|i| Some(Step::LoseRun(i)))]
            .prop_map(|s| s.unwrap_or(Step::Look)),
        1 => prop_oneof![9 => Just(None), 1 => Just(Some(Step::LoseJanitor))]
            .prop_map(|s| s.unwrap_or(Step::Look)),
        1 => (0..8u64).prop_map(Step::Clear),
        1 => prop_oneof![9 => Just(None), 1 => Just(Some(Step::ClearAll))]
            .prop_map(|s| s.unwrap_or(Step::Look)),
        1 => (0..8u64, 100..200u64).prop_map(|(k, v)| Step::Prime(k, v)),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    Ready,
    Running,
    Ended,
}

struct MBatch {
    keys: Vec<u64>,
    phase: Phase,
}

/// The plain model: batches by number, an index of keys to batch numbers, a memo.
struct Model {
    config: Config,
    batches: Vec<MBatch>,
    open: Option<usize>,
    /// The open batch's window elapsed while every slot was busy.
    open_elapsed: bool,
    /// Keys the opener had seen at its last look.
    seen: usize,
    ready: VecDeque<usize>,
    running: usize,
    index: HashMap<u64, usize>,
    memo: Option<HashMap<u64, Option<u64>>>,
    windows_opened: u64,
    /// The janitor alive (its number), janitors started, and windows opened at its last look.
    janitor: Option<u64>,
    janitors: u64,
    janitor_seen: u64,
    /// The janitor's quiet looks in a row with nothing open.
    idle_looks: u32,
    unattended: u64,
    requests: u64,
    memo_hits: u64,
}

/// What a janitor's look decides, in the model.
#[derive(Debug, PartialEq, Eq)]
enum MSweep {
    Watch,
    Run(usize),
    Parked,
    Retire,
}

enum MFound {
    Memo(Option<u64>),
    Batch(usize, usize),
}

impl Model {
    fn new(config: Config) -> Self {
        Model {
            config,
            batches: Vec::new(),
            open: None,
            open_elapsed: false,
            seen: 0,
            ready: VecDeque::new(),
            running: 0,
            index: HashMap::new(),
            memo: config.memo.then(HashMap::new),
            windows_opened: 0,
            janitor: None,
            janitors: 0,
            janitor_seen: 0,
            idle_looks: 0,
            unattended: 0,
            requests: 0,
            memo_hits: 0,
        }
    }

    /// A yield window is open, not yet elapsed, and no janitor watches: start one.
    fn needs_janitor(&mut self) -> Option<u64> {
        if self.open.is_none() || self.open_elapsed || self.janitor.is_some() {
            return None;
        }
        self.janitors += 1;
        self.janitor = Some(self.janitors);
        self.janitor_seen = self.windows_opened;
        self.idle_looks = 0;
        self.janitor
    }

    /// A janitor look: a window open at two looks in a row (no window opened in between) is
    /// closed unattended; nothing opened and nothing open at `JANITOR_IDLE_LOOKS` looks in a
    /// row → the janitor retires.
    fn sweep(&mut self, janitor: u64) -> MSweep {
        if self.janitor != Some(janitor) {
            return MSweep::Retire;
        }
        let quiet = self.windows_opened == self.janitor_seen;
        self.janitor_seen = self.windows_opened;
        if self.open.is_none() && quiet {
            self.idle_looks += 1;
        } else {
            self.idle_looks = 0;
        }
        match self.open {
            None if self.idle_looks == JANITOR_IDLE_LOOKS => {
                self.janitor = None;
                self.idle_looks = 0;
                MSweep::Retire
            }
            Some(b) if quiet && !self.open_elapsed => {
                self.unattended += 1;
                match self.window_ends(b) {
                    Some(Some(b)) => MSweep::Run(b),
                    _ => MSweep::Parked,
                }
            }
            _ => MSweep::Watch,
        }
    }

    /// The janitor went with the openers' runtime: the open window (not elapsed) is lost.
    fn janitor_lost(&mut self, janitor: u64) -> Option<usize> {
        if self.janitor != Some(janitor) {
            return None;
        }
        self.janitor = None;
        match self.open {
            Some(b) if !self.open_elapsed => {
                self.open = None;
                self.unindex(b);
                Some(b)
            }
            _ => None,
        }
    }

    /// Returns the answer, and the batches that start running.
    fn find(&mut self, key: u64, started: &mut Vec<usize>) -> MFound {
        self.requests += 1;
        if let Some(v) = self.memo.as_ref().and_then(|m| m.get(&key)) {
            self.memo_hits += 1;
            return MFound::Memo(*v);
        }
        if let Some(&b) = self.index.get(&key) {
            let pos = self.batches[b].keys.iter().position(|k| *k == key).unwrap();
            return MFound::Batch(b, pos);
        }
        let b = match self.open {
            Some(b) => b,
            None => {
                self.batches.push(MBatch {
                    keys: Vec::new(),
                    phase: Phase::Open,
                });
                self.open = Some(self.batches.len() - 1);
                self.windows_opened += 1;
                self.open_elapsed = false;
                self.seen = 0;
                self.batches.len() - 1
            }
        };
        let pos = self.batches[b].keys.len();
        self.batches[b].keys.push(key);
        self.index.insert(key, b);
        if pos == 0 {
            // The opener's own key: its first look starts from here.
            self.seen = 1;
        }
        if self.batches[b].keys.len() >= self.config.max_batch_size {
            self.open = None;
            if self.running < self.config.max_concurrent_batches {
                self.start(b);
                started.push(b);
            } else {
                self.batches[b].phase = Phase::Ready;
                self.ready.push_back(b);
            }
        }
        MFound::Batch(b, pos)
    }

    /// A look at the memo alone: its value, counted as a request it answered.
    fn memo_hit(&mut self, key: u64) -> Option<Option<u64>> {
        let v = *self.memo.as_ref()?.get(&key)?;
        self.requests += 1;
        self.memo_hits += 1;
        Some(v)
    }

    fn start(&mut self, b: usize) {
        self.running += 1;
        self.batches[b].phase = Phase::Running;
    }

    fn look(&mut self) -> Pass {
        let Some(b) = self.open else {
            return Pass::Gone;
        };
        let len = self.batches[b].keys.len();
        if len > self.seen {
            self.seen = len;
            Pass::Grew
        } else {
            Pass::Quiet
        }
    }

    /// `None`: gone; `Some(None)`: parked; `Some(Some(b))`: run b.
    fn window_ends(&mut self, b: usize) -> Option<Option<usize>> {
        if self.open != Some(b) {
            return None;
        }
        if self.running < self.config.max_concurrent_batches && self.ready.is_empty() {
            self.open = None;
            self.start(b);
            Some(Some(b))
        } else {
            self.open_elapsed = true;
            Some(None)
        }
    }

    fn finish(&mut self, b: usize, ok: bool) -> Option<usize> {
        self.batches[b].phase = Phase::Ended;
        for key in self.batches[b].keys.clone() {
            if self.index.get(&key) == Some(&b) {
                self.index.remove(&key);
                if ok && let Some(memo) = self.memo.as_mut() {
                    memo.entry(key).or_insert(Some(key * 10));
                }
            }
        }
        self.running -= 1;
        if self.running >= self.config.max_concurrent_batches {
            return None;
        }
        let next = match self.ready.pop_front() {
            Some(b) => b,
            None if self.open.is_some() && self.open_elapsed => self.open.take().unwrap(),
            None => return None,
        };
        self.start(next);
        Some(next)
    }

    fn unindex(&mut self, b: usize) {
        self.batches[b].phase = Phase::Ended;
        let keys = self.batches[b].keys.clone();
        for key in keys {
            if self.index.get(&key) == Some(&b) {
                self.index.remove(&key);
            }
        }
    }

    fn lose_run(&mut self, b: usize) -> Vec<usize> {
        self.running -= 1;
        let mut lost = vec![b];
        lost.extend(self.ready.drain(..));
        if self.open.is_some() && self.open_elapsed {
            lost.push(self.open.take().unwrap());
        }
        for &l in &lost {
            self.unindex(l);
        }
        lost
    }

    fn clear(&mut self, key: u64) {
        if let Some(memo) = self.memo.as_mut() {
            memo.remove(&key);
        }
        if let Some(&b) = self.index.get(&key)
            && self.batches[b].phase == Phase::Running
        {
            self.index.remove(&key);
        }
    }

    fn clear_all(&mut self) {
        if let Some(memo) = self.memo.as_mut() {
            memo.clear();
        }
        let batches = &self.batches;
        self.index
            .retain(|_, b| batches[*b].phase != Phase::Running);
    }

    fn prime(&mut self, key: u64, value: u64) {
        if let Some(memo) = self.memo.as_mut() {
            memo.insert(key, Some(value));
        }
    }
}

/// The dispatch layer, simulated: window tasks, running batches, and every slot handed out.
struct Harness {
    config: Config,
    state: State<u64, u64, ()>,
    model: Model,
    /// Openers still driving their window: the batch's slot, its model number.
    openers: Vec<(S, usize)>,
    /// The janitor alive, if any.
    janitor: Option<u64>,
    /// The runtime the openers and the janitor run on.
    runtime: RuntimeId,
    /// Batches running, with their model numbers.
    running: Vec<(C, usize)>,
    /// Every slot handed to a caller.
    handed: Vec<S>,
    /// Slot → model number.
    ids: Vec<(S, usize)>,
    /// Model numbers of the batches started, in order.
    started: Vec<usize>,
}

impl Harness {
    fn id(&self, slot: &S) -> usize {
        self.ids
            .iter()
            .find(|(s, _)| Arc::ptr_eq(s, slot))
            .map(|(_, id)| *id)
            .expect("a known batch")
    }

    fn apply(&mut self, actions: Actions<u64, u64, ()>, still_open: bool) {
        assert!(
            actions.dismiss.is_empty(),
            "a yield window has no task to dismiss"
        );
        if let Some((slot, ctl)) = actions.window {
            assert!(ctl.is_none(), "a yield window has no close signal");
            let id = self.model.batches.len() - 1;
            self.ids.push((slot.clone(), id));
            if still_open {
                self.openers.push((slot, id));
            }
        }
        for closed in actions.run {
            self.run(closed);
        }
    }

    /// An opener closes its window (a quiet pass, or dropped).
    fn close(&mut self, slot: &S, id: usize) {
        let config = self.config;
        let end = self.state.window_elapsed(slot, &config, false);
        match (end, self.model.window_ends(id)) {
            (WindowEnd::Gone, None) | (WindowEnd::Parked, Some(None)) => {}
            (WindowEnd::Run(closed), Some(Some(b))) => {
                assert_eq!(self.id(&closed.slot), b);
                self.run(closed);
            }
            (end, _) => panic!("window end differs from the model: {end:?}"),
        }
    }

    fn run(&mut self, closed: C) {
        let id = self.id(&closed.slot);
        self.started.push(id);
        self.running.push((closed, id));
    }

    fn fail(closed: &C) {
        closed.slot.complete(Err(Failure::Cancelled));
    }

    fn step(&mut self, step: Step) {
        let config = self.config;
        match step {
            Step::Load(key) => {
                let hit = self.state.memo().and_then(|memo| memo.hit(&key));
                assert_eq!(self.state.memo().is_some(), config.memo);
                let expected = self.model.memo_hit(key);
                assert_eq!(hit, expected, "the memo's answer for key {key}");
                if hit.is_none() {
                    return self.step(Step::Find(key));
                }
            }
            Step::Find(key) => {
                let mut actions = Actions::default();
                let found = self.state.find(&key, &config, None, false, &mut actions);
                let still_open = match &actions.window {
                    Some((slot, _)) => self.state.window_opened(slot, Some(self.runtime)),
                    None => false,
                };
                let janitor = self.state.needs_janitor(Some(self.runtime));
                let mut model_started = Vec::new();
                let expected = self.model.find(key, &mut model_started);
                assert_eq!(janitor, self.model.needs_janitor());
                if janitor.is_some() {
                    self.janitor = janitor;
                }
                self.apply(actions, still_open);
                assert_eq!(
                    self.started[self.started.len() - model_started.len()..],
                    model_started
                );
                match (found, expected) {
                    (Found::Memo(v), MFound::Memo(m)) => assert_eq!(v, m),
                    (Found::Batch(slot, pos), MFound::Batch(b, mpos)) => {
                        assert_eq!(self.id(&slot), b);
                        assert_eq!(pos, mpos);
                        self.handed.push(slot);
                    }
                    _ => panic!("found differs from the model for key {key}"),
                }
            }
            Step::Look => {
                let Some(open) = self.model.open else { return };
                let Some(at) = self.openers.iter().position(|o| o.1 == open) else {
                    return;
                };
                let (slot, id) = self.openers[at].clone();
                let pass = self.state.window_pass(&slot);
                assert_eq!(pass, self.model.look());
                if pass == Pass::Quiet {
                    self.openers.remove(at);
                    self.close(&slot, id);
                }
            }
            Step::DropOpener(i) => {
                if self.openers.is_empty() {
                    return;
                }
                let (slot, id) = self.openers.remove(i % self.openers.len());
                self.close(&slot, id);
            }
            Step::Sweep => {
                let Some(janitor) = self.janitor else { return };
                let sweep = self.state.sweep(janitor, &config);
                let expected = self.model.sweep(janitor);
                match (sweep, expected) {
                    (Sweep::Watch, MSweep::Watch) | (Sweep::Parked, MSweep::Parked) => {}
                    (Sweep::Retire, MSweep::Retire) => self.janitor = None,
                    (Sweep::Run(closed), MSweep::Run(b)) => {
                        assert_eq!(self.id(&closed.slot), b);
                        self.run(closed);
                    }
                    (sweep, expected) => panic!("sweep {sweep:?}, model {expected:?}"),
                }
            }
            Step::LoseJanitor => {
                let Some(janitor) = self.janitor.take() else {
                    return;
                };
                let lost = self.state.janitor_lost(janitor, self.runtime);
                let expected = self.model.janitor_lost(janitor);
                assert_eq!(lost.as_ref().map(|c| self.id(&c.slot)), expected);
                lost.iter().for_each(Self::fail);
            }
            Step::Finish(i, kind) => {
                if self.running.is_empty() {
                    return;
                }
                let (closed, id) = self.running.remove(i % self.running.len());
                let outcome = match kind {
                    0 => Ok(Landed::Done(Ok(closed
                        .keys
                        .iter()
                        .map(|k| Some(k * 10))
                        .collect::<Vec<_>>()
                        .into()))),
                    1 => Ok(Landed::Done(Err(StdArc::new(())))),
                    2 => Err(Failure::Panicked("boom".into())),
                    _ => Ok(Landed::TimedOut(Duration::from_secs(1))),
                };
                let next = self.state.finished(&closed, &outcome, &config);
                closed.slot.complete(outcome);
                let expected = self.model.finish(id, kind == 0);
                assert_eq!(next.as_ref().map(|c| self.id(&c.slot)), expected);
                if let Some(next) = next {
                    self.run(next);
                }
            }
            Step::LoseRun(i) => {
                if self.running.is_empty() {
                    return;
                }
                let (closed, id) = self.running.remove(i % self.running.len());
                let lost = self.state.abandon_running(closed);
                let ids: Vec<usize> = lost.iter().map(|c| self.id(&c.slot)).collect();
                assert_eq!(ids, self.model.lose_run(id));
                lost.iter().for_each(Self::fail);
            }
            Step::Clear(key) => {
                self.state.clear(&key);
                self.model.clear(key);
            }
            Step::ClearAll => {
                self.state.clear_all();
                self.model.clear_all();
            }
            Step::Prime(key, value) => {
                self.state.prime(key, value);
                self.model.prime(key, value);
            }
        }
        self.check();
    }

    fn check(&self) {
        let stats = self.state.stats();
        assert_eq!(stats.in_flight, self.model.index.len());
        assert_eq!(
            stats.memoized,
            self.model.memo.as_ref().map_or(0, HashMap::len)
        );
        assert_eq!(stats.batches, self.started.len() as u64);
        assert_eq!(stats.unattended_windows, self.model.unattended);
        assert_eq!(stats.requests, self.model.requests);
        assert_eq!(stats.memo_hits, self.model.memo_hits);
        assert!(self.running.len() <= self.config.max_concurrent_batches);
        assert_eq!(self.running.len(), self.model.running);
    }

    /// Ends everything: openers close their windows, or the janitor does (a lookup starts one
    /// if it was lost), running batches finish.
    fn drain(&mut self) {
        for _ in 0..1000 {
            if !self.openers.is_empty() {
                self.step(Step::DropOpener(0));
            } else if !self.running.is_empty() {
                self.step(Step::Finish(0, 0));
            } else if self.model.open.is_some() {
                if self.janitor.is_none() {
                    // What the next lookup does when no janitor watches an open window.
                    let janitor = self.state.needs_janitor(Some(self.runtime));
                    assert_eq!(janitor, self.model.needs_janitor());
                    self.janitor = janitor;
                }
                self.step(Step::Sweep);
            } else {
                break;
            }
        }
        assert!(self.openers.is_empty() && self.running.is_empty());
        assert_eq!(self.state.stats().in_flight, 0);
        for slot in &self.handed {
            assert!(slot.is_done(), "a caller's batch never completed");
        }
    }
}

/// A runtime id for the model's openers and janitor (made once: only a runtime can make one).
fn runtime_id() -> RuntimeId {
    static ID: std::sync::OnceLock<RuntimeId> = std::sync::OnceLock::new();
    *ID.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .handle()
            .id()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_scheduler_matches_the_model(
        max_batch_size in 1..5usize,
        max_concurrent_batches in 1..3usize,
        memo in any::<bool>(),
        steps in prop::collection::vec(step(), 1..80),
    ) {
        let config = Config {
            window: Window::Yield,
            max_batch_size,
            max_concurrent_batches,
            memo,
            load_timeout: None,
        };
        let mut h = Harness {
            config,
            state: State::new(&config),
            model: Model::new(config),
            openers: Vec::new(),
            janitor: None,
            runtime: runtime_id(),
            running: Vec::new(),
            handed: Vec::new(),
            ids: Vec::new(),
            started: Vec::new(),
        };
        for step in steps {
            h.step(step);
        }
        h.drain();
    }
}
