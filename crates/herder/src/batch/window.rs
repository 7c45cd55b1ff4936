//! How a delay window's task is told that its batch filled up: a flag and the task's waker.
//!
//! (A yield window, the default, has no task and no signal: its opener closes it from its own
//! poll, see `dispatch`.) A caller whose key fills a batch with a delay window calls
//! [`WindowCtl::close`]; the batch's window task waits in [`WindowCtl::poll_closed`] (or for its
//! delay) and then asks the state machine what to do. The flag is set before the wake and read
//! after the waker is registered, so a close is never lost, whichever thread it comes from and
//! whether or not the window task has been polled yet (explored by `loom_tests`).

use std::fmt;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use crate::sync::AtomicBool;

/// The close signal of one batch window.
pub(crate) struct WindowCtl {
    closed: AtomicBool,
    waker: Registration,
}

impl WindowCtl {
    pub(crate) fn new() -> Self {
        WindowCtl {
            closed: AtomicBool::new(false),
            waker: Registration::default(),
        }
    }

    /// Tells the window task to close the window now. Idempotent.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// `true` once [`close`](WindowCtl::close) was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Ready once the window is closed; registers `cx`'s waker otherwise.
    pub(crate) fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_closed() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A close between the first check and the registration found no waker: look again.
        if self.is_closed() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl fmt::Debug for WindowCtl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowCtl")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// `futures`' `AtomicWaker`, or loom's under `--cfg herder_loom`.
#[derive(Default)]
struct Registration {
    #[cfg(not(herder_loom))]
    inner: futures_util::task::AtomicWaker,
    #[cfg(herder_loom)]
    inner: loom::future::AtomicWaker,
}

impl Registration {
    #[cfg(not(herder_loom))]
    fn register(&self, waker: &Waker) {
        self.inner.register(waker);
    }

    #[cfg(herder_loom)]
    fn register(&self, waker: &Waker) {
        self.inner.register_by_ref(waker);
    }

    fn wake(&self) {
        self.inner.wake();
    }
}
