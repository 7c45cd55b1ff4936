//! loom models of the batch window's wake-up protocol.
//!
//! A yield window has no task: its opener looks and closes it from its own task, a caller on
//! another thread may fill it, the loader's janitor may close it (its timer modelled as "at any
//! moment"), and whoever takes the batch runs it and completes its slot, which wakes the
//! callers waiting on other threads. In every interleaving: every caller's wait ends (no lost
//! wake-up on any thread), the batch runs exactly once with every key that joined it, the
//! janitor counts only the windows it closed, and nothing stays in flight.
//!
//! A delay window keeps a window task and its close signal ([`WindowCtl`]): the first two
//! models check that a close (a batch that filled up) always wakes it.
//!
//! Run with `RUSTFLAGS="--cfg herder_loom" cargo test -p herder --lib --release batch::loom`.
//! The models over the whole state run with a preemption bound of 2.

use std::future::poll_fn;

use loom::future::block_on;
use loom::thread;

use super::state::{
    Actions, BatchSlot, Closed, Config, Found, Landed, Pass, State, Sweep, Window, WindowEnd,
};
use super::window::WindowCtl;
use crate::flight::Waiter;
use crate::sync::{Arc, Mutex, lock};

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
        janitor: state.needs_janitor(),
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
