//! An operation as the runners see it: the caller's future, type-erased behind [`Job`], together
//! with the sender of its handle's result.
//!
//! However an operation ends, its handle hears about it exactly once: its output or error is sent
//! by [`Job::poll_run`] and [`Job::fail`], and a job dropped before either (cancelled while
//! queued, or aborted while running) sends the reason from [`Reply`]'s `Drop`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::oneshot;

use super::error::OperationError;

/// What a handle receives.
pub(crate) type Output<T> = Result<T, OperationError>;

/// A queued operation, as a runner drives it.
pub(crate) trait Job {
    /// Polls the operation; on completion its output has been sent to the handle.
    fn poll_run(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
    /// The operation gave no output (it panicked or timed out): tells its handle why.
    fn fail(self: Pin<&mut Self>, error: OperationError);
}

/// A [`Job`] that can move between threads: what `OperationQueue` holds.
pub(crate) trait SendJob: Job + Send {}

impl<T: Job + Send + ?Sized> SendJob for T {}

pin_project! {
    /// The caller's future and the way back to its handle.
    pub(crate) struct Op<F: Future> {
        #[pin]
        fut: F,
        reply: Reply<F::Output>,
    }
}

impl<F: Future> Op<F> {
    pub(crate) fn new(fut: F) -> (Self, oneshot::Receiver<Output<F::Output>>) {
        let (tx, rx) = oneshot::channel();
        let reply = Reply {
            tx: Some(tx),
            started: false,
        };
        (Op { fut, reply }, rx)
    }

    /// The caller's future, for a submission that was refused.
    pub(crate) fn into_future(self) -> F {
        let Op { fut, mut reply } = self;
        reply.tx = None;
        fut
    }
}

impl<F: Future> Job for Op<F> {
    fn poll_run(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        this.reply.started = true;
        match this.fut.poll(cx) {
            Poll::Ready(output) => {
                if let Some(tx) = this.reply.tx.take() {
                    // The handle may be gone (detached): the output is dropped.
                    let _ = tx.send(Ok(output));
                }
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn fail(self: Pin<&mut Self>, error: OperationError) {
        if let Some(tx) = self.project().reply.tx.take() {
            let _ = tx.send(Err(error));
        }
    }
}

/// Sends the handle its result; if dropped before that, sends why there is none.
struct Reply<T> {
    tx: Option<oneshot::Sender<Output<T>>>,
    started: bool,
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let error = if self.started {
                OperationError::aborted()
            } else {
                OperationError::cancelled()
            };
            let _ = tx.send(Err(error));
        }
    }
}

/// Polls a job through a pinned reference, so that timeouts and panic catching can wrap it
/// while the runner keeps the job (to fail it afterwards).
pub(crate) struct RunJob<'a, J: ?Sized>(pub(crate) Pin<&'a mut J>);

impl<J: Job + ?Sized> Future for RunJob<'_, J> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll_run(cx)
    }
}
