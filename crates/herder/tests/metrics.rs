//! The `metrics` feature: after a known workload, each primitive's series in a debugging
//! recorder hold exactly its counts, under the name it was given; the metric table in the
//! `metrics` module docs lists exactly the series the primitives record.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures_util::future::join_all;
use herder::{Cache, DataLoader, Line, Loader, OperationQueue, SingleFlight};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::sync::oneshot;

/// What a recorder holds for the series labelled `name="{name}"`, by metric name. Taking a
/// snapshot resets the debugging recorder's counters: what follows counts from there.
fn series(snapshotter: &Snapshotter, name: &str) -> HashMap<String, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            key.key()
                .labels()
                .any(|label| label.key() == "name" && label.value() == name)
        })
        .map(|(key, _, _, value)| (key.key().name().to_owned(), value))
        .collect()
}

fn counter(series: &HashMap<String, DebugValue>, metric: &str) -> u64 {
    match series.get(metric) {
        Some(DebugValue::Counter(value)) => *value,
        other => panic!("{metric}: {other:?}"),
    }
}

fn gauge(series: &HashMap<String, DebugValue>, metric: &str) -> f64 {
    match series.get(metric) {
        Some(DebugValue::Gauge(value)) => value.into_inner(),
        other => panic!("{metric}: {other:?}"),
    }
}

fn histogram(series: &HashMap<String, DebugValue>, metric: &str) -> Vec<f64> {
    match series.get(metric) {
        Some(DebugValue::Histogram(values)) => values.iter().map(|v| v.into_inner()).collect(),
        other => panic!("{metric}: {other:?}"),
    }
}

/// Builds with `build` while `recorder` is the recorder: the primitive's handles are its.
fn built<T>(recorder: &DebuggingRecorder, build: impl FnOnce() -> T) -> T {
    metrics::with_local_recorder(recorder, build)
}

#[tokio::test(start_paused = true)]
async fn cache_one_miss_three_hits_one_load() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let cache: Cache<u32, String> = built(&recorder, || {
        Cache::builder()
            .name("books")
            .max_capacity(10)
            .build()
            .unwrap()
    });
    cache
        .get_with(1, || async {
            tokio::time::sleep(Duration::from_millis(250)).await;
            "one".to_string()
        })
        .await;
    for _ in 0..3 {
        cache.get_with(1, || async { unreachable!() }).await;
    }
    cache.invalidate(&1);
    herder::metrics::flush();
    // A second flush adds nothing: counters follow the totals, they do not add them again.
    herder::metrics::flush();
    let books = series(&snapshotter, "books");
    assert_eq!(counter(&books, "herder_cache_hits_total"), 3);
    assert_eq!(counter(&books, "herder_cache_misses_total"), 1);
    assert_eq!(counter(&books, "herder_cache_loads_total"), 1);
    assert_eq!(counter(&books, "herder_cache_load_errors_total"), 0);
    assert_eq!(counter(&books, "herder_cache_invalidations_total"), 1);
    assert_eq!(gauge(&books, "herder_cache_entries"), 0.0);
    assert_eq!(gauge(&books, "herder_cache_loads_in_flight"), 0.0);
    assert_eq!(
        histogram(&books, "herder_cache_load_duration_seconds"),
        [0.25]
    );
}

#[tokio::test(start_paused = true)]
async fn cache_counts_reach_the_recorder_only_at_a_flush() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let cache: Cache<u32, u32> = built(&recorder, || {
        Cache::builder()
            .name("hot")
            .max_capacity(10)
            .build()
            .unwrap()
    });
    cache.insert(1, 1);
    for _ in 0..5 {
        assert_eq!(cache.get(&1), Some(1));
    }
    // The hit path made no facade call.
    assert_eq!(
        counter(&series(&snapshotter, "hot"), "herder_cache_hits_total"),
        0
    );
    herder::metrics::flush();
    let hot = series(&snapshotter, "hot");
    assert_eq!(counter(&hot, "herder_cache_hits_total"), 5);
    assert_eq!(gauge(&hot, "herder_cache_entries"), 1.0);
}

#[derive(Clone)]
struct Squares;

impl Loader for Squares {
    type Key = u64;
    type Value = u64;
    type Error = std::io::Error;

    async fn load(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, Self::Error> {
        Ok(keys.iter().map(|k| (*k, k * k)).collect())
    }
}

#[tokio::test(start_paused = true)]
async fn dataloader_batch_of_five_keys_without_a_flush() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let loader = built(&recorder, || {
        DataLoader::builder(Squares)
            .name("squares")
            .build()
            .unwrap()
    });
    let values = join_all((1..=5).map(|k| loader.load(k))).await;
    assert_eq!(values[4].as_ref().unwrap(), &Some(25));
    // Recorded at the end of the batch.
    let squares = series(&snapshotter, "squares");
    assert_eq!(counter(&squares, "herder_dataloader_batches_total"), 1);
    assert_eq!(counter(&squares, "herder_dataloader_keys_loaded_total"), 5);
    assert_eq!(counter(&squares, "herder_dataloader_requests_total"), 5);
    assert_eq!(histogram(&squares, "herder_dataloader_batch_size"), [5.0]);
    assert_eq!(
        histogram(&squares, "herder_dataloader_batch_duration_seconds").len(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn dataloader_made_per_request_records_its_last_counts_when_dropped() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let loader = built(&recorder, || {
        DataLoader::builder(Squares)
            .name("request")
            .memo(true)
            .build()
            .unwrap()
    });
    loader.load(3).await.unwrap();
    // Memo hits after the last batch: no batch end records them, the drop does.
    loader.load(3).await.unwrap();
    loader.load(3).await.unwrap();
    drop(loader);
    let request = series(&snapshotter, "request");
    assert_eq!(counter(&request, "herder_dataloader_requests_total"), 3);
    assert_eq!(counter(&request, "herder_dataloader_memo_hits_total"), 2);
    assert_eq!(counter(&request, "herder_dataloader_batches_total"), 1);
}

#[tokio::test(start_paused = true)]
async fn single_flight_one_started_one_joined() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let flights: SingleFlight<&str, u32> =
        built(&recorder, || SingleFlight::builder().name("tokens").build());
    let (tx, rx) = oneshot::channel::<u32>();
    let first = flights.run("auth", || async { rx.await.unwrap() });
    let second = flights.run("auth", || async { unreachable!() });
    let release = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        tx.send(7).unwrap();
    };
    let (a, b, ()) = tokio::join!(first, second, release);
    assert_eq!((a.unwrap(), b.unwrap()), (7, 7));
    herder::metrics::flush();
    let tokens = series(&snapshotter, "tokens");
    assert_eq!(counter(&tokens, "herder_single_flight_started_total"), 1);
    assert_eq!(counter(&tokens, "herder_single_flight_joined_total"), 1);
    assert_eq!(counter(&tokens, "herder_single_flight_panics_total"), 0);
    assert_eq!(gauge(&tokens, "herder_single_flight_in_flight"), 0.0);
    assert_eq!(
        histogram(&tokens, "herder_single_flight_duration_seconds"),
        [2.0]
    );
}

#[tokio::test(start_paused = true)]
async fn line_one_recovery_one_joined_one_already_done() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let line: Line<String> = built(&recorder, || Line::builder().name("auth").build().unwrap());
    let seen = line.epoch();
    let relogin = || async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        "token".to_string()
    };
    let (a, b) = tokio::join!(line.recover(seen, relogin), line.recover(seen, relogin));
    assert!(a.is_ok() && b.is_ok());
    assert!(line.recover(seen, relogin).await.unwrap().is_already_done());
    herder::metrics::flush();
    let auth = series(&snapshotter, "auth");
    assert_eq!(counter(&auth, "herder_line_recoveries_total"), 1);
    assert_eq!(counter(&auth, "herder_line_joined_total"), 1);
    assert_eq!(counter(&auth, "herder_line_already_done_total"), 1);
    assert_eq!(gauge(&auth, "herder_line_recovering"), 0.0);
    assert_eq!(
        histogram(&auth, "herder_line_recovery_duration_seconds"),
        [1.0]
    );
}

#[tokio::test(start_paused = true)]
async fn queue_three_completed_one_rejected_one_queued() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let queue = built(&recorder, || {
        OperationQueue::builder()
            .name("imap")
            .runners(1)
            .capacity(1)
            .build()
            .unwrap()
    });
    for _ in 0..3 {
        queue.submit(async {}).await.unwrap().await.unwrap();
    }
    let (tx, rx) = oneshot::channel::<()>();
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let running = queue
        .submit(async move {
            started_tx.send(()).unwrap();
            rx.await.unwrap();
        })
        .await
        .unwrap();
    started_rx.await.unwrap();
    let waiting = queue.submit(async {}).await.unwrap();
    assert!(queue.try_submit(async {}).unwrap_err().is_full());
    herder::metrics::flush();
    let imap = series(&snapshotter, "imap");
    assert_eq!(counter(&imap, "herder_queue_submitted_total"), 5);
    assert_eq!(counter(&imap, "herder_queue_completed_total"), 3);
    assert_eq!(counter(&imap, "herder_queue_rejected_total"), 1);
    assert_eq!(gauge(&imap, "herder_queue_depth"), 1.0);
    assert_eq!(gauge(&imap, "herder_queue_running"), 1.0);
    assert_eq!(gauge(&imap, "herder_queue_runners"), 1.0);
    // Four operations were taken by the runner, three ended.
    assert_eq!(histogram(&imap, "herder_queue_wait_seconds").len(), 4);
    assert_eq!(
        histogram(&imap, "herder_queue_run_duration_seconds").len(),
        3
    );
    tx.send(()).unwrap();
    running.await.unwrap();
    waiting.await.unwrap();
    herder::metrics::flush();
    let imap = series(&snapshotter, "imap");
    // The recorder's counters are deltas since the last snapshot.
    assert_eq!(counter(&imap, "herder_queue_completed_total"), 2);
    assert_eq!(gauge(&imap, "herder_queue_depth"), 0.0);
    assert_eq!(histogram(&imap, "herder_queue_wait_seconds").len(), 1);
    assert_eq!(
        histogram(&imap, "herder_queue_run_duration_seconds").len(),
        2
    );
}

/// The metric names of the table in the `metrics` module docs.
fn documented() -> BTreeSet<String> {
    include_str!("../src/metrics/mod.rs")
        .lines()
        .filter_map(|line| line.strip_prefix("//! | `herder_"))
        .map(|rest| format!("herder_{}", &rest[..rest.find('`').unwrap()]))
        .collect()
}

#[tokio::test]
async fn the_docs_list_exactly_the_recorded_metrics() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let primitives: (
        Cache<u8, u8>,
        DataLoader<Squares>,
        SingleFlight<u8, u8>,
        Line<u8>,
        OperationQueue,
    ) = built(&recorder, || {
        (
            Cache::builder()
                .name("all")
                .max_capacity(1)
                .build()
                .unwrap(),
            DataLoader::builder(Squares).name("all").build().unwrap(),
            SingleFlight::builder().name("all").build(),
            Line::builder().name("all").build().unwrap(),
            OperationQueue::builder().name("all").build().unwrap(),
        )
    });
    let recorded: BTreeSet<String> = series(&snapshotter, "all").into_keys().collect();
    assert_eq!(recorded, documented());
    drop(primitives);
}
