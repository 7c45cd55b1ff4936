//! The tasks that carry batches: a window task per open batch, a run task per running batch.
//!
//! Both own their batch, not any caller, and both hold a guard that fails the batch (and what
//! depends on it) with `Cancelled` if the task is dropped before it is done, so that no caller
//! ever waits for a batch that nobody will run.

use std::sync::Arc;

use tokio::runtime::Handle;

use super::cached;
use super::handle::Shared;
use super::loader::Loader;
use super::state::{Actions, BatchSlot, Closed, Window, WindowEnd, batch_outcome};
use crate::flight::{Failure, task};
use crate::sync::lock;

type SlotOf<L> = BatchSlot<<L as Loader>::Value, <L as Loader>::Error>;
type ClosedOf<L> = Closed<<L as Loader>::Key, <L as Loader>::Value, <L as Loader>::Error>;
pub(crate) type ActionsOf<L> =
    Actions<<L as Loader>::Key, <L as Loader>::Value, <L as Loader>::Error>;

/// Carries out what the state machine asked for, after its lock was released.
///
/// Each task's guard is made before the task is spawned, so it covers a task that is dropped
/// before its first poll too (a runtime shutting down drops the tasks it never ran).
pub(crate) fn apply<L: Loader>(shared: &Arc<Shared<L>>, runtime: &Handle, actions: ActionsOf<L>) {
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
        let handle = runtime.spawn(window(guard));
        if let Window::Delay(_) = shared.config.window {
            // If the batch closed meanwhile, either it filled up (its timer is harmless) or this
            // very task took it to run: the handle must not abort it, so it is just dropped.
            drop(lock(&shared.state).set_timer(&slot, handle.abort_handle()));
        }
    }
}

/// Keeps a batch's window, then runs the batch if a slot is free.
async fn window<L: Loader>(mut guard: WindowGuard<L>) {
    let end = loop {
        match guard.shared.config.window {
            Window::Yield => tokio::task::yield_now().await,
            Window::Delay(delay) => tokio::time::sleep(delay).await,
        }
        let slot = guard.slot.as_ref().expect("armed until the window ends");
        match lock(&guard.shared.state).window_elapsed(slot, &guard.shared.config) {
            WindowEnd::Extend => continue,
            end => break end,
        }
    };
    guard.slot = None;
    if let WindowEnd::Run(closed) = end {
        run(RunGuard {
            shared: guard.shared.clone(),
            closed: Some(closed),
        })
        .await;
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
        let outcome = task::catch(load).await;
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
