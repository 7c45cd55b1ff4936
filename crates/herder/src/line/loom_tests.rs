//! loom models of a line's epochs: concurrent failures with the same epoch, and a stale failure
//! racing the end of a recovery. Checked: one recovery per epoch, never a second recovery
//! started by a failure that predates a finished one, and every joiner gets the outcome.
//!
//! Run with `RUSTFLAGS="--cfg herder_loom" cargo test -p herder --lib --release line::loom`.

use loom::future::block_on;
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::thread;

use super::state::{Begin, Recoveries};
use crate::sync::Arc;

type Line = Recoveries<u32>;

/// A request sent at epoch `seen` failed: it leads (and its recovery finishes with `value`),
/// joins, or is told a recovery is done. Returns the outcome it saw, if any.
fn fail(line: &Line, seen: u64, value: u32, leads: &AtomicUsize) -> Option<u32> {
    match line.begin(seen) {
        Begin::Lead(ticket, waiter) => {
            leads.fetch_add(1, SeqCst);
            line.finish(ticket, Ok(value));
            Some(block_on(waiter).unwrap())
        }
        Begin::Join(waiter) => Some(block_on(waiter).unwrap()),
        Begin::AlreadyDone => None,
    }
}

#[test]
fn two_failures_with_the_same_epoch_cause_one_recovery() {
    loom::model(|| {
        let line = Arc::new(Line::new());
        let leads = Arc::new(AtomicUsize::new(0));
        let (other, count) = (line.clone(), leads.clone());
        let t = thread::spawn(move || fail(&other, 0, 1, &count));
        let mine = fail(&line, 0, 1, &leads);
        let theirs = t.join().unwrap();
        assert_eq!(leads.load(SeqCst), 1);
        assert_eq!(line.epoch(), 1);
        assert!(!line.is_recovering());
        // The leader saw the outcome; the other joined it or was told it was done.
        assert!(mine == Some(1) || theirs == Some(1));
        assert!(mine.is_none_or(|v| v == 1) && theirs.is_none_or(|v| v == 1));
    });
}

#[test]
fn a_stale_failure_racing_the_end_of_a_recovery_never_starts_another() {
    loom::model(|| {
        let line = Arc::new(Line::new());
        let Begin::Lead(ticket, waiter) = line.begin(0) else {
            panic!("the first failure leads")
        };
        let other = line.clone();
        let t = thread::spawn(move || match other.begin(0) {
            Begin::Lead(..) => panic!("a stale failure started a second recovery"),
            Begin::Join(waiter) => Some(block_on(waiter).unwrap()),
            Begin::AlreadyDone => None,
        });
        line.finish(ticket, Ok(5));
        let stale = t.join().unwrap();
        assert!(stale.is_none_or(|v| v == 5), "stale caller got {stale:?}");
        assert_eq!(block_on(waiter).unwrap(), 5);
        assert_eq!(line.epoch(), 1);
    });
}

#[test]
fn a_fresh_failure_leads_the_next_recovery_and_a_stale_one_never_does() {
    loom::model(|| {
        let line = Arc::new(Line::new());
        let leads = Arc::new(AtomicUsize::new(0));
        // Recovery 1 has finished.
        assert_eq!(fail(&line, 0, 1, &leads), Some(1));
        let other = line.clone();
        let stale = thread::spawn(move || match other.begin(0) {
            Begin::Lead(..) => panic!("a failure from epoch 0 led after recovery 1"),
            Begin::Join(waiter) => Some(block_on(waiter).unwrap()),
            Begin::AlreadyDone => None,
        });
        // A request sent after recovery 1 fails: it leads recovery 2.
        assert_eq!(fail(&line, 1, 2, &leads), Some(2));
        let seen = stale.join().unwrap();
        assert!(seen.is_none_or(|v| v == 2), "stale caller got {seen:?}");
        assert_eq!(leads.load(SeqCst), 2);
        assert_eq!(line.epoch(), 2);
    });
}
