//! loom models of the batch window's wake-up protocol: the close signal ([`WindowCtl`]) against
//! the window task waiting for it, and the whole hand-off over the real scheduler state: an
//! opener that looks and closes, a caller on another thread whose key joins or fills the batch,
//! and the window task that takes the batch to run. In every interleaving the window task wakes
//! (no lost close), the batch runs exactly once with every key, and nothing stays in flight.
//!
//! Run with `RUSTFLAGS="--cfg herder_loom" cargo test -p herder --lib --release batch::loom`.
//! The two models over the whole state run with a preemption bound of 2.

use std::future::poll_fn;

use loom::future::block_on;
use loom::thread;

use super::state::{Actions, Closed, Config, Found, Landed, Pass, State, Window, WindowEnd};
use super::window::WindowCtl;
use crate::sync::{Arc, Mutex, lock};

type St = State<u8, u8, ()>;

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

/// Looks a key up, as `find_all` does: the answer, and what is to be done after the lock.
fn find(state: &Mutex<St>, config: &Config, key: u8) -> (Found<u8, ()>, Actions<u8, u8, ()>) {
    let mut actions = Actions::default();
    let mut state = lock(state);
    let found = state.find(&key, config, None, false, &mut actions);
    if let Some((slot, _)) = &actions.window {
        state.window_opened(slot);
    }
    (found, actions)
}

/// The opener (main thread) opens a batch, another thread's key joins it (or fills it, with a
/// batch size of 2), the opener looks and closes; the window task (a third thread) waits for
/// the close and takes the batch. Exactly one batch runs, with both keys.
fn opener_joiner_and_window(max_batch_size: usize) {
    // Three threads over the whole scheduler state: bound the preemptions (as tokio's own loom
    // tests do with `LOOM_MAX_PREEMPTIONS`) to keep the run in minutes.
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(move || {
        let config = config(max_batch_size);
        let state = Arc::new(Mutex::new(St::new(&config)));
        let (found, actions) = find(&state, &config, 1);
        let Found::Batch(slot, 0) = found else {
            panic!("the first key opens a batch")
        };
        let (_, ctl) = actions.window.expect("a window opens");

        let window = {
            let (state, ctl, slot) = (state.clone(), ctl.clone(), slot.clone());
            thread::spawn(move || {
                block_on(poll_fn(|cx| ctl.poll_closed(cx)));
                let end = lock(&state).window_elapsed(&slot, &config, false);
                match end {
                    WindowEnd::Run(closed) => Some(closed.keys),
                    WindowEnd::Gone => None,
                    WindowEnd::Parked => panic!("no batch runs, a slot is free"),
                }
            })
        };
        let joiner = {
            let state = state.clone();
            thread::spawn(move || {
                let (_, actions) = find(&state, &config, 2);
                for ctl in &actions.dismiss {
                    ctl.close();
                }
                let opened = actions.window.is_some();
                (actions.run.into_iter().map(|c| c.keys).next(), opened)
            })
        };
        // The opener's looks, each after a scheduler pass: while keys arrive, one more pass.
        let mut pass = lock(&state).window_pass(&slot);
        while pass == Pass::Grew {
            pass = lock(&state).window_pass(&slot);
        }
        if pass == Pass::Quiet {
            ctl.close();
        }
        let ran_by_window = window.join().unwrap();
        let (ran_by_joiner, opened_another) = joiner.join().unwrap();
        let ran: Vec<Vec<u8>> = ran_by_window.into_iter().chain(ran_by_joiner).collect();
        assert_eq!(ran.len(), 1, "the batch runs exactly once");
        let mut state = lock(&state);
        assert_eq!(state.stats().batches, 1);
        let keys = ran[0].clone();
        if opened_another {
            // Key 2 came after the batch closed: it waits in the next batch.
            assert_eq!(keys, vec![1]);
        } else {
            assert_eq!(keys, vec![1, 2]);
        }
        assert_eq!(state.stats().in_flight, 2);
        let values: Vec<Option<u8>> = keys.iter().map(|k| Some(*k)).collect();
        let closed = Closed {
            slot,
            keys,
            tickets: Vec::new(),
        };
        state.finished(&closed, &Ok(Landed::Done(Ok(values.into()))), &config);
        assert_eq!(state.stats().in_flight, usize::from(opened_another));
    });
}

#[test]
fn a_key_joining_while_the_opener_closes_runs_in_exactly_one_batch() {
    opener_joiner_and_window(usize::MAX);
}

#[test]
fn a_key_filling_the_batch_while_the_opener_closes_runs_it_exactly_once() {
    opener_joiner_and_window(2);
}
