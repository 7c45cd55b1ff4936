//! The cache peers' failure modes stated in the README's comparison table, checked against the
//! versions in `Cargo.lock` (a peer that changes its behaviour fails this test, and the table must
//! change with it). herder's side of each scenario is in `crates/herder/tests/cache.rs`.

use std::future::Future as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

/// A backend call that announces itself and waits for a permit.
#[derive(Clone)]
struct Gate {
    calls: Arc<AtomicUsize>,
    entered: Arc<Notify>,
    permits: Arc<Semaphore>,
}

impl Gate {
    fn new() -> Self {
        Gate {
            calls: Arc::default(),
            entered: Arc::default(),
            permits: Arc::new(Semaphore::new(0)),
        }
    }

    async fn pass(&self) {
        self.calls.fetch_add(1, SeqCst);
        self.entered.notify_one();
        self.permits.acquire().await.unwrap().forget();
    }

    fn calls(&self) -> usize {
        self.calls.load(SeqCst)
    }
}

/// moka 0.12: an invalidation that lands while `get_with` is loading does not stop the loaded
/// (now stale) value from being stored.
#[tokio::test]
async fn moka_stores_a_value_loaded_across_an_invalidation() {
    let cache: moka::future::Cache<u32, &str> = moka::future::Cache::new(100);
    let gate = Gate::new();
    let read = tokio::spawn({
        let (cache, gate) = (cache.clone(), gate.clone());
        async move {
            cache
                .get_with(1, async move {
                    gate.pass().await;
                    "before the update"
                })
                .await
        }
    });
    gate.entered.notified().await;
    cache.invalidate(&1).await;
    gate.permits.add_permits(1);
    assert_eq!(read.await.unwrap(), "before the update");
    assert_eq!(
        cache.get(&1).await,
        Some("before the update"),
        "moka kept the stale value out"
    );
}

/// quick_cache 0.7: a key removed while its guard holder loads does not get the loaded value
/// (like herder, unlike moka).
#[tokio::test]
async fn quick_cache_keeps_a_value_loaded_across_a_removal_out() {
    let cache = Arc::new(quick_cache::sync::Cache::<u32, &str>::new(100));
    let gate = Gate::new();
    let read = tokio::spawn({
        let (cache, gate) = (cache.clone(), gate.clone());
        async move {
            let load = async move {
                gate.pass().await;
                Ok::<_, ()>("before the update")
            };
            cache.get_or_insert_async(&1, load).await
        }
    });
    gate.entered.notified().await;
    cache.remove(&1);
    gate.permits.add_permits(1);
    assert_eq!(read.await.unwrap(), Ok("before the update"));
    assert_eq!(cache.get(&1), None, "quick_cache stored the stale value");
}

/// quick_cache 0.7: waiters on a failing loader retry it one after another: N calls, not one.
#[tokio::test]
async fn quick_cache_runs_one_load_per_waiter_when_the_loader_fails() {
    let cache = Arc::new(quick_cache::sync::Cache::<u32, u32>::new(100));
    let gate = Gate::new();
    let readers: Vec<_> = (0..5)
        .map(|_| {
            let (cache, gate) = (cache.clone(), gate.clone());
            tokio::spawn(async move {
                let load = async move {
                    gate.pass().await;
                    Err::<u32, _>("backend down")
                };
                cache.get_or_insert_async(&1, load).await
            })
        })
        .collect();
    // Let every call through as it comes: each waiter becomes the next loader.
    gate.permits.add_permits(100);
    for reader in readers {
        assert!(reader.await.unwrap().is_err());
    }
    assert_eq!(gate.calls(), 5, "5 waiters, {} backend calls", gate.calls());
}

/// moka 0.12: the loading caller is parked (polled once, never again): the other callers wait
/// for it, even once its load could finish (moka #240).
#[tokio::test]
async fn moka_waiters_wait_behind_a_parked_loading_caller() {
    let cache: moka::future::Cache<u32, u32> = moka::future::Cache::new(100);
    let gate = Gate::new();
    let mut parked = Box::pin(cache.get_with(1, {
        let gate = gate.clone();
        async move {
            gate.pass().await;
            1
        }
    }));
    // Poll it once: it becomes the loader and waits at the gate.
    let pending = std::future::poll_fn(|cx| Poll::Ready(parked.as_mut().poll(cx).is_pending()));
    assert!(pending.await);
    // Its load could now finish, but nobody polls it again.
    gate.permits.add_permits(1);
    let other = tokio::time::timeout(Duration::from_millis(300), cache.get_with(1, async { 2 }));
    assert!(
        other.await.is_err(),
        "moka no longer blocks behind a parked loader"
    );
    drop(parked);
}

/// A pingora lookup that waits at the gate it is given as `extra`.
struct GatedLookup;

#[async_trait::async_trait]
impl pingora_memory_cache::Lookup<u32, u32, Gate> for GatedLookup {
    async fn lookup(
        _: &u32,
        gate: Option<&Gate>,
    ) -> Result<(u32, Option<Duration>), Box<dyn std::error::Error + Send + Sync>> {
        gate.unwrap().pass().await;
        Ok((1, None))
    }
}

/// pingora-memory-cache 0.9 (pingora #931): the caller running the lookup is aborted mid-lookup;
/// without `lock_age`/`lock_timeout`, later callers wait for a lock nobody will release.
#[tokio::test]
async fn pingora_later_callers_hang_after_the_loading_caller_is_aborted() {
    type Rt = pingora_memory_cache::RTCache<u32, u32, GatedLookup, Gate>;
    let cache: Arc<Rt> = Arc::new(pingora_memory_cache::RTCache::new(100, None, None));
    let gate = Gate::new();
    let leader = tokio::spawn({
        let (cache, gate) = (cache.clone(), gate.clone());
        async move { cache.get(&1, None, Some(&gate)).await.0.is_ok() }
    });
    gate.entered.notified().await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    gate.permits.add_permits(10);
    let later = tokio::time::timeout(Duration::from_millis(300), cache.get(&1, None, Some(&gate)));
    assert!(
        later.await.is_err(),
        "pingora no longer hangs after an aborted lookup"
    );
}
