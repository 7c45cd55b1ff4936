//! The front both public flavours delegate to, as tokio's `mpsc::bounded` and `unbounded`
//! delegate to `chan`: submission, resizing and stopping, over the [`Core`] and a way to spawn
//! runners. [`OperationQueue`](super::OperationQueue) is this over a runtime handle and `Send`
//! jobs; [`LocalOperationQueue`](super::LocalOperationQueue) over the current `LocalSet` and
//! jobs that are not `Send`.

use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;

use super::builder::check_runners;
use super::core::{Config, Core, Refused};
use super::future::Receipt;
use super::job::{Cell, Job, Kind, Outcome};
use super::runner::{Spawn, start};
use super::stats::{OperationQueueStats, ShutdownReport};
use crate::error::BuildError;

/// Turns an operation's cell into the job type and the handle's view of a flavour (coercions to
/// `SendJob` or `LocalJob`, and to a `dyn Outcome`).
pub(crate) type Erase<F, K, J, O> = fn(Arc<Cell<F, K>>) -> (Arc<J>, Arc<O>);

/// Why a submission failed, with the operation handed back.
pub(crate) enum Rejected<F> {
    Full(F),
    Closed(F),
}

pub(crate) struct Shared<J: ?Sized + Job, S> {
    core: Arc<Core<J>>,
    spawner: S,
    pub(crate) name: Option<Arc<str>>,
    /// Set by the flavours that record metrics.
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Option<crate::metrics::QueueMetrics>,
}

impl<J: ?Sized + Job, S> Drop for Shared<J, S> {
    fn drop(&mut self) {
        // The last clone of the queue is gone: nobody can submit any more. The runners finish
        // what is queued and exit, instead of waiting forever.
        self.core.close();
    }
}

impl<J: ?Sized + Job, S: Spawn<J>> Shared<J, S> {
    /// The queue, its runners spawned.
    pub(crate) fn new(config: Config, spawner: S) -> Self {
        let name = config.name.clone();
        let (core, new) = Core::new(config);
        let core = Arc::new(core);
        start(&core, &spawner, new);
        Shared {
            core,
            spawner,
            name,
            #[cfg(feature = "metrics")]
            metrics: None,
        }
    }

    /// Waits for a free place, then queues `operation`.
    pub(crate) async fn submit<F: Future, K: Kind<F>, O: ?Sized + Outcome>(
        &self,
        operation: F,
        erase: Erase<F, K, J, O>,
    ) -> Result<Receipt<O, J>, F> {
        // Cooperative, as tokio's channels are: a task submitting in a loop yields once its
        // budget is spent, so that runners on its thread run meanwhile (and the queue does
        // not grow to every operation the loop has at once).
        tokio::task::coop::consume_budget().await;
        if !self.core.reserve().await {
            return Err(operation);
        }
        self.enqueue(operation, erase)
    }

    /// Queues `operation` if there is a free place.
    pub(crate) fn try_submit<F: Future, K: Kind<F>, O: ?Sized + Outcome>(
        &self,
        operation: F,
        erase: Erase<F, K, J, O>,
    ) -> Result<Receipt<O, J>, Rejected<F>> {
        match self.core.try_reserve() {
            Ok(()) => self.enqueue(operation, erase).map_err(Rejected::Closed),
            Err(Refused::Full) => {
                #[cfg(feature = "metrics")]
                if let Some(metrics) = &self.metrics {
                    metrics.rejected();
                }
                Err(Rejected::Full(operation))
            }
            Err(Refused::Closed) => Err(Rejected::Closed(operation)),
        }
    }

    /// Queues `operation` in the place reserved for it; a closed queue hands it back.
    fn enqueue<F: Future, K: Kind<F>, O: ?Sized + Outcome>(
        &self,
        operation: F,
        erase: Erase<F, K, J, O>,
    ) -> Result<Receipt<O, J>, F> {
        let mut slot = None;
        let pushed = self.core.push(operation, |operation| {
            let (job, outcome) = erase(Arc::new(Cell::new(operation)));
            slot = Some(outcome);
            job
        });
        match (pushed, slot) {
            (Ok(()), Some(slot)) => Ok(Receipt::new(slot, self.core.clone())),
            (Ok(()), None) => unreachable!("a pushed operation has its cell"),
            (Err(operation), _) => Err(operation),
        }
    }

    pub(crate) fn set_runners(&self, runners: usize) -> Result<(), BuildError> {
        check_runners(runners)?;
        let new = self.core.set_runners(runners);
        start(&self.core, &self.spawner, new);
        Ok(())
    }
}

impl<J: ?Sized + Job, S> Shared<J, S> {
    /// Records this queue's metrics with `metrics` (the flavours that can: `OperationQueue`).
    #[cfg(feature = "metrics")]
    pub(crate) fn record(&mut self, metrics: crate::metrics::QueueMetrics) {
        let _ = self.core.histograms.set(metrics.histograms());
        self.metrics = Some(metrics);
    }

    pub(crate) fn runners(&self) -> usize {
        self.core.target()
    }

    pub(crate) fn stats(&self) -> OperationQueueStats {
        self.core.stats()
    }

    pub(crate) async fn wait_idle(&self) {
        self.core.wait_idle().await;
    }

    pub(crate) fn close(&self) {
        self.core.close();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.core.is_closed()
    }

    pub(crate) async fn drain(&self) {
        self.core.drain().await;
    }

    pub(crate) async fn shutdown(&self, deadline: Instant) -> ShutdownReport {
        self.core.shutdown(deadline).await
    }
}
