//! An operation as the queue, its runners and its handle see it: one [`Cell`] per operation,
//! shared by the FIFO (type-erased behind [`Job`]) and the handle (behind [`Outcome`]).
//!
//! **One allocation per queued operation.** The cell holds the caller's future, unpolled, and
//! later its result and the handle's waker: there is no channel, and no second allocation for
//! the result. A future cannot be polled in place inside shared memory without `unsafe` (it
//! would have to be pinned there, and the crate forbids `unsafe`), so the runner that starts an
//! operation moves the future out of the cell into a [`Running`] box of its own: an allocation
//! that lives only while the operation runs and is freed by the runner that made it, the same
//! thread, right after (what operation-queue does when it performs an operation; it is hot in
//! the allocator's per-thread cache). Queued operations, which can be many, cost one allocation
//! each.
//!
//! The cell's stage, under its lock, decides exactly once whether a queued job starts (a runner
//! [starts](Job::start) it) or is cancelled (its handle was dropped, or a shutdown cancels it):
//! whoever wins counts it. However an operation ends, its handle hears about it exactly once:
//! its output, the error given to [`Run::fail`], or, for a job dropped before either, why it
//! has none (cancelled while queued, aborted while running). A started operation delivers when
//! its [`Running`] box is dropped, which the runner does only after counting its end, so a
//! caller that has its result sees it counted in `stats`.

use std::future::Future;
use std::marker::PhantomData;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;

use super::core::drop_quietly;
use super::error::OperationError;
use crate::sync::{Mutex, lock};

/// What a handle receives.
pub(crate) type Output<T> = Result<T, OperationError>;

/// A queued operation, as the FIFO holds it and a runner takes it.
pub(crate) trait Job {
    /// The started operation, as its runner polls it (`Send` for `OperationQueue`).
    type Run: ?Sized + Run;
    /// A runner takes the job: the operation, moved out to be polled, or `None` if it was
    /// cancelled first (then this reference is dropped, a panic in the future's destructor
    /// ignored).
    fn start(self: Arc<Self>) -> Option<Pin<Box<Self::Run>>>;
    /// Cancels the job (a shutdown, or its FIFO entry dropped) and tells its handle: `false` if
    /// it had started or was cancelled already.
    fn cancel(&self) -> bool;
    /// When the job was queued.
    #[cfg(feature = "metrics")]
    fn queued_at(&self) -> tokio::time::Instant;
}

/// A started operation, as its runner polls it.
pub(crate) trait Run {
    /// Polls the operation; on completion its output is kept for the handle.
    fn poll_run(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
    /// The operation gave no output (it panicked or timed out): keeps why, for the handle.
    fn fail(self: Pin<&mut Self>, error: OperationError);
}

/// A [`Run`] that can move between threads: what an `OperationQueue`'s runner holds.
pub(crate) trait SendRun: Run + Send {}

impl<T: Run + Send + ?Sized> SendRun for T {}

/// The jobs of an `OperationQueue`.
pub(crate) type SendJob = dyn Job<Run = dyn SendRun> + Send + Sync;

/// The jobs of a `LocalOperationQueue`.
pub(crate) type LocalJob = dyn Job<Run = dyn Run>;

/// An operation's result, as its handle reads it.
pub(crate) trait Outcome {
    type Value;
    /// The result, once delivered; registers `cx`'s waker otherwise.
    fn poll_outcome(&self, cx: &mut Context<'_>) -> Poll<Output<Self::Value>>;
    /// Cancels the job if it has not started: `true` if this call did.
    fn cancel(&self) -> bool;
}

/// The [`Cell`] of an `OperationQueue`'s operation: its future and output are `Send`.
pub(crate) enum Sendable {}

/// The [`Cell`] of a `LocalOperationQueue`'s operation.
pub(crate) enum Local {}

/// One queued operation: its state, its future until a runner starts it, then its result and
/// the handle's waker. `K` says which flavour's [`Job`] it is ([`Sendable`] or [`Local`]).
pub(crate) struct Cell<F: Future, K> {
    inner: Mutex<Inner<F>>,
    /// When the job was queued, for the `metrics` feature's wait histogram.
    #[cfg(feature = "metrics")]
    queued: tokio::time::Instant,
    kind: PhantomData<fn() -> K>,
}

struct Inner<F: Future> {
    stage: Stage<F>,
    waker: Option<Waker>,
}

enum Stage<F: Future> {
    /// Queued, not started: the caller's future, never polled.
    Queued(F),
    /// Its handle was dropped before it started: it will not run. Its future was dropped then,
    /// with what it held; the cell waits in the FIFO for the runner that comes to it.
    Cancelled,
    /// Moved out to its runner.
    Gone,
    /// The result, for the handle.
    Done(Output<F::Output>),
    /// The handle has taken the result.
    Taken,
}

impl<F: Future, K> Cell<F, K> {
    pub(crate) fn new(fut: F) -> Self {
        Cell {
            inner: Mutex::new(Inner {
                stage: Stage::Queued(fut),
                waker: None,
            }),
            #[cfg(feature = "metrics")]
            queued: tokio::time::Instant::now(),
            kind: PhantomData,
        }
    }

    /// Its handle is dropped before the job started: `true` if this call cancelled it. The
    /// future is dropped here, after the lock is released (a panic in its destructor ignored),
    /// so that what it holds is freed at once, not when a runner reaches the cell: callers that
    /// give up behind a stuck runner keep nothing of theirs alive.
    fn cancel_by_handle(&self) -> bool {
        let stage = {
            let mut inner = lock(&self.inner);
            if !matches!(inner.stage, Stage::Queued(_)) {
                return false;
            }
            mem::replace(&mut inner.stage, Stage::Cancelled)
        };
        drop_quietly(stage);
        true
    }

    /// Cancels the job if it has not started and tells its handle; the future is dropped
    /// after the lock is released, a panic in its destructor ignored.
    fn cancel_and_tell(&self) -> bool {
        let (stage, waker) = {
            let mut inner = lock(&self.inner);
            if !matches!(inner.stage, Stage::Queued(_)) {
                return false;
            }
            let cancelled = Stage::Done(Err(OperationError::cancelled()));
            (
                mem::replace(&mut inner.stage, cancelled),
                inner.waker.take(),
            )
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        // A panic in the future's destructor must not unwind into the shutdown (or the runner)
        // cancelling it: the queue's counts and the runners' aborts come after this.
        drop_quietly(stage);
        true
    }

    /// Takes the job for a runner: its future, or `None` if it was cancelled first (by its
    /// handle, which dropped the future, or by a shutdown, which told the handle).
    fn begin(self: Arc<Self>) -> Option<Running<F, K>> {
        let stage = {
            let mut inner = lock(&self.inner);
            if !matches!(inner.stage, Stage::Queued(_) | Stage::Cancelled) {
                // A shutdown cancelled it: its handle has been told.
                return None;
            }
            mem::replace(&mut inner.stage, Stage::Gone)
        };
        match stage {
            Stage::Queued(fut) => Some(Running {
                fut,
                reply: Reply {
                    cell: self,
                    result: None,
                },
            }),
            // Cancelled by its handle, which is gone and dropped the future.
            _ => None,
        }
    }

    fn deliver(&self, result: Output<F::Output>) {
        let waker = {
            let mut inner = lock(&self.inner);
            inner.stage = Stage::Done(result);
            inner.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<F, K> Job for Cell<F, K>
where
    F: Future + 'static,
    K: Kind<F>,
{
    type Run = K::Run;

    fn start(self: Arc<Self>) -> Option<Pin<Box<K::Run>>> {
        self.begin().map(K::boxed)
    }

    fn cancel(&self) -> bool {
        self.cancel_and_tell()
    }

    #[cfg(feature = "metrics")]
    fn queued_at(&self) -> tokio::time::Instant {
        self.queued
    }
}

/// What a flavour boxes a started operation as.
pub(crate) trait Kind<F: Future>: Sized + 'static {
    type Run: ?Sized + Run;
    fn boxed(running: Running<F, Self>) -> Pin<Box<Self::Run>>;
}

impl<F> Kind<F> for Sendable
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Run = dyn SendRun;

    fn boxed(running: Running<F, Self>) -> Pin<Box<dyn SendRun>> {
        Box::pin(running)
    }
}

impl<F: Future + 'static> Kind<F> for Local {
    type Run = dyn Run;

    fn boxed(running: Running<F, Self>) -> Pin<Box<dyn Run>> {
        Box::pin(running)
    }
}

impl<F: Future, K> Outcome for Cell<F, K> {
    type Value = F::Output;

    fn poll_outcome(&self, cx: &mut Context<'_>) -> Poll<Output<F::Output>> {
        let mut inner = lock(&self.inner);
        // Pending (still queued or running): the stage, and the future it may hold, stay put.
        if matches!(inner.stage, Stage::Done(_) | Stage::Taken) {
            return Poll::Ready(match mem::replace(&mut inner.stage, Stage::Taken) {
                Stage::Done(result) => result,
                // Taken once: the handle stops polling after `Ready`.
                _ => Err(OperationError::aborted()),
            });
        }
        match &mut inner.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => inner.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn cancel(&self) -> bool {
        self.cancel_by_handle()
    }
}

pin_project! {
    /// A started operation: the caller's future, moved out of its cell to be polled pinned, and
    /// the way back to its handle.
    pub(crate) struct Running<F: Future, K> {
        #[pin]
        fut: F,
        reply: Reply<F, K>,
    }
}

impl<F: Future, K> Run for Running<F, K> {
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
}

/// Hands the handle its result when dropped, or why there is none. It is the last field of
/// [`Running`], so the caller's future is dropped first.
struct Reply<F: Future, K> {
    cell: Arc<Cell<F, K>>,
    result: Option<Output<F::Output>>,
}

impl<F: Future, K> Drop for Reply<F, K> {
    fn drop(&mut self) {
        if Arc::strong_count(&self.cell) == 1 {
            // The handle is gone (dropped, or detached), and cells have no weak references: no
            // one can read the result. (A load, where `Arc::get_mut` would take a lock-prefixed
            // compare-and-swap.)
            return;
        }
        let result = self
            .result
            .take()
            .unwrap_or_else(|| Err(OperationError::aborted()));
        self.cell.deliver(result);
    }
}

/// A job in the FIFO. Dropped without being started (a shutdown cancelled it, or the queue
/// itself was dropped with its runtime), it is cancelled, and its handle told.
pub(crate) struct Entry<J: ?Sized + Job>(Option<Arc<J>>);

impl<J: ?Sized + Job> Entry<J> {
    pub(crate) fn new(job: Arc<J>) -> Self {
        Entry(Some(job))
    }

    /// A runner takes the job: the started operation, or `None` if it was cancelled first
    /// (then it is dropped here, a panic in the future's destructor ignored).
    pub(crate) fn start(mut self) -> Option<Pin<Box<J::Run>>> {
        self.0.take()?.start()
    }

    /// Cancels the job if it has not started: `true` if this call did.
    pub(crate) fn cancel(&self) -> bool {
        self.0.as_ref().is_some_and(|job| job.cancel())
    }

    /// When the job was queued.
    #[cfg(feature = "metrics")]
    pub(crate) fn queued_at(&self) -> Option<tokio::time::Instant> {
        self.0.as_ref().map(|job| job.queued_at())
    }
}

impl<J: ?Sized + Job> Drop for Entry<J> {
    fn drop(&mut self) {
        if let Some(job) = self.0.take() {
            job.cancel();
        }
    }
}

/// Polls a started job through a pinned reference, so that timeouts and panic catching can wrap
/// it while the runner keeps the job (to fail it afterwards).
pub(crate) struct RunJob<'a, J: ?Sized>(pub(crate) Pin<&'a mut J>);

impl<J: Run + ?Sized> Future for RunJob<'_, J> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll_run(cx)
    }
}
