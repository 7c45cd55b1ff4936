//! The queue's state machine against a plain model (as `arc-swap/tests/random.rs`): random
//! sequences of pushes, removals, runner steps, resizes, closes and lost runners, and after each
//! step the same jobs queued, the same jobs started in the same order, and the cap respected.
//! The runner lifecycle runs alongside: runners are registered, then attached (their abort
//! handle kept) at any later step, possibly after they exited and their index was reused, and a
//! shutdown may start aborting at any step. Checked: an attach reaches only the runner it was
//! made for, and once aborting has begun every live runner is aborted or still to be attached
//! (and then told to abort): no runner escapes a shutdown.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;

use super::{Attach, End, Next, RunnerKey, State};

#[derive(Clone, Debug)]
enum Step {
    Push,
    /// Remove the queued job at this index (modulo the queue length), as a dropped handle.
    Remove(usize),
    /// A handle dropped after its job started, or twice: removes nothing.
    RemoveStarted(usize),
    /// Runner at this index (modulo the live runners) asks what next: ends its job if it runs one.
    Advance(usize, u8),
    SetTarget(usize),
    AddRunners,
    Close,
    TakeQueued,
    Lose(usize),
    /// The task of the registered-but-unattached runner at this index is attached.
    Attach(usize),
    /// A shutdown past its deadline collects the abort handles.
    BeginAbort,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Push),
        1 => any::<usize>().prop_map(Step::Remove),
        1 => any::<usize>().prop_map(Step::RemoveStarted),
        5 => (any::<usize>(), 0..3u8).prop_map(|(r, e)| Step::Advance(r, e)),
        1 => (1..5usize).prop_map(Step::SetTarget),
        1 => Just(Step::AddRunners),
        1 => prop_oneof![19 => Just(None), 1 => Just(Some(Step::Close))]
            .prop_map(|s| s.unwrap_or(Step::Push)),
        1 => prop_oneof![19 => Just(None), 1 => Just(Some(Step::TakeQueued))]
            .prop_map(|s| s.unwrap_or(Step::Push)),
        1 => prop_oneof![9 => Just(None), 1 => any::<usize>().prop_map(|i| Some(Step::Lose(i)))]
            .prop_map(|s| s.unwrap_or(Step::Push)),
        3 => any::<usize>().prop_map(Step::Attach),
        1 => prop_oneof![29 => Just(None), 1 => Just(Some(Step::BeginAbort))]
            .prop_map(|s| s.unwrap_or(Step::Push)),
    ]
}

/// What the model knows about a runner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Doing {
    Idle,
    Running(u64),
}

#[derive(Default)]
struct Model {
    queued: VecDeque<u64>,
    /// Sequence numbers of started jobs, in start order.
    started: Vec<u64>,
    runners: BTreeMap<usize, Doing>,
    target: usize,
    closed: bool,
    completed: u64,
    panicked: u64,
    timed_out: u64,
    aborted: u64,
    cancelled: u64,
    removed: BTreeSet<u64>,
    /// The key of each live runner.
    keys: BTreeMap<usize, RunnerKey>,
    /// Keys of runners registered and not attached yet (some may have exited since).
    unattached: Vec<RunnerKey>,
    /// Runners whose abort handle is kept.
    attached: Vec<RunnerKey>,
    /// Runners a shutdown aborted: collected by `begin_abort`, or told by `attach`.
    abort_sent: Vec<RunnerKey>,
    aborting: bool,
}

/// The state machine registers a runner, as `set_runners` does; the model follows.
fn register(state: &mut State<u64, Option<RunnerKey>>, model: &mut Model) {
    let key = state.add_runner(None);
    assert_eq!(
        model.keys.insert(key.id, key),
        None,
        "an index in use was handed out"
    );
    model.runners.insert(key.id, Doing::Idle);
    model.unattached.push(key);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_state_machine_matches_a_plain_model(
        initial in 1..4usize,
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let mut state: State<u64, Option<RunnerKey>> = State::new(initial);
        let mut model = Model { target: initial, ..Model::default() };
        for _ in 0..initial {
            register(&mut state, &mut model);
        }
        let mut next_job = 0u64;

        for step in steps {
            match step {
                Step::Push => {
                    let job = next_job;
                    match state.push(job) {
                        Ok((seq, _wake)) => {
                            prop_assert!(!model.closed);
                            // Jobs are numbered from 0 in push order, so their sequence number is
                            // the job itself.
                            prop_assert_eq!(seq, job);
                            model.queued.push_back(job);
                            next_job += 1;
                        }
                        Err(back) => {
                            prop_assert!(model.closed);
                            prop_assert_eq!(back, job);
                        }
                    }
                }
                Step::Remove(i) => {
                    if model.queued.is_empty() {
                        continue;
                    }
                    let seq = model.queued.remove(i % model.queued.len()).unwrap();
                    prop_assert_eq!(state.remove(seq), Some(seq));
                    model.cancelled += 1;
                    model.removed.insert(seq);
                }
                Step::RemoveStarted(i) => {
                    let done: Vec<u64> = model.started.iter().chain(&model.removed).copied().collect();
                    if done.is_empty() {
                        continue;
                    }
                    prop_assert_eq!(state.remove(done[i % done.len()]), None);
                }
                Step::Advance(r, e) => {
                    if model.runners.is_empty() {
                        continue;
                    }
                    let ids: Vec<usize> = model.runners.keys().copied().collect();
                    let id = ids[r % ids.len()];
                    let end = [End::Completed, End::Panicked, End::TimedOut][e as usize];
                    let finished = match model.runners[&id] {
                        Doing::Running(_) => {
                            match end {
                                End::Completed => model.completed += 1,
                                End::Panicked => model.panicked += 1,
                                End::TimedOut => model.timed_out += 1,
                            }
                            model.runners.insert(id, Doing::Idle);
                            Some(end)
                        }
                        Doing::Idle => None,
                    };
                    let running_before = model.runners.values().filter(|d| **d != Doing::Idle).count();
                    match state.next(id, finished) {
                        Next::Run(job, _wake) => {
                            prop_assert!(model.runners.len() <= model.target);
                            // The cap: a job starts only while fewer than `target` run.
                            prop_assert!(running_before < model.target);
                            let expected = model.queued.pop_front();
                            prop_assert_eq!(Some(job), expected, "FIFO order");
                            model.started.push(job);
                            model.runners.insert(id, Doing::Running(job));
                        }
                        Next::Park => {
                            prop_assert!(model.queued.is_empty() && !model.closed);
                            prop_assert!(model.runners.len() <= model.target);
                        }
                        Next::Exit(_wake) => {
                            prop_assert!(
                                model.runners.len() > model.target
                                    || (model.closed && model.queued.is_empty())
                            );
                            model.runners.remove(&id);
                            model.keys.remove(&id);
                        }
                    }
                }
                Step::SetTarget(n) => {
                    let (add, _wake) = state.set_target(n);
                    model.target = n;
                    // A closed queue's runners are on their way out: none is added.
                    let expected = if model.closed { 0 } else { n.saturating_sub(model.runners.len()) };
                    prop_assert_eq!(add, expected);
                    for _ in 0..add {
                        register(&mut state, &mut model);
                    }
                }
                Step::AddRunners => {
                    // `set_target` to the same value tops the runners up after losses.
                    let (add, _) = state.set_target(model.target);
                    let expected = if model.closed { 0 } else { model.target.saturating_sub(model.runners.len()) };
                    prop_assert_eq!(add, expected);
                    for _ in 0..add {
                        register(&mut state, &mut model);
                    }
                }
                Step::Attach(i) => {
                    if model.unattached.is_empty() {
                        continue;
                    }
                    let key = model.unattached.remove(i % model.unattached.len());
                    let live = model.keys.get(&key.id) == Some(&key);
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
                    let mut collected: Vec<RunnerKey> = state.begin_abort().flatten().copied().collect();
                    model.aborting = true;
                    let mut expected: Vec<RunnerKey> = model
                        .attached
                        .iter()
                        .filter(|key| model.keys.get(&key.id) == Some(*key))
                        .copied()
                        .collect();
                    collected.sort_by_key(|key| key.serial);
                    expected.sort_by_key(|key| key.serial);
                    prop_assert_eq!(&collected, &expected);
                    model.abort_sent.extend(collected);
                }
                Step::Close => {
                    let _wake = state.close();
                    model.closed = true;
                }
                Step::TakeQueued => {
                    let taken = state.take_queued();
                    let expected: Vec<u64> = model.queued.drain(..).collect();
                    model.cancelled += expected.len() as u64;
                    prop_assert_eq!(taken, expected);
                }
                Step::Lose(i) => {
                    if model.runners.is_empty() {
                        continue;
                    }
                    let ids: Vec<usize> = model.runners.keys().copied().collect();
                    let id = ids[i % ids.len()];
                    if let Some(Doing::Running(_)) = model.runners.remove(&id) {
                        model.aborted += 1;
                    }
                    model.keys.remove(&id);
                    let (lost, _wake) = state.lost(id);
                    if model.runners.is_empty() {
                        model.closed = true;
                        let expected: Vec<u64> = model.queued.drain(..).collect();
                        model.cancelled += expected.len() as u64;
                        prop_assert_eq!(lost, expected);
                    } else {
                        prop_assert!(lost.is_empty());
                    }
                }
            }

            // No runner escapes a shutdown: once aborting, each live runner has been aborted or
            // has yet to be attached (and will be told to abort then).
            prop_assert_eq!(state.is_aborting(), model.aborting);
            if model.aborting {
                for key in model.keys.values() {
                    prop_assert!(
                        model.abort_sent.contains(key) || model.unattached.contains(key),
                        "runner {:?} escapes the shutdown", key
                    );
                }
            }

            let running = model.runners.values().filter(|d| **d != Doing::Idle).count();
            // No queued job waits while runners sleep and none of them is being woken.
            let (parked, waking) = state.parked_and_waking();
            prop_assert!(
                model.queued.is_empty() || parked == 0 || waking > 0,
                "{} queued, {parked} parked, none waking", model.queued.len()
            );
            prop_assert_eq!(state.queued(), model.queued.len());
            prop_assert_eq!(state.running(), running);
            prop_assert_eq!(state.runners(), model.runners.len());
            prop_assert_eq!(state.target(), model.target);
            prop_assert_eq!(state.is_closed(), model.closed);
            prop_assert_eq!(state.is_idle(), model.queued.is_empty() && running == 0);
            let counters = state.counters();
            prop_assert_eq!(
                (counters.completed, counters.panicked, counters.timed_out, counters.aborted, counters.cancelled),
                (model.completed, model.panicked, model.timed_out, model.aborted, model.cancelled)
            );
            // Every job pushed is queued, started or cancelled, exactly once.
            prop_assert_eq!(
                model.queued.len() as u64 + model.started.len() as u64 + model.cancelled,
                next_job
            );
        }
    }
}

/// After runners park, a push claims one of them; further pushes wait for it to take its job,
/// and it then wakes the next parked runner.
#[test]
fn a_push_claims_a_parked_runner_once() {
    let mut state: State<u8, ()> = State::new(2);
    let a = state.add_runner(()).id;
    let b = state.add_runner(()).id;
    assert!(matches!(state.next(a, None), Next::Park));
    assert!(matches!(state.next(b, None), Next::Park));
    // A spurious step does not park a runner twice.
    assert!(matches!(state.next(b, None), Next::Park));
    let (_, first) = state.push(1).unwrap();
    // One runner is waking up: the next pushes do not wake another yet.
    let (_, second) = state.push(2).unwrap();
    let (_, third) = state.push(3).unwrap();
    assert_eq!((second, third), (None, None));
    // The woken runner takes a job and, jobs being left, claims the other parked runner.
    let woken = first.unwrap();
    let Next::Run(1, Some(chained)) = state.next(woken, None) else {
        panic!("the woken runner runs job 1 and wakes the other runner")
    };
    assert_ne!(chained, woken);
    assert!([a, b].contains(&chained));
    // That one takes job 2; no parked runner is left to wake.
    assert!(matches!(state.next(chained, None), Next::Run(2, None)));
}

/// Lowering the target wakes parked runners so that they exit, and never more than needed.
#[test]
fn lowering_the_target_wakes_parked_runners_in_excess() {
    let mut state: State<u8, ()> = State::new(3);
    let ids: Vec<usize> = (0..3).map(|_| state.add_runner(()).id).collect();
    for id in &ids {
        assert!(matches!(state.next(*id, None), Next::Park));
    }
    let (add, wake) = state.set_target(1);
    assert_eq!((add, wake.len()), (0, 2));
    for id in wake {
        assert!(matches!(state.next(id, None), Next::Exit(None)));
    }
    assert_eq!(state.runners(), 1);
}

/// Regression: runners woken to exit (the target went down) held back the wake-up of a push;
/// the last of them must wake a parked runner for the queued job.
#[test]
fn runners_woken_to_exit_hand_the_wake_up_on() {
    let mut state: State<u8, ()> = State::new(3);
    let ids: Vec<usize> = (0..3).map(|_| state.add_runner(()).id).collect();
    for id in &ids {
        assert!(matches!(state.next(*id, None), Next::Park));
    }
    let (_, exiting) = state.set_target(1);
    let (_, wake) = state.push(7).unwrap();
    assert_eq!(
        wake, None,
        "a runner is waking: the push does not wake another"
    );
    assert!(matches!(state.next(exiting[0], None), Next::Exit(None)));
    let Next::Exit(Some(next)) = state.next(exiting[1], None) else {
        panic!("the last exiting runner must wake the parked one")
    };
    assert!(matches!(state.next(next, None), Next::Run(7, None)));
}

/// Regression (issue 11): a runner that exits before its task is attached frees its index; the
/// late attach must not reach the runner that reuses the index (whose own handle it would
/// overwrite, leaving a runner that a shutdown cannot abort).
#[test]
fn a_late_attach_does_not_reach_the_runner_that_reused_the_index() {
    let mut state: State<u64, Option<RunnerKey>> = State::new(1);
    let first = state.add_runner(None);
    // The target goes down to 0 and the runner exits before its spawner attaches it...
    state.set_target(0);
    assert!(matches!(state.next(first.id, None), Next::Exit(None)));
    // ...and another runner takes its index.
    state.set_target(1);
    let second = state.add_runner(None);
    assert_eq!(second.id, first.id);
    assert!(matches!(state.attach(second), Attach::Keep(_)));
    if let Attach::Keep(payload) = state.attach(second) {
        *payload = Some(second);
    }
    assert!(matches!(state.attach(first), Attach::Gone));
    let kept: Vec<_> = state.begin_abort().copied().collect();
    assert_eq!(kept, [Some(second)]);
}

/// A runner spawned while a shutdown collects the abort handles is attached after the
/// collection: it is told to abort at once.
#[test]
fn a_runner_attached_after_the_collection_is_aborted() {
    let mut state: State<u64, Option<RunnerKey>> = State::new(1);
    let key = state.add_runner(None);
    assert_eq!(state.begin_abort().count(), 1);
    assert!(matches!(state.attach(key), Attach::AbortNow));
}
