use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{LoadFailure, TaskError};
use crate::flight::Failure;

/// Why a [`DataLoader`](crate::DataLoader) load failed: the loader returned an error, or its
/// batch failed to finish (a [`TaskError`]: the loader panicked, outlived the load timeout, or
/// the batch was dropped with its runtime).
///
/// Every caller waiting on the failed batch receives a clone of the same error; the loader's own
/// error is shared behind an `Arc`, so it need not be `Clone`. Failures are never memoized: the
/// next load of the same key asks the loader again.
///
/// ```
/// use herder::{DataLoader, Loader};
/// use std::collections::HashMap;
///
/// struct Down;
/// impl Loader for Down {
///     type Key = u32;
///     type Value = String;
///     type Error = std::io::Error;
///     async fn load(&self, _: &[u32]) -> Result<HashMap<u32, String>, std::io::Error> {
///         Err(std::io::Error::other("connection refused"))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = DataLoader::new(Down).load(1).await.unwrap_err();
/// assert_eq!(err.loader_error().unwrap().to_string(), "connection refused");
/// assert_eq!(err.to_string(), "loader failed: connection refused");
/// assert!(err.task_error().is_none());
///
/// // An `std::error::Error` whose source is the loader's error, so `?` takes it anywhere.
/// use std::error::Error as _;
/// assert_eq!(err.source().unwrap().to_string(), "connection refused");
/// let boxed: Box<dyn std::error::Error + Send + Sync> = err.into();
/// assert_eq!(boxed.to_string(), "loader failed: connection refused");
/// # }
/// ```
pub struct LoadError<E> {
    failure: LoadFailure<E>,
}

impl<E> LoadError<E> {
    pub(crate) fn loader(error: Arc<E>) -> Self {
        LoadError {
            failure: LoadFailure::Loader(error),
        }
    }

    pub(crate) fn failed(failure: Failure) -> Self {
        LoadError {
            failure: LoadFailure::failed(failure),
        }
    }

    pub(crate) fn timed_out(after: Duration) -> Self {
        LoadError {
            failure: LoadFailure::timed_out(after),
        }
    }

    /// The loader's error, if the loader returned one.
    pub fn loader_error(&self) -> Option<&E> {
        self.failure.loader_error()
    }

    /// The loader's error as the `Arc` all callers share, if the loader returned one.
    pub fn into_loader_error(self) -> Option<Arc<E>> {
        self.failure.into_loader_error()
    }

    /// How the batch failed to finish, when the loader returned no error of its own: it
    /// panicked, timed out or was cancelled.
    pub fn task_error(&self) -> Option<&TaskError> {
        self.failure.task_error()
    }

    /// `true` if the loader call outlived the load timeout
    /// ([`Builder::load_timeout`](crate::batch::Builder::load_timeout)), or, with a cache in
    /// front, the load this call joined hit the cache's load timeout.
    pub fn is_timeout(&self) -> bool {
        self.task_error().is_some_and(TaskError::is_timeout)
    }

    /// `true` if the loader panicked, while it ran or while building its future.
    pub fn is_panic(&self) -> bool {
        self.task_error().is_some_and(TaskError::is_panic)
    }

    /// `true` if the batch was dropped before it finished, which happens when the runtime that
    /// carried it shuts down.
    pub fn is_cancelled(&self) -> bool {
        self.task_error().is_some_and(TaskError::is_cancelled)
    }

    /// The panic message, when the loader panicked with a string payload.
    pub fn panic_message(&self) -> Option<&str> {
        self.task_error().and_then(TaskError::panic_message)
    }
}

impl<E> Clone for LoadError<E> {
    fn clone(&self) -> Self {
        LoadError {
            failure: self.failure.clone(),
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.failure.fmt_debug("LoadError", f)
    }
}

impl<E: fmt::Display> fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.failure, f)
    }
}

impl<E: Error + 'static> Error for LoadError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.failure.source()
    }
}
