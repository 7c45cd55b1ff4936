use std::error::Error;
use std::fmt;

/// A builder refused its settings.
///
/// ```
/// use herder::{DataLoader, Loader};
/// use std::collections::HashMap;
/// use std::convert::Infallible;
///
/// struct Squares;
/// impl Loader for Squares {
///     type Key = u64;
///     type Value = u64;
///     type Error = Infallible;
///     async fn load(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, Infallible> {
///         Ok(keys.iter().map(|k| (*k, k * k)).collect())
///     }
/// }
///
/// let err = DataLoader::builder(Squares).max_batch_size(0).build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid DataLoader setting: max_batch_size must be at least 1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildError {
    primitive: &'static str,
    reason: &'static str,
}

impl BuildError {
    pub(crate) fn new(primitive: &'static str, reason: &'static str) -> Self {
        BuildError { primitive, reason }
    }

    /// Which setting is wrong and why, e.g. `"max_batch_size must be at least 1"`.
    pub fn reason(&self) -> &str {
        self.reason
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} setting: {}", self.primitive, self.reason)
    }
}

impl Error for BuildError {}
