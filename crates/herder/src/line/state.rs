//! Recoveries and epochs, on the flight core.
//!
//! A recovery is a flight of the single key `()`: [`Flights::join`] elects its leader and makes
//! concurrent callers follow it. The epoch counts finished recoveries. It is bumped by the
//! flight's `store` step, which runs under the shard lock just before the flight unregisters,
//! and it is compared with the caller's `seen` epoch in the `recheck` step, which runs under
//! the same lock when no flight is registered. So a caller whose failure predates a recovery
//! finds either that recovery still registered (it joins) or the epoch already bumped (it is
//! told the recovery is done), never neither: a stale failure cannot start a second recovery.
//! `loom_tests` explores these races.

use std::sync::atomic::Ordering::SeqCst;

use crate::flight::map::Ticket;
use crate::flight::{Flights, Join, Outcome, Waiter};
use crate::sync::{AtomicU64, Mutex, lock};

/// The recoveries of one line.
pub(crate) struct Recoveries<O> {
    flights: Flights<(), O>,
    epoch: AtomicU64,
    /// The newest finished recovery: the epoch it finished at, and its outcome.
    last: Mutex<Option<(u64, Outcome<O>)>>,
}

/// Where a caller of [`Recoveries::begin`] stands.
pub(crate) enum Begin<O> {
    /// No recovery runs and none finished since `seen`: this caller starts one and must
    /// finish the ticket.
    Lead(Ticket<(), O>, Waiter<O>),
    /// A recovery runs: wait for its outcome.
    Join(Waiter<O>),
    /// A recovery finished after `seen`: retry.
    AlreadyDone,
}

impl<O> Recoveries<O> {
    /// How many recoveries have finished.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(SeqCst)
    }
}

impl<O: Clone> Recoveries<O> {
    pub(crate) fn new() -> Self {
        Recoveries {
            flights: Flights::new(1),
            epoch: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    pub(crate) fn begin(&self, seen: u64) -> Begin<O> {
        let done_since = || (self.epoch.load(SeqCst) > seen).then_some(());
        match self.flights.join(&(), false, done_since) {
            Join::Lead(ticket, waiter) => Begin::Lead(ticket, waiter),
            Join::Follow(waiter, _) => Begin::Join(waiter),
            Join::Found(()) => Begin::AlreadyDone,
        }
    }

    /// Ends the recovery: bumps the epoch, keeps its outcome as the newest, unregisters it,
    /// hands its outcome to every waiter. Whoever sees the recovery unregistered sees both.
    pub(crate) fn finish(&self, ticket: Ticket<(), O>, outcome: Outcome<O>) {
        self.flights.finish(ticket, outcome, |_, outcome| {
            // The bump first: a panicking `Clone` of the outcome loses only the copy kept.
            let epoch = self.epoch.fetch_add(1, SeqCst) + 1;
            *lock(&self.last) = Some((epoch, outcome.clone()));
        });
    }

    /// The outcome of the recovery that finished at `epoch`, if it is the newest.
    pub(crate) fn outcome_at(&self, epoch: u64) -> Option<Outcome<O>> {
        match &*lock(&self.last) {
            Some((at, outcome)) if *at == epoch => Some(outcome.clone()),
            _ => None,
        }
    }

    pub(crate) fn is_recovering(&self) -> bool {
        self.flights.len() > 0
    }
}
