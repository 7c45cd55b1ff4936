use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;

/// Loads many keys with one call to a backend: the batch function of a
/// [`DataLoader`](crate::DataLoader).
///
/// The shape is async-graphql's, so loaders port by moving the key type into `Key`. The map
/// returned need not answer every key: keys left out load as `None`, and keys nobody asked for
/// are ignored. An error goes to every caller waiting on the batch, shared, so it need not be
/// `Clone`.
///
/// ```
/// use herder::Loader;
/// use std::collections::HashMap;
///
/// struct UserNames;
///
/// impl Loader for UserNames {
///     type Key = u64;
///     type Value = String;
///     type Error = std::io::Error;
///
///     async fn load(&self, ids: &[u64]) -> Result<HashMap<u64, String>, std::io::Error> {
///         // One `SELECT id, name FROM users WHERE id = ANY($1)` in a real loader.
///         Ok(ids.iter().map(|id| (*id, format!("user {id}"))).collect())
///     }
/// }
/// ```
pub trait Loader: Send + Sync + 'static {
    /// What a caller asks for, such as a row id.
    type Key: Eq + Hash + Clone + Send + Sync + 'static;
    /// What a key loads to.
    type Value: Clone + Send + Sync + 'static;
    /// The backend's error, handed to every caller of the failed batch behind an `Arc`.
    type Error: Send + Sync + 'static;

    /// Loads `keys` (distinct, at most the configured batch size) with one backend call.
    fn load(
        &self,
        keys: &[Self::Key],
    ) -> impl Future<Output = Result<HashMap<Self::Key, Self::Value>, Self::Error>> + Send;
}
