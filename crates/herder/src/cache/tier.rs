//! A second-level store shared by a fleet, under each instance's [`Cache`](super::Cache).
//!
//! The core crate knows no store: a tier (such as `herder-redis`'s) implements [`Tier`]. On an L1
//! miss, the instance's leader of the load asks the tier first ([`Tier::acquire`]): the tier
//! answers with the shared value, or grants this instance the lease to load the key (and fill the
//! tier), or waits while another instance loads it, or says it is unavailable, in which case the
//! instance loads on its own and the request never fails because of the tier. A batch of misses
//! (a DataLoader batch over the cache, or `get_many_with`) asks for all its keys at once
//! ([`Tier::acquire_many`]).

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::entry::Loaded;
use super::handle::Inner;

/// A boxed future, as the object-safe [`Tier`] returns.
pub type TierFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A shared second-level store (L2) under a [`Cache`](super::Cache).
///
/// Every method must be fail-open: a slow or failed store answers
/// [`Acquired::Unavailable`] within its own time budget, never an error, never a hang.
pub trait Tier<K, V>: Send + Sync + 'static {
    /// Called once by the cache this tier is attached to, with a handle through which the tier
    /// evicts L1 entries that another instance invalidated.
    fn attach(&self, local: LocalCache<K, V>);

    /// Called on an L1 miss by the instance's one leader of the load of `key`: the shared value,
    /// or the lease to load it, or a verdict that the tier cannot help.
    fn acquire<'a>(&'a self, key: &'a K) -> TierFuture<'a, Acquired<V>>;

    /// [`acquire`](Tier::acquire) for the missing keys of a batch (a
    /// [`DataLoader`](crate::DataLoader) batch over this cache, or
    /// [`get_many_with`](super::Cache::get_many_with)), answered by position in `keys`.
    ///
    /// The batch loads the keys it leads, and those the tier cannot help with, in one loader
    /// call, then fills every lease it was given, concurrently (a tier can send those fills as
    /// one write: see [`Lease`]). Keys that other instances are loading are answered
    /// [`later`](Acquisition::later), so that the batch loads and fills its own leases first:
    /// two batches that lead keys the other waits for never wait for each other.
    ///
    /// A tier that can should answer a batch in one round trip. The default asks
    /// [`acquire`](Tier::acquire) for every key, concurrently, and answers them all at once: a
    /// tier whose `acquire` waits for other instances should override it, so that a batch does
    /// not hold the leases it was granted while it waits.
    fn acquire_many<'a>(&'a self, keys: &'a [K]) -> TierFuture<'a, Acquisition<V>>
    where
        K: Sync,
        V: Send + 'static,
    {
        Box::pin(async move {
            let answers = futures_util::future::join_all(keys.iter().map(|key| self.acquire(key)));
            Acquisition {
                answers: answers.await.into_iter().enumerate().collect(),
                later: None,
            }
        })
    }

    /// Drops `key` from the tier and tells every instance to evict it. Must not block: an
    /// implementation queues the work. Called by [`Cache::invalidate`](super::Cache::invalidate).
    fn invalidate(&self, key: &K);

    /// Drops every key of this cache from the tier and tells every instance; must not block.
    fn invalidate_all(&self);
}

/// The tier's answer to [`Tier::acquire`].
pub enum Acquired<V> {
    /// The tier holds the key: the value (or a cached absence) and its remaining TTL.
    Hit(Loaded<V>),
    /// This instance loads the key and fills the tier through the lease.
    Lead(Box<dyn Lease<V>>),
    /// The tier cannot help (down, slow, circuit open, lease contention past its budget):
    /// load locally and store nothing in the tier.
    Unavailable,
}

impl<V> fmt::Debug for Acquired<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Acquired::Hit(_) => "Acquired::Hit",
            Acquired::Lead(_) => "Acquired::Lead",
            Acquired::Unavailable => "Acquired::Unavailable",
        })
    }
}

/// The tier's answer to [`Tier::acquire_many`]: the keys it can answer now, and a future for
/// the keys other instances are loading.
///
/// Every key of the batch is answered once, here or in a later round; a key the tier never
/// answers is loaded as if [`Unavailable`](Acquired::Unavailable).
pub struct Acquisition<V> {
    /// Answers known now, each with its key's position in the batch.
    pub answers: Vec<(usize, Acquired<V>)>,
    /// The rest, in a later round (which may itself leave some for a round after it); the
    /// batch awaits it once it has loaded the keys it leads and filled their leases.
    pub later: Option<TierFuture<'static, Acquisition<V>>>,
}

impl<V> fmt::Debug for Acquisition<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquisition")
            .field("answers", &self.answers.len())
            .field("later", &self.later.is_some())
            .finish()
    }
}

/// The right to fill the tier with one key's value, granted to one instance at a time.
/// Dropping it without filling (the load failed) releases it for another instance.
///
/// The leases of one round of [`Tier::acquire_many`] are filled (or dropped) together,
/// concurrently: a tier may hold each fill until every lease of the round is settled and send
/// them as one write.
pub trait Lease<V>: Send {
    /// Stores what was loaded (whose [`expires_after`](Loaded::expires_after) is its fresh TTL)
    /// for `ttl` (its fresh TTL plus the stale window; `None`: no expiry; zero: do not store),
    /// unless the lease was lost (taken over after expiry, or revoked by an invalidation): a load
    /// that started before an invalidation never fills the tier.
    fn fill(self: Box<Self>, loaded: Loaded<V>, ttl: Option<Duration>) -> TierFuture<'static, ()>;
}

/// A handle on an instance's L1, given to its tier by [`Tier::attach`]: evicts without telling
/// the tier again. It does not keep the cache alive.
pub struct LocalCache<K, V> {
    inner: Weak<Inner<K, V>>,
}

impl<K, V> LocalCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(super) fn new(inner: &Arc<Inner<K, V>>) -> Self {
        LocalCache {
            inner: Arc::downgrade(inner),
        }
    }

    /// Evicts `key` from this instance's L1. A load of `key` under way here still answers its
    /// callers but stores nothing (the value it read may predate the invalidation). Returns
    /// `false` once the cache is gone.
    pub fn evict(&self, key: &K) -> bool {
        let Some(inner) = self.inner.upgrade() else {
            return false;
        };
        inner.remove_key(key);
        true
    }

    /// Evicts everything from this instance's L1 (after a lost connection, when invalidations
    /// may have been missed). Returns `false` once the cache is gone.
    pub fn evict_all(&self) -> bool {
        let Some(inner) = self.inner.upgrade() else {
            return false;
        };
        inner.remove_all();
        true
    }
}

impl<K, V> Clone for LocalCache<K, V> {
    fn clone(&self) -> Self {
        LocalCache {
            inner: self.inner.clone(),
        }
    }
}

impl<K, V> fmt::Debug for LocalCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCache")
            .field("alive", &(self.inner.strong_count() > 0))
            .finish()
    }
}
