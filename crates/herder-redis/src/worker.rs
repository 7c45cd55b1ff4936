//! The tier's background work: the sender of this instance's pending invalidations, which
//! retries each one until Redis applies it (see `pending.rs`), and what the tier does with the
//! messages of other instances (wake-ups and invalidations), which the connection's subscriber
//! hands it (see `connection/subscriber.rs`). A tier with a connection of its own also runs that
//! subscriber.

use std::fmt;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::connection::{Listener, MAX_RETRY, Subscriber};
use crate::events::{self, Kind};
use crate::pending::Job;
use crate::scripts::{EPOCH_TTL_MS, INVALIDATE, NEXT_GENERATION};
use crate::stats::bump;
use crate::tier::{Shared, lock};

/// The background half of a [`RedisTier`](crate::RedisTier), from
/// [`Builder::build_with_worker`](crate::Builder::build_with_worker): run it with
/// [`Worker::run`]. It ends once every handle on the tier is dropped.
pub struct Worker<K, V> {
    shared: Weak<Shared<K, V>>,
    /// The subscriber of the tier's own connection (none on a shared one, which runs its own).
    subscriber: Option<Subscriber>,
    channel: String,
    added: Arc<Notify>,
}

impl<K, V> Worker<K, V>
where
    K: DeserializeOwned + std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(shared: &Arc<Shared<K, V>>, subscriber: Option<Subscriber>) -> Self {
        let listener: Weak<dyn Listener> = Arc::downgrade(shared) as _;
        shared.connection.listen(shared.channel.clone(), listener);
        Worker {
            shared: Arc::downgrade(shared),
            subscriber,
            channel: shared.channel.clone(),
            added: shared.pending_added.clone(),
        }
    }

    /// Publishes this instance's invalidations and, on a connection of the tier's own,
    /// subscribes to the namespace's channel (resubscribing, and flushing L1, after a lost
    /// connection), until the tier is dropped.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the background work; the cache goes on with Redis as a
    /// shared store, but invalidations then neither leave nor reach this instance.
    pub async fn run(self) {
        let Worker {
            shared,
            subscriber,
            added,
            ..
        } = self;
        match subscriber {
            Some(subscriber) => {
                tokio::select! {
                    () = subscriber.run() => {}
                    () = invalidate(shared, added) => {}
                }
            }
            None => invalidate(shared, added).await,
        }
    }
}

impl<K, V> fmt::Debug for Worker<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl<K, V> Listener for Shared<K, V>
where
    K: DeserializeOwned + std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn subscribed(&self) {
        // Pub/sub is at most once: what was published while this instance was not subscribed
        // never reaches it, and anything its L1 got meanwhile (read through the tier or loaded
        // before a publication it missed) may be stale. So L1 is flushed
        // * on every resubscription (messages were lost while disconnected), and
        // * on the first subscription if anything could have been cached before it (`exposed`,
        //   set by every read through the tier and every insert until then, see
        //   `Shared::expose`): until the first SUBSCRIBE completes, which takes a round trip or,
        //   after a start with Redis down, up to the subscriber's retry, the cache already reads
        //   and fills L1 through the command connection.
        // `exposed` is taken before the counter says "subscribed" (only this subscriber calls
        // this, one call at a time): a read that saw no subscription set `exposed` before its
        // script was sent, so either the swap sees it, or the read reached Redis after this
        // subscription was in place (this is called once SUBSCRIBE has completed). Counting
        // last also means that whoever waits for `subscriptions` finds L1 flushed already.
        let first = self.stats.subscriptions.load(SeqCst) == 0;
        let exposed = self.exposed.swap(false, SeqCst);
        if first && !exposed {
            bump(&self.stats.subscriptions);
            return;
        }
        if let Some(local) = self.local.get() {
            local.evict_all();
        }
        self.wake(None);
        bump(&self.stats.subscriptions);
        if first {
            #[cfg(feature = "tracing")]
            tracing::debug!(prefix = %self.layout.prefix(), "redis tier: subscribed, L1 cached before it flushed");
            return;
        }
        bump(&self.stats.resubscribes);
        #[cfg(feature = "tracing")]
        tracing::info!(prefix = %self.layout.prefix(), "redis tier: resubscribed, L1 flushed");
    }

    fn heartbeat_missed(&self) {
        bump(&self.stats.heartbeats_missed);
    }

    fn receive(&self, message: &[u8]) {
        let Some((kind, origin, key)) = events::decode(message) else {
            return;
        };
        let foreign = origin != self.instance;
        match kind {
            Kind::Filled | Kind::Released => self.wake(Some(key)),
            Kind::Invalidated => {
                if foreign
                    && let (Some(local), Ok(key)) =
                        (self.local.get(), postcard::from_bytes::<K>(key))
                {
                    local.evict(&key);
                    bump(&self.stats.invalidations_received);
                }
                self.wake(Some(key));
            }
            Kind::All => {
                if foreign && let Some(local) = self.local.get() {
                    local.evict_all();
                    bump(&self.stats.invalidations_received);
                }
                self.wake(None);
            }
        }
    }
}

/// How many invalidations the worker sends at once (pipelined on the connection, or spread over
/// a cluster's nodes): a burst of invalidations reaches Redis in round trips of this many, not
/// one round trip each.
const SENT_TOGETHER: usize = 64;

/// Applies this instance's pending invalidations in Redis, oldest first, up to
/// [`SENT_TOGETHER`] at a time, retrying each until Redis answers; never drops one. A key that
/// fails does not hold back the others sent with it.
async fn invalidate<K, V>(shared: Weak<Shared<K, V>>, added: Arc<Notify>)
where
    K: Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let mut backoff = Duration::from_millis(10);
    // Set by a failed attempt, cleared once nothing is pending: what is sent meanwhile was
    // replayed after an outage.
    let mut outage = false;
    loop {
        let wake = added.notified();
        let mut wake = std::pin::pin!(wake);
        wake.as_mut().enable();
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let jobs = lock(&shared.pending).next_jobs(SENT_TOGETHER);
        if jobs.is_empty() {
            outage = false;
            // No strong reference while waiting: dropping the tier wakes and ends this loop.
            drop(shared);
            wake.await;
            continue;
        }
        let applied =
            futures_util::future::join_all(jobs.iter().map(|job| shared.apply(job))).await;
        let mut failed = 0;
        {
            let mut pending = lock(&shared.pending);
            for (job, applied) in jobs.iter().zip(&applied) {
                if *applied {
                    pending.done(job);
                } else {
                    failed += 1;
                }
            }
            // Counted under the lock `stats` reads the pending count under: whoever sees an
            // invalidation no longer pending sees it sent.
            let sent = (jobs.len() - failed) as u64;
            shared.stats.invalidations_sent.fetch_add(sent, Relaxed);
            if outage {
                shared.stats.invalidations_replayed.fetch_add(sent, Relaxed);
            }
        }
        if failed == 0 {
            backoff = Duration::from_millis(10);
        } else {
            if !outage {
                #[cfg(feature = "tracing")]
                tracing::warn!(prefix = %shared.layout.prefix(), failed, "redis tier: invalidations could not be applied; keeping them, and retrying");
            }
            outage = true;
            shared
                .stats
                .invalidations_failed
                .fetch_add(failed as u64, Relaxed);
            drop(shared);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_RETRY);
        }
    }
}

impl<K, V> Shared<K, V>
where
    K: Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Applies one invalidation in Redis; `true` once Redis did.
    async fn apply(&self, job: &Job) -> bool {
        match job {
            Job::Key(key, _) => {
                let keys = self.layout.keys(key);
                let message = self.message(Kind::Invalidated, key);
                let mut script = INVALIDATE.prepare_invoke();
                script
                    .key(&keys.value)
                    .key(&keys.lease)
                    .key(&keys.epoch)
                    .arg(EPOCH_TTL_MS)
                    .arg(&self.channel)
                    .arg(&message);
                // Applied only on its own answer (see INVALIDATE).
                self.run_unguarded::<Vec<u8>>(script).await.as_deref() == Some(&message[..])
            }
            Job::All(_) => {
                // A new generation in every bucket (one on a single server; see `layout.rs`),
                // then one message: a retry after a partial failure bumps them all again.
                let commands = &self.connection.inner.commands;
                let bumps = futures_util::future::join_all(self.layout.generations().map(
                    |generation| async move {
                        let mut script = NEXT_GENERATION.prepare_invoke();
                        script.key(generation);
                        commands.invoke::<i64>(&script).await
                    },
                ));
                let mut publish = redis::cmd("PUBLISH");
                publish.arg(&self.channel).arg(self.message(Kind::All, b""));
                let applied = async {
                    bumps.await.into_iter().collect::<Result<Vec<_>, _>>()?;
                    commands.query::<i64>(&publish).await
                };
                match tokio::time::timeout(self.config.budget, applied).await {
                    Ok(Ok(_)) => {
                        self.breaker.succeeded();
                        true
                    }
                    _ => {
                        bump(&self.stats.errors);
                        if self.breaker.failed() {
                            bump(&self.stats.circuit_opens);
                        }
                        false
                    }
                }
            }
        }
    }
}
