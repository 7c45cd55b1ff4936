//! loom models of the flight core: every interleaving of joins, finishes, leaves, detaches and
//! waiter drops, checked for lost wake-ups, duplicate leaders, leaks and stale stores.
//!
//! Run with `RUSTFLAGS="--cfg herder_loom" cargo test -p herder --lib --release flight::loom`.

use std::task::{Context, Waker};

use loom::future::block_on;
use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use loom::thread;

use super::{Failure, Flights, Join, Outcome};
use crate::sync::Arc;

type Map = Flights<u8, u32>;

/// Joins key 1; a leader finishes with `value` itself. Returns what the caller's waiter got.
fn join_and_wait(flights: &Map, value: u32) -> Outcome<u32> {
    match flights.join(&1, false, || None::<()>) {
        Join::Lead(ticket, waiter) => {
            flights.finish(ticket, Ok(value), |_, _| {});
            block_on(waiter)
        }
        Join::Follow(waiter, _) => block_on(waiter),
        Join::Found(()) => unreachable!("no recheck"),
    }
}

#[test]
fn concurrent_joins_all_get_an_outcome_and_nothing_leaks() {
    loom::model(|| {
        let flights = Arc::new(Map::new(1));
        let other = flights.clone();
        let t = thread::spawn(move || join_and_wait(&other, 7));
        assert_eq!(join_and_wait(&flights, 7), Ok(7));
        assert_eq!(t.join().unwrap(), Ok(7));
        assert_eq!(flights.len(), 0);
    });
}

#[test]
fn a_follower_registered_before_completion_is_woken() {
    loom::model(|| {
        let flights = Arc::new(Map::new(1));
        let Join::Lead(ticket, leader) = flights.join(&1, false, || None::<()>) else {
            panic!("first join leads")
        };
        let Join::Follow(follower, _) = flights.join(&1, false, || None::<()>) else {
            panic!("second join follows")
        };
        let t = thread::spawn(move || block_on(follower));
        flights.finish(ticket, Ok(3), |_, _| {});
        assert_eq!(t.join().unwrap(), Ok(3));
        assert_eq!(block_on(leader), Ok(3));
    });
}

#[test]
fn a_waiter_dropped_while_the_flight_completes_leaves_the_slot_consistent() {
    loom::model(|| {
        let flights = Arc::new(Map::new(1));
        let Join::Lead(ticket, mut waiter) = flights.join(&1, false, || None::<()>) else {
            panic!("first join leads")
        };
        let Join::Follow(kept, _) = flights.join(&1, false, || None::<()>) else {
            panic!("second join follows")
        };
        let t = thread::spawn(move || {
            // Register, then give up.
            let mut cx = Context::from_waker(Waker::noop());
            let _ = std::future::Future::poll(std::pin::Pin::new(&mut waiter), &mut cx);
            drop(waiter);
        });
        flights.finish(ticket, Ok(1), |_, _| {});
        t.join().unwrap();
        assert_eq!(block_on(kept), Ok(1));
    });
}

#[test]
fn the_last_leave_and_a_new_join_never_strand_the_joiner() {
    loom::model(|| {
        let flights = Arc::new(Map::new(1));
        let cancelled = Arc::new(AtomicBool::new(false));
        let Join::Lead(ticket, waiter) = flights.join(&1, true, || None::<()>) else {
            panic!("first join leads")
        };
        let flag = cancelled.clone();
        waiter
            .slot()
            .set_canceller(Box::new(move || flag.store(true, SeqCst)));

        let other = flights.clone();
        let t = thread::spawn(move || match other.join(&1, true, || None::<()>) {
            Join::Lead(ticket, waiter) => {
                other.finish(ticket, Ok(2), |_, _| {});
                block_on(waiter)
            }
            Join::Follow(waiter, _) => block_on(waiter),
            Join::Found(()) => unreachable!(),
        });

        // The first caller gives up; then its task ends as it would: cancelled, or finished.
        let id = ticket.id();
        flights.leave(&1, id, waiter.slot());
        drop(waiter);
        let outcome = if cancelled.load(SeqCst) {
            Err(Failure::Cancelled)
        } else {
            Ok(1)
        };
        flights.finish(ticket, outcome, |_, _| {});

        // The joiner either joined the first flight in time (which then was not cancelled) or
        // started its own: it never sees the cancellation.
        let got = t.join().unwrap();
        assert!(got == Ok(1) || got == Ok(2), "joiner got {got:?}");
        assert_eq!(flights.len(), 0);
    });
}

#[test]
fn a_detach_and_a_finish_never_both_win() {
    loom::model(|| {
        let flights = Arc::new(Map::new(1));
        let Join::Lead(ticket, waiter) = flights.join(&1, false, || None::<()>) else {
            panic!("first join leads")
        };
        let other = flights.clone();
        let t = thread::spawn(move || other.detach(&1));
        let stored = Arc::new(AtomicBool::new(false));
        let flag = stored.clone();
        flights.finish(ticket, Ok(1), move |_, _| flag.store(true, SeqCst));
        let detached = t.join().unwrap();
        // Exactly one happened first: a finish that stored, or a detach that kept it from storing.
        assert_ne!(stored.load(SeqCst), detached);
        // Either way the waiter gets the result.
        assert_eq!(block_on(waiter), Ok(1));
        assert_eq!(flights.len(), 0);
    });
}

#[test]
fn a_join_racing_a_storing_finish_never_starts_a_duplicate_flight() {
    loom::model(|| {
        let flights = Arc::new(Map::new(1));
        let cache = Arc::new(AtomicU32::new(0));
        let Join::Lead(ticket, _waiter) = flights.join(&1, false, || None::<u32>) else {
            panic!("first join leads")
        };
        let (other, seen) = (flights.clone(), cache.clone());
        let t = thread::spawn(move || {
            let recheck = || Some(seen.load(SeqCst)).filter(|v| *v != 0);
            match other.join(&1, false, recheck) {
                Join::Lead(..) => panic!("a duplicate flight started"),
                Join::Follow(waiter, _) => block_on(waiter).unwrap(),
                Join::Found(value) => value,
            }
        });
        let fill = cache.clone();
        flights.finish(ticket, Ok(5), move |_, outcome| {
            fill.store(*outcome.as_ref().unwrap(), SeqCst);
        });
        assert_eq!(t.join().unwrap(), 5);
    });
}

/// The cache's store protocol (`cache/write.rs`): a load stores its value in the finish step
/// (under the shard lock); an invalidation or an insert retires the flight and writes in one step
/// under that lock. Whatever the interleaving, the loaded (old) value never outlives an
/// invalidation or overwrites an insert that began after the load.
#[test]
fn a_load_never_stores_over_an_invalidation_or_insert_made_during_it() {
    for insert in [false, true] {
        loom::model(move || {
            let flights = Arc::new(Map::new(1));
            let storage = Arc::new(loom::sync::Mutex::new(None::<u32>));
            let Join::Lead(ticket, waiter) = flights.join(&1, false, || None::<()>) else {
                panic!("first join leads")
            };
            let (other, stored) = (flights.clone(), storage.clone());
            let t = thread::spawn(move || {
                other.detach_then(&1, || *stored.lock().unwrap() = insert.then_some(2));
            });
            let fill = storage.clone();
            flights.finish(ticket, Ok(1), move |_, outcome| {
                *fill.lock().unwrap() = Some(*outcome.as_ref().unwrap());
            });
            t.join().unwrap();
            assert_eq!(*storage.lock().unwrap(), insert.then_some(2));
            assert_eq!(
                block_on(waiter),
                Ok(1),
                "the load still answers its own waiters"
            );
        });
    }
}

/// A load that starts while an insert is being made (issue "Invalidation is final", item 3): the
/// insert retires the flight and stores in one step, so a flight that registers in between
/// cannot exist, and the inserted value is what remains, whoever runs first.
#[test]
fn a_load_starting_during_an_insert_never_overwrites_it() {
    loom::model(|| {
        let flights = Arc::new(Map::new(1));
        let storage = Arc::new(loom::sync::Mutex::new(None::<u32>));
        let (other, stored) = (flights.clone(), storage.clone());
        let t = thread::spawn(move || {
            other.detach_then(&1, || *stored.lock().unwrap() = Some(2));
        });
        let seen = storage.clone();
        let recheck = || *seen.lock().unwrap();
        if let Join::Lead(ticket, _) = flights.join(&1, false, recheck) {
            let fill = storage.clone();
            flights.finish(ticket, Ok(1), move |_, outcome| {
                *fill.lock().unwrap() = Some(*outcome.as_ref().unwrap());
            });
        }
        t.join().unwrap();
        assert_eq!(*storage.lock().unwrap(), Some(2), "the insert wins");
    });
}

/// A flight's fail-safe fallback is read in its `recheck`, under the shard lock (issue
/// "Invalidation is final", item 1): a fallback read before an invalidation never reaches a
/// flight registered after it, so a failed load never re-stores a value that was invalidated.
#[test]
fn a_failed_load_never_resurrects_an_invalidated_fallback() {
    loom::model(|| {
        let flights = Arc::new(Map::new(1));
        let storage = Arc::new(loom::sync::Mutex::new(Some(1u32)));
        let (other, stored) = (flights.clone(), storage.clone());
        let t = thread::spawn(move || {
            other.detach_then(&1, || *stored.lock().unwrap() = None);
        });
        let mut fallback = None;
        let seen = storage.clone();
        let join = flights.join(&1, false, || {
            fallback = *seen.lock().unwrap();
            None::<()>
        });
        if let Join::Lead(ticket, _) = join {
            // The load fails; fail-safe re-stores the fallback, if the flight is still current.
            let fill = storage.clone();
            flights.finish(ticket, Err(Failure::Cancelled), move |_, _| {
                if let Some(stale) = fallback {
                    *fill.lock().unwrap() = Some(stale);
                }
            });
        }
        t.join().unwrap();
        assert_eq!(*storage.lock().unwrap(), None, "the invalidation is final");
    });
}
