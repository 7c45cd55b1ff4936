//! The DataLoader workloads, each timed from inside the runtime with `tokio::time::Instant`.

use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use crate::peers::Batcher;

/// What one run of a workload measured.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub elapsed: Duration,
    /// Loader calls made by this run.
    pub calls: usize,
    /// Keys sent to the loader by this run.
    pub keys: usize,
}

async fn measure<B: Batcher, F: std::future::Future>(batcher: &B, work: F) -> Sample {
    let (calls, keys) = (batcher.calls(), batcher.keys());
    let start = Instant::now();
    work.await;
    Sample {
        elapsed: start.elapsed(),
        calls: batcher.calls() - calls,
        keys: batcher.keys() - keys,
    }
}

/// One `load`, nothing else running: the latency the loader adds to a lone request.
pub async fn isolated<B: Batcher>(batcher: &B, key: u64) -> Sample {
    measure(batcher, async {
        assert_eq!(batcher.load(key).await, Some(key * 2));
    })
    .await
}

/// One load after `idle` with nothing to do (a request after a quiet spell: parked workers,
/// cold caches, and for herder a loader whose janitor has retired); the sleep is not timed.
pub async fn isolated_after_idle<B: Batcher>(batcher: &B, key: u64, idle: Duration) -> Sample {
    tokio::time::sleep(idle).await;
    isolated(batcher, key).await
}

/// 100 loads, then 100 loads that depend on their results, in one task: a two-level GraphQL
/// query (books, then each book's author).
pub async fn two_levels<B: Batcher>(batcher: &B) -> Sample {
    measure(batcher, async {
        let first = join_all((0..100).map(|k| batcher.load(k))).await;
        let second = join_all(first.iter().map(|v| batcher.load(v.unwrap() + 1))).await;
        assert_eq!(second[99], Some((99 * 2 + 1) * 2));
    })
    .await
}

/// `loads` concurrent loads over `distinct` keys, polled from one task.
pub async fn fan_out<B: Batcher>(batcher: &B, loads: u64, distinct: u64) -> Sample {
    measure(batcher, async {
        let values = join_all((0..loads).map(|i| batcher.load(i % distinct))).await;
        assert_eq!(values.len() as u64, loads);
        assert!(values.iter().all(Option::is_some));
    })
    .await
}

/// `loads` loads over `distinct` keys, each from its own spawned task.
pub async fn fan_out_tasks<B: Batcher>(batcher: &B, loads: u64, distinct: u64) -> Sample {
    measure(batcher, async {
        let tasks: Vec<_> = (0..loads)
            .map(|i| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.load(i % distinct).await })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().is_some());
        }
    })
    .await
}

/// Loads of keys the loader's memo or cache already holds: `tasks` spawned tasks at once, each
/// loading `per_task` times, one after the other, from `distinct` keys that a `load_many`-like
/// warm-up (not timed) loaded first. On a 2-worker runtime the tasks run on both workers: what
/// the repeated keys of request-scoped loaders cost, and whether hits from two threads contend.
pub async fn warm_hits<B: Batcher>(
    batcher: &B,
    tasks: u64,
    per_task: u64,
    distinct: u64,
) -> Sample {
    let warm = join_all((0..distinct).map(|k| batcher.load(k))).await;
    assert!(warm.iter().all(Option::is_some));
    measure(batcher, async {
        let spawned: Vec<_> = (0..tasks)
            .map(|t| {
                let batcher = batcher.clone();
                tokio::spawn(async move {
                    for i in 0..per_task {
                        let key = (i * 7 + t * 13) % distinct;
                        assert_eq!(batcher.load(key).await, Some(key * 2));
                    }
                })
            })
            .collect();
        for task in spawned {
            task.await.unwrap();
        }
    })
    .await
}
