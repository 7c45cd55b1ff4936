//! The tasks that carry batches: a window task per open batch, a run task per running batch.
//!
//! Both own their batch, not any caller, and both hold a guard that fails the batch (and what
//! depends on it) with `Cancelled` if the task is dropped before it is done, so that no caller
//! ever waits for a batch that nobody will run.
//!
//! With the default (yield) window, the caller that opened the batch decides when it closes, from
//! its own task ([`drive`]): the window task waits until its worker has run the work that was
//! ready (a deferred yield), then wakes the opener, whose task therefore comes round only after
//! it has polled its sibling futures, on whichever worker it runs. The opener looks: keys still
//! arriving → one more pass; otherwise → the window task closes and runs the batch. If the opener
//! is parked (polled once, never again), a fallback timer closes the batch; a dropped opener
//! closes it at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::Waker;

use futures_util::future::Either;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use tokio::runtime::Handle;

use super::cached;
use super::handle::Shared;
use super::loader::Loader;
use super::state::{
    Actions, BatchSlot, Closed, PARKED_OPENER_TIMEOUT, Pass, Window, WindowEnd, batch_outcome,
};
use crate::flight::{Failure, task};
use crate::sync::lock;

pub(crate) type SlotOf<L> = BatchSlot<<L as Loader>::Value, <L as Loader>::Error>;
type ClosedOf<L> = Closed<<L as Loader>::Key, <L as Loader>::Value, <L as Loader>::Error>;
pub(crate) type ActionsOf<L> =
    Actions<<L as Loader>::Key, <L as Loader>::Value, <L as Loader>::Error>;

/// Carries out what the state machine asked for, after its lock was released.
///
/// Each task's guard is made before the task is spawned, so it covers a task that is dropped
/// before its first poll too (a runtime shutting down drops the tasks it never ran).
pub(crate) fn apply<L: Loader>(
    shared: &Arc<Shared<L>>,
    runtime: &Handle,
    actions: ActionsOf<L>,
    ctl: Option<Arc<WindowCtl>>,
) {
    for timer in actions.stop_timers {
        timer.abort();
    }
    for closed in actions.run {
        runtime.spawn(run(RunGuard {
            shared: shared.clone(),
            closed: Some(closed),
        }));
    }
    if let Some(slot) = actions.window {
        let guard = WindowGuard {
            shared: shared.clone(),
            slot: Some(slot.clone()),
        };
        let handle = runtime.spawn(window(guard, ctl));
        // If the batch closed meanwhile, either it filled up or its opener dispatched it (the
        // timer is harmless), or this very task took it to run: the handle must not abort it.
        lock(&shared.state).set_timer(&slot, handle.abort_handle());
    }
}

/// How the caller that opened a yield window and the window's task talk.
#[derive(Debug, Default)]
pub(crate) struct WindowCtl {
    /// The opener's waker: the window task wakes it once its worker has run what was ready.
    opener: AtomicWaker,
    /// What the opener asked for after its last look: [`NONE`], [`AGAIN`] or [`CLOSE`].
    request: AtomicU8,
    /// Rings when the opener asks.
    asked: Notify,
}

const NONE: u8 = 0;
const AGAIN: u8 = 1;
const CLOSE: u8 = 2;

impl WindowCtl {
    /// Called by the opener when it registers: it will be woken for its first look.
    pub(crate) fn register(&self, waker: &Waker) {
        self.opener.register(waker);
    }

    fn ask(&self, request: u8) {
        self.request.store(request, Ordering::Release);
        self.asked.notify_one();
    }

    fn take(&self) -> u8 {
        self.request.swap(NONE, Ordering::Acquire)
    }
}

/// A batch a caller opened, with the means to drive its window.
pub(crate) type Opened<L> = (SlotOf<L>, Arc<WindowCtl>);

/// Keeps a batch's window, then runs the batch if a slot is free.
///
/// For a yield window (`ctl`): after a deferred yield (the work that was ready has run), wake the
/// opener, whose task comes round after its siblings and looks; then do what it asks (one more
/// pass, or close). If it does not come round within the fallback time (it is parked), close.
async fn window<L: Loader>(mut guard: WindowGuard<L>, ctl: Option<Arc<WindowCtl>>) {
    let mut unattended = false;
    match (guard.shared.config.window, ctl) {
        (Window::Yield, Some(ctl)) => 'passes: loop {
            // Let the work that was ready run first (other tasks' loads join the batch). Waking
            // the opener at once saves ~0.3 µs on a lone load but, measured, cut 100,000 loads
            // from as many tasks into 2,078 batches instead of 154.
            tokio::task::yield_now().await;
            ctl.opener.wake();
            // On the same worker, the opener has had its look by the end of one more yield.
            tokio::task::yield_now().await;
            loop {
                match ctl.take() {
                    AGAIN => continue 'passes,
                    CLOSE => break 'passes,
                    _ => {}
                }
                let asked = std::pin::pin!(ctl.asked.notified());
                let parked = std::pin::pin!(tokio::time::sleep(PARKED_OPENER_TIMEOUT));
                if let Either::Right(_) = futures_util::future::select(asked, parked).await {
                    unattended = true;
                    break 'passes;
                }
            }
        },
        (Window::Yield, None) => {
            tokio::time::sleep(PARKED_OPENER_TIMEOUT).await;
            unattended = true;
        }
        (Window::Delay(delay), _) => tokio::time::sleep(delay).await,
    }
    let slot = guard.slot.take().expect("armed until the window ends");
    let end = lock(&guard.shared.state).window_elapsed(&slot, &guard.shared.config, unattended);
    if let WindowEnd::Run(closed) = end {
        run(RunGuard {
            shared: guard.shared.clone(),
            closed: Some(closed),
        })
        .await;
    }
}

/// What the opener of a batch is to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drive {
    /// Keys are still arriving: the window task wakes you again for another look.
    Again,
    /// The batch is closing (or closed, or gone): stop driving.
    Done,
}

/// One look at a yield window, by the caller that opened the batch, from its own task: keys
/// still arriving → one more pass; otherwise → the window task closes and runs the batch.
/// `waker` is the opener's, for the next pass; `None` when the opener is dropped: close now.
pub(crate) fn drive<L: Loader>(
    shared: &Arc<Shared<L>>,
    (slot, ctl): &Opened<L>,
    waker: Option<&Waker>,
) -> Drive {
    let Some(waker) = waker else {
        ctl.ask(CLOSE);
        return Drive::Done;
    };
    match lock(&shared.state).window_pass(slot) {
        Pass::Grew => {
            ctl.opener.register(waker);
            ctl.ask(AGAIN);
            Drive::Again
        }
        Pass::Quiet => {
            ctl.ask(CLOSE);
            Drive::Done
        }
        Pass::Gone => Drive::Done,
    }
}

/// Fails the open batch if its window task is dropped before the window ends.
struct WindowGuard<L: Loader> {
    shared: Arc<Shared<L>>,
    slot: Option<SlotOf<L>>,
}

impl<L: Loader> Drop for WindowGuard<L> {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else { return };
        let lost = lock(&self.shared.state).abandon_open(&slot);
        if let Some(closed) = lost {
            self.shared.fail(closed);
        }
    }
}

/// Runs the guarded batch, then whichever batch its slot goes to next.
async fn run<L: Loader>(mut guard: RunGuard<L>) {
    let shared = guard.shared.clone();
    while let Some(closed) = &guard.closed {
        let keys = &closed.keys;
        let load = shared.loader.load(keys);
        #[cfg(feature = "tracing")]
        let load = tracing::Instrument::instrument(
            load,
            tracing::debug_span!(
                "herder.batch",
                loader = std::any::type_name::<L>(),
                keys = keys.len()
            ),
        );
        let started = tokio::time::Instant::now();
        let outcome = task::catch(load).await.map_err(Failure::Panicked);
        let took = started.elapsed();
        let mut closed = guard.closed.take().expect("armed during the load");
        #[cfg(feature = "tracing")]
        if let Err(Failure::Panicked(message)) = &outcome {
            tracing::warn!(loader = std::any::type_name::<L>(), %message, "loader panicked");
        }
        let outcome = batch_outcome(&closed.keys, outcome);
        let next = lock(&shared.state).finished(&closed, &outcome, &shared.config);
        if let Some(cache) = &shared.cache {
            cached::finish(cache, std::mem::take(&mut closed.tickets), &outcome, took);
        }
        closed.slot.complete(outcome);
        guard.closed = next;
    }
}

/// Fails the running batch, and the batches queued behind it, if its task is dropped first.
struct RunGuard<L: Loader> {
    shared: Arc<Shared<L>>,
    closed: Option<ClosedOf<L>>,
}

impl<L: Loader> Drop for RunGuard<L> {
    fn drop(&mut self) {
        let Some(closed) = self.closed.take() else {
            return;
        };
        let lost = lock(&self.shared.state).abandon_running(closed);
        for closed in lost {
            self.shared.fail(closed);
        }
    }
}

impl<L: Loader> Shared<L> {
    /// Fails a batch that will never run: its callers, and the cache flights it leads.
    fn fail(&self, closed: ClosedOf<L>) {
        if let Some(cache) = &self.cache {
            cached::abandon(cache, closed.tickets);
        }
        closed.slot.complete(Err(Failure::Cancelled));
    }
}
