//! One error for "the work failed to finish" ([`TaskError`]), embedded by the errors that add
//! their own cases; every error takes `?` into `Box<dyn Error>` and keeps its source chain.

use std::collections::HashMap;
use std::error::Error;
use std::io;
use std::time::Duration;

use herder::{
    Cache, CacheError, DataLoader, Line, LoadError, Loader, OperationQueue, RecoverError, RunError,
    SingleFlight, TaskError,
};

/// A loader whose backend refuses every connection.
struct Refused;

impl Loader for Refused {
    type Key = u32;
    type Value = String;
    type Error = io::Error;

    async fn load(&self, _: &[u32]) -> Result<HashMap<u32, String>, io::Error> {
        Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"))
    }
}

async fn through_cache(cache: &Cache<u32, String>) -> Result<String, Box<dyn Error>> {
    let value = cache
        .try_get_with(1, || async {
            Err::<String, _>(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"))
        })
        .await?;
    Ok(value)
}

async fn through_loader(loader: &DataLoader<Refused>) -> Result<Option<String>, Box<dyn Error>> {
    Ok(loader.load(1).await?)
}

/// The loader's `io::Error`, found again at the end of `err`'s source chain.
fn io_source<'a>(err: &'a (dyn Error + 'static)) -> &'a io::Error {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current
        .downcast_ref::<io::Error>()
        .expect("an io::Error at the end of the chain")
}

#[tokio::test]
async fn a_cache_error_goes_through_question_mark_and_keeps_its_source() {
    let cache: Cache<u32, String> = Cache::new(10);
    let err = through_cache(&cache).await.unwrap_err();
    assert_eq!(err.to_string(), "loader failed: refused");
    assert_eq!(io_source(&*err).kind(), io::ErrorKind::ConnectionRefused);
    let err = err.downcast_ref::<CacheError<io::Error>>().unwrap();
    assert!(err.is_loader_error() && err.task_error().is_none());
}

#[tokio::test]
async fn a_load_error_goes_through_question_mark_and_keeps_its_source() {
    let loader = DataLoader::new(Refused);
    let err = through_loader(&loader).await.unwrap_err();
    assert_eq!(err.to_string(), "loader failed: refused");
    assert_eq!(io_source(&*err).kind(), io::ErrorKind::ConnectionRefused);
    let err = err.downcast_ref::<LoadError<io::Error>>().unwrap();
    assert_eq!(err.loader_error().unwrap().to_string(), "refused");
}

#[tokio::test]
async fn errors_go_into_a_send_sync_box() {
    let cache: Cache<u32, String> = Cache::new(10);
    let err = cache
        .try_get_with(1, || async { Err::<String, _>(io::Error::other("down")) })
        .await
        .unwrap_err();
    let boxed: Box<dyn Error + Send + Sync> = err.into();
    assert_eq!(boxed.source().unwrap().to_string(), "down");
}

#[tokio::test]
async fn a_loader_panic_is_a_task_error_without_a_source() {
    let cache: Cache<u32, String> = Cache::new(10);
    let err = cache
        .try_get_with(1, || async {
            if true {
                panic!("bad row");
            }
            Ok::<String, io::Error>(String::new())
        })
        .await
        .unwrap_err();
    let task: &TaskError = err.task_error().unwrap();
    assert!(task.is_panic() && err.is_panic());
    assert_eq!(task.panic_message(), Some("bad row"));
    // Display is the task error's own; it is not repeated as a source.
    assert_eq!(err.to_string(), "loader panicked: bad row");
    assert_eq!(err.to_string(), task.to_string());
    assert!(err.source().is_none());
    assert!(err.loader_error().is_none() && !err.is_loader_error());
}

#[tokio::test(start_paused = true)]
async fn every_primitive_reports_failed_work_as_one_type() {
    // `RunError` and `RecoverError` are names of `TaskError`.
    let flights = SingleFlight::<&str, u32>::new();
    let run: RunError = flights
        .run("k", || async { panic!("flight") })
        .await
        .unwrap_err();
    let line: Line<u32> = Line::builder()
        .recovery_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let recovery: RecoverError = line
        .recover(line.epoch(), std::future::pending)
        .await
        .unwrap_err();
    let queue = OperationQueue::builder()
        .runners(1)
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let operation = queue
        .submit(std::future::pending::<()>())
        .await
        .unwrap()
        .await
        .unwrap_err();
    let failures: [&TaskError; 3] = [&run, &recovery, operation.task_error().unwrap()];
    let seen: Vec<_> = failures
        .iter()
        .map(|err| (err.is_panic(), err.timeout(), err.to_string()))
        .collect();
    assert_eq!(
        seen,
        [
            (true, None, "shared work panicked: flight".to_string()),
            (
                false,
                Some(Duration::from_secs(2)),
                "recovery timed out after 2s".to_string()
            ),
            (
                false,
                Some(Duration::from_secs(3)),
                "operation timed out after 3s".to_string()
            ),
        ]
    );
    assert!(operation.is_timeout() && !operation.is_aborted() && !operation.is_cancelled());
}
