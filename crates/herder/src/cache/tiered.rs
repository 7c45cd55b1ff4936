//! A batch of missing keys through the shared tier: one [`Tier::acquire_many`], one loader call
//! for the keys this instance leads (and those the tier cannot help with), then every lease
//! filled at once.
//!
//! The values still reach the cache through each key's flight (its finish step is the store
//! protocol of `write.rs`); this step only decides where they come from.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;

use super::config::Config;
use super::entry::Loaded;
use super::handle::Inner;
use super::tier::{Acquired, Lease, Tier};

/// What a batch found for its keys, with the TTL each answer carries (a tier's answer keeps its
/// remaining TTL; a loader's has none of its own). Keys found nowhere are left out.
pub(crate) type Found<K, V> = HashMap<K, Loaded<V>>;

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// `true` if the cache has a shared tier, which a batch then goes through
    /// ([`Inner::load_through_tier`]).
    pub(crate) fn has_tier(&self) -> bool {
        self.tier.is_some()
    }

    /// Loads `keys` (distinct) through the tier: what the tier holds comes from it, the rest
    /// from one call of `load` (never called if nothing is left to load), whose values fill the
    /// tier under the leases the batch was granted. Without a tier, `load(keys)`.
    ///
    /// A failed (or dropped) load drops its leases, which releases them for other instances.
    pub(crate) async fn load_through_tier<F, Fut, E>(
        &self,
        keys: Vec<K>,
        load: F,
    ) -> Result<Found<K, V>, E>
    where
        F: FnOnce(Vec<K>) -> Fut,
        Fut: Future<Output = Result<HashMap<K, V>, E>>,
    {
        let Some(tier) = &self.tier else {
            let values = load(keys).await?;
            return Ok(values.into_iter().map(|(k, v)| (k, Loaded::found(v))).collect());
        };
        load_many(&**tier, &self.config, keys, load).await
    }
}

async fn load_many<K, V, F, Fut, E>(
    tier: &dyn Tier<K, V>,
    config: &Config,
    keys: Vec<K>,
    load: F,
) -> Result<Found<K, V>, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    F: FnOnce(Vec<K>) -> Fut,
    Fut: Future<Output = Result<HashMap<K, V>, E>>,
{
    let answers = tier.acquire_many(&keys).await;
    // A tier that answers fewer keys than asked cannot help with the rest.
    let answers = answers
        .into_iter()
        .chain(std::iter::repeat_with(|| Acquired::Unavailable));
    let mut found = HashMap::with_capacity(keys.len());
    let mut leases: Vec<(K, Box<dyn Lease<V>>)> = Vec::new();
    let mut missing = Vec::new();
    for (key, answer) in keys.into_iter().zip(answers) {
        match answer {
            Acquired::Hit(loaded) => {
                found.insert(key, loaded);
            }
            Acquired::Lead(lease) => {
                missing.push(key.clone());
                leases.push((key, lease));
            }
            Acquired::Unavailable => missing.push(key),
        }
    }
    if missing.is_empty() {
        return Ok(found);
    }
    let values = load(missing).await?;
    let fills = leases.into_iter().map(|(key, lease)| {
        let loaded = match values.get(&key) {
            Some(value) => Loaded::found(value.clone()),
            None => Loaded::not_found(),
        };
        let keep = config.shared_ttl(&loaded);
        let mut shared = loaded;
        shared.ttl = config.fresh_ttl(&shared);
        lease.fill(shared, keep)
    });
    futures_util::future::join_all(fills).await;
    found.extend(values.into_iter().map(|(k, v)| (k, Loaded::found(v))));
    Ok(found)
}
