use std::any::Any;
use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::load::Cause;
use crate::error::{LoadFailure, TaskError};
use crate::flight::Failure;

/// Why a cache read produced no value: the loader returned an error, the load failed to finish
/// (a [`TaskError`]: the loader panicked, the load or the wait timed out, the load was
/// cancelled), or the key is cached as not found.
///
/// Every caller waiting on a failed load receives a clone of the same error; the loader's error
/// is shared behind an `Arc`, so it need not be `Clone`. Failures are never cached.
///
/// ```
/// use herder::Cache;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache: Cache<u32, String> = Cache::new(100);
/// let err = cache
///     .try_get_with(1, || async { Err::<String, _>(std::io::Error::other("timeout")) })
///     .await
///     .unwrap_err();
/// assert_eq!(err.loader_error().unwrap().to_string(), "timeout");
/// assert_eq!(err.to_string(), "loader failed: timeout");
///
/// // An `std::error::Error` whose source is the loader's error, so `?` takes it anywhere.
/// use std::error::Error as _;
/// assert_eq!(err.source().unwrap().to_string(), "timeout");
/// # }
/// ```
pub struct CacheError<E> {
    repr: Repr<E>,
}

enum Repr<E> {
    Failed(LoadFailure<E>),
    /// The load this call joined was started by a call site with another error type, and its
    /// loader failed.
    OtherLoader(Arc<dyn Any + Send + Sync>),
    NotFound,
}

impl<E: Send + Sync + 'static> CacheError<E> {
    /// The failure of a load this call led or joined.
    pub(crate) fn from_cause(cause: Cause) -> Self {
        let repr = match cause {
            Cause::Error(error) => match error.downcast::<E>() {
                Ok(error) => Repr::Failed(LoadFailure::Loader(error)),
                Err(other) => Repr::OtherLoader(other),
            },
            Cause::Panicked(message) => {
                Repr::Failed(LoadFailure::failed(Failure::Panicked(message)))
            }
            Cause::TimedOut(after) => Repr::Failed(LoadFailure::timed_out(after)),
        };
        CacheError { repr }
    }
}

impl<E> CacheError<E> {
    pub(crate) fn from_failure(failure: Failure) -> Self {
        CacheError {
            repr: Repr::Failed(LoadFailure::failed(failure)),
        }
    }

    pub(crate) fn timed_out(after: Duration) -> Self {
        CacheError {
            repr: Repr::Failed(LoadFailure::timed_out(after)),
        }
    }

    pub(crate) fn not_found() -> Self {
        CacheError {
            repr: Repr::NotFound,
        }
    }

    fn failure(&self) -> Option<&LoadFailure<E>> {
        match &self.repr {
            Repr::Failed(failure) => Some(failure),
            Repr::OtherLoader(_) | Repr::NotFound => None,
        }
    }

    /// The loader's error, if a loader of this call's type returned one.
    pub fn loader_error(&self) -> Option<&E> {
        self.failure().and_then(LoadFailure::loader_error)
    }

    /// The loader's error as the `Arc` every waiter shares.
    pub fn into_loader_error(self) -> Option<Arc<E>> {
        match self.repr {
            Repr::Failed(failure) => failure.into_loader_error(),
            Repr::OtherLoader(_) | Repr::NotFound => None,
        }
    }

    /// `true` if a loader returned an error, including a loader of another call site (with
    /// another error type) whose load this call joined.
    pub fn is_loader_error(&self) -> bool {
        matches!(self.repr, Repr::OtherLoader(_))
            || self.failure().is_some_and(LoadFailure::is_loader_error)
    }

    /// How the load (or the wait for it) failed to finish: the loader panicked, the load or the
    /// wait timed out, or the load's task was cancelled.
    pub fn task_error(&self) -> Option<&TaskError> {
        self.failure().and_then(LoadFailure::task_error)
    }

    /// `true` if the loader panicked.
    pub fn is_panic(&self) -> bool {
        self.task_error().is_some_and(TaskError::is_panic)
    }

    /// The panic message, when the loader panicked with a string payload.
    pub fn panic_message(&self) -> Option<&str> {
        self.task_error().and_then(TaskError::panic_message)
    }

    /// `true` if the wait or the load ran out of time (and no stale value could stand in).
    pub fn is_timeout(&self) -> bool {
        self.task_error().is_some_and(TaskError::is_timeout)
    }

    /// `true` if the load's task was dropped before it finished (its runtime shut down).
    pub fn is_cancelled(&self) -> bool {
        self.task_error().is_some_and(TaskError::is_cancelled)
    }

    /// `true` if the key is cached as "not found" (or another call's loader just found it
    /// absent) and this call cannot return an absent value (`get_with`, `try_get_with`).
    pub fn is_not_found(&self) -> bool {
        matches!(self.repr, Repr::NotFound)
    }
}

impl<E> Clone for CacheError<E> {
    fn clone(&self) -> Self {
        let repr = match &self.repr {
            Repr::Failed(failure) => Repr::Failed(failure.clone()),
            Repr::OtherLoader(error) => Repr::OtherLoader(error.clone()),
            Repr::NotFound => Repr::NotFound,
        };
        CacheError { repr }
    }
}

impl<E: fmt::Debug> fmt::Debug for CacheError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Failed(failure) => failure.fmt_debug("CacheError", f),
            Repr::OtherLoader(_) => f.debug_tuple("CacheError").field(&"other loader").finish(),
            Repr::NotFound => f.write_str("CacheError::NotFound"),
        }
    }
}

impl<E: fmt::Display> fmt::Display for CacheError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Failed(failure) => fmt::Display::fmt(failure, f),
            Repr::OtherLoader(_) => f.write_str(
                "loader failed: the joined load (from a call site with another error type) failed",
            ),
            Repr::NotFound => f.write_str("key is cached as not found"),
        }
    }
}

impl<E: Error + 'static> Error for CacheError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.failure().and_then(LoadFailure::source)
    }
}
