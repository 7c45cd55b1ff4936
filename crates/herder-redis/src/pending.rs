//! Invalidations this instance has made and Redis has not yet applied.
//!
//! An invalidation is kept here from the moment [`Cache::invalidate`](herder::Cache::invalidate)
//! returns until the Redis script that applies it has answered, however long Redis is away
//! (FusionCache calls this auto-recovery). Meanwhile this instance does not read the key from
//! Redis (the shared copy may still be the old value), and when Redis answers again the worker
//! replays what is pending, which deletes the shared copies and tells every instance to evict
//! theirs. Keys are deduplicated; an `invalidate_all` covers every key pending before it; past
//! the bound, the pending keys collapse into one `invalidate_all` (Redis cannot be told which
//! keys to drop without keeping them), counted in `invalidations_collapsed`.

use std::collections::{HashMap, VecDeque};

/// One invalidation to send, tagged with its sequence number: it is done only if no newer
/// invalidation of the same key (or of everything) came in while it was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Job {
    Key(Vec<u8>, u64),
    All(u64),
}

#[derive(Debug)]
pub(crate) struct Pending {
    /// Pending keys and the sequence number of their newest invalidation.
    keys: HashMap<Vec<u8>, u64>,
    /// Send order (oldest first), each pending key once.
    order: VecDeque<Vec<u8>>,
    /// An `invalidate_all` is pending (its number).
    all: Option<u64>,
    next: u64,
    max_keys: usize,
}

/// What [`Pending::add_key`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Added {
    /// The key is pending.
    Key,
    /// A pending `invalidate_all` already covers it.
    Covered,
    /// The bound was reached: this many pending keys collapsed into an `invalidate_all`.
    Collapsed(usize),
}

impl Pending {
    pub(crate) fn new(max_keys: usize) -> Self {
        Pending {
            keys: HashMap::new(),
            order: VecDeque::new(),
            all: None,
            next: 0,
            max_keys,
        }
    }

    fn seq(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    pub(crate) fn add_key(&mut self, key: Vec<u8>) -> Added {
        if self.all.is_some() {
            // The pending invalidate_all is sent after this call, so it drops this key too.
            return Added::Covered;
        }
        if !self.keys.contains_key(&key) && self.keys.len() >= self.max_keys {
            let collapsed = self.keys.len() + 1;
            self.add_all();
            return Added::Collapsed(collapsed);
        }
        let seq = self.seq();
        // A key already pending keeps its place; its newer number makes a send under way of
        // the older one not count as done.
        if self.keys.insert(key.clone(), seq).is_none() {
            self.order.push_back(key);
        }
        Added::Key
    }

    pub(crate) fn add_all(&mut self) {
        let seq = self.seq();
        self.all = Some(seq);
        self.keys.clear();
        self.order.clear();
    }

    /// `true` while an invalidation of `key` (or of everything) is pending: the shared copy may
    /// be older than it.
    pub(crate) fn covers(&self, key: &[u8]) -> bool {
        self.all.is_some() || self.keys.contains_key(key)
    }

    /// The next invalidation to send, oldest first (an `invalidate_all` before any key).
    pub(crate) fn next_job(&mut self) -> Option<Job> {
        if let Some(seq) = self.all {
            return Some(Job::All(seq));
        }
        let key = self.order.front()?;
        let seq = self.keys[key];
        Some(Job::Key(key.clone(), seq))
    }

    /// Redis applied `job`: it is no longer pending, unless the same key (or everything) was
    /// invalidated again meanwhile.
    pub(crate) fn done(&mut self, job: &Job) {
        match job {
            Job::All(seq) => {
                if self.all == Some(*seq) {
                    self.all = None;
                }
            }
            Job::Key(key, seq) => {
                if self.keys.get(key) == Some(seq) {
                    self.keys.remove(key);
                    if let Some(at) = self.order.iter().position(|k| k == key) {
                        self.order.remove(at);
                    }
                }
            }
        }
    }

    /// Invalidations pending (an `invalidate_all` counts as one).
    pub(crate) fn len(&self) -> usize {
        self.keys.len() + usize::from(self.all.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: u8) -> Vec<u8> {
        vec![k]
    }

    #[test]
    fn keys_are_deduplicated_and_sent_oldest_first() {
        let mut pending = Pending::new(10);
        assert_eq!(pending.add_key(key(1)), Added::Key);
        assert_eq!(pending.add_key(key(2)), Added::Key);
        assert_eq!(pending.add_key(key(1)), Added::Key);
        assert_eq!(pending.len(), 2);
        // Key 1 keeps its place, with its newest number.
        let job = pending.next_job().unwrap();
        assert_eq!(job, Job::Key(key(1), 3));
        pending.done(&job);
        let job = pending.next_job().unwrap();
        assert_eq!(job, Job::Key(key(2), 2));
        pending.done(&job);
        assert_eq!((pending.next_job(), pending.len()), (None, 0));
    }

    #[test]
    fn a_key_invalidated_again_while_it_is_sent_stays_pending() {
        let mut pending = Pending::new(10);
        pending.add_key(key(1));
        let job = pending.next_job().unwrap();
        pending.add_key(key(1));
        pending.done(&job);
        assert!(pending.covers(&key(1)));
        let again = pending.next_job().unwrap();
        assert_ne!(again, job);
        pending.done(&again);
        assert!(!pending.covers(&key(1)));
    }

    #[test]
    fn invalidate_all_covers_every_key_and_goes_first() {
        let mut pending = Pending::new(10);
        pending.add_key(key(1));
        pending.add_all();
        assert_eq!(pending.add_key(key(2)), Added::Covered);
        assert!(pending.covers(&key(9)), "every key is pending");
        let job = pending.next_job().unwrap();
        assert!(matches!(job, Job::All(_)));
        pending.add_all();
        pending.done(&job);
        assert!(
            pending.covers(&key(9)),
            "a newer invalidate_all is still pending"
        );
        let job = pending.next_job().unwrap();
        pending.done(&job);
        assert_eq!((pending.len(), pending.next_job()), (0, None));
    }

    #[test]
    fn past_the_bound_the_keys_collapse_into_invalidate_all() {
        let mut pending = Pending::new(2);
        pending.add_key(key(1));
        pending.add_key(key(2));
        assert_eq!(
            pending.add_key(key(2)),
            Added::Key,
            "a pending key is no new entry"
        );
        assert_eq!(pending.add_key(key(3)), Added::Collapsed(3));
        assert!(pending.covers(&key(200)));
        assert_eq!(pending.len(), 1);
        assert!(matches!(pending.next_job(), Some(Job::All(_))));
    }
}
