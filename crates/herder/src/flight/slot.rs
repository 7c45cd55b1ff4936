//! One in-flight outcome shared by many waiters.
//!
//! A [`Slot`] starts pending, is completed exactly once, and hands a clone of the outcome to every
//! [`Waiter`]. It knows nothing about keys, tasks or runtimes: that is [`super::map`] and
//! [`super::task`]. Waiters register their waker in a slab; completing the slot takes the slab out
//! under the lock and wakes everyone outside it.

use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc as StdArc;
use std::task::{Context, Poll, Waker};
use std::{fmt, panic};

use slab::Slab;

use crate::sync::{Arc, AtomicUsize, Mutex, lock};

/// Why a flight ended without an output of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The work panicked; the panic message when the payload was a string.
    Panicked(StdArc<str>),
    /// The task carrying the work was dropped before it finished (runtime shut down).
    Cancelled,
}

/// The message of a caught panic, shareable by every waiter: the payload when it is a string,
/// else `"non-string panic payload"`.
///
/// The payload is dropped here, and its destructor may itself panic (`panic_any` of a value
/// whose `Drop` panics): that panic is caught too, and its own payload leaked rather than
/// dropped (see [`quietly`]), so that reporting a panic never unwinds into the runner or caller
/// reporting it.
pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> StdArc<str> {
    let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
        StdArc::from(*s)
    } else if let Some(s) = payload.downcast_ref::<String>() {
        StdArc::from(s.as_str())
    } else {
        StdArc::from("non-string panic payload")
    };
    quietly(move || drop(payload));
    message
}

/// Runs `f`, catching a panic in it: user code (a destructor, a listener, a canceller) that must
/// not take down the runner or caller that calls it. The caught panic's payload is leaked, not
/// dropped: its own destructor could panic again, outside any catch.
pub(crate) fn quietly(f: impl FnOnce()) {
    if let Err(payload) = panic::catch_unwind(panic::AssertUnwindSafe(f)) {
        mem::forget(payload);
    }
}

/// What every waiter of a flight receives.
pub(crate) type Outcome<T> = Result<T, Failure>;

/// Deferred cancellation of the work behind a slot (an abort handle, in practice).
pub(crate) type Canceller = Box<dyn FnOnce() + Send>;

enum State<T> {
    Pending(Slab<Waker>),
    Done(Outcome<T>),
}

/// The in-flight cell: pending until [`Slot::complete`], then done for good.
pub(crate) struct Slot<T> {
    state: Mutex<State<T>>,
    /// Live waiters, counted only by primitives that abort unused work.
    waiters: AtomicUsize,
    /// How to stop the work once nobody waits for it (set by the primitive after spawning).
    cancel: Mutex<CancelState>,
}

enum CancelState {
    Armed(Option<Canceller>),
    Fired,
}

impl<T: Clone> Slot<T> {
    pub(crate) fn new() -> Self {
        Slot {
            state: Mutex::new(State::Pending(Slab::new())),
            waiters: AtomicUsize::new(0),
            cancel: Mutex::new(CancelState::Armed(None)),
        }
    }

    /// Publishes the outcome and wakes every registered waiter. The first call wins; later calls
    /// return `false` and drop their outcome.
    pub(crate) fn complete(&self, outcome: Outcome<T>) -> bool {
        let wakers = {
            let mut state = lock(&self.state);
            match &mut *state {
                State::Done(_) => return false,
                State::Pending(wakers) => {
                    let wakers = mem::take(wakers);
                    *state = State::Done(outcome);
                    wakers
                }
            }
        };
        for (_, waker) in wakers {
            waker.wake();
        }
        true
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(*lock(&self.state), State::Done(_))
    }

    fn poll_wait(
        &self,
        registration: &mut Option<usize>,
        cx: &mut Context<'_>,
    ) -> Poll<Outcome<T>> {
        let mut state = lock(&self.state);
        match &mut *state {
            State::Done(outcome) => {
                *registration = None;
                Poll::Ready(outcome.clone())
            }
            State::Pending(wakers) => {
                match registration {
                    Some(index) => {
                        if let Some(waker) = wakers.get_mut(*index)
                            && !waker.will_wake(cx.waker())
                        {
                            waker.clone_from(cx.waker());
                        }
                    }
                    None => *registration = Some(wakers.insert(cx.waker().clone())),
                }
                Poll::Pending
            }
        }
    }
}

impl<T> Slot<T> {
    /// Counts one more waiter. Callers that abort unused work increment under the lock that makes
    /// the slot reachable (the map shard), so a join and the last leave are serialised.
    pub(crate) fn add_waiter(&self) {
        self.waiters
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Counts one waiter less; `true` when it was the last.
    pub(crate) fn remove_waiter(&self) -> bool {
        self.waiters
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
    }

    /// Stores how to stop the work. If the work was already cancelled, `cancel` runs at once.
    pub(crate) fn set_canceller(&self, cancel: Canceller) {
        let mut state = lock(&self.cancel);
        match &mut *state {
            CancelState::Armed(slot) => *slot = Some(cancel),
            CancelState::Fired => {
                drop(state);
                cancel();
            }
        }
    }

    /// Stops the work, now if a canceller is stored, or as soon as one is.
    pub(crate) fn cancel(&self) {
        let cancel = match mem::replace(&mut *lock(&self.cancel), CancelState::Fired) {
            CancelState::Armed(cancel) => cancel,
            CancelState::Fired => None,
        };
        if let Some(cancel) = cancel {
            // An abort handle does not panic; anything else must not take the caller down with it.
            quietly(cancel);
        }
    }
}

impl<T> fmt::Debug for Slot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let done = matches!(*lock(&self.state), State::Done(_));
        f.debug_struct("Slot")
            .field("done", &done)
            .finish_non_exhaustive()
    }
}

/// Waits for a slot's outcome. Dropping it before the outcome arrives forgets its waker and
/// nothing else: the work goes on for the other waiters.
pub(crate) struct Waiter<T> {
    slot: Arc<Slot<T>>,
    registration: Option<usize>,
}

impl<T: Clone> Waiter<T> {
    pub(crate) fn new(slot: Arc<Slot<T>>) -> Self {
        Waiter {
            slot,
            registration: None,
        }
    }

    pub(crate) fn slot(&self) -> &Arc<Slot<T>> {
        &self.slot
    }
}

impl<T: Clone> Future for Waiter<T> {
    type Output = Outcome<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<T>> {
        let this = self.get_mut();
        this.slot.poll_wait(&mut this.registration, cx)
    }
}

impl<T> Drop for Waiter<T> {
    fn drop(&mut self) {
        if let Some(index) = self.registration.take() {
            deregister_any(&self.slot, index);
        }
    }
}

// `Drop` cannot require `T: Clone`; deregistration does not need it.
fn deregister_any<T>(slot: &Slot<T>, index: usize) {
    let removed = {
        let mut state = lock(&slot.state);
        match &mut *state {
            State::Pending(wakers) => wakers.try_remove(index),
            State::Done(_) => None,
        }
    };
    drop(removed);
}

impl<T> fmt::Debug for Waiter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter")
            .field("registered", &self.registration.is_some())
            .finish_non_exhaustive()
    }
}
