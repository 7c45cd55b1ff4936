//! Send/Sync checklist (as tokio's `tests/async_send_sync.rs`): handles can be shared across
//! tasks, futures can be spawned, errors and stats can cross threads.

mod support;

use herder::batch::{DataLoaderStats, Load, LoadMany};
use herder::cache::{CacheStats, Fetched, Loaded, Status};
use herder::line::LineStats;
use herder::queue::{OperationQueueStats, ShutdownReport, SubmitError, TrySubmitError};
use herder::single_flight::{Run, SingleFlightStats};
use herder::{
    BuildError, Cache, CacheError, DataLoader, Epoch, Line, LoadError, OperationError,
    OperationHandle, OperationQueue, RecoverError, Recovery, RunError, SingleFlight, TaskError,
};
use support::{BackendDown, Instant};

fn send<T: Send>() {}
fn sync<T: Sync>() {}
fn unpin<T: Unpin>() {}
fn clone<T: Clone>() {}
fn static_error<T: std::error::Error + Send + Sync + 'static>() {}

type Work = fn() -> std::future::Ready<u32>;

#[test]
fn handles_are_send_sync_and_clone() {
    send::<DataLoader<Instant>>();
    sync::<DataLoader<Instant>>();
    clone::<DataLoader<Instant>>();
    send::<SingleFlight<String, u32>>();
    sync::<SingleFlight<String, u32>>();
    clone::<SingleFlight<String, u32>>();
    send::<Cache<String, Vec<u8>>>();
    sync::<Cache<String, Vec<u8>>>();
    clone::<Cache<String, Vec<u8>>>();
    send::<OperationQueue>();
    sync::<OperationQueue>();
    clone::<OperationQueue>();
    send::<Line<String>>();
    sync::<Line<String>>();
    clone::<Line<String>>();
    send::<herder::queue::Builder<OperationQueue>>();
    sync::<herder::queue::Builder<OperationQueue>>();
}

fn send_future<F: std::future::Future + Send>(_: &F) {}

#[test]
fn cache_futures_are_send() {
    let cache: Cache<String, u32> = Cache::new(10);
    send_future(&cache.get_with("k".into(), || async { 1 }));
    send_future(&cache.try_get_with("k".into(), || async { Ok::<_, BackendDown>(1) }));
    send_future(&cache.fetch("k".into(), || async {
        Ok::<_, BackendDown>(Loaded::found(1))
    }));
    let load = |keys: Vec<String>| async move {
        Ok::<_, BackendDown>(keys.into_iter().map(|k| (k, 1)).collect())
    };
    send_future(&cache.get_many_with(["k".to_string()], load));
}

/// `Line` must be `'static` to be moved into spawned tasks (operation-queue's `Token<'l>` borrows
/// its line).
#[test]
fn lines_are_owned() {
    fn owned<T: 'static>() {}
    owned::<Line<String>>();
    owned::<Epoch>();
}

#[test]
fn futures_are_send_and_unpin() {
    send::<Load<'static, Instant>>();
    unpin::<Load<'static, Instant>>();
    send::<LoadMany<'static, Instant>>();
    unpin::<LoadMany<'static, Instant>>();
    send::<Run<'static, String, u32, Work>>();
    unpin::<Run<'static, String, u32, Work>>();
    send::<OperationHandle<String>>();
    sync::<OperationHandle<String>>();
    unpin::<OperationHandle<String>>();
}

/// The futures of the `async fn`s can be held across `.await` in spawned tasks.
#[test]
fn async_fn_futures_are_send() {
    fn send_val<T: Send>(_: &T) {}
    let queue_op = std::future::ready(1u8);
    let line: Line<u8> = Line::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let queue = OperationQueue::new(1);
    send_val(&queue.submit(queue_op));
    send_val(&queue.wait_idle());
    send_val(&queue.drain());
    send_val(&queue.shutdown(tokio::time::Instant::now()));
    send_val(&line.recover(line.epoch(), || std::future::ready(1u8)));
    send_val(&line.wait_clear());
}

#[test]
fn errors_and_stats_cross_threads() {
    static_error::<LoadError<BackendDown>>();
    clone::<LoadError<BackendDown>>();
    static_error::<RunError>();
    static_error::<TaskError>();
    clone::<TaskError>();
    static_error::<BuildError>();
    send::<DataLoaderStats>();
    sync::<DataLoaderStats>();
    send::<SingleFlightStats>();
    sync::<SingleFlightStats>();
    static_error::<CacheError<BackendDown>>();
    clone::<CacheError<BackendDown>>();
    send::<CacheStats>();
    send::<Fetched<u32>>();
    send::<Status>();
    static_error::<OperationError>();
    clone::<OperationError>();
    static_error::<RecoverError>();
    clone::<RecoverError>();
    static_error::<SubmitError<std::future::Ready<u8>>>();
    static_error::<TrySubmitError<std::future::Ready<u8>>>();
    send::<OperationQueueStats>();
    sync::<OperationQueueStats>();
    send::<ShutdownReport>();
    send::<LineStats>();
    send::<Recovery<String>>();
    sync::<Recovery<String>>();
}

#[tokio::test]
async fn futures_can_be_spawned() {
    let loader = DataLoader::new(Instant::default());
    let flights = SingleFlight::<u8, u8>::new();
    let task = tokio::spawn(async move {
        let a = loader.load(1).await.unwrap();
        let b = flights.run(1, || async { 2 }).await.unwrap();
        (a, b)
    });
    assert_eq!(task.await.unwrap(), (Some(10), 2));
}
