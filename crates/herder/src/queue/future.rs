//! The future a handle awaits: the job's result, and the duty to remove the job from the queue
//! if the handle is dropped before the job started.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::core::Core;
use super::error::OperationError;
use super::job::Output;

/// Awaits a job's result; if dropped first, removes the job from the queue when it has not
/// started. Both handle types wrap one.
pub(crate) struct Receipt<T, J: ?Sized> {
    rx: tokio::sync::oneshot::Receiver<Output<T>>,
    /// Set while the result has not arrived and the handle is attached.
    core: Option<Arc<Core<J>>>,
    seq: u64,
}

impl<T, J: ?Sized> Receipt<T, J> {
    pub(crate) fn new(
        rx: tokio::sync::oneshot::Receiver<Output<T>>,
        core: Arc<Core<J>>,
        seq: u64,
    ) -> Self {
        Receipt {
            rx,
            core: Some(core),
            seq,
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

impl<T, J: ?Sized> Future for Receipt<T, J> {
    type Output = Output<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Output<T>> {
        let result = std::task::ready!(Pin::new(&mut self.rx).poll(cx));
        self.core = None;
        // Every job sends exactly once, however it ends (see `job`); a closed channel without a
        // message would mean the job vanished, which counts as an abort.
        Poll::Ready(result.unwrap_or_else(|_| Err(OperationError::aborted())))
    }
}

impl<T, J: ?Sized> Drop for Receipt<T, J> {
    fn drop(&mut self) {
        if let Some(core) = self.core.take() {
            core.remove(self.seq);
        }
    }
}
