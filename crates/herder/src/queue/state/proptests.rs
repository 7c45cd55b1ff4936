//! The runners' lifecycle against a plain model (as `arc-swap/tests/random.rs`): random
//! sequences of registrations (by `set_target`), attaches, parking, wake-ups, exits, losses,
//! closes and the start of a shutdown's aborts, and after each step the same runners alive,
//! parked and waking as the model says.
//!
//! Checked besides: an attach reaches only the runner it was made for, even after that runner
//! exited and its index was reused; once aborting has begun, every live runner has been aborted
//! or is still to be attached (and is then told to abort): no runner escapes a shutdown; at
//! most one runner is waking on behalf of submissions, and a parked runner is always found by
//! the next submission while none is waking; lowering the target wakes only parked runners, and
//! no more than the excess.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::{Attach, RunnerKey, State};

#[derive(Clone, Debug)]
enum Step {
    SetTarget(usize),
    /// The runner at this index (modulo the live runners) found the FIFO empty and parks.
    Park(usize),
    /// ... then saw a job after all.
    Unpark(usize),
    /// A submission looks for a parked runner to wake.
    WakeOne,
    /// The runner at this index is back in its loop (woken, or spuriously).
    Awake(usize),
    /// The runner at this index exits (in excess, or the queue closed and empty).
    Exit(usize),
    Lose(usize),
    Close,
    /// The task of the registered-but-unattached runner at this index is attached.
    Attach(usize),
    /// A shutdown past its deadline collects the abort handles.
    BeginAbort,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (0..5usize).prop_map(Step::SetTarget),
        4 => any::<usize>().prop_map(Step::Park),
        1 => any::<usize>().prop_map(Step::Unpark),
        4 => Just(Step::WakeOne),
        4 => any::<usize>().prop_map(Step::Awake),
        1 => any::<usize>().prop_map(Step::Exit),
        1 => any::<usize>().prop_map(Step::Lose),
        1 => prop_oneof![9 => Just(Step::WakeOne), 1 => Just(Step::Close)],
        3 => any::<usize>().prop_map(Step::Attach),
        1 => prop_oneof![19 => Just(Step::WakeOne), 1 => Just(Step::BeginAbort)],
    ]
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Life {
    parked: bool,
    waking: bool,
}

#[derive(Default)]
struct Model {
    /// Live runners by index: their key and what they do.
    runners: BTreeMap<usize, (RunnerKey, Life)>,
    /// Parked runners, most recent last.
    idle: Vec<usize>,
    target: usize,
    closed: bool,
    aborting: bool,
    /// Keys of runners registered and not attached yet (some may have exited since).
    unattached: Vec<RunnerKey>,
    /// Runners whose abort handle is kept.
    attached: Vec<RunnerKey>,
    /// Runners a shutdown aborted: collected by `begin_abort`, or told by `attach`.
    abort_sent: Vec<RunnerKey>,
}

impl Model {
    fn waking(&self) -> usize {
        self.runners
            .values()
            .filter(|(_, life)| life.waking)
            .count()
    }

    fn pick(&self, i: usize) -> Option<usize> {
        let ids: Vec<usize> = self.runners.keys().copied().collect();
        (!ids.is_empty()).then(|| ids[i % ids.len()])
    }

    /// The runner leaves the idle list and stops waking, as `State::awake` does.
    fn awake(&mut self, id: usize) {
        let life = &mut self.runners.get_mut(&id).unwrap().1;
        if std::mem::take(&mut life.parked) {
            self.idle.retain(|parked| *parked != id);
        }
        life.waking = false;
    }

    /// The state claimed `id` out of the idle list: it must be the most recently parked.
    fn claimed(&mut self, id: usize) -> Result<(), TestCaseError> {
        prop_assert_eq!(
            self.idle.pop(),
            Some(id),
            "claims the most recently parked runner"
        );
        let life = &mut self.runners.get_mut(&id).unwrap().1;
        life.parked = false;
        life.waking = true;
        Ok(())
    }
}

type Lifecycle = State<Option<RunnerKey>>;

fn register(state: &mut Lifecycle, model: &mut Model) -> Result<(), TestCaseError> {
    let key = state.add_runner(None);
    prop_assert!(
        model
            .runners
            .insert(key.id, (key, Life::default()))
            .is_none(),
        "an index in use was handed out"
    );
    model.unattached.push(key);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn the_lifecycle_matches_a_plain_model(
        initial in 1..4usize,
        steps in proptest::collection::vec(step(), 1..150),
    ) {
        let mut state: Lifecycle = State::new(initial);
        let mut model = Model { target: initial, ..Model::default() };
        for _ in 0..initial {
            register(&mut state, &mut model)?;
        }

        for step in steps {
            match step {
                Step::SetTarget(n) => {
                    let (add, wake) = state.set_target(n);
                    model.target = n;
                    let live = model.runners.len();
                    // A closed queue's runners are on their way out: none is added.
                    let expected = if model.closed { 0 } else { n.saturating_sub(live) };
                    prop_assert_eq!(add, expected);
                    prop_assert!(wake.len() <= live.saturating_sub(n), "wakes more than the excess");
                    prop_assert!(
                        wake.len() == live.saturating_sub(n).min(model.idle.len()),
                        "wakes every parked runner it can, up to the excess"
                    );
                    for id in wake {
                        model.claimed(id)?;
                    }
                    for _ in 0..add {
                        register(&mut state, &mut model)?;
                    }
                }
                Step::Park(i) => {
                    let Some(id) = model.pick(i) else { continue };
                    let life = model.runners[&id].1;
                    if life.parked || life.waking {
                        // Only a runner in its loop parks.
                        continue;
                    }
                    state.park(id);
                    model.runners.get_mut(&id).unwrap().1.parked = true;
                    model.idle.push(id);
                }
                Step::Unpark(i) => {
                    let Some(id) = model.pick(i) else { continue };
                    let life = model.runners[&id].1;
                    if !life.parked {
                        continue;
                    }
                    state.unpark(id);
                    model.runners.get_mut(&id).unwrap().1.parked = false;
                    model.idle.retain(|parked| *parked != id);
                }
                Step::WakeOne => {
                    let woke = state.wake_one();
                    if model.waking() > 0 || model.idle.is_empty() {
                        prop_assert_eq!(woke, None, "one waking runner at a time");
                    } else {
                        let Some(id) = woke else {
                            return Err(TestCaseError::fail("a parked runner was left asleep"));
                        };
                        model.claimed(id)?;
                    }
                }
                Step::Awake(i) => {
                    let Some(id) = model.pick(i) else { continue };
                    state.awake(id);
                    model.awake(id);
                }
                Step::Exit(i) => {
                    let Some(id) = model.pick(i) else { continue };
                    let payload = state.exit(id);
                    model.awake(id);
                    let (key, _) = model.runners.remove(&id).unwrap();
                    prop_assert!(payload.is_none() || payload == Some(key));
                }
                Step::Lose(i) => {
                    let Some(id) = model.pick(i) else { continue };
                    let (key, life) = model.runners.remove(&id).unwrap();
                    if life.parked {
                        model.idle.retain(|parked| *parked != id);
                    }
                    let Some((payload, last)) = state.lost(id) else {
                        return Err(TestCaseError::fail("a live runner was not found"));
                    };
                    prop_assert!(payload.is_none() || payload == Some(key));
                    prop_assert_eq!(last, model.runners.is_empty());
                    if last {
                        model.closed = true;
                    }
                    prop_assert!(state.lost(id).is_none(), "lost twice");
                }
                Step::Close => {
                    let wake = state.close();
                    model.closed = true;
                    prop_assert_eq!(wake.len(), model.idle.len(), "close wakes every parked runner");
                    for id in wake {
                        model.claimed(id)?;
                    }
                }
                Step::Attach(i) => {
                    if model.unattached.is_empty() {
                        continue;
                    }
                    let key = model.unattached.remove(i % model.unattached.len());
                    let live = model.runners.get(&key.id).map(|(k, _)| *k) == Some(key);
                    match state.attach(key) {
                        Attach::Keep(payload) => {
                            prop_assert!(live && !model.aborting);
                            prop_assert_eq!(*payload, None, "attached twice");
                            *payload = Some(key);
                            model.attached.push(key);
                        }
                        Attach::AbortNow => {
                            prop_assert!(live && model.aborting);
                            model.abort_sent.push(key);
                        }
                        Attach::Gone => prop_assert!(!live, "a live runner was not attached"),
                    }
                }
                Step::BeginAbort => {
                    let mut collected: Vec<RunnerKey> =
                        state.begin_abort().flatten().copied().collect();
                    model.aborting = true;
                    let mut expected: Vec<RunnerKey> = model
                        .attached
                        .iter()
                        .filter(|key| model.runners.get(&key.id).map(|(k, _)| k) == Some(*key))
                        .copied()
                        .collect();
                    collected.sort_by_key(|key| key.serial);
                    expected.sort_by_key(|key| key.serial);
                    prop_assert_eq!(&collected, &expected);
                    model.abort_sent.extend(collected);
                }
            }

            // No runner escapes a shutdown.
            prop_assert_eq!(state.is_aborting(), model.aborting);
            if model.aborting {
                for (key, _) in model.runners.values() {
                    prop_assert!(
                        model.abort_sent.contains(key) || model.unattached.contains(key),
                        "runner {:?} escapes the shutdown", key
                    );
                }
            }
            prop_assert_eq!(state.runners(), model.runners.len());
            prop_assert_eq!(state.parked(), model.idle.len());
            prop_assert_eq!(state.waking(), model.waking());
            prop_assert_eq!(state.target(), model.target);
            prop_assert_eq!(state.is_closed(), model.closed);
            prop_assert_eq!(state.excess(), model.runners.len() > model.target);
        }
    }
}

/// Regression (issue 11): a runner that exits before its task is attached frees its index; the
/// late attach must not reach the runner that reuses the index (whose own handle it would
/// overwrite, leaving a runner that a shutdown cannot abort).
#[test]
fn a_late_attach_does_not_reach_the_runner_that_reused_the_index() {
    let mut state: Lifecycle = State::new(1);
    let first = state.add_runner(None);
    // The target goes down to 0 and the runner exits before its spawner attaches it...
    state.set_target(0);
    assert!(state.excess());
    state.exit(first.id);
    // ...and another runner takes its index.
    state.set_target(1);
    let second = state.add_runner(None);
    assert_eq!(second.id, first.id);
    match state.attach(second) {
        Attach::Keep(payload) => *payload = Some(second),
        other => panic!("the new runner is attached, not {other:?}"),
    }
    assert!(matches!(state.attach(first), Attach::Gone));
    let kept: Vec<_> = state.begin_abort().copied().collect();
    assert_eq!(kept, [Some(second)]);
}

/// A runner spawned while a shutdown collects the abort handles is attached after the
/// collection: it is told to abort at once.
#[test]
fn a_runner_attached_after_the_collection_is_aborted() {
    let mut state: Lifecycle = State::new(1);
    let key = state.add_runner(None);
    assert_eq!(state.begin_abort().count(), 1);
    assert!(matches!(state.attach(key), Attach::AbortNow));
}

/// After runners park, a submission claims one of them; further submissions leave the waking
/// runner to chain the next wake-up.
#[test]
fn a_submission_claims_a_parked_runner_once() {
    let mut state: Lifecycle = State::new(2);
    let a = state.add_runner(None).id;
    let b = state.add_runner(None).id;
    state.park(a);
    state.park(b);
    assert_eq!(state.wake_one(), Some(b));
    assert_eq!(state.wake_one(), None, "b is waking: it chains");
    state.awake(b);
    assert_eq!(state.wake_one(), Some(a));
    assert_eq!((state.parked(), state.waking()), (0, 1));
}

/// Lowering the target wakes parked runners so that they exit, and never more than needed.
#[test]
fn lowering_the_target_wakes_parked_runners_in_excess() {
    let mut state: Lifecycle = State::new(3);
    let ids: Vec<usize> = (0..3).map(|_| state.add_runner(None).id).collect();
    for id in &ids {
        state.park(*id);
    }
    let (add, wake) = state.set_target(1);
    assert_eq!((add, wake.len()), (0, 2));
    for id in wake {
        state.awake(id);
        assert!(state.excess());
        state.exit(id);
    }
    assert!(!state.excess());
    assert_eq!(state.runners(), 1);
}
