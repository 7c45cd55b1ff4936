//! A load: the caller's loader run as its own task, bounded by the load timeouts, its outcome
//! shared with every waiter and stored (or not) by the flight's finish step.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::time::Instant;

use super::config::Config;
use super::entry::{Entry, Loaded};
use super::handle::Inner;
use super::listener::{RemovalCause, Removed};
use super::stats::Counter;
use super::tier::{Acquired, Tier};
use crate::flight::{Failure, Outcome, Slot, Ticket, task};

/// What a load delivers to its waiters.
#[derive(Clone)]
pub(crate) enum Landing<V> {
    /// The loader answered: a value or "not found", with an optional TTL of its own.
    Loaded {
        value: Option<V>,
        ttl: Option<Duration>,
        took: Duration,
    },
    /// The loader failed; `fallback` is the last good value when fail-safe can serve one.
    /// `late`: the soft timeout passed and the load goes on; the slot gets its final landing
    /// (for callers that would rather wait, such as `get_with`).
    Failed {
        cause: Cause,
        fallback: Option<V>,
        late: Option<Late<V>>,
    },
}

/// Where the final landing of a load that passed its soft timeout arrives.
pub(crate) type Late<V> = crate::sync::Arc<Slot<Landing<V>>>;

/// Completes a late slot as cancelled if its load ends without completing it (its task was
/// aborted), so that nobody waits for it forever.
struct LateGuard<V: Clone>(Option<Late<V>>);

impl<V: Clone> Drop for LateGuard<V> {
    fn drop(&mut self) {
        if let Some(late) = self.0.take() {
            late.complete(Err(Failure::Cancelled));
        }
    }
}

/// Why a load failed.
#[derive(Clone)]
pub(crate) enum Cause {
    /// The loader's error, type-erased: each waiter downcasts it to its own error type.
    Error(Arc<dyn Any + Send + Sync>),
    Panicked(Arc<str>),
    TimedOut(Duration),
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Error(_) => f.write_str("Error"),
            Cause::Panicked(message) => f.debug_tuple("Panicked").field(message).finish(),
            Cause::TimedOut(after) => f.debug_tuple("TimedOut").field(after).finish(),
        }
    }
}

/// A stale value a load can fall back on, and until when (cache time) it may be used.
#[derive(Clone, Debug)]
pub(crate) struct Fallback<V> {
    pub(crate) value: V,
    pub(crate) keep_until: u64,
    /// The entry's expiry, which identifies it: a refresh is skipped if the entry changed.
    pub(crate) fresh_until: u64,
}

impl<V> Fallback<V> {
    /// The fallback an entry holding a value offers.
    ///
    /// # Panics
    ///
    /// If the entry is a cached absence (callers check).
    pub(crate) fn of(entry: Entry<V>, config: &Config) -> Self {
        let keep_until = entry.keep_until(config);
        let fresh_until = entry.fresh_until;
        Fallback {
            value: entry.into_value().expect("an entry with a value"),
            keep_until,
            fresh_until,
        }
    }
}

pub(crate) type CacheTicket<K, V> = Ticket<K, Landing<V>>;

/// Starts the load of a flight this caller leads, as its own task.
pub(crate) fn start<K, V, F, Fut, E>(
    inner: &Arc<Inner<K, V>>,
    runtime: &Handle,
    ticket: CacheTicket<K, V>,
    load: F,
    fallback: Option<Fallback<V>>,
    absent_is_hit: bool,
) where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Loaded<V>, E>> + Send + 'static,
    E: Send + Sync + 'static,
{
    // Fail-safe is what makes a stale value stand in for a failed load.
    let fallback = fallback.filter(|_| inner.config.fail_safe.is_some());
    let keep_until = fallback.as_ref().map(|f| f.keep_until);
    let fallback = fallback.map(|f| f.value);
    let early = ticket.slot().clone();
    let config = inner.config;
    let owner = inner.clone();
    let tier = inner.tier.clone();
    let load = through_tier(tier, ticket.key().clone(), load, config, absent_is_hit);
    task::spawn(
        runtime,
        move || land(load, config, early, fallback),
        move |outcome: Outcome<Landing<V>>| owner.finish_load(ticket, outcome, keep_until),
    );
}

type BoxedLoad<V, E> = Pin<Box<dyn Future<Output = Result<Loaded<V>, E>> + Send>>;

/// Wraps the loader so that it asks the shared tier first, if there is one: the tier's value, or
/// the loader's under the tier's lease (then filling the tier), or, when the tier cannot help,
/// the loader's alone.
fn through_tier<K, V, F, Fut, E>(
    tier: Option<Arc<dyn Tier<K, V>>>,
    key: K,
    load: F,
    config: Config,
    absent_is_hit: bool,
) -> impl FnOnce() -> BoxedLoad<V, E> + Send + 'static
where
    K: Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Loaded<V>, E>> + Send + 'static,
    E: Send + 'static,
{
    move || {
        Box::pin(async move {
            let Some(tier) = tier else {
                return load().await;
            };
            match tier.acquire(&key).await {
                // `get_with` has a loader that says the value exists: it loads it itself.
                Acquired::Hit(loaded) if loaded.value.is_none() && !absent_is_hit => load().await,
                Acquired::Hit(loaded) => Ok(loaded),
                Acquired::Unavailable => load().await,
                Acquired::Lead(lease) => {
                    let result = load().await;
                    if let Ok(loaded) = &result {
                        let keep = config.shared_ttl(loaded);
                        let mut shared = loaded.clone();
                        shared.ttl = config.fresh_ttl(loaded);
                        lease.fill(shared, keep).await;
                    }
                    result
                }
            }
        })
    }
}

/// Runs the loader within the load timeouts and turns whatever happens into a [`Landing`].
async fn land<V, F, Fut, E>(
    load: F,
    config: Config,
    early: crate::sync::Arc<Slot<Landing<V>>>,
    fallback: Option<V>,
) -> Landing<V>
where
    V: Clone,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Loaded<V>, E>>,
    E: Send + Sync + 'static,
{
    let mut late = LateGuard(None);
    let (result, took) = bounded(async move { load().await }, &config, |soft| {
        // Release the waiters (with the stale value if there is one); keep loading, so the
        // result can still fill the cache. New callers join and get this answer at once.
        let slot: Late<V> = crate::sync::Arc::new(Slot::new());
        early.complete(Ok(Landing::Failed {
            cause: Cause::TimedOut(soft),
            fallback: fallback.clone(),
            late: Some(slot.clone()),
        }));
        late.0 = Some(slot);
    })
    .await;
    let landing = match result {
        Ok(loaded) => Landing::Loaded {
            value: loaded.value,
            ttl: loaded.ttl,
            took,
        },
        Err(cause) => Landing::Failed {
            cause,
            fallback,
            late: None,
        },
    };
    if let Some(slot) = late.0.take() {
        slot.complete(Ok(landing.clone()));
    }
    landing
}

/// Runs `load`, catching a panic, within the configured load timeouts: `on_soft` runs if the
/// soft timeout passes (the load goes on); the hard timeout gives up. Returns the result and how
/// long the load took.
pub(crate) async fn bounded<T, E, Fut>(
    load: Fut,
    config: &Config,
    on_soft: impl FnOnce(Duration),
) -> (Result<T, Cause>, Duration)
where
    Fut: Future<Output = Result<T, E>>,
    E: Send + Sync + 'static,
{
    let started = Instant::now();
    let load = task::catch(load);
    #[cfg(feature = "tracing")]
    let load = tracing::Instrument::instrument(load, tracing::debug_span!("herder.cache.load"));
    let mut load = pin!(load);
    let mut done = None;
    if let Some(soft) = config.soft_load_timeout {
        match tokio::time::timeout(soft, load.as_mut()).await {
            Ok(outcome) => done = Some(outcome),
            Err(_) => on_soft(soft),
        }
    }
    // A limit too long to express as an instant is no limit (see `Builder::load_timeout`).
    let hard = config
        .load_timeout
        .and_then(|hard| Some((started.checked_add(hard)?, hard)));
    let outcome = match (done, hard) {
        (Some(outcome), _) => outcome,
        (None, Some((at, hard))) => match tokio::time::timeout_at(at, load).await {
            Ok(outcome) => outcome,
            Err(_) => return (Err(Cause::TimedOut(hard)), started.elapsed()),
        },
        (None, None) => load.await,
    };
    let result = match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(Cause::Error(Arc::new(error))),
        Err(message) => Err(Cause::Panicked(message)),
    };
    (result, started.elapsed())
}

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Ends a load: counts it, stores its result if the flight is still current (see
    /// [`Inner::store`]) and answers every waiter.
    pub(crate) fn finish_load(
        &self,
        ticket: CacheTicket<K, V>,
        outcome: Outcome<Landing<V>>,
        keep_until: Option<u64>,
    ) {
        self.count_landing(&outcome);
        #[cfg(feature = "metrics")]
        if let Ok(Landing::Loaded { took, .. }) = &outcome {
            self.metrics.loaded(*took);
        }
        let mut removed = Removed::new(&self.listener);
        self.flights.finish(ticket, outcome, |key, outcome| {
            self.store(key, outcome, keep_until, &mut removed)
        });
    }

    /// The finish step of a current flight (under its shard lock): store what was loaded, or
    /// re-store the fail-safe value for the throttle period. Errors are never stored.
    fn store(
        &self,
        key: &K,
        outcome: &Outcome<Landing<V>>,
        keep_until: Option<u64>,
        removed: &mut Removed<K, V>,
    ) {
        let now = self.clock.now();
        match outcome {
            Ok(Landing::Loaded {
                value: None,
                ttl: None,
                ..
            }) if self.config.negative_ttl.is_none() => {
                // Not found, and absences are not cached: drop whatever stale value was there.
                if let Some((key, old)) = self.storage.remove(key) {
                    removed.entry(key, old, RemovalCause::Replaced, now, &self.config);
                }
            }
            Ok(Landing::Loaded { value, ttl, took }) => {
                let entry = Entry::new(value.clone(), *ttl, now, *took, &self.config);
                self.store_entry(key, entry, removed);
            }
            Ok(Landing::Failed {
                fallback: Some(value),
                ..
            }) => {
                if let (Some(fail_safe), Some(keep_until)) = (self.config.fail_safe, keep_until)
                    && now < keep_until
                {
                    // The same value, kept: not a replacement (only evictions are reported).
                    let entry =
                        Entry::throttled(value.clone(), now, fail_safe.throttle, keep_until);
                    let mut quiet = Removed::new(&None);
                    self.store_entry(key, entry, &mut quiet);
                }
            }
            Ok(Landing::Failed { fallback: None, .. }) | Err(_) => {}
        }
    }

    fn count_landing(&self, outcome: &Outcome<Landing<V>>) {
        let counter = match outcome {
            Ok(Landing::Loaded { .. }) => Counter::Load,
            Ok(Landing::Failed {
                cause: Cause::Error(_),
                ..
            }) => Counter::LoadError,
            Ok(Landing::Failed {
                cause: Cause::Panicked(_),
                ..
            })
            | Err(Failure::Panicked(_)) => Counter::LoadPanic,
            Ok(Landing::Failed {
                cause: Cause::TimedOut(_),
                ..
            }) => Counter::LoadTimeout,
            Err(Failure::Cancelled) => return,
        };
        self.stats.bump(counter);
    }
}
