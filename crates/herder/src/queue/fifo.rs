//! The queued jobs: an unbounded lock-free FIFO (smol's `concurrent-queue`, the queue under
//! `async-channel`), so that submitting and taking a job take no lock. Under `--cfg herder_loom`
//! a mutex around a `VecDeque` stands in for it, so that the loom models see every access.

#[cfg(not(herder_loom))]
pub(crate) struct Fifo<T>(concurrent_queue::ConcurrentQueue<T>);

#[cfg(not(herder_loom))]
impl<T> Fifo<T> {
    pub(crate) fn new() -> Self {
        Fifo(concurrent_queue::ConcurrentQueue::unbounded())
    }

    pub(crate) fn push(&self, value: T) {
        // An unbounded queue that is never closed accepts every push.
        if self.0.push(value).is_err() {
            unreachable!("the FIFO is unbounded and never closed")
        }
    }

    pub(crate) fn pop(&self) -> Option<T> {
        self.0.pop().ok()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(herder_loom)]
pub(crate) struct Fifo<T>(crate::sync::Mutex<std::collections::VecDeque<T>>);

#[cfg(herder_loom)]
impl<T> Fifo<T> {
    pub(crate) fn new() -> Self {
        Fifo(crate::sync::Mutex::new(std::collections::VecDeque::new()))
    }

    pub(crate) fn push(&self, value: T) {
        crate::sync::lock(&self.0).push_back(value);
    }

    pub(crate) fn pop(&self) -> Option<T> {
        crate::sync::lock(&self.0).pop_front()
    }

    pub(crate) fn is_empty(&self) -> bool {
        crate::sync::lock(&self.0).is_empty()
    }
}
