//! DataLoader behaviour: batching, dedup, memo, windows, concurrency cap, bad loaders.
//! All tests run on a paused clock; ordering comes from the scripted loader, not from sleeps.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;
use herder::{DataLoader, Loader};
use support::{Instant, Reply, gated, poll_once, settle};

#[tokio::test(start_paused = true)]
async fn hundred_concurrent_loads_with_max_batch_ten_make_batches_of_at_most_ten() {
    let backend = Instant::default();
    let loader = DataLoader::builder(backend.clone())
        .max_batch_size(10)
        .build()
        .unwrap();
    let values = join_all((0..100).map(|k| loader.load(k))).await;
    for (k, v) in values.into_iter().enumerate() {
        assert_eq!(v.unwrap(), Some(k as u64 * 10));
    }
    let batches = backend.batches();
    assert_eq!(batches.len(), 10);
    assert!(batches.iter().all(|b| b.len() == 10), "{batches:?}");
    assert_eq!(loader.stats().largest_batch, 10);
}

#[tokio::test(start_paused = true)]
async fn duplicate_keys_reach_the_loader_once() {
    let backend = Instant::default();
    let loader = DataLoader::new(backend.clone());
    let (many, one, again) = tokio::join!(
        loader.load_many([1, 3, 5, 1, 7, 8, 3, 7]),
        loader.load(5),
        loader.load(1)
    );
    let many = many.unwrap();
    assert_eq!(
        many,
        HashMap::from([(1, 10), (3, 30), (5, 50), (7, 70), (8, 80)])
    );
    assert_eq!(one.unwrap(), Some(50));
    assert_eq!(again.unwrap(), Some(10));
    let batches = backend.batches();
    assert_eq!(batches.len(), 1);
    let mut keys = batches[0].clone();
    keys.sort_unstable();
    assert_eq!(keys, vec![1, 3, 5, 7, 8]);
    let stats = loader.stats();
    assert_eq!(stats.requests, 7);
    assert_eq!(stats.joined, 2);
    assert_eq!(stats.batched_keys, 5);
}

#[tokio::test(start_paused = true)]
async fn empty_load_many_does_not_call_the_loader() {
    let backend = Instant::default();
    let loader = DataLoader::new(backend.clone());
    assert!(loader.load_many(Vec::new()).await.unwrap().is_empty());
    settle().await;
    assert_eq!(backend.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn prime_then_clear() {
    let backend = Instant::default();
    let loader = DataLoader::builder(backend.clone())
        .memo(true)
        .build()
        .unwrap();
    loader.prime(1, 111);
    loader.prime(2, 222);
    assert_eq!(
        loader.load_many([1, 2]).await.unwrap(),
        HashMap::from([(1, 111), (2, 222)])
    );
    assert_eq!(backend.calls(), 0);

    loader.clear(&1);
    assert_eq!(
        loader.load_many([1, 2]).await.unwrap(),
        HashMap::from([(1, 10), (2, 222)])
    );
    assert_eq!(backend.batches(), vec![vec![1]]);

    loader.clear_all();
    assert_eq!(loader.load(2).await.unwrap(), Some(20));
    assert_eq!(backend.calls(), 2);
    // Now memoized: no further call.
    assert_eq!(loader.load(2).await.unwrap(), Some(20));
    assert_eq!(backend.calls(), 2);
    assert_eq!(loader.stats().memo_hits, 4);
}

#[tokio::test(start_paused = true)]
async fn without_a_memo_every_batch_asks_the_loader_and_prime_does_nothing() {
    let backend = Instant::default();
    let loader = DataLoader::new(backend.clone());
    loader.prime(1, 999);
    assert_eq!(loader.load(1).await.unwrap(), Some(10));
    assert_eq!(loader.load(1).await.unwrap(), Some(10));
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_memo_remembers_missing_keys_too() {
    let backend = Instant::omitting(vec![4]);
    let loader = DataLoader::builder(backend.clone())
        .memo(true)
        .build()
        .unwrap();
    assert_eq!(loader.load(4).await.unwrap(), None);
    assert_eq!(loader.load(4).await.unwrap(), None);
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_aborted_caller_does_not_deadlock_the_next_load() {
    let (backend, mut calls) = gated();
    let loader = DataLoader::new(backend);
    let spawned = {
        let loader = loader.clone();
        tokio::spawn(async move { loader.load(1).await })
    };
    // The batch is at the loader when the caller is aborted.
    let call = calls.next().await;
    spawned.abort();
    assert!(spawned.await.unwrap_err().is_cancelled());
    call.reply(Reply::Values);

    let next = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(2).await }
    });
    calls.next().await.reply(Reply::Values);
    assert_eq!(next.await.unwrap().unwrap(), Some(20));
}

#[tokio::test(start_paused = true)]
async fn two_dependent_levels_of_100_loads_in_one_task_make_two_batches() {
    let backend = Instant::default();
    let loader = DataLoader::new(backend.clone());
    let level1 = join_all((0..100).map(|k| loader.load(k))).await;
    let level2 = join_all(
        level1
            .iter()
            .map(|v| loader.load(v.as_ref().unwrap().unwrap() + 1)),
    )
    .await;
    assert_eq!(level2[7].as_ref().unwrap(), &Some(710));
    assert_eq!(backend.calls(), 2);
    assert_eq!(
        backend.batches().iter().map(Vec::len).collect::<Vec<_>>(),
        vec![100, 100]
    );
}

#[tokio::test(start_paused = true)]
async fn a_key_whose_batch_is_running_joins_it() {
    let (backend, mut calls) = gated();
    let loader = DataLoader::new(backend.clone());
    let mut first = Box::pin(loader.load(1));
    assert!(poll_once(&mut first).await);
    let call = calls.next().await;
    assert_eq!(call.keys, vec![1]);

    // The batch is at the loader: a second load of key 1 joins it, key 2 opens a new batch.
    let mut second = Box::pin(loader.load(1));
    let mut other = Box::pin(loader.load(2));
    assert!(poll_once(&mut second).await);
    assert!(poll_once(&mut other).await);
    let other_call = calls.next().await;
    assert_eq!(other_call.keys, vec![2]);

    call.reply(Reply::Values);
    other_call.reply(Reply::Values);
    assert_eq!(first.await.unwrap(), Some(10));
    assert_eq!(second.await.unwrap(), Some(10));
    assert_eq!(other.await.unwrap(), Some(20));
    assert_eq!(*backend.count.lock().unwrap(), 2);
    assert_eq!(loader.stats().joined, 1);
    assert_eq!(loader.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_loader_panic_reaches_every_waiter_and_is_not_remembered() {
    let (backend, mut calls) = gated();
    let loader = DataLoader::builder(backend).memo(true).build().unwrap();
    let waiters = tokio::spawn({
        let loader = loader.clone();
        async move { join_all((0..5).map(|k| loader.load(k % 3))).await }
    });
    calls
        .next()
        .await
        .reply(Reply::Panic("query planner exploded"));
    for result in waiters.await.unwrap() {
        let err = result.unwrap_err();
        assert!(err.is_panic());
        assert_eq!(err.panic_message(), Some("query planner exploded"));
    }
    assert_eq!(loader.stats().panics, 1);
    assert_eq!(loader.stats().memoized, 0);

    let retry = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(1).await }
    });
    calls.next().await.reply(Reply::Values);
    assert_eq!(retry.await.unwrap().unwrap(), Some(10));
}

#[tokio::test(start_paused = true)]
async fn a_loader_error_reaches_every_waiter_shared_and_is_not_memoized() {
    let (backend, mut calls) = gated();
    let loader = DataLoader::builder(backend).memo(true).build().unwrap();
    let waiters = tokio::spawn({
        let loader = loader.clone();
        async move { tokio::join!(loader.load(1), loader.load(2), loader.load_many([1, 2, 3])) }
    });
    calls.next().await.reply(Reply::Fail("connection reset"));
    let (a, b, many) = waiters.await.unwrap();
    let (a, b, many) = (a.unwrap_err(), b.unwrap_err(), many.unwrap_err());
    assert_eq!(a.loader_error().unwrap().0, "connection reset");
    // One error value, shared by all.
    let a = a.into_loader_error().unwrap();
    let b = b.into_loader_error().unwrap();
    let many = many.into_loader_error().unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b) && std::sync::Arc::ptr_eq(&a, &many));
    assert_eq!(loader.stats().errors, 1);

    let retry = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(1).await }
    });
    calls.next().await.reply(Reply::Values);
    assert_eq!(retry.await.unwrap().unwrap(), Some(10));
}

/// async-graphql #555: the caller whose key opened the batch is dropped before dispatch; the
/// batch must still run for everyone else.
#[tokio::test(start_paused = true)]
async fn dropping_the_batch_opener_does_not_strand_the_others() {
    let backend = Instant::default();
    let loader = DataLoader::new(backend.clone());
    let mut opener = Box::pin(loader.load(1));
    assert!(poll_once(&mut opener).await);
    let mut follower = Box::pin(loader.load(2));
    assert!(poll_once(&mut follower).await);
    drop(opener);
    assert_eq!(follower.await.unwrap(), Some(20));
    assert_eq!(backend.batches(), vec![vec![1, 2]]);
}

/// moka #240's shape, for batches: the caller whose key opened the batch is polled once and
/// never again; the batch still dispatches (after a short fallback timer) for the others.
#[tokio::test(start_paused = true)]
async fn a_parked_batch_opener_does_not_strand_the_others() {
    let backend = Instant::default();
    let loader = DataLoader::new(backend.clone());
    let mut parked = Box::pin(loader.load(1));
    assert!(poll_once(&mut parked).await);
    let other = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(2).await }
    });
    assert_eq!(other.await.unwrap().unwrap(), Some(20));
    assert_eq!(backend.batches(), vec![vec![1, 2]]);
    assert_eq!(loader.stats().unattended_windows, 1);
    // The parked opener gets its value when it is polled again.
    assert_eq!(parked.await.unwrap(), Some(10));
}

/// The window closes when the task that opened it comes round, not when another worker gets to
/// it: a fan-out polled in one task lands in one batch on a multi-thread runtime too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_in_one_task_makes_one_batch_on_a_multi_thread_runtime() {
    for round in 0..200 {
        let backend = Instant::default();
        let loader = DataLoader::new(backend.clone());
        let fan_out = tokio::spawn({
            let loader = loader.clone();
            async move { join_all((0..100).map(|k| loader.load(k))).await }
        });
        assert!(fan_out.await.unwrap().iter().all(Result::is_ok));
        assert_eq!(backend.calls(), 1, "round {round}: {:?}", backend.batches());
        assert_eq!(loader.stats().unattended_windows, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_every_caller_still_runs_the_batch_and_fills_the_memo() {
    let backend = Instant::default();
    let loader = DataLoader::builder(backend.clone())
        .memo(true)
        .build()
        .unwrap();
    let mut caller = Box::pin(loader.load(3));
    assert!(poll_once(&mut caller).await);
    drop(caller);
    settle().await;
    assert_eq!(backend.calls(), 1);
    assert_eq!(loader.load(3).await.unwrap(), Some(30));
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn max_concurrent_batches_is_respected_and_keys_batch_up_meanwhile() {
    let (backend, mut calls) = gated();
    let loader = DataLoader::builder(backend.clone())
        .max_concurrent_batches(1)
        .max_batch_size(100)
        .build()
        .unwrap();
    let first = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(0).await }
    });
    let call = calls.next().await;
    assert_eq!(call.keys, vec![0]);

    // 49 loads arrive while the only slot is busy: they wait in one open batch.
    let rest = tokio::spawn({
        let loader = loader.clone();
        async move { join_all((1..50).map(|k| loader.load(k))).await }
    });
    settle().await;
    assert!(
        calls.try_next().is_none(),
        "a second batch started while the slot was busy"
    );
    assert_eq!(loader.stats().in_flight, 50);

    call.reply(Reply::Values);
    let second = calls.next().await;
    assert_eq!(second.keys.len(), 49);
    second.reply(Reply::Values);
    assert_eq!(first.await.unwrap().unwrap(), Some(0));
    assert!(rest.await.unwrap().iter().all(Result::is_ok));
    assert_eq!(*backend.count.lock().unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn full_batches_queue_in_order_behind_the_cap() {
    let (backend, mut calls) = gated();
    let loader = DataLoader::builder(backend.clone())
        .max_concurrent_batches(2)
        .max_batch_size(2)
        .build()
        .unwrap();
    let all = tokio::spawn({
        let loader = loader.clone();
        async move { join_all((0..8).map(|k| loader.load(k))).await }
    });
    let a = calls.next().await;
    let b = calls.next().await;
    settle().await;
    assert!(calls.try_next().is_none(), "more than two batches at once");
    assert_eq!((a.keys.clone(), b.keys.clone()), (vec![0, 1], vec![2, 3]));
    b.reply(Reply::Values);
    let c = calls.next().await;
    assert_eq!(c.keys, vec![4, 5]);
    settle().await;
    assert!(calls.try_next().is_none(), "more than two batches at once");
    a.reply(Reply::Values);
    let d = calls.next().await;
    assert_eq!(d.keys, vec![6, 7]);
    c.reply(Reply::Values);
    d.reply(Reply::Values);
    assert!(all.await.unwrap().iter().all(Result::is_ok));
}

#[tokio::test(start_paused = true)]
async fn omitted_keys_are_none_and_extra_keys_are_ignored() {
    let backend = Instant::omitting(vec![2]);
    let loader = DataLoader::new(backend);
    let (one, two) = tokio::join!(loader.load(1), loader.load(2));
    assert_eq!((one.unwrap(), two.unwrap()), (Some(10), None));
    assert_eq!(
        loader.load_many([1, 2, 3]).await.unwrap(),
        HashMap::from([(1, 10), (3, 30)])
    );

    let extra = DataLoader::builder(Instant::adding(vec![99]))
        .memo(true)
        .build()
        .unwrap();
    assert_eq!(
        extra.load_many([1]).await.unwrap(),
        HashMap::from([(1, 10)])
    );
    assert_eq!(
        extra.stats().memoized,
        1,
        "a key nobody asked for was memoized"
    );
}

#[test]
fn invalid_settings_are_refused_by_build() {
    let err = DataLoader::builder(Instant::default())
        .max_batch_size(0)
        .build()
        .unwrap_err();
    assert_eq!(err.reason(), "max_batch_size must be at least 1");
    let err = DataLoader::builder(Instant::default())
        .max_concurrent_batches(0)
        .build()
        .unwrap_err();
    assert_eq!(err.reason(), "max_concurrent_batches must be at least 1");
    // A later valid setting replaces an earlier invalid one.
    assert!(
        DataLoader::builder(Instant::default())
            .max_batch_size(0)
            .max_batch_size(5)
            .build()
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn a_delay_window_collects_keys_from_tasks_spread_over_time() {
    let backend = Instant::default();
    let loader = DataLoader::builder(backend.clone())
        .delay(Duration::from_millis(10))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for k in 0..5 {
        let loader = loader.clone();
        tasks.push(tokio::spawn(async move { loader.load(k).await }));
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(backend.batches(), vec![vec![0, 1, 2, 3, 4]]);
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_does_not_wait_for_the_delay() {
    let backend = Instant::default();
    let loader = DataLoader::builder(backend.clone())
        .delay(Duration::from_secs(3600))
        .max_batch_size(3)
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let values = join_all((0..3).map(|k| loader.load(k))).await;
    assert!(values.iter().all(Result::is_ok));
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "the full batch waited for its timer"
    );
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn clear_during_a_load_keeps_the_stale_result_out_of_the_memo() {
    let (backend, mut calls) = gated();
    let loader = DataLoader::builder(backend).memo(true).build().unwrap();
    let before = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(1).await }
    });
    let call = calls.next().await;
    loader.clear(&1);
    call.reply(Reply::Map(HashMap::from([(1, 1)]))); // the value from before the change
    assert_eq!(before.await.unwrap().unwrap(), Some(1));
    assert_eq!(loader.stats().memoized, 0);

    let after = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(1).await }
    });
    calls
        .next()
        .await
        .reply(Reply::Map(HashMap::from([(1, 2)])));
    assert_eq!(after.await.unwrap().unwrap(), Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_prime_during_a_load_wins_over_the_loaded_value() {
    let (backend, mut calls) = gated();
    let loader = DataLoader::builder(backend).memo(true).build().unwrap();
    let waiting = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(1).await }
    });
    let call = calls.next().await;
    loader.prime(1, 7);
    call.reply(Reply::Values);
    assert_eq!(waiting.await.unwrap().unwrap(), Some(10));
    assert_eq!(loader.load(1).await.unwrap(), Some(7));
}

#[test]
fn a_batch_whose_runtime_shuts_down_fails_its_callers_instead_of_hanging() {
    let (backend, _calls) = gated();
    let loader = DataLoader::new(backend);
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Open a batch on the first runtime, then shut that runtime down before it dispatches.
    let mut pending = Box::pin(loader.load(1));
    first.block_on(async {
        assert!(poll_once(&mut pending).await);
    });
    drop(first);

    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = second.block_on(pending).unwrap_err();
    assert!(err.is_cancelled(), "{err:?}");
    assert_eq!(loader.stats().cancelled, 1);
    assert_eq!(loader.stats().in_flight, 0);
}

#[test]
fn a_running_batch_whose_runtime_shuts_down_fails_its_callers() {
    let (backend, mut calls) = gated();
    let loader = DataLoader::new(backend);
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut pending = Box::pin(loader.load(1));
    let call = first.block_on(async {
        assert!(poll_once(&mut pending).await);
        calls.next().await
    });
    drop(first);
    drop(call);

    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(second.block_on(pending).unwrap_err().is_cancelled());
    assert_eq!(loader.stats().in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_from_many_tasks_on_a_multi_thread_runtime_all_complete() {
    let backend = Instant::default();
    let loader = DataLoader::builder(backend.clone())
        .memo(true)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..1000u64)
        .map(|i| {
            let loader = loader.clone();
            tokio::spawn(async move { loader.load(i % 100).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap().unwrap(), Some((i as u64 % 100) * 10));
    }
    // With a memo and in-flight dedup, each key reaches the loader exactly once.
    let mut keys: Vec<u64> = backend.batches().concat();
    keys.sort_unstable();
    assert_eq!(keys, (0..100).collect::<Vec<_>>());
    let stats = loader.stats();
    assert_eq!(stats.requests, 1000);
    assert_eq!(stats.memo_hits + stats.joined + stats.batched_keys, 1000);
}

/// A loader that borrows nothing and counts: the trait is implementable with `async fn`.
struct Lengths;

impl Loader for Lengths {
    type Key = String;
    type Value = usize;
    type Error = std::convert::Infallible;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, usize>, Self::Error> {
        Ok(keys.iter().map(|k| (k.clone(), k.len())).collect())
    }
}

#[tokio::test(start_paused = true)]
async fn string_keys_work() {
    let loader = DataLoader::new(Lengths);
    assert_eq!(loader.load("four".to_owned()).await.unwrap(), Some(4));
}
