//! The batch scheduler against a plain model (as `queue/state/proptests.rs`): random sequences
//! of lookups, opener looks, window ends (attended or by the fallback timer), finished batches
//! (values, error, panic, timeout), lost window and run tasks, `clear`, `clear_all` and `prime`,
//! with random batch sizes, caps and memo. After each step: the same answers, the same batches
//! run in the same order, the cap respected, the same keys in flight and memoized; at the end,
//! every slot a caller was handed is completed (no caller waits for a batch nobody runs).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc as StdArc;
use std::time::Duration;

use proptest::prelude::*;

use super::{Actions, BatchSlot, Closed, Config, Found, Landed, Pass, State, Window, WindowEnd};
use crate::batch::window::WindowCtl;
use crate::flight::Failure;
use crate::sync::Arc;

type S = BatchSlot<u64, ()>;
type C = Closed<u64, u64, ()>;

#[derive(Clone, Debug)]
enum Step {
    Find(u64),
    /// The opener of the open window (if any) looks after a pass.
    Look,
    /// The window task of the window at this index ends (`true`: by the fallback timer).
    WindowEnds(usize, bool),
    /// The running batch at this index ends: 0 values, 1 error, 2 panic, 3 timeout.
    Finish(usize, u8),
    /// The task running the batch at this index is dropped with its runtime.
    LoseRun(usize),
    /// The window task at this index is dropped with its runtime.
    LoseWindow(usize),
    Clear(u64),
    ClearAll,
    Prime(u64, u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..8u64).prop_map(Step::Find),
        3 => Just(Step::Look),
        3 => (any::<usize>(), prop::bool::weighted(0.2)).prop_map(|(i, t)| Step::WindowEnds(i, t)),
        4 => (any::<usize>(), prop_oneof![6 => Just(0u8), 1 => Just(1), 1 => Just(2), 1 => Just(3)])
            .prop_map(|(i, k)| Step::Finish(i, k)),
        1 => prop_oneof![9 => Just(None), 1 => any::<usize>().prop_map(|i| Some(Step::LoseRun(i)))]
            .prop_map(|s| s.unwrap_or(Step::Look)),
        1 => prop_oneof![9 => Just(None), 1 => any::<usize>().prop_map(|i| Some(Step::LoseWindow(i)))]
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
        }
    }

    /// Returns the answer, and the batches that start running.
    fn find(&mut self, key: u64, started: &mut Vec<usize>) -> MFound {
        if let Some(v) = self.memo.as_ref().and_then(|m| m.get(&key)) {
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

    fn lose_window(&mut self, b: usize) -> bool {
        if self.open != Some(b) {
            return false;
        }
        self.open = None;
        self.unindex(b);
        true
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
    /// Window tasks alive: the batch's slot, its close signal, its model number.
    windows: Vec<(S, Arc<WindowCtl>, usize)>,
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

    fn apply(&mut self, actions: Actions<u64, u64, ()>) {
        for ctl in actions.dismiss {
            ctl.close();
        }
        if let Some((slot, ctl)) = actions.window {
            let id = self.model.batches.len() - 1;
            self.ids.push((slot.clone(), id));
            if !ctl.is_closed() {
                self.windows.push((slot, ctl, id));
            }
        }
        for closed in actions.run {
            self.run(closed);
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
            Step::Find(key) => {
                let mut actions = Actions::default();
                let found = self.state.find(&key, &config, None, false, &mut actions);
                if let Some((slot, _)) = &actions.window {
                    self.state.window_opened(slot);
                }
                let mut model_started = Vec::new();
                let expected = self.model.find(key, &mut model_started);
                self.apply(actions);
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
                let Some((slot, ctl, _)) = self.windows.iter().find(|w| w.2 == open).cloned()
                else {
                    return;
                };
                let pass = self.state.window_pass(&slot);
                assert_eq!(pass, self.model.look());
                if pass == Pass::Quiet {
                    ctl.close();
                }
            }
            Step::WindowEnds(i, timer) => {
                if self.windows.is_empty() {
                    return;
                }
                let (slot, ctl, id) = self.windows.remove(i % self.windows.len());
                // Only a closed window or its timer ends a yield window.
                if !ctl.is_closed() && !timer {
                    self.windows.push((slot, ctl, id));
                    return;
                }
                let end = self.state.window_elapsed(&slot, &config, timer);
                match (end, self.model.window_ends(id)) {
                    (WindowEnd::Gone, None) | (WindowEnd::Parked, Some(None)) => {}
                    (WindowEnd::Run(closed), Some(Some(b))) => {
                        assert_eq!(self.id(&closed.slot), b);
                        self.run(closed);
                    }
                    (end, _) => panic!("window end differs from the model: {end:?}"),
                }
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
            Step::LoseWindow(i) => {
                if self.windows.is_empty() {
                    return;
                }
                let (slot, _, id) = self.windows.remove(i % self.windows.len());
                let lost = self.state.abandon_open(&slot);
                assert_eq!(lost.is_some(), self.model.lose_window(id));
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
        assert!(self.running.len() <= self.config.max_concurrent_batches);
        assert_eq!(self.running.len(), self.model.running);
    }

    /// Ends everything: windows close (by their timer when need be), running batches finish.
    fn drain(&mut self) {
        for _ in 0..1000 {
            if let Some(i) = (!self.windows.is_empty()).then_some(0) {
                self.step(Step::WindowEnds(i, true));
            } else if !self.running.is_empty() {
                self.step(Step::Finish(0, 0));
            } else {
                break;
            }
        }
        assert!(self.windows.is_empty() && self.running.is_empty());
        assert_eq!(self.state.stats().in_flight, 0);
        for slot in &self.handed {
            assert!(slot.is_done(), "a caller's batch never completed");
        }
    }
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
            windows: Vec::new(),
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
