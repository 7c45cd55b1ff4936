//! Round 3 of the adversarial tests: the seams between primitives (a DataLoader with a Cache in
//! front, an OperationQueue paused on a Line whose recoveries come from inside the queue) and
//! the `metrics` feature (gauges back at zero after storms of cancels, panics and timeouts).

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use herder::line::Credential;
use herder::{Cache, DataLoader, Line, OperationQueue};
use support::{Reply, gated, poll_once, settle, until};
use tokio::sync::oneshot;

const SECOND: Duration = Duration::from_secs(1);

async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(5 * SECOND, fut).await {
        Ok(out) => out,
        Err(_) => panic!("hung: {what}"),
    }
}

fn cache(ttl: Duration) -> Cache<u64, u64> {
    Cache::builder()
        .max_capacity(10_000)
        .time_to_live(ttl)
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. DataLoader with a Cache in front
// ---------------------------------------------------------------------------------------------

/// `cache.invalidate_all()` and `loader.clear_all()` while a batch is at the backend: none of
/// its values may land in the cache, and every later load goes back to the backend.
#[tokio::test(start_paused = true)]
async fn invalidate_all_or_clear_all_during_a_batch_keeps_every_value_out() {
    for via_loader in [false, true] {
        let cache = cache(60 * SECOND);
        let (backend, mut calls) = gated();
        let loader = DataLoader::builder(backend.clone())
            .cache(cache.clone())
            .build()
            .unwrap();
        let mut load = Box::pin(loader.load_many([1, 2, 3]));
        assert!(poll_once(&mut load).await);
        let call = bounded("first batch", calls.next()).await;
        if via_loader {
            loader.clear_all();
        } else {
            cache.invalidate_all();
        }
        call.reply(Reply::Values);
        let values = bounded("load_many", load).await.unwrap();
        assert_eq!(values.len(), 3, "the batch still answers its caller");
        settle().await;
        for k in 1..=3 {
            assert_eq!(
                cache.get(&k),
                None,
                "via_loader={via_loader}: key {k} stored"
            );
        }
        let mut again = Box::pin(loader.load(2));
        assert!(poll_once(&mut again).await, "answered from a stale value");
        let call = bounded("second batch", calls.next()).await;
        assert_eq!(call.keys, vec![2]);
        call.reply(Reply::Map(HashMap::from([(2, 222)])));
        assert_eq!(bounded("reload", again).await.unwrap(), Some(222));
        assert_eq!(cache.get(&2), Some(222));
    }
}

/// A load started after `cache.invalidate(k)` while the old batch for k is still at the
/// backend must not join the old batch; the old batch, answering last, must not overwrite the
/// fresh value.
#[tokio::test(start_paused = true)]
async fn a_load_after_a_cache_invalidate_does_not_join_the_stale_batch() {
    let cache = cache(60 * SECOND);
    let (backend, mut calls) = gated();
    let loader = DataLoader::builder(backend.clone())
        .cache(cache.clone())
        .build()
        .unwrap();
    let mut old = Box::pin(loader.load(9));
    assert!(poll_once(&mut old).await);
    let old_call = bounded("old batch", calls.next()).await;
    cache.invalidate(&9);
    let mut fresh = Box::pin(loader.load(9));
    assert!(poll_once(&mut fresh).await);
    // Also a plain cache reader after the invalidation: it must not take the old value.
    let mut read = Box::pin(cache.try_get_with(9, || async { Ok::<u64, std::io::Error>(7) }));
    let read_pending = poll_once(&mut read).await;
    let fresh_call = bounded("a fresh batch after invalidate", calls.next()).await;
    assert_eq!(fresh_call.keys, vec![9]);
    fresh_call.reply(Reply::Map(HashMap::from([(9, 999)])));
    assert_eq!(bounded("fresh", fresh).await.unwrap(), Some(999));
    old_call.reply(Reply::Values);
    assert_eq!(bounded("old", old).await.unwrap(), Some(90));
    settle().await;
    if read_pending {
        let got = bounded("read", read).await.unwrap();
        assert_ne!(
            got, 90,
            "a read started after invalidate got the stale batch's value"
        );
    }
    assert_eq!(
        cache.get(&9),
        Some(999),
        "the stale batch overwrote the fresh value"
    );
    assert_eq!(loader.load(9).await.unwrap(), Some(999));
    assert_eq!(*backend.count.lock().unwrap(), 2);
}

/// `load_many` over keys that are cached, in flight through a plain cache read, missing, and
/// duplicated: the backend sees each missing key once, the in-flight one not at all.
#[tokio::test(start_paused = true)]
async fn load_many_over_cached_in_flight_missing_and_duplicate_keys() {
    let cache = cache(60 * SECOND);
    let (backend, mut calls) = gated();
    let loader = DataLoader::builder(backend.clone())
        .cache(cache.clone())
        .build()
        .unwrap();
    cache.insert(1, 11);
    let (release, gate) = oneshot::channel::<u64>();
    let mut read = Box::pin(cache.try_get_with(2, || async move {
        Ok::<u64, support::BackendDown>(gate.await.unwrap())
    }));
    assert!(poll_once(&mut read).await);
    let mut many = Box::pin(loader.load_many([1, 2, 3, 3, 2, 1, 4, 4]));
    assert!(poll_once(&mut many).await);
    let call = bounded("batch", calls.next()).await;
    let mut keys = call.keys.clone();
    keys.sort_unstable();
    assert_eq!(keys, vec![3, 4], "only the missing keys, once each");
    call.reply(Reply::Values);
    settle().await;
    release.send(22).unwrap();
    assert_eq!(bounded("read", read).await.unwrap(), 22);
    let values = bounded("load_many", many).await.unwrap();
    assert_eq!(values, HashMap::from([(1, 11), (2, 22), (3, 30), (4, 40)]));
    assert_eq!(*backend.count.lock().unwrap(), 1);
    assert!(calls.try_next().is_none());
    let stats = loader.stats();
    assert_eq!(stats.in_flight, 0);
}

/// A plain cache reader joined to a DataLoader batch whose loader omits its key (no negative
/// TTL): the reader must not hang, and later loads of the key go back to the backend.
#[tokio::test(start_paused = true)]
async fn a_cache_reader_joined_to_a_batch_that_omits_its_key_completes() {
    let cache = cache(60 * SECOND);
    let (backend, mut calls) = gated();
    let loader = DataLoader::builder(backend.clone())
        .cache(cache.clone())
        .build()
        .unwrap();
    let mut load = Box::pin(loader.load(2));
    assert!(poll_once(&mut load).await);
    let call = bounded("batch", calls.next()).await;
    let mut read = Box::pin(cache.try_get_with(2, || async { Ok::<u64, std::io::Error>(5) }));
    assert!(
        poll_once(&mut read).await,
        "the reader did not join the batch"
    );
    call.reply(Reply::Map(HashMap::new()));
    assert_eq!(bounded("load", load).await.unwrap(), None);
    let got = bounded("the joined reader", read).await;
    eprintln!("reader joined to an omitting batch got {got:?}");
    // The reader asked for a value and its own init can give one: anything but a hang or a
    // stale/absent marker leaking as a value is acceptable; it must not be cached as absent.
    if let Ok(v) = &got {
        assert_eq!(*v, 5, "the reader got a value nobody loaded");
    }
    let mut again = Box::pin(loader.load(2));
    if poll_once(&mut again).await {
        let call = bounded("second batch", calls.next()).await;
        call.reply(Reply::Values);
        assert_eq!(bounded("again", again).await.unwrap(), Some(20));
    } else {
        // Answered from the cache: only legitimate if the reader's own init filled it.
        assert!(
            matches!(got, Ok(5)),
            "an omitted key was answered from the cache"
        );
    }
}

/// Stale-while-revalidate seen through a DataLoader: an invalidation while the refresh batch is
/// at the backend keeps the refreshed value out, and the next load goes to the backend.
#[tokio::test(start_paused = true)]
async fn invalidate_during_a_stale_refresh_batch_keeps_it_out() {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .time_to_live(10 * SECOND)
        .stale_while_revalidate(60 * SECOND)
        .build()
        .unwrap();
    cache.insert(4, 1);
    tokio::time::advance(11 * SECOND).await;
    let (backend, mut calls) = gated();
    let loader = DataLoader::builder(backend.clone())
        .cache(cache.clone())
        .build()
        .unwrap();
    assert_eq!(bounded("stale", loader.load(4)).await.unwrap(), Some(1));
    let refresh = bounded("refresh batch", calls.next()).await;
    cache.invalidate(&4);
    refresh.reply(Reply::Map(HashMap::from([(4, 444)])));
    bounded(
        "refresh end",
        until("no load in flight", || cache.stats().in_flight == 0),
    )
    .await;
    assert_eq!(
        cache.get(&4),
        None,
        "the refresh begun before invalidate was stored"
    );
    let mut again = Box::pin(loader.load(4));
    assert!(
        poll_once(&mut again).await,
        "answered from the invalidated refresh"
    );
    let call = bounded("reload", calls.next()).await;
    call.reply(Reply::Values);
    assert_eq!(bounded("again", again).await.unwrap(), Some(40));
}

/// `prime` while a plain cache reader and a DataLoader batch both wait on the key: the primed
/// value wins in the cache over both the batch and the reader's own result.
#[tokio::test(start_paused = true)]
async fn prime_during_a_batch_joined_by_a_cache_reader_wins() {
    let cache = cache(60 * SECOND);
    let (backend, mut calls) = gated();
    let loader = DataLoader::builder(backend.clone())
        .cache(cache.clone())
        .build()
        .unwrap();
    let mut load = Box::pin(loader.load(3));
    assert!(poll_once(&mut load).await);
    let call = bounded("batch", calls.next()).await;
    let mut read = Box::pin(cache.try_get_with(3, || async { Ok::<u64, std::io::Error>(5) }));
    assert!(poll_once(&mut read).await);
    loader.prime(3, 333);
    call.reply(Reply::Values);
    let _ = bounded("load", load).await.unwrap();
    let _ = bounded("read", read).await;
    settle().await;
    assert_eq!(
        cache.get(&3),
        Some(333),
        "the batch overwrote the primed value"
    );
    assert_eq!(loader.load(3).await.unwrap(), Some(333));
}

/// `get_with` cannot fail: joined to a DataLoader batch that fails, panics or leaves its key
/// out, it must load the key with its own `init` (as documented), not panic or hang.
#[tokio::test(start_paused = true)]
async fn get_with_joined_to_a_failing_panicking_or_omitting_batch_uses_its_own_init() {
    for (i, reply) in [
        Reply::Fail("down"),
        Reply::Panic("boom"),
        Reply::Map(HashMap::new()),
    ]
    .into_iter()
    .enumerate()
    {
        let cache = cache(60 * SECOND);
        let (backend, mut calls) = gated();
        let loader = DataLoader::builder(backend.clone())
            .cache(cache.clone())
            .build()
            .unwrap();
        let mut load = Box::pin(loader.load(2));
        assert!(poll_once(&mut load).await);
        let call = bounded("batch", calls.next()).await;
        let cache2 = cache.clone();
        let read = tokio::spawn(async move { cache2.get_with(2, || async { 5 }).await });
        settle().await;
        call.reply(reply);
        let _ = bounded("load", load).await;
        let got = bounded("get_with", read).await;
        assert_eq!(
            got.ok(),
            Some(5),
            "variant {i}: get_with panicked or got another value"
        );
    }
    // Cached as absent by a batch (negative TTL): get_with loads it with its own init.
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .negative_ttl(60 * SECOND)
        .build()
        .unwrap();
    let loader = DataLoader::builder(support::Instant::omitting(vec![2]))
        .cache(cache.clone())
        .build()
        .unwrap();
    assert_eq!(loader.load(2).await.unwrap(), None);
    assert_eq!(
        bounded("get_with", cache.get_with(2, || async { 5 })).await,
        5
    );
}

/// With a cache in front the cache is the memo and `memo(true)` has no effect: a key the cache
/// invalidated must not be served from a memo of the loader's own.
#[tokio::test(start_paused = true)]
async fn memo_with_a_cache_in_front_never_serves_what_the_cache_invalidated() {
    let cache = cache(60 * SECOND);
    let backend = support::Instant::default();
    let loader = DataLoader::builder(backend.clone())
        .memo(true)
        .cache(cache.clone())
        .build()
        .unwrap();
    assert_eq!(loader.load(1).await.unwrap(), Some(10));
    cache.invalidate(&1);
    assert_eq!(loader.load(1).await.unwrap(), Some(10));
    assert_eq!(
        backend.calls(),
        2,
        "served from the loader's memo after invalidate"
    );
    cache.insert(1, 77);
    assert_eq!(
        loader.load(1).await.unwrap(),
        Some(77),
        "the memo shadowed the cache"
    );
    cache.invalidate_all();
    assert_eq!(loader.load(1).await.unwrap(), Some(10));
    assert_eq!(backend.calls(), 3);
    assert_eq!(loader.stats().memoized, 0);
}

/// A plain cache reader joined a DataLoader batch, then the batch's only DataLoader caller
/// leaves: the reader must still get an answer (the batch's value, its own init, or an error),
/// never hang.
#[tokio::test(start_paused = true)]
async fn a_cache_reader_joined_to_a_batch_whose_callers_all_left_is_answered() {
    for fallible in [true, false] {
        let cache = cache(60 * SECOND);
        let (backend, mut calls) = gated();
        let loader = DataLoader::builder(backend.clone())
            .cache(cache.clone())
            .build()
            .unwrap();
        let mut load = Box::pin(loader.load(5));
        assert!(poll_once(&mut load).await);
        let call = bounded("batch", calls.next()).await;
        let cache2 = cache.clone();
        let read = tokio::spawn(async move {
            if fallible {
                cache2
                    .try_get_with(5, || async { Ok::<u64, std::io::Error>(1) })
                    .await
                    .ok()
            } else {
                Some(cache2.get_with(5, || async { 1 }).await)
            }
        });
        settle().await;
        drop(load);
        settle().await;
        // Whether the batch goes on or not, answer what reached the backend.
        call.reply(Reply::Values);
        while let Some(call) = calls.try_next() {
            call.reply(Reply::Values);
        }
        let got = bounded("the joined reader", read).await.unwrap();
        assert!(
            matches!(got, Some(50) | Some(1)) || (fallible && got.is_none()),
            "fallible={fallible}: {got:?}"
        );
        assert_eq!(loader.stats().in_flight, 0);
    }
}

/// A DataLoader load that finds its key being loaded by another reader of the cache shares that
/// load's outcome: a value, "not found" from a `fetch`, or a panic of its init.
#[tokio::test(start_paused = true)]
async fn a_load_joining_a_cache_readers_load_shares_its_value_absence_or_panic() {
    for case in 0..3 {
        let cache = cache(60 * SECOND);
        let (backend, mut calls) = gated();
        let loader = DataLoader::builder(backend.clone())
            .cache(cache.clone())
            .build()
            .unwrap();
        let (release, gate) = oneshot::channel::<()>();
        let cache2 = cache.clone();
        let read = tokio::spawn(async move {
            let _ = cache2
                .fetch(8, move || async move {
                    gate.await.unwrap();
                    match case {
                        0 => Ok::<_, support::BackendDown>(herder::cache::Loaded::found(88)),
                        1 => Ok(herder::cache::Loaded::not_found()),
                        _ => panic!("init panic"),
                    }
                })
                .await;
        });
        settle().await;
        let mut load = Box::pin(loader.load(8));
        assert!(poll_once(&mut load).await);
        release.send(()).unwrap();
        settle().await;
        // If the load did not join, answer its batch so nothing hangs, and fail below.
        let own = calls.try_next();
        let own_batch = own.is_some();
        if let Some(call) = own {
            call.reply(Reply::Values);
        }
        let got = bounded("load", load).await;
        let _ = read.await;
        assert!(
            !own_batch,
            "case {case}: the load did not join the reader's load"
        );
        match case {
            0 => assert_eq!(got.unwrap(), Some(88)),
            1 => assert_eq!(got.unwrap(), None),
            _ => assert!(got.unwrap_err().is_panic(), "case 2"),
        }
        let _ = backend;
    }
}

/// An explicit `cache.insert` during a batch wins over the batch, as `prime` does.
#[tokio::test(start_paused = true)]
async fn a_cache_insert_during_a_batch_wins() {
    let cache = cache(60 * SECOND);
    let (backend, mut calls) = gated();
    let loader = DataLoader::builder(backend.clone())
        .cache(cache.clone())
        .build()
        .unwrap();
    let mut load = Box::pin(loader.load_many([3, 4]));
    assert!(poll_once(&mut load).await);
    let call = bounded("batch", calls.next()).await;
    cache.insert(3, 333);
    call.reply(Reply::Values);
    let _ = bounded("load", load).await.unwrap();
    settle().await;
    assert_eq!(
        cache.get(&3),
        Some(333),
        "the batch overwrote an explicit insert"
    );
    assert_eq!(cache.get(&4), Some(40));
}

// ---------------------------------------------------------------------------------------------
// 2. OperationQueue paused on a Line
// ---------------------------------------------------------------------------------------------

/// A recovery that submits to the queue paused on its own line waits for itself; with a
/// recovery timeout it must fail, free the line, and the queue must resume.
#[tokio::test(start_paused = true)]
async fn a_recovery_waiting_on_its_own_paused_queue_times_out_and_the_queue_resumes() {
    let line: Line<u32> = Line::builder().recovery_timeout(SECOND).build().unwrap();
    let queue = OperationQueue::builder()
        .runners(1)
        .pause_while_recovering(&line)
        .build()
        .unwrap();
    let inner = queue.clone();
    let result = bounded(
        "recover",
        line.recover(line.epoch(), move || async move {
            let handle = inner.submit(async { 1u32 }).await.unwrap();
            handle.await.unwrap_or(0)
        }),
    )
    .await;
    assert!(result.is_err(), "got {result:?}");
    assert!(!line.is_recovering());
    let after = bounded("submit after", queue.submit(async { 2u32 }))
        .await
        .unwrap();
    assert_eq!(bounded("op after", after).await.unwrap(), 2);
    bounded("idle", queue.wait_idle()).await;
    let stats = queue.stats();
    assert_eq!((stats.queued, stats.running), (0, 0));
    assert_eq!(stats.completed + stats.cancelled, 2, "{stats:?}");
}

/// An operation running on the queue leads a recovery of the line its queue pauses on (a
/// credential refresh from inside a queued op): the running op finishes, ops queued meanwhile
/// start only after the recovery, nothing deadlocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_op_that_leads_a_recovery_of_its_queues_line_completes() {
    let line: Line<u32> = Line::new();
    let queue = OperationQueue::builder()
        .runners(2)
        .pause_while_recovering(&line)
        .build()
        .unwrap();
    let (release, gate) = oneshot::channel::<()>();
    let started_recovery = Arc::new(tokio::sync::Notify::new());
    let (l, s) = (line.clone(), started_recovery.clone());
    let leader = queue
        .submit(async move {
            let seen = l.epoch();
            l.recover(seen, move || async move {
                s.notify_one();
                gate.await.unwrap();
                7u32
            })
            .await
        })
        .await
        .unwrap();
    bounded("recovery started", started_recovery.notified()).await;
    let ran_during = Arc::new(AtomicBool::new(false));
    let (flag, l2) = (ran_during.clone(), line.clone());
    let follower = queue
        .submit(async move {
            if l2.is_recovering() {
                flag.store(true, SeqCst);
            }
            1u32
        })
        .await
        .unwrap();
    // Give the free runner every chance to (wrongly) start the follower.
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    assert_eq!(queue.stats().running, 1, "{:?}", queue.stats());
    release.send(()).unwrap();
    let led = bounded("leader op", leader).await.unwrap().unwrap();
    assert_eq!(led, herder::Recovery::Led(7));
    assert_eq!(bounded("follower", follower).await.unwrap(), 1);
    assert!(
        !ran_during.load(SeqCst),
        "an op started during the recovery"
    );
}

/// Many queued ops calling `Credential::call` whose line pauses their own queue: one refresh,
/// every op succeeds, nothing deadlocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_calls_from_ops_of_a_queue_paused_on_the_credentials_line() {
    let line: Line<Result<u32, String>> = Line::new();
    let queue = OperationQueue::builder()
        .runners(4)
        .pause_while_recovering(&line)
        .build()
        .unwrap();
    let logins = Arc::new(AtomicUsize::new(0));
    let server_token = Arc::new(AtomicUsize::new(1));
    let (lg, st) = (logins.clone(), server_token.clone());
    let auth = Credential::new(line.clone(), 0u32, move || {
        let (lg, st) = (lg.clone(), st.clone());
        async move {
            lg.fetch_add(1, SeqCst);
            tokio::task::yield_now().await;
            Ok(st.load(SeqCst) as u32)
        }
    });
    let mut handles = Vec::new();
    for i in 0..16u32 {
        let (auth, st) = (auth.clone(), server_token.clone());
        handles.push(
            queue
                .submit(async move {
                    auth.call(
                        |token| {
                            let ok = token as usize == st.load(SeqCst);
                            async move { if ok { Ok(i) } else { Err(401u16) } }
                        },
                        |status| *status == 401,
                    )
                    .await
                })
                .await
                .unwrap(),
        );
    }
    for (i, h) in handles.into_iter().enumerate() {
        let out = bounded("op", h).await.unwrap();
        assert_eq!(out.ok(), Some(i as u32));
    }
    assert_eq!(logins.load(SeqCst), 1);
    bounded("idle", queue.wait_idle()).await;
}

/// A queued op leading a recovery of the line its queue pauses on is cut by the queue's
/// per-operation timeout: the recovery runs on (its own task) for the ops that joined it, the
/// queue stays paused only until it ends, and nothing wedges.
#[tokio::test(start_paused = true)]
async fn an_op_leading_a_recovery_cut_by_the_queue_timeout_does_not_wedge_the_queue() {
    let line: Line<u32> = Line::new();
    let queue = OperationQueue::builder()
        .runners(2)
        .timeout(SECOND)
        .pause_while_recovering(&line)
        .build()
        .unwrap();
    let (release, gate) = oneshot::channel::<()>();
    let seen = line.epoch();
    let l = line.clone();
    let leader = queue
        .submit(async move {
            l.recover(seen, move || async move {
                gate.await.unwrap();
                9
            })
            .await
        })
        .await
        .unwrap();
    until("recovering", || line.is_recovering()).await;
    let joiner = {
        let l = line.clone();
        tokio::spawn(async move { l.recover(seen, || async { 0 }).await })
    };
    let after = queue.submit(async { 5u32 }).await.unwrap();
    let err = bounded("leader op", leader).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(
        line.is_recovering(),
        "the recovery stopped with its leader's op"
    );
    assert_eq!(queue.stats().running, 0);
    release.send(()).unwrap();
    let joined = bounded("joiner", joiner).await.unwrap().unwrap();
    assert_eq!(joined.outcome(), Some(&9));
    assert_eq!(bounded("op after", after).await.unwrap(), 5);
    bounded("idle", queue.wait_idle()).await;
    let s = queue.stats();
    assert_eq!(
        (s.completed, s.timed_out, s.queued, s.running),
        (1, 1, 0, 0),
        "{s:?}"
    );
}

/// The cache in front has a hard `load_timeout` shorter than the DataLoader's batch: nobody
/// hangs, the in-flight counts of both return to zero, and a value the cache already gave up
/// on does not turn up later as if it were fresh (or, if it does, it is the batch's value).
#[tokio::test(start_paused = true)]
async fn a_cache_load_timeout_shorter_than_the_batch() {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .load_timeout(SECOND)
        .build()
        .unwrap();
    let (backend, mut calls) = gated();
    let loader = DataLoader::builder(backend.clone())
        .cache(cache.clone())
        .build()
        .unwrap();
    let load = tokio::spawn({
        let loader = Arc::new(loader);
        let l = loader.clone();
        async move { (l.load(6).await.map_err(|e| e.to_string()), l) }
    });
    let call = bounded("batch", calls.next()).await;
    let cache2 = cache.clone();
    let read = tokio::spawn(async move {
        cache2
            .try_get_with(6, || async { Ok::<u64, std::io::Error>(1) })
            .await
            .map_err(|e| e.to_string())
    });
    settle().await;
    tokio::time::advance(2 * SECOND).await;
    settle().await;
    call.reply(Reply::Values);
    while let Some(call) = calls.try_next() {
        call.reply(Reply::Values);
    }
    let (loaded, loader) = bounded("load", load).await.unwrap();
    let read = bounded("read", read).await.unwrap();
    eprintln!("load {loaded:?} read {read:?} cached {:?}", cache.get(&6));
    assert!(
        matches!(loaded, Ok(Some(60))) || loaded.is_err(),
        "{loaded:?}"
    );
    assert!(matches!(read, Ok(60) | Ok(1)) || read.is_err(), "{read:?}");
    bounded(
        "idle",
        until("idle", || {
            cache.stats().in_flight == 0 && loader.stats().in_flight == 0
        }),
    )
    .await;
    assert!(matches!(cache.get(&6), None | Some(60) | Some(1)));
}

/// The cache's `load_timeout` ("a hung backend cannot hold a key forever") and `wait_timeout`
/// ("the longest a caller waits for a load") seen by a plain cache reader joined to a hung
/// DataLoader batch (the DataLoader has no load timeout of its own).
#[tokio::test(start_paused = true)]
async fn a_cache_reader_joined_to_a_hung_batch_is_bounded_by_the_caches_load_timeout() {
    hung_batch_reader(false).await;
}

#[tokio::test(start_paused = true)]
async fn a_cache_reader_joined_to_a_hung_batch_is_bounded_by_the_caches_wait_timeout() {
    hung_batch_reader(true).await;
}

/// The cache's `soft_load_timeout` does not apply to a batch (documented on
/// `Builder::cache`, as for the cache's own bulk loads): a reader joined to a hung batch is
/// bounded by the cache's hard `load_timeout`, which the batch honours.
#[tokio::test(start_paused = true)]
async fn a_cache_reader_joined_to_a_hung_batch_is_bounded_by_the_hard_limit_not_the_soft_one() {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .soft_load_timeout(SECOND)
        .load_timeout(2 * SECOND)
        .build()
        .unwrap();
    let (backend, mut calls) = gated();
    let loader = DataLoader::builder(backend)
        .cache(cache.clone())
        .build()
        .unwrap();
    let mut load = Box::pin(loader.load(6));
    assert!(poll_once(&mut load).await);
    let _hung = bounded("batch", calls.next()).await;
    let started = tokio::time::Instant::now();
    let read = cache.try_get_with(6, || async { Ok::<u64, std::io::Error>(1) });
    let got = tokio::time::timeout(3 * SECOND, read).await;
    assert!(
        matches!(&got, Ok(Err(e)) if e.is_timeout()),
        "reader joined to a hung batch got {got:?} (Err(Elapsed) = still waiting after 3 s)"
    );
    assert_eq!(started.elapsed(), 2 * SECOND, "answered at the hard limit");
    assert!(load.await.unwrap_err().is_timeout());
}

async fn hung_batch_reader(wait: bool) {
    {
        let builder = Cache::builder().max_capacity(100);
        let cache: Cache<u64, u64> = if wait {
            builder.wait_timeout(SECOND).build().unwrap()
        } else {
            builder.load_timeout(SECOND).build().unwrap()
        };
        let (backend, mut calls) = gated();
        let loader = DataLoader::builder(backend.clone())
            .cache(cache.clone())
            .build()
            .unwrap();
        let mut load = Box::pin(loader.load(6));
        assert!(poll_once(&mut load).await);
        let _hung = bounded("batch", calls.next()).await;
        let read = cache.try_get_with(6, || async { Ok::<u64, std::io::Error>(1) });
        let got = tokio::time::timeout(3 * SECOND, read).await;
        assert!(
            matches!(&got, Ok(Err(e)) if e.is_timeout()),
            "wait_timeout={wait}: reader joined to a hung batch got {got:?} (Err(Elapsed) = still waiting after 3 s)"
        );
        if !wait {
            // The hard limit frees the key: the next read loads again.
            let next = tokio::time::timeout(
                SECOND,
                cache.try_get_with(6, || async { Ok::<u64, std::io::Error>(2) }),
            )
            .await;
            assert!(
                matches!(next, Ok(Ok(2))),
                "the hung batch still holds the key: {next:?}"
            );
        }
        drop(load);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Loads and submits polled on the block_on thread of a hand-built multi-thread runtime
// ---------------------------------------------------------------------------------------------

#[test]
fn block_on_body_drives_a_cached_loader_inside_a_queue_paused_on_a_line() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        bounded("block_on body", async {
            let cache = cache(60 * SECOND);
            let backend = support::Instant::default();
            let loader = Arc::new(
                DataLoader::builder(backend.clone())
                    .cache(cache.clone())
                    .build()
                    .unwrap(),
            );
            let line: Line<u32> = Line::new();
            let queue = OperationQueue::builder()
                .runners(2)
                .pause_while_recovering(&line)
                .build()
                .unwrap();
            // Loads polled right here, on the block_on thread, with a cache read joining.
            let (a, b, c) = tokio::join!(
                loader.load_many([1, 2, 3]),
                loader.load(2),
                cache.get_with(3, || async { 0 })
            );
            assert_eq!(a.unwrap().len(), 3);
            assert_eq!(b.unwrap(), Some(20));
            assert!(c == 30 || c == 0);
            // A recovery under way while the body submits loads to the queue.
            let (release, gate) = oneshot::channel::<()>();
            let l = line.clone();
            let seen = l.epoch();
            let recovery = tokio::spawn(async move {
                l.recover(seen, || async move {
                    gate.await.unwrap();
                    1
                })
                .await
            });
            until("recovering", || line.is_recovering()).await;
            let mut ops = Vec::new();
            for k in 10..20u64 {
                let loader = loader.clone();
                ops.push(
                    queue
                        .submit(async move { loader.load(k).await.unwrap() })
                        .await
                        .unwrap(),
                );
            }
            assert_eq!(queue.stats().running, 0);
            release.send(()).unwrap();
            let _ = recovery.await.unwrap().unwrap();
            for (i, op) in ops.into_iter().enumerate() {
                assert_eq!(op.await.unwrap(), Some((10 + i as u64) * 10));
            }
            assert_eq!(loader.stats().in_flight, 0);
        })
        .await
    });
}

// ---------------------------------------------------------------------------------------------
// 3. The metrics feature
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "metrics")]
mod with_metrics {
    use super::*;
    use herder::SingleFlight;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

    /// Every gauge, by (`name` label, metric), from ONE snapshot: taking a snapshot of the
    /// debugging recorder swaps every gauge (and counter) back to zero.
    fn gauges(snapshotter: &Snapshotter) -> HashMap<(String, String), f64> {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| {
                let name = key
                    .key()
                    .labels()
                    .find(|label| label.key() == "name")?
                    .value()
                    .to_owned();
                match value {
                    DebugValue::Gauge(v) => {
                        Some(((name, key.key().name().to_owned()), v.into_inner()))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    fn gauge(all: &HashMap<(String, String), f64>, name: &str, metric: &str) -> Option<f64> {
        all.get(&(name.to_owned(), metric.to_owned())).copied()
    }

    #[derive(Clone)]
    struct Flaky;

    impl herder::Loader for Flaky {
        type Key = u64;
        type Value = u64;
        type Error = support::BackendDown;

        async fn load(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, support::BackendDown> {
            match keys.iter().max().copied().unwrap_or(0) % 4 {
                0 => panic!("flaky panic"),
                1 => {
                    std::future::pending::<()>().await;
                    unreachable!()
                }
                2 => Err(support::BackendDown("flaky".into())),
                _ => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Ok(keys.iter().map(|k| (*k, *k)).collect())
                }
            }
        }
    }

    /// After a storm of cancelled, panicking, erring and timed-out work on every primitive, a
    /// flush reports every in-flight gauge at zero.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_in_flight_gauge_returns_to_zero_after_a_storm() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let (cache, loader, queue, line, flight) = metrics::with_local_recorder(&recorder, || {
            let cache: Cache<u64, u64> = Cache::builder()
                .name("seam-cache")
                .max_capacity(1000)
                .load_timeout(Duration::from_millis(200))
                .build()
                .unwrap();
            let loader = DataLoader::builder(Flaky)
                .name("seam-loader")
                .cache(cache.clone())
                .load_timeout(Duration::from_millis(100))
                .build()
                .unwrap();
            let line: Line<u32> = Line::builder()
                .name("seam-line")
                .recovery_timeout(Duration::from_millis(50))
                .build()
                .unwrap();
            let queue = OperationQueue::builder()
                .name("seam-queue")
                .runners(2)
                .timeout(Duration::from_millis(100))
                .pause_while_recovering(&line)
                .build()
                .unwrap();
            let flight: SingleFlight<u64, u64> = SingleFlight::builder()
                .name("seam-flight")
                .abort_unused(true)
                .build();
            (cache, loader, queue, line, flight)
        });
        let loader = Arc::new(loader);
        let flight = Arc::new(flight);
        bounded("storm", async {
            let mut handles = Vec::new();
            for k in 0..64u64 {
                let (loader, cache, flight, line) =
                    (loader.clone(), cache.clone(), flight.clone(), line.clone());
                let op = async move {
                    match k % 5 {
                        0 => {
                            // A load dropped at once or mid-batch.
                            let _ = tokio::time::timeout(
                                Duration::from_millis(k % 3 * 5),
                                loader.load_many([k, k + 1]),
                            )
                            .await;
                        }
                        1 => {
                            let _ = loader.load(k).await;
                        }
                        2 => {
                            let _ = tokio::time::timeout(
                                Duration::from_millis(5),
                                cache.try_get_with(k, move || async move {
                                    if k % 2 == 0 {
                                        std::future::pending::<()>().await;
                                    }
                                    Ok::<u64, std::io::Error>(k)
                                }),
                            )
                            .await;
                        }
                        3 => {
                            let _ = tokio::time::timeout(
                                Duration::from_millis(5),
                                flight.run(k % 4, move || async move {
                                    if k % 2 == 0 {
                                        panic!("flight panic");
                                    }
                                    std::future::pending::<u64>().await
                                }),
                            )
                            .await;
                        }
                        _ => {
                            let _ = line
                                .recover(line.epoch(), move || async move {
                                    if k % 2 == 0 {
                                        std::future::pending::<()>().await;
                                    }
                                    panic!("recovery panic")
                                })
                                .await;
                        }
                    }
                    if k % 7 == 0 {
                        panic!("op panic");
                    }
                    k
                };
                // Some handles are dropped while queued (cancelled), the rest awaited.
                let handle = queue.submit(op).await.unwrap();
                if k % 6 != 0 {
                    handles.push(handle);
                }
            }
            for h in handles {
                let _ = h.await;
            }
            queue.wait_idle().await;
            until("loader idle", || loader.stats().in_flight == 0).await;
            until("cache idle", || cache.stats().in_flight == 0).await;
            until("flight idle", || flight.in_flight() == 0).await;
            until("line clear", || !line.is_recovering()).await;
        })
        .await;
        let checks = [
            ("seam-cache", "herder_cache_loads_in_flight"),
            ("seam-loader", "herder_dataloader_keys_in_flight"),
            ("seam-queue", "herder_queue_depth"),
            ("seam-queue", "herder_queue_running"),
            ("seam-line", "herder_line_recovering"),
            ("seam-flight", "herder_single_flight_in_flight"),
        ];
        // Timed-out and abandoned background work (hung loads, pending flights) may still be
        // on its way out: read the gauges again until they are all 0, or the bound passes. (A
        // snapshot zeroes the recorder's gauges, but each flush sets all six again: their
        // primitives are alive.)
        let wrong = |all: &HashMap<(String, String), f64>| -> Vec<String> {
            checks
                .iter()
                .filter_map(|&(name, metric)| match gauge(all, name, metric) {
                    Some(0.0) => None,
                    other => Some(format!("{name}/{metric} = {other:?}")),
                })
                .collect()
        };
        let deadline = std::time::Instant::now() + 5 * SECOND;
        let wrong = loop {
            herder::metrics::flush();
            let wrong = wrong(&gauges(&snapshotter));
            if wrong.is_empty() || std::time::Instant::now() > deadline {
                break wrong;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(wrong.is_empty(), "{wrong:?}");
        let s = queue.stats();
        assert_eq!((s.queued, s.running), (0, 0), "{s:?}");
    }

    /// A DataLoader dropped while its batch is at the backend flushes on drop (keys in flight);
    /// once the batch ends, the recorder must not keep reporting those keys.
    #[tokio::test(start_paused = true)]
    async fn a_loader_dropped_mid_batch_leaves_no_keys_in_flight_in_the_recorder() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let (backend, mut calls) = gated();
        let loader = metrics::with_local_recorder(&recorder, || {
            DataLoader::builder(backend.clone())
                .name("dropped-loader")
                .build()
                .unwrap()
        });
        let mut load = Box::pin(loader.load_many([1, 2, 3]));
        assert!(poll_once(&mut load).await);
        let call = bounded("batch", calls.next()).await;
        drop(load);
        drop(loader);
        call.reply(Reply::Values);
        settle().await;
        herder::metrics::flush();
        let all = gauges(&snapshotter);
        assert_eq!(
            gauge(&all, "dropped-loader", "herder_dataloader_keys_in_flight"),
            Some(0.0),
            "{all:?}"
        );
    }

    /// With the feature on and no recorder at all, every primitive and `flush` work.
    #[tokio::test(start_paused = true)]
    async fn no_recorder_installed_nothing_panics() {
        let cache: Cache<u64, u64> = Cache::builder().name("x").max_capacity(10).build().unwrap();
        let loader = DataLoader::builder(support::Instant::default())
            .name("x")
            .cache(cache.clone())
            .build()
            .unwrap();
        let line: Line<u32> = Line::builder().name("x").build().unwrap();
        let queue = OperationQueue::builder()
            .name("x")
            .runners(1)
            .pause_while_recovering(&line)
            .build()
            .unwrap();
        let flight: SingleFlight<u64, u64> = SingleFlight::builder().name("x").build();
        assert_eq!(loader.load(1).await.unwrap(), Some(10));
        assert_eq!(
            line.recover(line.epoch(), || async { 3 }).await.unwrap(),
            herder::Recovery::Led(3)
        );
        assert_eq!(queue.submit(async { 4 }).await.unwrap().await.unwrap(), 4);
        let _ = flight.run(1, || async { 5 }).await;
        herder::metrics::flush();
        drop((loader, queue, flight, line, cache));
        herder::metrics::flush();
    }

    /// A primitive that is gone holds nothing: after it is dropped (and a flush), its gauges
    /// must not keep reporting what it held while alive (stale gauges). The per-request
    /// DataLoader pattern is the sharpest case: it publishes on drop, memo still full.
    #[tokio::test(start_paused = true)]
    async fn gauges_of_a_dropped_primitive_do_not_stay_at_their_last_value() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let (cache, loader, queue) = metrics::with_local_recorder(&recorder, || {
            let cache: Cache<u64, u64> = Cache::builder()
                .name("gone-cache")
                .max_capacity(100)
                .build()
                .unwrap();
            let loader = DataLoader::builder(support::Instant::default())
                .name("gone-loader")
                .memo(true)
                .build()
                .unwrap();
            let queue = OperationQueue::builder()
                .name("gone-queue")
                .runners(3)
                .build()
                .unwrap();
            (cache, loader, queue)
        });
        for k in 0..5 {
            cache.insert(k, k);
        }
        loader.load_many([1, 2, 3]).await.unwrap();
        assert_eq!(queue.submit(async { 1 }).await.unwrap().await.unwrap(), 1);
        // The state the recorder is told while they live (no snapshot in between: a snapshot
        // resets the debugging recorder's gauges, which would hide a stale one).
        assert_eq!(cache.stats().entries, 5);
        assert_eq!(loader.stats().memoized, 3);
        assert_eq!(queue.stats().runners, 3);
        herder::metrics::flush();
        drop(loader);
        drop(cache);
        queue.close();
        drop(queue);
        settle().await;
        herder::metrics::flush();
        let all = gauges(&snapshotter);
        let after = [
            ("gone-cache", "herder_cache_entries"),
            ("gone-cache", "herder_cache_weight"),
            ("gone-loader", "herder_dataloader_memoized"),
            ("gone-queue", "herder_queue_runners"),
        ];
        let mut stale = Vec::new();
        for (name, metric) in after {
            if let Some(v) = gauge(&all, name, metric)
                && v != 0.0
            {
                stale.push(format!("{name}/{metric} = {v}"));
            }
        }
        assert!(stale.is_empty(), "gauges of dropped primitives: {stale:?}");
    }

    /// After a shutdown the queue has no runners, nothing queued, nothing running: so must its
    /// gauges say. And after `set_runners` down, the runners gauge follows.
    #[tokio::test(start_paused = true)]
    async fn queue_gauges_follow_set_runners_and_shutdown() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let queue = metrics::with_local_recorder(&recorder, || {
            OperationQueue::builder()
                .name("shut-queue")
                .runners(4)
                .build()
                .unwrap()
        });
        let (release, gate) = oneshot::channel::<()>();
        let held = queue
            .submit(async move {
                let _ = gate.await;
            })
            .await
            .unwrap();
        let queued: Vec<_> = (0..3)
            .map(|_| queue.try_submit(std::future::pending::<()>()).unwrap())
            .collect();
        queue.set_runners(1).unwrap();
        until("one runner", || queue.stats().runners == 1).await;
        herder::metrics::flush();
        let all = gauges(&snapshotter);
        assert_eq!(
            gauge(&all, "shut-queue", "herder_queue_runners"),
            Some(1.0),
            "{all:?}"
        );
        drop(release);
        let report = bounded(
            "shutdown",
            queue.shutdown(tokio::time::Instant::now() + SECOND),
        )
        .await;
        let _ = (held.await, report);
        drop(queued);
        settle().await;
        herder::metrics::flush();
        let all = gauges(&snapshotter);
        for metric in [
            "herder_queue_runners",
            "herder_queue_depth",
            "herder_queue_running",
        ] {
            assert_eq!(
                gauge(&all, "shut-queue", metric),
                Some(0.0),
                "{metric}: {all:?}"
            );
        }
        let s = queue.stats();
        assert_eq!((s.runners, s.queued, s.running), (0, 0, 0), "{s:?}");
    }

    /// Counters across the seam: a DataLoader batch of three keys through a named cache is
    /// three cache loads (one duration each), one batch of three keys; an invalidated batch
    /// is still three loads but stores nothing; no counter goes backwards or double counts.
    #[tokio::test(start_paused = true)]
    async fn counters_across_the_dataloader_cache_seam() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let (backend, mut calls) = gated();
        let (cache, loader) = metrics::with_local_recorder(&recorder, || {
            let cache: Cache<u64, u64> = Cache::builder()
                .name("seam-c")
                .max_capacity(100)
                .build()
                .unwrap();
            let loader = DataLoader::builder(backend.clone())
                .name("seam-l")
                .cache(cache.clone())
                .build()
                .unwrap();
            (cache, loader)
        });
        let mut many = Box::pin(loader.load_many([1, 2, 3]));
        assert!(poll_once(&mut many).await);
        bounded("batch", calls.next()).await.reply(Reply::Values);
        bounded("many", many).await.unwrap();
        let mut again = Box::pin(loader.load_many([4, 5, 6]));
        assert!(poll_once(&mut again).await);
        let call = bounded("batch 2", calls.next()).await;
        cache.invalidate_all();
        call.reply(Reply::Values);
        bounded("again", again).await.unwrap();
        settle().await;
        herder::metrics::flush();
        let mut counters = HashMap::new();
        let mut hist = HashMap::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let name = key.key().name().to_owned();
            match value {
                DebugValue::Counter(v) => {
                    counters.insert(name, v);
                }
                DebugValue::Histogram(v) => {
                    hist.insert(name, v.len());
                }
                _ => {}
            }
        }
        let c = |n: &str| counters.get(n).copied().unwrap_or(0);
        assert_eq!(c("herder_dataloader_batches_total"), 2, "{counters:?}");
        assert_eq!(c("herder_dataloader_keys_loaded_total"), 6, "{counters:?}");
        assert_eq!(c("herder_dataloader_requests_total"), 6, "{counters:?}");
        assert_eq!(c("herder_cache_loads_total"), 6, "{counters:?}");
        assert_eq!(c("herder_cache_invalidations_total"), 1, "{counters:?}");
        assert_eq!(c("herder_cache_load_errors_total"), 0, "{counters:?}");
        assert_eq!(
            hist.get("herder_dataloader_batch_size"),
            Some(&2),
            "{hist:?}"
        );
        // invalidate_all dropped batch 1 too, and batch 2 was kept out.
        assert_eq!(cache.stats().entries, 0);
    }

    /// `#[tokio::main]`-style: per-request DataLoaders (named, cache in front) built, polled and
    /// dropped on the block_on thread of a hand-built multi-thread runtime, some cancelled
    /// mid-batch, while queued ops do the same behind a line recovery: every in-flight gauge
    /// ends at zero and every cache reader is answered.
    #[test]
    fn block_on_per_request_loaders_with_metrics_leave_nothing_in_flight() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let recorder = Arc::new(recorder);
        rt.block_on(async {
            let (cache, line, queue) = metrics::with_local_recorder(&*recorder, || {
                let cache: Cache<u64, u64> = Cache::builder()
                    .name("bo-cache")
                    .max_capacity(1000)
                    .build()
                    .unwrap();
                let line: Line<u32> = Line::builder().name("bo-line").build().unwrap();
                let queue = OperationQueue::builder()
                    .name("bo-queue")
                    .runners(2)
                    .pause_while_recovering(&line)
                    .build()
                    .unwrap();
                (cache, line, queue)
            });
            let make = {
                let (cache, recorder) = (cache.clone(), recorder.clone());
                move || {
                    metrics::with_local_recorder(&*recorder, || {
                        DataLoader::builder(support::Instant::default())
                            .name("bo-loader")
                            .cache(cache.clone())
                            .build()
                            .unwrap()
                    })
                }
            };
            bounded("body", async {
                let (release, gate) = oneshot::channel::<()>();
                let l = line.clone();
                let seen = l.epoch();
                let recovery = tokio::spawn(async move {
                    l.recover(seen, || async move {
                        gate.await.unwrap();
                        1
                    })
                    .await
                });
                until("recovering", || line.is_recovering()).await;
                let mut ops = Vec::new();
                for r in 0..20u64 {
                    let make2 = make.clone();
                    ops.push(
                        queue
                            .submit(async move {
                                let loader = make2();
                                loader.load_many([r, r + 1, r + 2]).await.unwrap().len()
                            })
                            .await
                            .unwrap(),
                    );
                    // On the block_on thread: a per-request loader, sometimes cancelled.
                    let loader = make();
                    let mut fut = Box::pin(loader.load_many([r + 100, r]));
                    if r % 3 == 0 {
                        let _ = poll_once(&mut fut).await;
                        drop(fut);
                    } else {
                        assert_eq!(fut.await.unwrap().len(), 2);
                    }
                    let read = cache.get_with(r + 100, || async { 7 }).await;
                    assert!(read == (r + 100) * 10 || read == 7);
                }
                release.send(()).unwrap();
                let _ = recovery.await.unwrap().unwrap();
                for op in ops {
                    assert_eq!(op.await.unwrap(), 3);
                }
                queue.wait_idle().await;
                until("cache idle", || cache.stats().in_flight == 0).await;
            })
            .await;
            herder::metrics::flush();
        });
        let all = gauges(&snapshotter);
        let mut wrong = Vec::new();
        for (name, metric) in [
            ("bo-cache", "herder_cache_loads_in_flight"),
            ("bo-loader", "herder_dataloader_keys_in_flight"),
            ("bo-queue", "herder_queue_depth"),
            ("bo-queue", "herder_queue_running"),
            ("bo-line", "herder_line_recovering"),
        ] {
            match gauge(&all, name, metric) {
                Some(0.0) => {}
                other => wrong.push(format!("{name}/{metric} = {other:?}")),
            }
        }
        assert!(wrong.is_empty(), "{wrong:?}");
    }
}
