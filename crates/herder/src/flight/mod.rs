//! The flight core: in-flight slots shared by many waiters.
//!
//! Every primitive that shares work rests on this module (`SingleFlight` and `Cache` through
//! [`Flights`], `DataLoader` batches and `Line` recoveries through [`Slot`]). Its contract:
//!
//! 1. **The work does not belong to the caller that started it.** It runs as its own task
//!    ([`task::spawn`]); a caller that is dropped, times out or is parked only drops its
//!    [`Waiter`].
//! 2. **One outcome for all.** The value, the error and a panic (as [`Failure::Panicked`]) reach
//!    every waiter of the flight as clones of one [`Outcome`].
//! 3. **Nothing leaks.** A [`task::FinishGuard`] finishes the flight however the task ends, and
//!    finishing unregisters it.
//! 4. **Generations.** [`Flights::detach`] retires a flight: its outcome reaches its waiters, its
//!    store step does not run.
//! 5. **No deadlock by construction.** No lock is held across an `.await`; the lock order is
//!    documented in [`map`].

pub(crate) mod map;
pub(crate) mod slot;
pub(crate) mod task;

#[cfg(all(test, herder_loom))]
mod loom_tests;

pub(crate) use map::{FlightId, Flights, Join, Ticket};
pub(crate) use slot::{Failure, Outcome, Slot, Waiter, panic_message, quietly};
