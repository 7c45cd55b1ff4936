//! An operation as the runners see it: the caller's future, type-erased behind [`Job`], together
//! with the sender of its handle's result.
//!
//! However an operation ends, its handle hears about it exactly once, when the job is dropped
//! ([`Reply`]'s `Drop`): its output (kept by [`Job::poll_run`]), the error given to
//! [`Job::fail`], or, for a job dropped before either, why it has none (cancelled while queued,
//! aborted while running). The runner drops a finished job only after recording its end in the
//! queue's state, so a caller that has its result sees it counted in `stats`.

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
    /// Polls the operation; on completion its output is kept for the handle.
    fn poll_run(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
    /// The operation gave no output (it panicked or timed out): keeps why, for the handle.
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
            result: None,
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
                this.reply.result = Some(Ok(output));
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn fail(self: Pin<&mut Self>, error: OperationError) {
        self.project().reply.result = Some(Err(error));
    }
}

/// Sends the handle its result when dropped, or why there is none. It is the last field of
/// [`Op`], so the caller's future is dropped first.
struct Reply<T> {
    tx: Option<oneshot::Sender<Output<T>>>,
    result: Option<Output<T>>,
    started: bool,
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let result = self.result.take().unwrap_or_else(|| {
                Err(if self.started {
                    OperationError::aborted()
                } else {
                    OperationError::cancelled()
                })
            });
            // The handle may be gone (dropped after the start, or detached): the result is too.
            let _ = tx.send(result);
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
