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
    /// before the one call, and the batch never waits holding a lease (it could wait for an
    /// instance that waits for it: a cluster grants a batch's leases one node at a time; on one
    /// server, a key it would ask for again). A batch that would wait holding leases gives them
    /// back (other instances may take them) and, once the keys it waits for are answered, asks
    /// again for every key it gave back, holding none. It does so [`GIVE_BACKS`] times at
    /// most, so that batches that keep taking the keys another gives back end; past that it
    /// loads the keys it would wait for itself, in its one call.
    Once,
    /// Once per round of answers (a DataLoader's loader): a batch loads and fills its own
    /// leases before it waits for other instances.
    PerRound,
}

/// How many times a [`Calls::Once`] batch asks again for the keys whose leases it gave back.
/// Each ask may wait for other instances up to the tier's own limit (`max_wait` for Redis).
const GIVE_BACKS: u32 = 3;

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
        // The positions in `keys` of the keys `round` answers (`None`: all, in order).
        let mut asked: Option<Vec<usize>> = None;
        // `Calls::Once`: the keys whose leases the batch gave back, to ask for again once the
        // rounds under way end, and how many times it asked again.
        let mut given_back: Vec<usize> = Vec::new();
        let mut asked_again = 0;
        loop {
            batch.absorb(&keys, asked.as_deref(), round.answers);
            if let Some(later) = round.later {
                match calls {
                    Calls::PerRound => batch.load(&keys, &self.config, &mut load).await?,
                    Calls::Once if batch.leases.is_empty() => {}
                    Calls::Once if asked_again < GIVE_BACKS => given_back.extend(batch.give_back()),
                    // Its keys not answered yet are loaded below, with its own.
                    Calls::Once => break,
                }
                round = later.await;
                continue;
            }
            if given_back.is_empty() {
                break;
            }
            // The rounds under way are answered: ask again for the keys given back, holding
            // no lease (this ask may wait for other instances), or, past the limit, load them.
            if asked_again == GIVE_BACKS {
                break;
            }
            asked_again += 1;
            given_back.extend(batch.give_back());
            given_back.sort_unstable();
            let positions = std::mem::take(&mut given_back);
            let again: Vec<K> = positions.iter().map(|&at| keys[at].clone()).collect();
            round = tier.acquire_many(&again).await;
            asked = Some(positions);
        }
        // A key the tier never answered: load it as if the tier were unavailable.
        for (at, answered) in batch.answered.iter().enumerate() {
            if !answered {
                batch.missing.push(at);
            }
        }
        batch.load(&keys, &self.config, &mut load).await?;
        Ok(batch.found)
    }
}

/// A batch under way through the tier; keys by their position in the batch.
struct Batch<K, V> {
    answered: Vec<bool>,
    found: Found<K, V>,
    /// Keys to load in the next call that the batch does not lead.
    missing: Vec<usize>,
    /// Keys to load in the next call that the batch leads.
    leases: Vec<(usize, Box<dyn Lease<V>>)>,
}

impl<K, V> Batch<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Takes in a round's answers; `asked`: the positions in the batch of the keys that round
    /// was asked for (`None`: the whole batch).
    fn absorb(&mut self, keys: &[K], asked: Option<&[usize]>, answers: Vec<(usize, Acquired<V>)>) {
        for (at, answer) in answers {
            let at = match asked {
                Some(asked) => match asked.get(at) {
                    Some(&at) => at,
                    None => continue,
                },
                None => at,
            };
            // A position out of range, or answered twice, is the tier's mistake: ignored.
            match self.answered.get_mut(at) {
                Some(answered) if !*answered => *answered = true,
                _ => continue,
            }
            match answer {
                Acquired::Hit(loaded) => {
                    self.found.insert(keys[at].clone(), loaded);
                }
                Acquired::Lead(lease) => self.leases.push((at, lease)),
                Acquired::Unavailable => self.missing.push(at),
            }
        }
    }

    /// Drops the batch's leases, which releases them for other instances, and forgets that
    /// it was answered for those keys: their positions, to ask for again.
    fn give_back(&mut self) -> Vec<usize> {
        let positions: Vec<usize> = self.leases.drain(..).map(|(at, _lease)| at).collect();
        for &at in &positions {
            self.answered[at] = false;
        }
        positions
    }

    /// Loads the keys to load with one call (in the batch's order), if any, and fills the
    /// leases, concurrently.
    async fn load<F, Fut, E>(&mut self, keys: &[K], config: &Config, load: &mut F) -> Result<(), E>
    where
        F: FnMut(Vec<K>) -> Fut,
        Fut: Future<Output = Result<HashMap<K, V>, E>>,
    {
        let mut positions = std::mem::take(&mut self.missing);
        positions.extend(self.leases.iter().map(|(at, _)| *at));
        if positions.is_empty() {
            return Ok(());
        }
        positions.sort_unstable();
        let values = load(positions.iter().map(|&at| keys[at].clone()).collect()).await?;
        let fills = self.leases.drain(..).map(|(at, lease)| {
            let loaded = match values.get(&keys[at]) {
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
