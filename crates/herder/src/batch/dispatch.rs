//! The tasks that carry batches: a run task per running batch, a window task per open delay
//! window, and a loader's janitor.
//!
//! Each owns its batch, not any caller, and holds a guard that fails the batch (and what depends
//! on it) with `Cancelled` if the task is dropped before it is done, so that no caller ever
//! waits for a batch that nobody will run.
//!
//! With the default (yield) window there is no window task: the caller that opened the batch
//! drives the window from its own task (`future::Driving`). It yields to the scheduler
//! (`tokio::task::yield_now`) and looks (`State::window_pass`): keys arrived during that pass →
//! one more pass; a quiet pass → it closes the window itself ([`close`]) and starts the batch
//! ([`start`]): polled once right there, in the opener's task (with a waker that does nothing,
//! so that what the loader waits on never wakes the opener), and handed to a task of its own
//! if that poll did not finish it. A yield is the opener's own wake-up, and the close and the
//! start happen inside its poll: no wake-up crosses threads until the batch's answer wakes its
//! callers, so none can be lost, whichever thread polls the opener. A dropped opener closes its
//! window and spawns the batch.
//!
//! An opener that is parked (polled once, never again) would keep its window open: the
//! loader's janitor ([`janitor`], one task per loader and runtime, started by the first caller
//! in an open window that finds none alive on its own runtime: a janitor on a runtime that is
//! no longer driven cannot look after the callers on another) looks at the open window every
//! [`JANITOR_PERIOD`] and closes it if it finds it open at two looks in a row, whichever
//! runtime its opener was on (`State::sweep`). It is woken by its timer only, never by a load, so it
//! is on no load's critical path; it ends after `JANITOR_IDLE_LOOKS` looks (5 s) in which no
//! window opened, so that a load after a shorter quiet spell does not have to start another
//! (from the `block_on` thread, a spawn wakes a parked worker: tens of microseconds).

use std::future::{Future, poll_fn};
use std::sync::{Arc, Weak};
use std::task::Context;

use tokio::runtime::Handle;

use super::handle::Shared;
use super::loader::Loader;
use super::state::{
    Actions, BatchSlot, Closed, JANITOR_PERIOD, Landed, Sweep, Window, WindowEnd, batch_outcome,
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
    // A yield window has no task: its opener drives it.
    if let Some((slot, Some(ctl))) = actions.window {
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

/// Keeps a delay window until its timer, or until the batch fills up (the window task is
/// dismissed and the batch runs elsewhere), then runs the batch if a slot is free.
async fn window<L: Loader>(mut guard: WindowGuard<L>, ctl: SyncArc<WindowCtl>) {
    if let Window::Delay(delay) = guard.shared.config.window {
        let closed = std::pin::pin!(poll_fn(|cx| ctl.poll_closed(cx)));
        let timer = std::pin::pin!(tokio::time::sleep(delay));
        futures_util::future::select(closed, timer).await;
    }
    let slot = guard.slot.take().expect("armed until the window ends");
    let end = lock(&guard.shared.state).window_elapsed(&slot, &guard.shared.config, false);
    if let WindowEnd::Run(closed) = end {
        run(RunGuard {
            shared: guard.shared.clone(),
            closed: Some(closed),
        })
        .await;
    }
}

/// Closes the yield window of `slot`'s batch, by its opener (a quiet pass, or the opener is
/// dropped): the batch starts now ([`start`]) if a slot is free, or waits for one. Outside a
/// runtime (a future polled or dropped off any runtime after it opened the window), nothing
/// could carry the batch: the window is left to the janitor.
pub(crate) fn close<L: Loader>(
    shared: &Arc<Shared<L>>,
    slot: &SlotOf<L>,
    cx: Option<&mut Context<'_>>,
) {
    let Ok(runtime) = Handle::try_current() else {
        return;
    };
    let end = lock(&shared.state).window_elapsed(slot, &shared.config, false);
    if let WindowEnd::Run(closed) = end {
        start(shared, &runtime, closed, cx);
    }
}

/// Starts a batch that its opener closed. With the opener's context (`cx`), the batch is
/// polled once right here, in the opener's task: a loader that answers at once answers without
/// a single cross-thread wake-up. If that poll does not finish it (or without `cx`: the opener
/// is being dropped), the batch goes on as its own task, which owns it from then on: the
/// opener's later fate (parked, dropped, panicking) cannot touch it. The batch's future is
/// the same either way ([`run`], under its guard; a panicking loader is caught inside it).
fn start<L: Loader>(
    shared: &Arc<Shared<L>>,
    runtime: &Handle,
    closed: ClosedOf<L>,
    cx: Option<&mut Context<'_>>,
) {
    let mut batch = Box::pin(run(RunGuard {
        shared: shared.clone(),
        closed: Some(closed),
    }));
    // Polled with a waker that does nothing: if the poll does not finish the batch, the batch
    // goes on as a task, whose first poll registers the task's waker wherever the loader waits;
    // registered with the opener's, what the loader waits on would later wake the opener for
    // nothing, and a spurious wake-up can pass for one of its window passes (`Driving`).
    if cx.is_some()
        && batch
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
            .is_ready()
    {
        return;
    }
    runtime.spawn(batch);
}

/// `true` while the runtime's global queue holds tasks it has not run yet (tasks spawned or woken
/// off its workers, and the overflow of a worker's full queue): work that was ready has not all
/// run, so a quiet pass does not yet mean the keys have stopped coming.
pub(crate) fn runtime_has_queued_work() -> bool {
    Handle::try_current().is_ok_and(|runtime| runtime.metrics().global_queue_depth() > 0)
}

/// Starts the loader's janitor number `id` (see [`janitor`]).
pub(crate) fn start_janitor<L: Loader>(shared: &Arc<Shared<L>>, runtime: &Handle, id: u64) {
    let guard = JanitorGuard {
        shared: Arc::downgrade(shared),
        id: Some(id),
        runtime: runtime.id(),
    };
    runtime.spawn(janitor(guard));
}

/// The fallback for yield windows whose opener does not come round: every [`JANITOR_PERIOD`],
/// one look (`State::sweep`); a window open at two looks in a row is closed (counted in
/// `unattended_windows`) and its batch spawned. Ends after 5 s in which no window opened, or
/// when the loader is gone.
async fn janitor<L: Loader>(mut guard: JanitorGuard<L>) {
    let id = guard.id.expect("armed until the janitor ends");
    let timer = crate::time::Timer::current();
    loop {
        timer
            .sleep_until(tokio::time::Instant::now() + JANITOR_PERIOD)
            .await;
        let Some(shared) = guard.shared.upgrade() else {
            guard.id = None;
            return;
        };
        let sweep = lock(&shared.state).sweep(id, &shared.config);
        match sweep {
            Sweep::Watch | Sweep::Parked => {}
            Sweep::Run(closed) => {
                tokio::spawn(run(RunGuard {
                    shared: shared.clone(),
                    closed: Some(closed),
                }));
            }
            Sweep::Retire => {
                guard.id = None;
                return;
            }
        }
    }
}

/// Tells the state its janitor is gone if the task is dropped without retiring (its runtime
/// shut down), so that the next lookup starts another, and fails the open window if its
/// opener ran on the same runtime (see `State::janitor_lost`).
struct JanitorGuard<L: Loader> {
    shared: Weak<Shared<L>>,
    id: Option<u64>,
    runtime: tokio::runtime::Id,
}

impl<L: Loader> Drop for JanitorGuard<L> {
    fn drop(&mut self) {
        if let (Some(id), Some(shared)) = (self.id.take(), self.shared.upgrade()) {
            let lost = lock(&shared.state).janitor_lost(id, self.runtime);
            if let Some(closed) = lost {
                shared.fail(closed);
            }
        }
    }
}

/// Fails the open batch if its (delay) window task is dropped before the window ends.
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
                // Its readers get a timeout, as from a load of the cache's own cut by its limit.
                Ok(Landed::TimedOut(limit)) => BatchEnd::TimedOut(*limit),
                Err(failure) => BatchEnd::Failed(failure),
            };
            cache.finish(tickets, end, &ttls);
        }
        {
            // Counted as landed however the wake-ups end (a waker that panics included).
            let _landing = shared.landings.landing();
            closed.slot.complete(landed);
        }
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
            cache.abandon(closed.tickets);
        }
        closed.slot.complete(Err(Failure::Cancelled));
    }
}
