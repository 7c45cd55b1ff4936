//! The tasks that carry batches: a window task per open batch, a run task per running batch.
//!
//! Both own their batch, not any caller, and both hold a guard that fails the batch (and what
//! depends on it) with `Cancelled` if the task is dropped before it is done, so that no caller
//! ever waits for a batch that nobody will run.
//!
//! With the default (yield) window, the caller that opened the batch decides when it closes, from
//! its own task: it yields to the scheduler (`tokio::task::yield_now`, see `future::Driving`)
//! and looks ([`look`]): keys arrived during that pass → one more pass; a quiet pass → it tells
//! the window task to close ([`WindowCtl::close`]), and the window task runs the batch (a quiet
//! pass while the runtime's global queue still holds tasks waits a few more passes). A yield
//! is the opener's own wake-up: none can be lost, whichever thread polls it. On a worker it
//! comes back after the worker has run the tasks that were ready (and tried to steal); on the
//! `block_on` thread, after the sibling futures of the same poll. If the opener is parked
//! (polled once, never again), the window task's fallback timer closes the batch; a dropped
//! opener closes it at once.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use tokio::runtime::Handle;

use super::handle::Shared;
use super::loader::Loader;
use super::state::{
    Actions, BatchSlot, Closed, Landed, PARKED_OPENER_TIMEOUT, Pass, Window, WindowEnd,
    batch_outcome,
};
use super::window::WindowCtl;
use crate::cache::{BatchEnd, Ttls};
use crate::flight::{Failure, task};
use crate::sync::{Arc as SyncArc, lock};

pub(crate) type SlotOf<L> = BatchSlot<<L as Loader>::Value, <L as Loader>::Error>;
type ClosedOf<L> = Closed<<L as Loader>::Key, <L as Loader>::Value, <L as Loader>::Error>;
pub(crate) type ActionsOf<L> =
    Actions<<L as Loader>::Key, <L as Loader>::Value, <L as Loader>::Error>;

/// Carries out what the state machine asked for, after its lock was released.
///
/// Each task's guard is made before the task is spawned, so it covers a task that is dropped
/// before its first poll too (a runtime shutting down drops the tasks it never ran).
pub(crate) fn apply<L: Loader>(shared: &Arc<Shared<L>>, runtime: &Handle, actions: ActionsOf<L>) {
    for ctl in actions.dismiss {
        ctl.close();
    }
    for closed in actions.run {
        runtime.spawn(run(RunGuard {
            shared: shared.clone(),
            closed: Some(closed),
        }));
    }
    if let Some((slot, ctl)) = actions.window {
        // Dismissed already: the call that opened the batch also filled it, and it runs above.
        if ctl.is_closed() {
            return;
        }
        let guard = WindowGuard {
            shared: shared.clone(),
            slot: Some(slot),
        };
        runtime.spawn(window(guard, ctl));
    }
}

/// Waits until `ctl` is closed (`true`) or `limit` has passed (`false`).
async fn closed_within(ctl: &WindowCtl, limit: Duration) -> bool {
    let closed = std::pin::pin!(poll_fn(|cx| ctl.poll_closed(cx)));
    let timer = std::pin::pin!(tokio::time::sleep(limit));
    matches!(
        futures_util::future::select(closed, timer).await,
        Either::Left(_)
    )
}

/// Keeps a batch's window, then runs the batch if a slot is free.
///
/// A yield window ends when its opener closes it ([`look`], or the opener is dropped), or, if
/// the opener is parked, at the fallback timer. A delay window ends at its timer. Either ends
/// early when the batch fills up (the window task is dismissed and the batch runs elsewhere).
async fn window<L: Loader>(mut guard: WindowGuard<L>, ctl: SyncArc<WindowCtl>) {
    let unattended = match guard.shared.config.window {
        Window::Yield => {
            // The opener usually looks within one scheduler pass: wait that pass out before
            // arming the fallback timer, which a lone load then never pays for.
            if !ctl.is_closed() {
                tokio::task::yield_now().await;
            }
            !closed_within(&ctl, PARKED_OPENER_TIMEOUT).await
        }
        Window::Delay(delay) => {
            closed_within(&ctl, delay).await;
            false
        }
    };
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

/// One look at a yield window by the caller that opened the batch, after a scheduler pass
/// (see `future::Driving`, which decides what a quiet pass does).
pub(crate) fn look<L: Loader>(shared: &Shared<L>, slot: &SlotOf<L>, ctl: &WindowCtl) -> Pass {
    if ctl.is_closed() {
        return Pass::Gone;
    }
    lock(&shared.state).window_pass(slot)
}

/// `true` while the runtime's global queue holds tasks it has not run yet (tasks spawned or woken
/// off its workers, and the overflow of a worker's full queue): work that was ready has not all
/// run, so a quiet pass does not yet mean the keys have stopped coming.
pub(crate) fn runtime_has_queued_work() -> bool {
    Handle::try_current().is_ok_and(|runtime| runtime.metrics().global_queue_depth() > 0)
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
///
/// The loader's future is built inside the catch, so a loader that panics while building it
/// fails its own batch as a panic, and only that batch. With a load timeout, a call that
/// outlives it is dropped (its late result with it) and its callers get a timeout error.
async fn run<L: Loader>(mut guard: RunGuard<L>) {
    let shared = guard.shared.clone();
    while let Some(closed) = &guard.closed {
        let keys = &closed.keys;
        // With a tiered cache in front: the batch asks the tier for all its keys at once and
        // loads only what no instance has (the TTLs the tier's answers carry go to the cache).
        let mut ttls = Ttls::default();
        let tiered = shared.cache.as_ref().filter(|cache| cache.has_tier());
        let loader = &shared.loader;
        let load = async {
            match tiered {
                None => loader.load(keys).await,
                Some(cache) => {
                    let load = |missing: Vec<L::Key>| async move { loader.load(&missing).await };
                    cache.load_through_tier(keys.clone(), load, &mut ttls).await
                }
            }
        };
        #[cfg(feature = "tracing")]
        let load = tracing::Instrument::instrument(
            load,
            tracing::debug_span!(
                "herder.batch",
                loader = std::any::type_name::<L>(),
                name = shared.name.as_deref().unwrap_or_default(),
                keys = keys.len()
            ),
        );
        let load = task::catch(load);
        let started = tokio::time::Instant::now();
        let outcome = match shared.config.load_timeout {
            None => Ok(load.await),
            Some(limit) => tokio::time::timeout(limit, load).await.map_err(|_| limit),
        };
        let took = started.elapsed();
        let mut closed = guard.closed.take().expect("armed during the load");
        let landed = match outcome {
            Ok(caught) => {
                let outcome = caught.map_err(Failure::Panicked);
                #[cfg(feature = "tracing")]
                if let Err(Failure::Panicked(message)) = &outcome {
                    tracing::warn!(loader = std::any::type_name::<L>(), %message, "loader panicked");
                }
                batch_outcome(&closed.keys, outcome).map(Landed::Done)
            }
            Err(limit) => {
                #[cfg(feature = "tracing")]
                tracing::warn!(
                    loader = std::any::type_name::<L>(),
                    ?limit,
                    "loader timed out"
                );
                Ok(Landed::TimedOut(limit))
            }
        };
        let next = lock(&shared.state).finished(&closed, &landed, &shared.config);
        #[cfg(feature = "metrics")]
        {
            shared.metrics.batch(closed.keys.len(), took);
            crate::metrics::Source::publish(&*shared);
        }
        if let Some(cache) = &shared.cache {
            let tickets = std::mem::take(&mut closed.tickets);
            let end = match &landed {
                Ok(Landed::Done(Ok(values))) => BatchEnd::Loaded {
                    values: &values[..],
                    took,
                },
                Ok(Landed::Done(Err(error))) => BatchEnd::Error(error),
                // The cache's own contract for a timed-out batch is the cache side's to settle;
                // until then its flights end as cancelled, so that no reader waits for them.
                Ok(Landed::TimedOut(_)) => BatchEnd::Failed(&CANCELLED),
                Err(failure) => BatchEnd::Failed(failure),
            };
            cache.finish(tickets, end, &ttls);
        }
        closed.slot.complete(landed);
        guard.closed = next;
    }
}

/// How the cache's flights of a timed-out batch end (see [`run`]).
const CANCELLED: Failure = Failure::Cancelled;

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
            cache.abandon(closed.tickets);
        }
        closed.slot.complete(Err(Failure::Cancelled));
    }
}
