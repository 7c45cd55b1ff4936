//! The eviction listener: told of every value that leaves the cache, and why.
//!
//! Removals are collected while the cache holds its locks and delivered once it has released
//! them, on the thread that made the change, so a listener may call back into the cache. A
//! listener that panics is not called again for that removal and does not disturb the cache.

use std::fmt;
use std::sync::Arc;

use super::config::Config;
use super::entry::{Entry, Freshness};

/// Why a value left the cache (moka's `RemovalCause`, same names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemovalCause {
    /// Its time to live (and stale and fail-safe windows) ran out.
    Expired,
    /// [`invalidate`](super::Cache::invalidate), [`remove`](super::Cache::remove),
    /// [`invalidate_all`](super::Cache::invalidate_all), or an invalidation from another
    /// instance through the tier.
    Explicit,
    /// An insert or a load stored another value (or a "not found") for its key.
    Replaced,
    /// Evicted to keep the cache within its capacity.
    Size,
}

impl RemovalCause {
    /// `true` for removals the cache decided on (expiry, capacity), as moka's `was_evicted`.
    pub fn was_evicted(self) -> bool {
        matches!(self, RemovalCause::Expired | RemovalCause::Size)
    }
}

pub(crate) type Listener<K, V> = Arc<dyn Fn(K, V, RemovalCause) + Send + Sync>;

/// Removals waiting for delivery (empty, and free, without a listener).
pub(crate) struct Removed<K, V> {
    listener: Option<Listener<K, V>>,
    removed: Vec<(K, V, RemovalCause)>,
}

impl<K, V> Removed<K, V> {
    pub(crate) fn new(listener: &Option<Listener<K, V>>) -> Self {
        Removed {
            listener: listener.clone(),
            removed: Vec::new(),
        }
    }

    /// `true` if removals are wanted (there is a listener).
    pub(crate) fn wanted(&self) -> bool {
        self.listener.is_some()
    }

    /// Records that `entry` left the cache for `cause`: a value that was still served is
    /// reported with `cause`, one past its windows as expired; cached absences are not values.
    pub(crate) fn entry(
        &mut self,
        key: K,
        entry: Entry<V>,
        cause: RemovalCause,
        now: u64,
        config: &Config,
    ) {
        if self.listener.is_none() {
            return;
        }
        let cause = match entry.freshness(now, config) {
            Freshness::Fresh { .. } | Freshness::Stale => cause,
            Freshness::Kept | Freshness::Gone if cause == RemovalCause::Size => cause,
            Freshness::Kept | Freshness::Gone => RemovalCause::Expired,
        };
        if let Some(value) = entry.into_value() {
            self.removed.push((key, value, cause));
        }
    }
}

impl<K, V> Drop for Removed<K, V> {
    fn drop(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        for (key, value, cause) in self.removed.drain(..) {
            crate::flight::quietly(|| listener(key, value, cause));
        }
    }
}

impl<K, V> fmt::Debug for Removed<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Removed")
            .field("removed", &self.removed.len())
            .finish()
    }
}
