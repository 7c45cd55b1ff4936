//! loom models of the batch window's wake-up protocol.
//!
//! A yield window has no task: its opener looks and closes it from its own task, a caller on
//! another thread may fill it, the loader's janitor may close it (its timer modelled as "at any
//! moment"), and whoever takes the batch runs it and completes its slot, which wakes the
//! callers waiting on other threads. In every interleaving: every caller's wait ends (no lost
//! wake-up on any thread), the batch runs exactly once with every key that joined it, the
//! janitor counts only the windows it closed, and nothing stays in flight.
//!
//! With a memo, a load looks at it without the loader's lock first (`Memo::hit`), and writers
//! (a batch's end, `clear`, `prime`) write it under the lock: the last models race a write, the
//! end of a batch and such a load, and check that a load started after `clear` (`prime`)
//! returned never sees the old value (always sees the primed one), and that the stats count it
//! exactly.
//!
//! A delay window keeps a window task and its close signal ([`WindowCtl`]): the first two
//! models check that a close (a batch that filled up) always wakes it.
//!
//! Run with `RUSTFLAGS="--cfg herder_loom" cargo test -p herder --lib --release batch::loom`.
//! The models over the whole state run with a preemption bound of 2.

use std::future::poll_fn;
use std::sync::atomic::Ordering::SeqCst;

use loom::future::block_on;
use loom::thread;

use super::state::{
    Actions, BatchSlot, Closed, Config, Found, Landed, Pass, State, Sweep, Window, WindowEnd,
};
use super::window::WindowCtl;
use crate::flight::Waiter;
use crate::sync::{Arc, AtomicBool, Mutex, lock};

type St = State<u8, u8, ()>;
type Batch = Closed<u8, u8, ()>;

fn config(max_batch_size: usize) -> Config {
    Config {
        window: Window::Yield,
        max_batch_size,
        max_concurrent_batches: 1,
        memo: false,
        load_timeout: None,
    }
}

#[test]
fn a_close_from_another_thread_always_wakes_the_window_task() {
    loom::model(|| {
        let ctl = Arc::new(WindowCtl::new());
        let closer = ctl.clone();
        let t = thread::spawn(move || closer.close());
        block_on(poll_fn(|cx| ctl.poll_closed(cx)));
        assert!(ctl.is_closed());
        t.join().unwrap();
    });
}

#[test]
fn closes_from_two_threads_wake_the_window_task_once_it_waits() {
    loom::model(|| {
        let ctl = Arc::new(WindowCtl::new());
        let a = ctl.clone();
        let b = ctl.clone();
        let ta = thread::spawn(move || a.close());
        let tb = thread::spawn(move || b.close());
        block_on(poll_fn(|cx| ctl.poll_closed(cx)));
        ta.join().unwrap();
        tb.join().unwrap();
    });
}

/// What one lookup did.
struct Looked {
    found: Found<u8, ()>,
    actions: Actions<u8, u8, ()>,
    /// It opened a window and did not fill it: its caller drives it.
    opened: bool,
    /// The janitor to start, if none watched the open window.
    janitor: Option<u64>,
}

/// Looks a key up, as `find_all` does.
fn find(state: &Mutex<St>, config: &Config, key: u8) -> Looked {
    let mut actions = Actions::default();
    let mut state = lock(state);
    let found = state.find(&key, config, None, false, &mut actions);
    let opened = match &actions.window {
        Some((slot, _)) => state.window_opened(slot, None),
        None => false,
    };
    Looked {
        found,
        actions,
        opened,
        janitor: state.needs_janitor(None),
    }
}

/// Runs a batch as `dispatch::run` does: the loader answers `key * 10`, the state is told, the
/// slot completes (waking its callers), then the batch that waited for the slot, if any.
/// Returns the keys of each batch run.
fn run(state: &Mutex<St>, config: &Config, batch: Batch) -> Vec<Vec<u8>> {
    let mut ran = Vec::new();
    let mut next = Some(batch);
    while let Some(batch) = next {
        let values: Vec<Option<u8>> = batch.keys.iter().map(|k| Some(k * 10)).collect();
        let outcome = Ok(Landed::Done(Ok(values.into())));
        next = lock(state).finished(&batch, &outcome, config);
        assert!(batch.slot.complete(outcome), "a batch completes once");
        ran.push(batch.keys);
    }
    ran
}

/// An opener's yield window, as `future::Driving` drives it: a look after each scheduler pass,
/// one more pass while keys arrive, a close at the first quiet pass (or at once: the opener is
/// dropped). Returns the keys of the batches it ran.
fn drive(
    state: &Mutex<St>,
    config: &Config,
    slot: &BatchSlot<u8, ()>,
    dropped: bool,
) -> Vec<Vec<u8>> {
    if !dropped {
        loop {
            let pass = lock(state).window_pass(slot);
            match pass {
                Pass::Grew => continue,
                Pass::Quiet => break,
                Pass::Gone => return Vec::new(),
            }
        }
    }
    let end = lock(state).window_elapsed(slot, config, false);
    match end {
        WindowEnd::Run(batch) => run(state, config, batch),
        // Every slot busy: the batch running now takes it next (`run`).
        WindowEnd::Parked | WindowEnd::Gone => Vec::new(),
    }
}

/// The opener (main thread) opens a batch and drives its window (or is dropped at once); a
/// caller on a second thread asks for key 2 and waits for it (joining the batch, filling it
/// with a batch size of 2, or opening the next batch, which it then drives itself); the
/// janitor (a third thread) looks twice, as if a period passed before each look. Exactly one
/// run per batch, every wait ends with its value, and the janitor counts what it closed.
fn opener_caller_and_janitor(max_batch_size: usize, opener_dropped: bool) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(move || {
        let config = config(max_batch_size);
        let state = Arc::new(Mutex::new(St::new(&config)));
        let first = find(&state, &config, 1);
        let Found::Batch(slot, 0) = first.found else {
            panic!("the first key opens a batch")
        };
        assert!(first.opened, "a yield window stays open");
        let janitor_id = first.janitor.expect("its opening starts the janitor");
        let opener_waits = Waiter::new(slot.clone());

        let janitor = {
            let state = state.clone();
            thread::spawn(move || {
                let (mut ran, mut closed) = (Vec::new(), 0);
                for _ in 0..2 {
                    let sweep = lock(&state).sweep(janitor_id, &config);
                    match sweep {
                        Sweep::Run(batch) => {
                            closed += 1;
                            ran.extend(run(&state, &config, batch));
                        }
                        Sweep::Parked => closed += 1,
                        Sweep::Watch => {}
                        Sweep::Retire => break,
                    }
                }
                (ran, closed)
            })
        };
        let caller = {
            let state = state.clone();
            thread::spawn(move || {
                let looked = find(&state, &config, 2);
                let Found::Batch(its_slot, position) = looked.found else {
                    panic!("key 2 goes to a batch")
                };
                let mut ran: Vec<Vec<u8>> = Vec::new();
                for batch in looked.actions.run {
                    ran.extend(run(&state, &config, batch));
                }
                if looked.opened {
                    // Key 2 came after the first batch closed: it opened the next one and
                    // drives it (a janitor it started, the first having retired, is not run).
                    ran.extend(drive(&state, &config, &its_slot, false));
                }
                // The wait: woken by whichever thread ran the batch.
                let outcome = block_on(Waiter::new(its_slot)).expect("the batch ran");
                let Landed::Done(Ok(values)) = outcome else {
                    panic!("the loader answered")
                };
                assert_eq!(values[position], Some(20));
                ran
            })
        };
        let by_opener = drive(&state, &config, &slot, opener_dropped);
        let (by_janitor, janitor_closed) = janitor.join().unwrap();
        let by_caller = caller.join().unwrap();
        // The opener's own wait ends too.
        let outcome = block_on(opener_waits).expect("the batch ran");
        let Landed::Done(Ok(values)) = outcome else {
            panic!("the loader answered")
        };
        assert_eq!(values[0], Some(10));

        let mut ran: Vec<Vec<u8>> = by_opener;
        ran.extend(by_janitor);
        ran.extend(by_caller);
        ran.sort();
        let mut keys: Vec<u8> = ran.concat();
        keys.sort_unstable();
        assert_eq!(keys, vec![1, 2], "every key runs exactly once: {ran:?}");
        let state = lock(&state);
        let stats = state.stats();
        assert_eq!(stats.batches, ran.len() as u64);
        assert_eq!(stats.unattended_windows, janitor_closed);
        assert_eq!(stats.in_flight, 0);
    });
}

#[test]
fn a_key_joining_while_the_opener_closes_runs_in_exactly_one_batch() {
    opener_caller_and_janitor(usize::MAX, false);
}

#[test]
fn a_key_filling_the_batch_while_the_opener_closes_runs_it_exactly_once() {
    opener_caller_and_janitor(2, false);
}

#[test]
fn a_dropped_opener_hands_its_batch_on_whoever_else_is_closing_it() {
    opener_caller_and_janitor(usize::MAX, true);
}

/// What a load (as `load` makes it) of key 1 found, in the memo models.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// The memo, without the lock.
    Fast(Option<u8>),
    /// The memo, looked at again under the lock.
    Locked(Option<u8>),
    /// The running batch (joined), or a new one.
    Batch { old: bool },
}

/// A batch of key 1 is running; a thread writes key 1 (`clear`, or `prime` to 7) and raises a
/// flag; another ends the batch (the loader answers 10), as `dispatch::run` does; the main
/// thread reads the flag, then loads key 1 as `load` does (the memo without the lock, then the
/// lock). A load started after the write returned sees the write; the end is the same in
/// every interleaving (nothing memoized after a clear: the batch was running; the primed value
/// after a prime: it wins over the batch's); the stats count every request and memo hit once.
fn a_write_the_end_of_a_batch_and_a_load_race(prime: bool) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(move || {
        let config = Config {
            memo: true,
            ..config(usize::MAX)
        };
        let state = Arc::new(Mutex::new(St::new(&config)));
        let memo = lock(&state).memo().expect("memo(true)").clone();
        let first = find(&state, &config, 1);
        let Found::Batch(slot, 0) = first.found else {
            panic!("the first key opens a batch")
        };
        let WindowEnd::Run(batch) = lock(&state).window_elapsed(&slot, &config, false) else {
            panic!("a free slot: the batch runs")
        };

        let written = Arc::new(AtomicBool::new(false));
        let writer = {
            let (state, written) = (state.clone(), written.clone());
            thread::spawn(move || {
                if prime {
                    lock(&state).prime(1, 7);
                } else {
                    lock(&state).clear(&1);
                }
                written.store(true, SeqCst);
            })
        };
        let runner = {
            let state = state.clone();
            thread::spawn(move || run(&state, &config, batch))
        };

        let after_write = written.load(SeqCst);
        let seen = match memo.hit(&1) {
            Some(value) => Seen::Fast(value),
            None => match find(&state, &config, 1).found {
                Found::Memo(value) => Seen::Locked(value),
                Found::Batch(its, _) => Seen::Batch {
                    old: Arc::ptr_eq(&its, &slot),
                },
                Found::Flight(_) => unreachable!("no cache in front"),
            },
        };
        match (prime, after_write, &seen) {
            (true, true, Seen::Fast(value) | Seen::Locked(value)) => assert_eq!(*value, Some(7)),
            (true, true, seen) => panic!("a load after the prime returned missed it: {seen:?}"),
            (false, true, Seen::Batch { old: false }) => {}
            (false, true, seen) => panic!("a load after the clear returned saw the old: {seen:?}"),
            (_, false, Seen::Fast(value) | Seen::Locked(value)) => {
                assert!(matches!(value, Some(7 | 10)), "{value:?}");
            }
            (_, false, Seen::Batch { .. }) => {}
        }

        writer.join().unwrap();
        assert_eq!(runner.join().unwrap(), vec![vec![1]], "the batch ran once");
        let state = lock(&state);
        assert_eq!(memo.get(&1), prime.then_some(Some(7)));
        let stats = state.stats();
        let hits = matches!(seen, Seen::Fast(_) | Seen::Locked(_));
        assert_eq!(stats.requests, 2);
        assert_eq!(stats.memo_hits, u64::from(hits));
        assert_eq!(stats.memoized, usize::from(prime));
    });
}

#[test]
fn a_load_started_after_clear_returned_never_sees_the_old_value() {
    a_write_the_end_of_a_batch_and_a_load_race(false);
}

#[test]
fn a_load_started_after_prime_returned_sees_the_primed_value() {
    a_write_the_end_of_a_batch_and_a_load_race(true);
}
