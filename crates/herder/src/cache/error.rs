use std::any::Any;
use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::load::Cause;
use crate::flight::Failure;

/// Why a cache read produced no value.
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
/// # }
/// ```
pub struct CacheError<E> {
    repr: Repr<E>,
}

enum Repr<E> {
    Loader(Arc<E>),
    /// The call joined a load started by a call site with another error type.
    OtherLoader(Arc<dyn Any + Send + Sync>),
    Panicked(Arc<str>),
    TimedOut(Duration),
    Cancelled,
    NotFound,
}

impl<E: Send + Sync + 'static> CacheError<E> {
    pub(crate) fn from_cause(cause: Cause) -> Self {
        let repr = match cause {
            Cause::Error(error) => match error.downcast::<E>() {
                Ok(error) => Repr::Loader(error),
                Err(other) => Repr::OtherLoader(other),
            },
            Cause::Panicked(message) => Repr::Panicked(message),
            Cause::TimedOut(after) => Repr::TimedOut(after),
        };
        CacheError { repr }
    }
}

impl<E> CacheError<E> {
    pub(crate) fn from_failure(failure: Failure) -> Self {
        let repr = match failure {
            Failure::Panicked(message) => Repr::Panicked(message),
            Failure::Cancelled => Repr::Cancelled,
        };
        CacheError { repr }
    }

    pub(crate) fn timed_out(after: Duration) -> Self {
        CacheError {
            repr: Repr::TimedOut(after),
        }
    }

    pub(crate) fn not_found() -> Self {
        CacheError {
            repr: Repr::NotFound,
        }
    }

    /// The loader's error, if a loader of this call's type returned one.
    pub fn loader_error(&self) -> Option<&E> {
        match &self.repr {
            Repr::Loader(error) => Some(error),
            _ => None,
        }
    }

    /// The loader's error as the `Arc` every waiter shares.
    pub fn into_loader_error(self) -> Option<Arc<E>> {
        match self.repr {
            Repr::Loader(error) => Some(error),
            _ => None,
        }
    }

    /// `true` if a loader returned an error, including a loader of another call site (with
    /// another error type) whose load this call joined.
    pub fn is_loader_error(&self) -> bool {
        matches!(self.repr, Repr::Loader(_) | Repr::OtherLoader(_))
    }

    /// `true` if the loader panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panicked(_))
    }

    /// The panic message, when the loader panicked with a string payload.
    pub fn panic_message(&self) -> Option<&str> {
        match &self.repr {
            Repr::Panicked(message) => Some(message),
            _ => None,
        }
    }

    /// `true` if the wait or the load ran out of time (and no stale value could stand in).
    pub fn is_timeout(&self) -> bool {
        matches!(self.repr, Repr::TimedOut(_))
    }

    /// `true` if the load's task was dropped before it finished (its runtime shut down).
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Cancelled)
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
            Repr::Loader(error) => Repr::Loader(error.clone()),
            Repr::OtherLoader(error) => Repr::OtherLoader(error.clone()),
            Repr::Panicked(message) => Repr::Panicked(message.clone()),
            Repr::TimedOut(after) => Repr::TimedOut(*after),
            Repr::Cancelled => Repr::Cancelled,
            Repr::NotFound => Repr::NotFound,
        };
        CacheError { repr }
    }
}

impl<E: fmt::Debug> fmt::Debug for CacheError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Loader(error) => f.debug_tuple("CacheError::Loader").field(error).finish(),
            Repr::OtherLoader(_) => f.write_str("CacheError::OtherLoader"),
            Repr::Panicked(message) => f
                .debug_tuple("CacheError::Panicked")
                .field(message)
                .finish(),
            Repr::TimedOut(after) => f.debug_tuple("CacheError::TimedOut").field(after).finish(),
            Repr::Cancelled => f.write_str("CacheError::Cancelled"),
            Repr::NotFound => f.write_str("CacheError::NotFound"),
        }
    }
}

impl<E: fmt::Display> fmt::Display for CacheError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Loader(error) => write!(f, "loader failed: {error}"),
            Repr::OtherLoader(_) => f.write_str(
                "loader failed: the joined load (from a call site with another error type) failed",
            ),
            Repr::Panicked(message) => write!(f, "loader panicked: {message}"),
            Repr::TimedOut(after) => write!(f, "cache load timed out after {after:?}"),
            Repr::Cancelled => {
                f.write_str("cache load cancelled: its task was dropped with its runtime")
            }
            Repr::NotFound => f.write_str("key is cached as not found"),
        }
    }
}

impl<E: Error + 'static> Error for CacheError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.repr {
            Repr::Loader(error) => Some(&**error),
            _ => None,
        }
    }
}
