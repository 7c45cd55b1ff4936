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
    /// The pending `invalidate_all` was handed to the worker, which may have applied it in
    /// Redis already: a key invalidated from now on is not covered by it (another instance
    /// may fill the key's old value under the new generation before the send is done), so it
    /// is kept, and sent after it.
    all_taken: bool,
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
            all_taken: false,
            next: 0,
            max_keys,
        }
    }

    fn seq(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    pub(crate) fn add_key(&mut self, key: Vec<u8>) -> Added {
        if self.all.is_some() && !self.all_taken {
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
        self.all_taken = false;
        self.keys.clear();
        self.order.clear();
    }

    /// `true` while an invalidation of `key` (or of everything) is pending: the shared copy may
    /// be older than it.
    pub(crate) fn covers(&self, key: &[u8]) -> bool {
        self.all.is_some() || self.keys.contains_key(key)
    }

    /// The next invalidation to send, oldest first (an `invalidate_all` before any key).
    #[cfg(test)]
    pub(crate) fn next_job(&mut self) -> Option<Job> {
        self.next_jobs(1).pop()
    }

    /// The next invalidations to send together, at most `most`, oldest first: a pending
    /// `invalidate_all` alone (it goes before any key), or the oldest keys (each once; their
    /// order does not matter to Redis, only that each is applied after it was invalidated).
    pub(crate) fn next_jobs(&mut self, most: usize) -> Vec<Job> {
        if let Some(seq) = self.all {
            self.all_taken = true;
            return vec![Job::All(seq)];
        }
        self.order
            .iter()
            .take(most)
            .map(|key| Job::Key(key.clone(), self.keys[key]))
            .collect()
    }

    /// Redis applied `job`: it is no longer pending, unless the same key (or everything) was
    /// invalidated again meanwhile.
    pub(crate) fn done(&mut self, job: &Job) {
        match job {
            Job::All(seq) => {
                if self.all == Some(*seq) {
                    self.all = None;
                    self.all_taken = false;
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

    /// A key invalidated while an `invalidate_all` is being sent is not covered by it: the
    /// send may already have bumped the generations in Redis, and another instance may have
    /// filled the key's old value under the new one since. It was dropped as covered, so the
    /// invalidating instance read that old value back from Redis once the send was done, and
    /// no other instance was told (found by the fleet contract check under a CPU hog).
    #[test]
    fn a_key_invalidated_while_invalidate_all_is_sent_stays_pending_after_it() {
        let mut pending = Pending::new(10);
        pending.add_all();
        let job = pending.next_job().unwrap();
        assert!(matches!(job, Job::All(_)));
        assert_eq!(pending.add_key(key(1)), Added::Key);
        assert_eq!(pending.len(), 2);
        pending.done(&job);
        assert!(pending.covers(&key(1)), "the key is still pending");
        assert!(!pending.covers(&key(2)));
        let job = pending.next_job().unwrap();
        assert_eq!(job, Job::Key(key(1), 2));
        pending.done(&job);
        assert_eq!((pending.len(), pending.next_job()), (0, None));
    }

    /// A failed send of `invalidate_all` is retried; keys invalidated meanwhile are sent after
    /// it, and a new `invalidate_all` covers them again until it is handed out.
    #[test]
    fn a_new_invalidate_all_covers_keys_until_it_is_handed_out() {
        let mut pending = Pending::new(10);
        pending.add_all();
        let _failed = pending.next_job().unwrap();
        assert_eq!(pending.add_key(key(1)), Added::Key);
        pending.add_all();
        assert_eq!(pending.len(), 1, "the new invalidate_all covers key 1");
        assert_eq!(pending.add_key(key(2)), Added::Covered);
        let job = pending.next_job().unwrap();
        assert!(matches!(job, Job::All(_)));
        pending.done(&job);
        assert_eq!((pending.len(), pending.next_job()), (0, None));
    }

    /// A model of the worker and the writers: every invalidation must be covered (`covers`)
    /// from the moment it is added until a job that drops it is applied, and applied by
    /// such a job once the worker has sent everything. A job drops an invalidation only if it
    /// was handed out after it (Redis may apply a job as soon as it is handed out, so a job
    /// handed out before an invalidation may have run before the write it follows).
    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Step {
            Key(u8),
            All,
            /// The worker hands out the next jobs, at most this many (if it has none in hand).
            Take(usize),
            /// The first job in hand is applied (`true`) or fails (`false`, to be taken again
            /// once the worker's hand is empty).
            Finish(bool),
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                4 => (0..6_u8).prop_map(Step::Key),
                1 => Just(Step::All),
                3 => (1..4_usize).prop_map(Step::Take),
                3 => any::<bool>().prop_map(Step::Finish),
            ]
        }

        /// `job`, handed out at `taken`, is applied: it drops the invalidations made before it
        /// of its key (or, an `invalidate_all`, of every key).
        fn finish(
            pending: &mut Pending,
            open: &mut Vec<(Option<u8>, usize)>,
            job: Job,
            taken: usize,
        ) {
            pending.done(&job);
            open.retain(|(key, at)| {
                let dropped = taken > *at
                    && match (&job, key) {
                        (Job::All(_), _) => true,
                        (Job::Key(k, _), Some(key)) => k[..] == [*key],
                        (Job::Key(..), None) => false,
                    };
                !dropped
            });
        }

        proptest! {
            #[test]
            fn no_invalidation_is_dropped_before_redis_applies_it(
                steps in proptest::collection::vec(step(), 1..60),
                bound in 1..8_usize,
            ) {
                let mut pending = Pending::new(bound);
                // Invalidations not yet applied: (key, when); `All` is every key.
                let mut open: Vec<(Option<u8>, usize)> = Vec::new();
                let mut in_hand: Vec<(Job, usize)> = Vec::new();
                let drain = steps.len() + 1;
                for (t, step) in steps.into_iter().enumerate() {
                    match step {
                        Step::Key(k) => {
                            pending.add_key(key(k));
                            open.push((Some(k), t));
                        }
                        Step::All => {
                            pending.add_all();
                            open.push((None, t));
                        }
                        Step::Take(most) => {
                            if in_hand.is_empty() {
                                in_hand = pending.next_jobs(most).into_iter().map(|job| (job, t)).collect();
                            }
                        }
                        Step::Finish(applied) => {
                            if !in_hand.is_empty() {
                                let (job, taken) = in_hand.remove(0);
                                if applied {
                                    finish(&mut pending, &mut open, job, taken);
                                }
                            }
                        }
                    }
                    for (key, at) in &open {
                        let keys: Vec<u8> = key.map_or_else(|| (0..6).collect(), |k| vec![k]);
                        for k in keys {
                            prop_assert!(
                                pending.covers(&[k]),
                                "key {k}, invalidated at step {at}, is not covered at step {t}"
                            );
                        }
                    }
                }
                // The worker sends everything: every invalidation is applied.
                let mut t = drain;
                for (job, taken) in in_hand.drain(..) {
                    finish(&mut pending, &mut open, job, taken);
                }
                loop {
                    let jobs = pending.next_jobs(3);
                    if jobs.is_empty() {
                        break;
                    }
                    t += 1;
                    for job in jobs {
                        finish(&mut pending, &mut open, job, t);
                    }
                    prop_assert!(t < drain + 100, "the worker never runs out of jobs");
                }
                prop_assert!(open.is_empty(), "never applied: {open:?}");
                prop_assert_eq!(pending.len(), 0);
            }
        }
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
