//! A plain cache without coalescing: the "check, load on a miss, store" that many services write
//! by hand. Correct, and useless against a stampede: every request that misses before the first
//! load has finished loads too.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};

/// A map behind a mutex: a hit is answered from it, a miss loads and stores.
#[derive(Debug, Default)]
pub struct PlainCache<K, V> {
    map: Mutex<HashMap<K, V>>,
}

impl<K: Hash + Eq + Clone, V: Clone> PlainCache<K, V> {
    /// An empty cache.
    pub fn new() -> Self {
        PlainCache {
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The cached value of `key`, or `load`'s (stored for the next caller). Concurrent misses
    /// each load.
    pub async fn get_or_load<E, Fut>(&self, key: K, load: impl FnOnce() -> Fut) -> Result<V, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        if let Some(value) = self.lock().get(&key) {
            return Ok(value.clone());
        }
        let value = load().await?;
        self.lock().insert(key, value.clone());
        Ok(value)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, V>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
