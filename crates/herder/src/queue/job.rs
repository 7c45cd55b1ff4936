//! An operation as the runners see it: the caller's future, type-erased behind [`Job`], and the
//! [`Slot`] its handle reads the result from.
//!
//! Two allocations per operation: the boxed job (the caller's future, which a runner polls
//! pinned) and the slot, shared with the handle. There is no channel: the slot is one state
//! word, the result and the handle's waker. (Putting the future in the slot's allocation would
//! need to pin it inside shared memory, which takes `unsafe`; the crate forbids it.)
//!
//! The slot's state decides, exactly once, whether a queued job starts (a runner
//! [starts](Job::start) it) or is cancelled (its handle was dropped, or a shutdown cancels it):
//! whoever wins counts it. However an operation ends, its handle hears about it exactly once,
//! when the job is dropped ([`Reply`]'s `Drop`): its output, the error given to [`Job::fail`],
//! or, for a job dropped before either, why it has none (cancelled while queued, aborted while
//! running). The runner drops a finished job only after counting its end, so a caller that has
//! its result sees it counted in `stats`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;

use super::atomics::{AtomicUsize, SeqCst};
use super::error::OperationError;
use crate::sync::{Mutex, lock};

/// What a handle receives.
pub(crate) type Output<T> = Result<T, OperationError>;

const QUEUED: usize = 0;
const STARTED: usize = 1;
const CANCELLED: usize = 2;

/// A queued operation, as a runner drives it.
pub(crate) trait Job {
    /// A runner takes the job: `false` if it was cancelled first (then it is only dropped).
    fn start(&self) -> bool;
    /// A shutdown cancels the job: `false` if it had started or was cancelled already.
    fn cancel(&self) -> bool;
    /// Polls the operation; on completion its output is kept for the handle.
    fn poll_run(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
    /// The operation gave no output (it panicked or timed out): keeps why, for the handle.
    fn fail(self: Pin<&mut Self>, error: OperationError);
    /// When the job was queued.
    #[cfg(feature = "metrics")]
    fn queued_at(&self) -> tokio::time::Instant;
}

/// A [`Job`] that can move between threads: what `OperationQueue` holds.
pub(crate) trait SendJob: Job + Send {}

impl<T: Job + Send + ?Sized> SendJob for T {}

/// Where a job's result waits for its handle.
pub(crate) struct Slot<T> {
    state: AtomicUsize,
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    result: Option<Output<T>>,
    /// The result has been delivered (and maybe taken).
    done: bool,
    waker: Option<Waker>,
}

impl<T> Slot<T> {
    fn new() -> Self {
        Slot {
            state: AtomicUsize::new(QUEUED),
            inner: Mutex::new(Inner {
                result: None,
                done: false,
                waker: None,
            }),
        }
    }

    fn start(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, STARTED, SeqCst, SeqCst)
            .is_ok()
    }

    /// Cancels the job if it has not started: `true` if this call did.
    pub(crate) fn cancel(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, CANCELLED, SeqCst, SeqCst)
            .is_ok()
    }

    fn deliver(&self, result: Output<T>) {
        let waker = {
            let mut inner = lock(&self.inner);
            inner.result = Some(result);
            inner.done = true;
            inner.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The result, once delivered.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<Output<T>> {
        let mut inner = lock(&self.inner);
        if inner.done {
            // Taken once: the handle stops polling after `Ready`.
            return Poll::Ready(
                inner
                    .result
                    .take()
                    .unwrap_or_else(|| Err(OperationError::aborted())),
            );
        }
        match &mut inner.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => inner.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

pin_project! {
    /// The caller's future and the way back to its handle.
    pub(crate) struct Op<F: Future> {
        #[pin]
        fut: F,
        reply: Reply<F::Output>,
        queued: Queued,
    }
}

/// When a job was queued, kept for the `metrics` feature's wait histogram (nothing without it:
/// pin-project-lite takes no `cfg` on a field).
#[cfg(feature = "metrics")]
type Queued = tokio::time::Instant;
#[cfg(not(feature = "metrics"))]
type Queued = ();

fn queued_now() -> Queued {
    #[cfg(feature = "metrics")]
    return tokio::time::Instant::now();
}

impl<F: Future> Op<F> {
    pub(crate) fn new(fut: F) -> (Self, Arc<Slot<F::Output>>) {
        let slot = Arc::new(Slot::new());
        let reply = Reply {
            slot: Some(slot.clone()),
            result: None,
        };
        let op = Op {
            fut,
            reply,
            queued: queued_now(),
        };
        (op, slot)
    }

    /// The caller's future, for a submission that was refused.
    pub(crate) fn into_future(self) -> F {
        let Op { fut, mut reply, .. } = self;
        reply.slot = None;
        fut
    }
}

impl<F: Future> Job for Op<F> {
    fn start(&self) -> bool {
        self.reply.slot.as_ref().is_some_and(|slot| slot.start())
    }

    fn cancel(&self) -> bool {
        self.reply.slot.as_ref().is_some_and(|slot| slot.cancel())
    }

    fn poll_run(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
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

    #[cfg(feature = "metrics")]
    fn queued_at(&self) -> tokio::time::Instant {
        self.queued
    }
}

/// Hands the handle its result when dropped, or why there is none. It is the last field of
/// [`Op`], so the caller's future is dropped first.
struct Reply<T> {
    slot: Option<Arc<Slot<T>>>,
    result: Option<Output<T>>,
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let result = self.result.take().unwrap_or_else(|| {
                Err(if slot.state.load(SeqCst) == STARTED {
                    OperationError::aborted()
                } else {
                    OperationError::cancelled()
                })
            });
            // The handle may be gone (dropped, or detached): then nobody reads it.
            slot.deliver(result);
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
