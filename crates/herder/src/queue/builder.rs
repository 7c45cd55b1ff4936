use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use super::core::Config;
use super::handle::OperationQueue;
use super::local::LocalOperationQueue;
use crate::error::BuildError;
use crate::line::{Gate, Line};

/// Configures an [`OperationQueue`] (made by [`OperationQueue::builder`]) or a
/// [`LocalOperationQueue`] (made by [`LocalOperationQueue::builder`]).
///
/// ```
/// use herder::{Line, OperationQueue};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let auth: Line<Result<String, String>> = Line::new();
/// let queue = OperationQueue::builder()
///     .runners(4)                       // at most 4 operations at once
///     .capacity(100)                    // `submit` waits while 100 are queued
///     .timeout(Duration::from_secs(30)) // each operation, from its start
///     .pause_while_recovering(&auth)    // no new operation starts while `auth` recovers
///     .build()
///     .expect("valid settings");
/// assert_eq!(queue.runners(), 4);
///
/// let err = OperationQueue::builder().runners(0).build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid OperationQueue setting: runners must be at least 1");
/// # }
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<Q> {
    runners: usize,
    capacity: Option<usize>,
    timeout: Option<Duration>,
    gates: Vec<Arc<dyn Gate>>,
    runtime: Option<Handle>,
    name: Option<Arc<str>>,
    _queue: PhantomData<fn() -> Q>,
}

impl<Q> Builder<Q> {
    pub(super) fn new() -> Self {
        Builder {
            runners: 1,
            capacity: None,
            timeout: None,
            gates: Vec::new(),
            runtime: None,
            name: None,
            _queue: PhantomData,
        }
    }

    /// How many operations run at once (default 1: one at a time, in order). Must be at least 1
    /// and at most [`MAX_RUNNERS`](super::MAX_RUNNERS); `build` refuses other counts. Can be
    /// changed later with [`OperationQueue::set_runners`].
    pub fn runners(mut self, runners: usize) -> Self {
        self.runners = runners;
        self
    }

    /// The name of this queue in its metrics (the label `name`, as in
    /// `herder_queue_depth{name="imap"}`) and in its `Debug` output. Without the `metrics`
    /// feature it is only shown by `Debug`; a [`LocalOperationQueue`] records no metrics.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let queue = herder::OperationQueue::builder().name("imap").build().unwrap();
    /// assert!(format!("{queue:?}").contains("imap"));
    /// # }
    /// ```
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How many operations may wait for a runner (default: no limit). While the queue is full,
    /// [`submit`](OperationQueue::submit) waits and [`try_submit`](OperationQueue::try_submit)
    /// hands the operation back. Running operations do not count. Must be at least 1 and at most
    /// [`MAX_CAPACITY`](super::MAX_CAPACITY) (leave it unset for a queue without limit); `build`
    /// refuses other values.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Stops each operation that runs longer than `timeout`, counted from its start (default:
    /// none); its handle reports [`is_timeout`](super::OperationError::is_timeout). Must be
    /// more than zero; a timeout of 30 years or more (`Duration::MAX`) never fires.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Starts no new operation while `line` runs a recovery (operations already running carry
    /// on). Operations that would fail for the reason the line is recovering from (an expired
    /// token) then wait in the queue instead of failing one after the other. May be called for
    /// several lines. A recovery of `line` must not wait for an operation of this queue (it
    /// would wait for itself): give the line a `recovery_timeout` if it might.
    pub fn pause_while_recovering<O>(mut self, line: &Line<O>) -> Self
    where
        O: Clone + Send + 'static,
    {
        self.gates.push(line.gate());
        self
    }

    fn config(self) -> Result<(Config, Option<Handle>), BuildError> {
        let refuse = |reason| Err(BuildError::new("OperationQueue", reason));
        check_runners(self.runners)?;
        match self.capacity {
            Some(0) => return refuse("capacity must be at least 1"),
            Some(capacity) if capacity > MAX_CAPACITY => {
                return refuse("capacity must be at most herder::queue::MAX_CAPACITY");
            }
            _ => {}
        }
        if self.timeout == Some(Duration::ZERO) {
            return refuse("timeout must be more than zero");
        }
        let config = Config {
            runners: self.runners,
            capacity: self.capacity,
            timeout: self.timeout.and_then(crate::time::finite),
            gates: self.gates,
            name: self.name,
        };
        Ok((config, self.runtime))
    }
}

/// The most runners a queue can have: each runner is a task, so this is far more than a
/// queue can use, and small enough that a mistaken count (`usize::MAX`) is refused instead of
/// exhausting memory.
pub const MAX_RUNNERS: usize = 1 << 16;

/// The largest [`capacity`](Builder::capacity): the most permits a Tokio semaphore holds
/// (`usize::MAX >> 3`). A queue without a capacity has no limit at all.
pub const MAX_CAPACITY: usize = Semaphore::MAX_PERMITS;

/// The one rule on a runner count, at build time and in `set_runners`.
pub(super) fn check_runners(runners: usize) -> Result<(), BuildError> {
    let reason = if runners == 0 {
        "runners must be at least 1"
    } else if runners > MAX_RUNNERS {
        "runners must be at most herder::queue::MAX_RUNNERS (65536)"
    } else {
        return Ok(());
    };
    Err(BuildError::new("OperationQueue", reason))
}

impl Builder<OperationQueue> {
    /// The runtime that runs the runners (default: the runtime `build` is called from).
    pub fn runtime(mut self, runtime: Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Builds the queue and spawns its runners, or says which setting is invalid.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime without [`runtime`](Builder::runtime).
    pub fn build(self) -> Result<OperationQueue, BuildError> {
        let (config, runtime) = self.config()?;
        let runtime = runtime.unwrap_or_else(|| match Handle::try_current() {
            Ok(handle) => handle,
            Err(_) => panic!(
                "OperationQueue::build must be called from within a Tokio runtime, or be given one with `Builder::runtime`"
            ),
        });
        Ok(OperationQueue::from_config(config, runtime))
    }
}

impl Builder<LocalOperationQueue> {
    /// Builds the queue and spawns its runners on the current
    /// [`LocalSet`](tokio::task::LocalSet), or says which setting is invalid.
    ///
    /// # Panics
    ///
    /// When called outside a `LocalSet` (as [`tokio::task::spawn_local`]).
    pub fn build(self) -> Result<LocalOperationQueue, BuildError> {
        let (config, _) = self.config()?;
        Ok(LocalOperationQueue::from_config(config))
    }
}

impl<Q> fmt::Debug for Builder<Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("runners", &self.runners)
            .field("capacity", &self.capacity)
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("lines", &self.gates.len())
            .finish_non_exhaustive()
    }
}
