//! A DataLoader in front of a shared Cache: batches fill and read the cache, every reader of the
//! cache joins a batch under way, invalidations during a batch keep its values out.

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use herder::{Cache, DataLoader};
use support::{Gated, Instant, Reply, gated, poll_once};

const SECOND: Duration = Duration::from_secs(1);

fn cache(ttl: Duration) -> Cache<u64, u64> {
    Cache::builder()
        .max_capacity(10_000)
        .time_to_live(ttl)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_batch_fills_the_cache_and_later_loads_hit_it() {
    let cache = cache(60 * SECOND);
    let backend = Instant::default();
    let loader = DataLoader::builder(backend.clone())
        .cache(cache.clone())
        .build()
        .unwrap();
    let first = join_all((0..10).map(|k| loader.load(k))).await;
    assert!(first.iter().all(Result::is_ok));
    assert_eq!(cache.get(&3), Some(30));
    let again = join_all((0..10).map(|k| loader.load(k))).await;
    assert_eq!(again[3].as_ref().unwrap(), &Some(30));
    assert_eq!(backend.calls(), 1);
    let stats = loader.stats();
    assert_eq!((stats.batches, stats.cache_hits), (1, 10));
    // Expired entries go back to the loader.
    tokio::time::advance(61 * SECOND).await;
    loader.load(3).await.unwrap();
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cache_read_joins_the_batch_loading_its_key() {
    let cache = cache(60 * SECOND);
    let (backend, mut calls) = gated();
    let loader = DataLoader::builder(backend.clone())
        .cache(cache.clone())
        .build()
        .unwrap();
    let mut batched = Box::pin(loader.load(5));
    assert!(poll_once(&mut batched).await);
    let call = calls.next().await;
    // The batch is at the backend: a plain cache read of key 5 waits for it.
    let mut read = Box::pin(cache.try_get_with(5, || async { Ok::<u64, std::io::Error>(0) }));
    assert!(poll_once(&mut read).await);
    call.reply(Reply::Values);
    assert_eq!(batched.await.unwrap(), Some(50));
    assert_eq!(read.await.unwrap(), 50);
    assert_eq!(*backend.count.lock().unwrap(), 1);
    assert_eq!(cache.stats().coalesced, 1);
}

#[tokio::test(start_paused = true)]
async fn two_loaders_sharing_a_cache_load_a_key_once() {
    let cache = cache(60 * SECOND);
    let (backend, mut calls): (Gated, _) = gated();
    let a = DataLoader::builder(backend.clone())
        .cache(cache.clone())
        .build()
        .unwrap();
    let b = DataLoader::builder(backend.clone())
        .cache(cache.clone())
        .build()
        .unwrap();
    let mut from_a = Box::pin(a.load_many([1, 2]));
    assert!(poll_once(&mut from_a).await);
    let call = calls.next().await;
    let mut from_b = Box::pin(b.load_many([2, 1]));
    assert!(poll_once(&mut from_b).await);
    call.reply(Reply::Values);
    assert_eq!(from_a.await.unwrap().len(), 2);
    assert_eq!(from_b.await.unwrap().len(), 2);
    assert_eq!(*backend.count.lock().unwrap(), 1);
    assert_eq!(b.stats().joined, 2);
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_during_a_batch_keeps_its_value_out_of_the_cache() {
    let cache = cache(60 * SECOND);
    let (backend, mut calls) = gated();
    let loader = DataLoader::builder(backend)
        .cache(cache.clone())
        .build()
        .unwrap();
    let mut load = Box::pin(loader.load(9));
    assert!(poll_once(&mut load).await);
    let call = calls.next().await;
    cache.invalidate(&9);
    call.reply(Reply::Values);
    assert_eq!(
        load.await.unwrap(),
        Some(90),
        "the batch still answers its caller"
    );
    assert_eq!(cache.get(&9), None, "the stale batch result was stored");
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_fails_the_cache_readers_that_joined_it_and_caches_nothing() {
    let cache = cache(60 * SECOND);
    let (backend, mut calls) = gated();
    let loader = DataLoader::builder(backend)
        .cache(cache.clone())
        .build()
        .unwrap();
    let mut load = Box::pin(loader.load(1));
    assert!(poll_once(&mut load).await);
    let call = calls.next().await;
    let mut read = Box::pin(cache.try_get_with(1, || async { Ok::<u64, support::BackendDown>(0) }));
    assert!(poll_once(&mut read).await);
    call.reply(Reply::Fail("down"));
    assert_eq!(load.await.unwrap_err().loader_error().unwrap().0, "down");
    let err = read.await.unwrap_err();
    assert_eq!(
        err.loader_error().unwrap().0,
        "down",
        "the reader shares the batch's error"
    );
    assert_eq!(cache.stats().entries, 0);
}

#[tokio::test(start_paused = true)]
async fn a_stale_key_is_answered_at_once_and_refreshed_by_a_batch() {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .time_to_live(10 * SECOND)
        .stale_while_revalidate(60 * SECOND)
        .build()
        .unwrap();
    cache.insert(4, 1);
    tokio::time::advance(11 * SECOND).await;
    let backend = Instant::default();
    let loader = DataLoader::builder(backend.clone())
        .cache(cache.clone())
        .build()
        .unwrap();
    assert_eq!(
        loader.load(4).await.unwrap(),
        Some(1),
        "the stale value, at once"
    );
    while cache.stats().in_flight > 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(backend.batches(), vec![vec![4]]);
    assert_eq!(cache.get(&4), Some(40));
}

#[tokio::test(start_paused = true)]
async fn keys_the_loader_omits_are_cached_as_absent_with_a_negative_ttl() {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .negative_ttl(5 * SECOND)
        .build()
        .unwrap();
    let backend = Instant::omitting(vec![2]);
    let loader = DataLoader::builder(backend.clone())
        .cache(cache)
        .build()
        .unwrap();
    assert_eq!(loader.load(2).await.unwrap(), None);
    assert_eq!(loader.load(2).await.unwrap(), None);
    assert_eq!(backend.calls(), 1);
}

#[test]
fn a_batch_dropped_with_its_runtime_releases_the_cache_flights_it_led() {
    let cache = cache(60 * SECOND);
    let (backend, _calls) = gated();
    let loader = DataLoader::builder(backend)
        .cache(cache.clone())
        .build()
        .unwrap();
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut pending = Box::pin(loader.load(1));
    first.block_on(async {
        assert!(poll_once(&mut pending).await);
    });
    assert_eq!(cache.stats().in_flight, 1);
    drop(first);
    assert_eq!(cache.stats().in_flight, 0, "the cache flight leaked");
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(second.block_on(pending).unwrap_err().is_cancelled());
}

/// With a cache in front, the cache is the memo: `prime` fills it, `clear` and `clear_all`
/// reach it, and `memo(true)` keeps no second copy that would outlive an invalidation.
#[tokio::test(start_paused = true)]
async fn prime_fills_the_cache_and_clear_reaches_it() {
    let cache = cache(60 * SECOND);
    let backend = Instant::default();
    let loader = DataLoader::builder(backend.clone())
        .memo(true)
        .cache(cache.clone())
        .build()
        .unwrap();
    loader.prime(7, 700);
    assert_eq!(cache.get(&7), Some(700), "prime filled the cache");
    assert_eq!(loader.load(7).await.unwrap(), Some(700));
    assert_eq!(backend.calls(), 0);
    loader.clear(&7);
    assert_eq!(cache.get(&7), None, "clear reached the cache");
    assert_eq!(loader.load(7).await.unwrap(), Some(70));
    assert_eq!(backend.calls(), 1);
    // An invalidation of the cache is seen by the loader at once: no memo kept the old value.
    cache.invalidate(&7);
    loader.load(7).await.unwrap();
    assert_eq!(backend.calls(), 2);
    assert_eq!(loader.stats().memoized, 0);
    loader.load_many([1, 2]).await.unwrap();
    loader.clear_all();
    assert_eq!(cache.stats().entries, 0, "clear_all reached the cache");
}

/// A cache read with its own error type (not the loader's), whose load fails when `gate` opens.
fn failing_read(
    cache: &Cache<u64, u64>,
    key: u64,
    gate: tokio::sync::oneshot::Receiver<()>,
) -> impl std::future::Future<Output = Result<u64, herder::CacheError<std::io::Error>>> + use<> {
    let cache = cache.clone();
    async move {
        cache
            .try_get_with(key, || async move {
                let _ = gate.await;
                Err::<u64, _>(std::io::Error::other("down"))
            })
            .await
    }
}

#[tokio::test(start_paused = true)]
async fn a_load_that_joined_a_read_failing_with_another_error_type_loads_the_key_itself() {
    let cache = cache(60 * SECOND);
    let backend = Instant::default();
    let loader = DataLoader::builder(backend.clone())
        .cache(cache.clone())
        .build()
        .unwrap();
    let (fail, gate) = tokio::sync::oneshot::channel();
    let mut read = Box::pin(failing_read(&cache, 5, gate));
    assert!(poll_once(&mut read).await);
    let mut load = Box::pin(loader.load(5));
    assert!(poll_once(&mut load).await);
    assert_eq!(
        loader.stats().joined,
        1,
        "the load joined the read's flight"
    );
    fail.send(()).unwrap();
    let err = read.await.unwrap_err();
    assert_eq!(err.loader_error().unwrap().to_string(), "down");
    // The read's error is not the loader's type: the loader loads the key itself, leading the
    // cache's flight for it, instead of reporting an error it cannot name.
    assert_eq!(load.await.unwrap(), Some(50));
    assert_eq!(backend.calls(), 1);
    assert_eq!(
        cache.get(&5),
        Some(50),
        "the loader's batch filled the cache"
    );
    let stats = loader.stats();
    assert_eq!((stats.requests, stats.batches), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_load_many_that_joined_a_read_failing_with_another_error_type_loads_the_key_itself() {
    let cache = cache(60 * SECOND);
    let backend = Instant::default();
    let loader = DataLoader::builder(backend.clone())
        .cache(cache.clone())
        .build()
        .unwrap();
    let (fail, gate) = tokio::sync::oneshot::channel();
    let mut read = Box::pin(failing_read(&cache, 5, gate));
    assert!(poll_once(&mut read).await);
    let mut load = Box::pin(loader.load_many([5, 6]));
    assert!(poll_once(&mut load).await);
    fail.send(()).unwrap();
    assert!(read.await.is_err());
    let values = load.await.unwrap();
    assert_eq!((values.get(&5), values.get(&6)), (Some(&50), Some(&60)));
    assert_eq!(cache.get(&5), Some(50));
    let mut sent: Vec<u64> = backend.batches.lock().unwrap().concat();
    sent.sort_unstable();
    assert_eq!(sent, [5, 6], "each key to the loader once");
}

#[tokio::test(start_paused = true)]
async fn a_load_whose_joined_read_failed_while_another_read_started_loads_without_joining_it() {
    let cache = cache(60 * SECOND);
    let backend = Instant::default();
    let loader = DataLoader::builder(backend.clone())
        .cache(cache.clone())
        .build()
        .unwrap();
    let (fail, gate) = tokio::sync::oneshot::channel();
    let mut first = Box::pin(failing_read(&cache, 5, gate));
    assert!(poll_once(&mut first).await);
    let mut load = Box::pin(loader.load(5));
    assert!(poll_once(&mut load).await);
    fail.send(()).unwrap();
    assert!(first.await.is_err());
    // Before the load looks again, another read of the other error type leads a new flight.
    let (fail_second, gate) = tokio::sync::oneshot::channel();
    let mut second = Box::pin(failing_read(&cache, 5, gate));
    assert!(poll_once(&mut second).await);
    // The load does not join that one (it could fail the same way): it loads the key itself.
    assert_eq!(load.await.unwrap(), Some(50));
    assert_eq!(backend.calls(), 1);
    // The cache's flight for the key is the second read's: the batch's value does not fill it.
    fail_second.send(()).unwrap();
    assert!(second.await.is_err());
    assert_eq!(cache.get(&5), None);
}
