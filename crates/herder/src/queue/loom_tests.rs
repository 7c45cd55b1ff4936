//! loom models of the queue's protocols:
//!
//! * **No lost wake-up**: a submission racing a runner that finds the FIFO empty. Either the
//!   runner takes the job, or it parks and the submission claims it for a wake-up: never a
//!   queued job next to a runner asleep with nobody to wake it.
//! * **No exit under a submission**: a close racing a submission and a runner. If the
//!   submission is accepted, the runner does not exit before taking the job.
//! * **Held off, still reachable**: a runner held off by a recovering line parks where a close
//!   reaches it, so that an empty queue drains while the line recovers.
//! * **Runner lifecycle**: registering and attaching a runner (as `set_runners` does around
//!   the spawn) racing the runner's exit and a shutdown collecting the abort handles. No
//!   runner escapes the shutdown, and an attach never reaches a runner that reused the index.
//!
//! Run with `RUSTFLAGS="--cfg herder_loom" cargo test -p herder --lib --release queue::loom`.

use std::future::{Ready, ready};

use loom::thread;

use super::core::{Config, Core, Idle, NewRunner};
use super::job::{Cell, SendJob, Sendable};
use super::state::{Attach, RunnerKey, State};
use crate::sync::{Arc, Mutex, lock};

type Queue = Core<SendJob>;

fn queue() -> (Arc<Queue>, NewRunner) {
    let (core, mut new) = Core::new(Config {
        runners: 1,
        capacity: None,
        timeout: None,
        gates: Vec::new(),
        name: None,
    });
    (Arc::new(core), new.pop().unwrap())
}

fn job() -> Ready<()> {
    ready(())
}

fn erase(op: Ready<()>) -> std::sync::Arc<SendJob> {
    std::sync::Arc::new(Cell::<_, Sendable>::new(op))
}

/// What a runner did in one pass: took the job, parked, or exited.
#[derive(Debug, PartialEq, Eq)]
enum Pass {
    Took,
    Parked,
    Exited,
}

/// One pass of the runner loop (`runner::run` without the task around it).
fn runner_pass(core: &Queue, (key, _, counts): &NewRunner) -> Pass {
    loop {
        if core.next_job(counts).is_some() {
            return Pass::Took;
        }
        match core.idle(key.id, false) {
            Idle::Retry => continue,
            Idle::Wait => return Pass::Parked,
            Idle::Exit => return Pass::Exited,
        }
    }
}

#[test]
fn a_submission_racing_a_runner_going_idle_is_never_left_unseen() {
    loom::model(|| {
        let (core, runner) = queue();
        let submitter = {
            let core = core.clone();
            thread::spawn(move || assert!(core.push(job(), erase).is_ok()))
        };
        let pass = runner_pass(&core, &runner);
        submitter.join().unwrap();
        let (parked, waking) = core.lifecycle();
        match pass {
            Pass::Took => {}
            // Parked: the submission must have claimed it for a wake-up.
            Pass::Parked => assert_eq!((parked, waking), (0, 1), "a parked runner was left asleep"),
            Pass::Exited => panic!("the runner exited from an open queue"),
        }
    });
}

#[test]
fn a_runner_does_not_exit_under_an_accepted_submission() {
    loom::model(|| {
        let (core, runner) = queue();
        let submitter = {
            let core = core.clone();
            thread::spawn(move || core.push(job(), erase).is_ok())
        };
        let closer = {
            let core = core.clone();
            thread::spawn(move || core.close())
        };
        let pass = runner_pass(&core, &runner);
        let accepted = submitter.join().unwrap();
        closer.join().unwrap();
        let (_, waking) = core.lifecycle();
        match pass {
            Pass::Took => assert!(accepted),
            // Woken later: either by the submission, or by the close (then it takes the job,
            // or exits if there is none).
            Pass::Parked => assert_eq!(waking, 1, "a parked runner was left asleep"),
            Pass::Exited => assert!(!accepted, "the runner exited under an accepted job"),
        }
    });
}

/// A runner held off by a recovering line parks where `close` reaches it: closing an empty
/// queue wakes it (or it sees the close and exits), so `drain` never waits on the line.
#[test]
fn a_runner_held_off_by_a_line_is_reached_by_close() {
    loom::model(|| {
        let (core, (key, _, _)) = queue();
        let closer = {
            let core = core.clone();
            thread::spawn(move || core.close())
        };
        let pass = match core.idle(key.id, true) {
            Idle::Retry => panic!("a held-off runner never retries"),
            Idle::Wait => Pass::Parked,
            Idle::Exit => Pass::Exited,
        };
        closer.join().unwrap();
        let (_, waking) = core.lifecycle();
        if pass == Pass::Parked {
            assert_eq!(waking, 1, "close left a held-off runner asleep");
        }
    });
}

#[test]
fn no_runner_escapes_a_shutdown_whatever_the_order_of_attach_exit_and_abort() {
    loom::model(|| {
        let state: Arc<Mutex<State<Option<RunnerKey>>>> = Arc::new(Mutex::new(State::new(1)));
        // `set_runners`: register, (spawn), attach.
        let key = lock(&state).add_runner(None);
        let spawner = {
            let state = state.clone();
            thread::spawn(move || match lock(&state).attach(key) {
                Attach::Keep(payload) => {
                    *payload = Some(key);
                    None
                }
                Attach::AbortNow => Some(true),
                Attach::Gone => Some(false),
            })
        };
        // The runner's task: it may exit (the target went down) before it is attached.
        let runner = {
            let state = state.clone();
            thread::spawn(move || {
                let mut state = lock(&state);
                state.set_target(0);
                if state.excess() {
                    state.exit(key.id);
                }
            })
        };
        // A shutdown past its deadline.
        let collected: Vec<RunnerKey> = lock(&state).begin_abort().flatten().copied().collect();
        let told = spawner.join().unwrap();
        runner.join().unwrap();
        let exited = lock(&state).runners() == 0;
        let aborted = collected.contains(&key) || told == Some(true);
        assert!(exited || aborted, "a live runner escaped the shutdown");
        if told == Some(false) {
            assert!(exited, "attach found no runner, yet it is alive");
        }
    });
}
