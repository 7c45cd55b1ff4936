//! What a read found: the value and how it was obtained.

/// How a [`Cache::fetch`](crate::Cache::fetch) call got its answer.
///
/// ```
/// use herder::Cache;
/// use herder::cache::{Loaded, Status};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache: Cache<u32, String> = Cache::new(100);
/// let load = || async { Ok::<_, std::io::Error>(Loaded::found("row".to_string())) };
/// assert_eq!(cache.fetch(1, load).await.unwrap().status, Status::Miss);
/// assert_eq!(cache.fetch(1, load).await.unwrap().status, Status::Hit);
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// A fresh value was in the cache.
    Hit,
    /// A cached "not found" was in the cache.
    NegativeHit,
    /// Nothing usable was cached; this call's loader ran and the call waited for it.
    Miss,
    /// Another call was already loading the key; this call waited for that load.
    Coalesced,
    /// The value was stale: it was returned at once and one background refresh was started (or
    /// was already running).
    Stale,
    /// The load failed (error, panic or load timeout) and fail-safe returned the last good value
    /// (which is then reused for the throttle period without asking the backend).
    StaleOnError,
    /// The wait for the load ran out (`wait_timeout` or a soft load timeout) and the last good
    /// value was returned; the load goes on and still fills the cache.
    StaleOnTimeout,
}

impl Status {
    /// `true` if the value was served from the cache without waiting for a load.
    pub fn is_hit(self) -> bool {
        matches!(self, Status::Hit | Status::NegativeHit | Status::Stale)
    }

    /// `true` if the value is older than the cache's time to live.
    pub fn is_stale(self) -> bool {
        matches!(
            self,
            Status::Stale | Status::StaleOnError | Status::StaleOnTimeout
        )
    }
}

/// The answer of [`Cache::fetch`](crate::Cache::fetch): the value (`None` for a key the loader
/// found absent) and how it was obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched<V> {
    /// The value; `None` when the key does not exist in the backend.
    pub value: Option<V>,
    /// How the value was obtained.
    pub status: Status,
}
