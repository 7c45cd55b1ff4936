//! The front both public flavours delegate to, as tokio's `mpsc::bounded` and `unbounded`
//! delegate to `chan`: submission, resizing and stopping, over the [`Core`] and a way to spawn
//! runners. [`OperationQueue`](super::OperationQueue) is this over a runtime handle and `Send`
//! jobs; [`LocalOperationQueue`](super::LocalOperationQueue) over the current `LocalSet` and
//! jobs that are not `Send`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::time::Instant;

use super::builder::check_runners;
use super::core::{Config, Core, Refused};
use super::future::Receipt;
use super::job::{Job, Op};
use super::runner::{Spawn, start};
use super::stats::{OperationQueueStats, ShutdownReport};
use crate::error::BuildError;

/// Turns an operation into the job type of a flavour (a coercion to `dyn SendJob` or `dyn Job`).
pub(crate) type Erase<F, J> = fn(Box<Op<F>>) -> Pin<Box<J>>;

/// Why a submission failed, with the operation handed back.
pub(crate) enum Rejected<F> {
    Full(F),
    Closed(F),
}

pub(crate) struct Shared<J: ?Sized, S> {
    core: Arc<Core<J>>,
    spawner: S,
    pub(crate) name: Option<Arc<str>>,
    /// Set by the flavours that record metrics.
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Option<crate::metrics::QueueMetrics>,
}

impl<J: ?Sized, S> Drop for Shared<J, S> {
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
    pub(crate) async fn submit<F: Future>(
        &self,
        operation: F,
        erase: Erase<F, J>,
    ) -> Result<Receipt<F::Output, J>, F> {
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
    pub(crate) fn try_submit<F: Future>(
        &self,
        operation: F,
        erase: Erase<F, J>,
    ) -> Result<Receipt<F::Output, J>, Rejected<F>> {
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
    fn enqueue<F: Future>(
        &self,
        operation: F,
        erase: Erase<F, J>,
    ) -> Result<Receipt<F::Output, J>, F> {
        let (op, slot) = Op::new(operation);
        match self.core.push(Box::new(op), erase) {
            Ok(()) => Ok(Receipt::new(slot, self.core.clone())),
            Err(op) => Err(op.into_future()),
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
