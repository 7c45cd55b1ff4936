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
    /// before the one call, and the batch holds no lease while it waits: the first time it would
    /// wait holding some, it gives them back (other instances may take them) and asks for those
    /// keys again once the others are answered. (Waiting while holding leases could wait for an
    /// instance that waits for this batch: a cluster grants a batch's leases one node at a
    /// time.) Should it find itself holding leases and waiting again, it loads the keys it
    /// would wait for itself, in its one call: a batch gives its leases back once, so that two
    /// batches whose leases cross cannot hand them to each other for ever.
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
        // The positions in `keys` of the keys `round` answers (`None`: all, in order).
        let mut asked: Option<Vec<usize>> = None;
        // `Calls::Once`: the keys whose leases the batch gave back, to ask for again once the
        // rounds under way end; it gives its leases back once at most.
        let mut given_back: Option<Vec<usize>> = None;
        let mut gave_back = false;
        loop {
            batch.absorb(&keys, asked.as_deref(), round.answers);
            let later = match (round.later, given_back.take()) {
                (Some(later), given) => {
                    given_back = given;
                    later
                }
                (None, Some(positions)) => {
                    let again: Vec<K> = positions.iter().map(|&at| keys[at].clone()).collect();
                    round = tier.acquire_many(&again).await;
                    asked = Some(positions);
                    continue;
                }
                (None, None) => break,
            };
            match calls {
                Calls::PerRound => batch.load(&keys, &self.config, &mut load).await?,
                Calls::Once if batch.leases.is_empty() => {}
                Calls::Once if !gave_back => {
                    gave_back = true;
                    given_back = Some(batch.give_back());
                }
                // Its keys not answered yet are loaded below, with its own.
                Calls::Once => break,
            }
            round = later.await;
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
