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
use super::tier::{Acquired, Lease};

/// What a batch found for its keys, with the TTL each answer carries (a tier's answer keeps its
/// remaining TTL; a loader's has none of its own). Keys found nowhere are left out.
pub(crate) type Found<K, V> = HashMap<K, Loaded<V>>;

/// How often a batch may call its loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Calls {
    /// Once (`get_many_with`'s `FnOnce`): the keys other instances are loading are waited for
    /// before the one call only while this batch holds no lease; once it holds one, it loads
    /// the keys it would wait for itself (waiting while holding leases could wait for an
    /// instance that waits for this batch: a cluster grants a batch's leases one node at a
    /// time).
    Once,
    /// Once per round of answers (a DataLoader's loader): a batch loads and fills its own
    /// leases before it waits for other instances.
    PerRound,
}

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
    /// from `load` (called once per round of the tier's answers that leaves keys to load, or
    /// just once: see [`Calls`]), whose values fill the tier under the leases the batch was
    /// granted. Without a tier, `load(keys)`.
    ///
    /// A failed (or dropped) load drops its leases, which releases them for other instances.
    pub(crate) async fn load_through_tier<F, Fut, E>(
        &self,
        keys: Vec<K>,
        mut load: F,
        calls: Calls,
    ) -> Result<Found<K, V>, E>
    where
        F: FnMut(Vec<K>) -> Fut,
        Fut: Future<Output = Result<HashMap<K, V>, E>>,
    {
        let Some(tier) = &self.tier else {
            let values = load(keys).await?;
            return Ok(values
                .into_iter()
                .map(|(k, v)| (k, Loaded::found(v)))
                .collect());
        };
        let mut batch = Batch {
            answered: vec![false; keys.len()],
            found: HashMap::with_capacity(keys.len()),
            missing: Vec::new(),
            leases: Vec::new(),
        };
        let mut round = tier.acquire_many(&keys).await;
        loop {
            batch.absorb(&keys, round.answers);
            let Some(later) = round.later else { break };
            match calls {
                Calls::PerRound => batch.load(&self.config, &mut load).await?,
                // Its keys not answered yet are loaded below, with its own.
                Calls::Once if !batch.leases.is_empty() => break,
                Calls::Once => {}
            }
            round = later.await;
        }
        // A key the tier never answered: load it as if the tier were unavailable.
        for (key, answered) in keys.iter().zip(&batch.answered) {
            if !answered {
                batch.missing.push(key.clone());
            }
        }
        batch.load(&self.config, &mut load).await?;
        Ok(batch.found)
    }
}

/// A batch under way through the tier.
struct Batch<K, V> {
    answered: Vec<bool>,
    found: Found<K, V>,
    /// Keys to load in the next call; `leases` holds the ones this batch leads.
    missing: Vec<K>,
    leases: Vec<(K, Box<dyn Lease<V>>)>,
}

impl<K, V> Batch<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn absorb(&mut self, keys: &[K], answers: Vec<(usize, Acquired<V>)>) {
        for (at, answer) in answers {
            // A position out of range, or answered twice, is the tier's mistake: ignored.
            match self.answered.get_mut(at) {
                Some(answered) if !*answered => *answered = true,
                _ => continue,
            }
            let key = keys[at].clone();
            match answer {
                Acquired::Hit(loaded) => {
                    self.found.insert(key, loaded);
                }
                Acquired::Lead(lease) => {
                    self.missing.push(key.clone());
                    self.leases.push((key, lease));
                }
                Acquired::Unavailable => self.missing.push(key),
            }
        }
    }

    /// Loads the missing keys with one call, if any, and fills the leases, concurrently.
    async fn load<F, Fut, E>(&mut self, config: &Config, load: &mut F) -> Result<(), E>
    where
        F: FnMut(Vec<K>) -> Fut,
        Fut: Future<Output = Result<HashMap<K, V>, E>>,
    {
        if self.missing.is_empty() {
            return Ok(());
        }
        let values = load(std::mem::take(&mut self.missing)).await?;
        let fills = self.leases.drain(..).map(|(key, lease)| {
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
        self.found
            .extend(values.into_iter().map(|(k, v)| (k, Loaded::found(v))));
        Ok(())
    }
}
