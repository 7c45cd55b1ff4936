use std::any::Any;
use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::Cause;
use crate::flight::Failure;

/// Why a [`DataLoader`](crate::DataLoader) load failed: the loader returned an error, panicked,
/// outlived the load timeout, or its batch was dropped with its runtime.
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
/// # }
/// ```
pub struct LoadError<E> {
    repr: Repr<E>,
}

enum Repr<E> {
    Loader(Arc<E>),
    Failed(Failure),
    /// Through a cache in front: the load this call joined (started by another reader of the
    /// cache) failed with an error of another type.
    OtherLoader(Arc<dyn Any + Send + Sync>),
    /// The loader call outlived the DataLoader's load timeout or, through a cache in front, the
    /// load this call joined hit the cache's load timeout.
    TimedOut(Duration),
}

impl<E: Send + Sync + 'static> LoadError<E> {
    /// The failure of a cache load this call joined.
    pub(crate) fn from_cause(cause: Cause) -> Self {
        let repr = match cause {
            Cause::Error(error) => match error.downcast::<E>() {
                Ok(error) => Repr::Loader(error),
                Err(other) => Repr::OtherLoader(other),
            },
            Cause::Panicked(message) => Repr::Failed(Failure::Panicked(message)),
            Cause::TimedOut(after) => Repr::TimedOut(after),
        };
        LoadError { repr }
    }
}

impl<E> LoadError<E> {
    pub(crate) fn loader(error: Arc<E>) -> Self {
        LoadError {
            repr: Repr::Loader(error),
        }
    }

    pub(crate) fn failed(failure: Failure) -> Self {
        LoadError {
            repr: Repr::Failed(failure),
        }
    }

    pub(crate) fn timed_out(after: Duration) -> Self {
        LoadError {
            repr: Repr::TimedOut(after),
        }
    }

    /// The loader's error, if the loader returned one.
    pub fn loader_error(&self) -> Option<&E> {
        match &self.repr {
            Repr::Loader(error) => Some(error),
            _ => None,
        }
    }

    /// The loader's error as the `Arc` all callers share, if the loader returned one.
    pub fn into_loader_error(self) -> Option<Arc<E>> {
        match self.repr {
            Repr::Loader(error) => Some(error),
            _ => None,
        }
    }

    /// `true` if the loader call outlived the load timeout
    /// ([`Builder::load_timeout`](crate::batch::Builder::load_timeout)), or, with a cache in
    /// front, the load this call joined hit the cache's load timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self.repr, Repr::TimedOut(_))
    }

    /// `true` if the loader panicked, while it ran or while building its future.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Failed(Failure::Panicked(_)))
    }

    /// `true` if the batch was dropped before it finished, which happens when the runtime that
    /// carried it shuts down.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Failed(Failure::Cancelled))
    }

    /// The panic message, when the loader panicked with a string payload.
    pub fn panic_message(&self) -> Option<&str> {
        match &self.repr {
            Repr::Failed(Failure::Panicked(message)) => Some(message),
            _ => None,
        }
    }
}

impl<E> Clone for LoadError<E> {
    fn clone(&self) -> Self {
        let repr = match &self.repr {
            Repr::Loader(error) => Repr::Loader(error.clone()),
            Repr::Failed(failure) => Repr::Failed(failure.clone()),
            Repr::OtherLoader(error) => Repr::OtherLoader(error.clone()),
            Repr::TimedOut(after) => Repr::TimedOut(*after),
        };
        LoadError { repr }
    }
}

impl<E: fmt::Debug> fmt::Debug for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Loader(error) => f.debug_tuple("LoadError::Loader").field(error).finish(),
            Repr::Failed(Failure::Panicked(message)) => {
                f.debug_tuple("LoadError::Panicked").field(message).finish()
            }
            Repr::Failed(Failure::Cancelled) => f.write_str("LoadError::Cancelled"),
            Repr::OtherLoader(_) => f.write_str("LoadError::OtherLoader"),
            Repr::TimedOut(after) => f.debug_tuple("LoadError::TimedOut").field(after).finish(),
        }
    }
}

impl<E: fmt::Display> fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Loader(error) => write!(f, "loader failed: {error}"),
            Repr::Failed(Failure::Panicked(message)) => write!(f, "loader panicked: {message}"),
            Repr::Failed(Failure::Cancelled) => {
                f.write_str("load cancelled: its batch was dropped with its runtime")
            }
            Repr::OtherLoader(_) => {
                f.write_str("loader failed: the joined cache load (another reader's) failed")
            }
            Repr::TimedOut(after) => write!(f, "load timed out after {after:?}"),
        }
    }
}

impl<E: Error + 'static> Error for LoadError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.repr {
            Repr::Loader(error) => Some(&**error),
            _ => None,
        }
    }
}
