//! What [`LoadError`](crate::LoadError) and [`CacheError`](crate::CacheError) share: a load
//! failed because the loader returned an error, or because its task failed to finish. What only
//! a cache can see (a joined load from a call site with another error type) is the cache's own
//! (`cache/error.rs`).

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use super::task::{Origin, TaskError};
use crate::flight::Failure;

/// A failed load, as every waiter of it sees it.
pub(crate) enum LoadFailure<E> {
    /// The loader's error, shared by every waiter.
    Loader(Arc<E>),
    /// The load panicked, was cancelled or timed out.
    Task(TaskError),
}

impl<E> LoadFailure<E> {
    pub(crate) fn failed(failure: Failure) -> Self {
        LoadFailure::Task(TaskError::failed(Origin::Load, failure))
    }

    pub(crate) fn timed_out(after: std::time::Duration) -> Self {
        LoadFailure::Task(TaskError::timed_out(Origin::Load, after))
    }

    pub(crate) fn loader_error(&self) -> Option<&E> {
        match self {
            LoadFailure::Loader(error) => Some(error),
            _ => None,
        }
    }

    pub(crate) fn into_loader_error(self) -> Option<Arc<E>> {
        match self {
            LoadFailure::Loader(error) => Some(error),
            _ => None,
        }
    }

    pub(crate) fn is_loader_error(&self) -> bool {
        matches!(self, LoadFailure::Loader(_))
    }

    pub(crate) fn task_error(&self) -> Option<&TaskError> {
        match self {
            LoadFailure::Task(error) => Some(error),
            _ => None,
        }
    }

    /// `Debug` under the public type's name.
    pub(crate) fn fmt_debug(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result
    where
        E: fmt::Debug,
    {
        match self {
            LoadFailure::Loader(error) => f.debug_tuple(name).field(error).finish(),
            LoadFailure::Task(error) => f.debug_tuple(name).field(error).finish(),
        }
    }

    /// `Error::source`: the loader's error. A task error is shown by `Display` itself, so it is
    /// not repeated as a source.
    pub(crate) fn source(&self) -> Option<&(dyn Error + 'static)>
    where
        E: Error + 'static,
    {
        match self {
            LoadFailure::Loader(error) => Some(&**error),
            LoadFailure::Task(_) => None,
        }
    }
}

impl<E> Clone for LoadFailure<E> {
    fn clone(&self) -> Self {
        match self {
            LoadFailure::Loader(error) => LoadFailure::Loader(error.clone()),
            LoadFailure::Task(error) => LoadFailure::Task(error.clone()),
        }
    }
}

impl<E: fmt::Display> fmt::Display for LoadFailure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadFailure::Loader(error) => write!(f, "loader failed: {error}"),
            LoadFailure::Task(error) => fmt::Display::fmt(error, f),
        }
    }
}
