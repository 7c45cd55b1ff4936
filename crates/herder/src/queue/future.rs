//! The future a handle awaits: the job's result, and the duty to cancel the job if the handle is
//! dropped before the job started.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::core::Core;
use super::job::{Job, Outcome, Output};

/// Awaits a job's result; if dropped first, cancels the job when it has not started (it will
/// not run, and its place is free at once). Both handle types wrap one.
pub(crate) struct Receipt<S: ?Sized + Outcome, J: ?Sized + Job> {
    /// The operation's cell, as its handle reads it.
    slot: Arc<S>,
    /// Set while the result has not arrived and the handle is attached.
    core: Option<Arc<Core<J>>>,
}

impl<S: ?Sized + Outcome, J: ?Sized + Job> Receipt<S, J> {
    pub(crate) fn new(slot: Arc<S>, core: Arc<Core<J>>) -> Self {
        Receipt {
            slot,
            core: Some(core),
        }
    }

    /// Lets the job run without anyone awaiting it.
    pub(crate) fn detach(mut self) {
        self.core = None;
    }

    pub(crate) fn is_attached(&self) -> bool {
        self.core.is_some()
    }
}

impl<S: ?Sized + Outcome, J: ?Sized + Job> Future for Receipt<S, J> {
    type Output = Output<S::Value>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = std::task::ready!(self.slot.poll_outcome(cx));
        self.core = None;
        Poll::Ready(result)
    }
}

impl<S: ?Sized + Outcome, J: ?Sized + Job> Drop for Receipt<S, J> {
    fn drop(&mut self) {
        if let Some(core) = self.core.take()
            && self.slot.cancel()
        {
            core.cancelled();
        }
    }
}
