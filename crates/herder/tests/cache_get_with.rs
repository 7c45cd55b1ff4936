//! `get_with` always answers: it panics only for a failure of its own `init`. Before, it panicked
//! when the load it joined came from a `try_get_with` whose loader failed, when the soft load
//! timeout passed (although the load went on and filled the cache), and on a key cached as "not
//! found" by `fetch`. Paused clock; ordering by gates.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use herder::Cache;
use herder::cache::{Acquired, Loaded, LocalCache, Status, Tier, TierFuture};
use support::{BackendDown, Gate, poll_once};
use tokio::time::advance;

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn get_with_joining_a_failed_load_from_another_call_site_loads_with_its_own_init() {
    let cache: Cache<u32, String> = Cache::new(10);
    let gate = Gate::default();
    let failing = {
        let gate = gate.clone();
        move || async move {
            gate.pass().await;
            Err::<String, _>(BackendDown("down".into()))
        }
    };
    let mut first = Box::pin(cache.try_get_with(1, failing));
    assert!(poll_once(&mut first).await);
    gate.arrived().await;
    // get_with joins the failing load...
    let inits = Arc::new(AtomicUsize::new(0));
    let counted = inits.clone();
    let mut second = Box::pin(cache.get_with(1, move || async move {
        counted.fetch_add(1, SeqCst);
        "mine".to_string()
    }));
    assert!(poll_once(&mut second).await);
    assert_eq!(cache.stats().coalesced, 1, "it joined the load under way");
    gate.open(1);
    assert!(first.await.unwrap_err().loader_error().is_some());
    // ...and answers with its own init instead of panicking.
    assert_eq!(second.await, "mine");
    assert_eq!(inits.load(SeqCst), 1);
    assert_eq!(cache.get(&1).as_deref(), Some("mine"));
}

#[tokio::test(start_paused = true)]
async fn get_with_waits_out_the_soft_load_timeout_for_the_value() {
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(10)
        .soft_load_timeout(SECOND)
        .load_timeout(60 * SECOND)
        .build()
        .unwrap();
    let gate = Gate::default();
    let slow = {
        let gate = gate.clone();
        move || async move {
            gate.pass().await;
            "slow".to_string()
        }
    };
    let mut leader = Box::pin(cache.get_with(1, slow));
    assert!(poll_once(&mut leader).await);
    gate.arrived().await;
    let mut joiner = Box::pin(cache.get_with(1, || async { unreachable!("joins the load") }));
    assert!(poll_once(&mut joiner).await);
    // A try_get_with caller is answered at the soft timeout; get_with callers keep waiting.
    let mut impatient = Box::pin(
        cache.try_get_with::<_, _, BackendDown>(1, || async { unreachable!("joins the load") }),
    );
    assert!(poll_once(&mut impatient).await);
    advance(SECOND).await;
    assert!(impatient.await.unwrap_err().is_timeout());
    assert!(poll_once(&mut leader).await, "still waiting, not panicking");
    gate.open(1);
    assert_eq!(leader.await, "slow");
    assert_eq!(joiner.await, "slow");
    assert_eq!(gate.calls(), 1, "one load for all");
}

#[tokio::test(start_paused = true)]
async fn get_with_on_a_key_cached_as_absent_loads_it_with_its_own_init() {
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(10)
        .negative_ttl(60 * SECOND)
        .build()
        .unwrap();
    let absent = || async { Ok::<_, BackendDown>(Loaded::not_found()) };
    assert_eq!(cache.fetch(1, absent).await.unwrap().status, Status::Miss);
    assert_eq!(
        cache.fetch(1, absent).await.unwrap().status,
        Status::NegativeHit
    );
    assert_eq!(
        cache.get_with(1, || async { "found".to_string() }).await,
        "found"
    );
    // Its value replaced the cached absence.
    assert_eq!(cache.get(&1).as_deref(), Some("found"));
}

#[tokio::test(start_paused = true)]
async fn get_with_joining_a_load_that_finds_nothing_loads_with_its_own_init() {
    let cache: Cache<u32, String> = Cache::new(10);
    let gate = Gate::default();
    let nothing = {
        let gate = gate.clone();
        move || async move {
            gate.pass().await;
            Ok::<_, BackendDown>(Loaded::not_found())
        }
    };
    let mut lookup = Box::pin(cache.fetch(1, nothing));
    assert!(poll_once(&mut lookup).await);
    gate.arrived().await;
    let mut value = Box::pin(cache.get_with(1, || async { "found".to_string() }));
    assert!(poll_once(&mut value).await);
    gate.open(1);
    assert_eq!(lookup.await.unwrap().value, None);
    assert_eq!(value.await, "found");
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "my own init failed")]
async fn get_with_still_panics_when_its_own_init_panics() {
    let cache: Cache<u32, String> = Cache::new(10);
    cache
        .get_with(1, || async { panic!("my own init failed") })
        .await;
}

/// A tier that holds a shared "not found" for every key.
struct AbsentEverywhere(AtomicUsize);

impl Tier<u32, String> for AbsentEverywhere {
    fn attach(&self, _: LocalCache<u32, String>) {}
    fn acquire<'a>(&'a self, _: &'a u32) -> TierFuture<'a, Acquired<String>> {
        self.0.fetch_add(1, SeqCst);
        Box::pin(async { Acquired::Hit(Loaded::not_found()) })
    }
    fn invalidate(&self, _: &u32) {}
    fn invalidate_all(&self) {}
}

#[tokio::test(start_paused = true)]
async fn get_with_over_a_tier_that_says_absent_loads_with_its_own_init() {
    let tier = Arc::new(AbsentEverywhere(AtomicUsize::new(0)));
    let cache: Cache<u32, String> = Cache::builder()
        .max_capacity(10)
        .tier(tier.clone())
        .build()
        .unwrap();
    assert_eq!(
        cache.get_with(1, || async { "found".to_string() }).await,
        "found"
    );
    assert_eq!(tier.0.load(SeqCst), 1, "one read of the tier, no loop");
    let fetched = cache
        .fetch(2, || async {
            Ok::<_, BackendDown>(Loaded::found("x".to_string()))
        })
        .await
        .unwrap();
    assert_eq!(fetched.value, None, "fetch trusts the tier's absence");
}
