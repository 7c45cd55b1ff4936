//! A `clear` is final, under a storm: on a multi-thread runtime, writers bump a key's version
//! in the "database", then `clear` the key, then load it, while readers load the same keys
//! (singly and with `load_many`), and now and then someone calls `clear_all`. A load that
//! starts after a `clear(k)` has returned must not answer a version of `k` older than the one
//! current when `clear` was called, memo on or off; a reader that loads a key again never sees
//! its version go back. The seed is printed; `HERDER_STORM_SEED` replays it. (Planted bugs it
//! catches: a `clear` that leaves the load under way indexed, and a finished batch that
//! memoizes a key cleared during its load.)

mod support;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use herder::{DataLoader, Loader};

const KEYS: u64 = 16;

/// The "database": each key's current version. The loader reads it when it runs, after a
/// yield now and then, so that batches are in flight while writers bump and clear.
#[derive(Clone)]
struct Versions(Arc<Vec<AtomicU64>>);

impl Versions {
    fn new() -> Self {
        Versions(Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect()))
    }

    fn bump(&self, key: u64) -> u64 {
        self.0[key as usize].fetch_add(1, SeqCst) + 1
    }
}

impl Loader for Versions {
    type Key = u64;
    type Value = u64;
    type Error = String;

    fn load(&self, keys: &[u64]) -> impl Future<Output = Result<HashMap<u64, u64>, String>> + Send {
        let keys = keys.to_vec();
        let versions = self.0.clone();
        async move {
            if keys.len().is_multiple_of(2) {
                tokio::task::yield_now().await;
            }
            Ok(keys
                .iter()
                .map(|k| (*k, versions[*k as usize].load(SeqCst)))
                .collect())
        }
    }
}

/// Returns how many loads after a `clear` it checked.
async fn writer(loader: DataLoader<Versions>, versions: Versions, seed: u64) -> usize {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut checked = 0;
    for _ in 0..300 {
        let key = rng.u64(..KEYS);
        let version = versions.bump(key);
        if rng.u8(..20) == 0 {
            loader.clear_all();
        } else {
            loader.clear(&key);
        }
        let got = if rng.bool() {
            loader.load(key).await.unwrap()
        } else {
            loader
                .load_many([key, rng.u64(..KEYS)])
                .await
                .unwrap()
                .remove(&key)
        };
        let got = got.expect("every key has a value");
        assert!(
            got >= version,
            "key {key}: a load after clear answered version {got}, older than {version}"
        );
        checked += 1;
        if rng.u8(..4) == 0 {
            tokio::task::yield_now().await;
        }
    }
    checked
}

/// Returns how many values it checked.
async fn reader(loader: DataLoader<Versions>, seed: u64) -> usize {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut seen = [0u64; KEYS as usize];
    let mut checked = 0;
    for _ in 0..600 {
        let keys: Vec<u64> = (0..rng.usize(1..4)).map(|_| rng.u64(..KEYS)).collect();
        let values: Vec<(u64, u64)> = if keys.len() == 1 {
            vec![(keys[0], loader.load(keys[0]).await.unwrap().unwrap())]
        } else {
            loader.load_many(keys).await.unwrap().into_iter().collect()
        };
        for (key, version) in values {
            let last = &mut seen[key as usize];
            assert!(
                version >= *last,
                "key {key}: a reader saw version {version} after {last}"
            );
            *last = version;
            checked += 1;
        }
        if rng.u8(..3) == 0 {
            tokio::task::yield_now().await;
        }
    }
    checked
}

fn storm(memo: bool, max_batch_size: usize) {
    let seed = support::storm_seed();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let versions = Versions::new();
        let loader = DataLoader::builder(versions.clone())
            .memo(memo)
            .max_batch_size(max_batch_size)
            .build()
            .unwrap();
        let mut writers = Vec::new();
        let mut readers = Vec::new();
        for i in 0..4 {
            writers.push(tokio::spawn(writer(
                loader.clone(),
                versions.clone(),
                seed ^ i,
            )));
            readers.push(tokio::spawn(reader(loader.clone(), seed ^ (i + 100))));
        }
        // The block_on thread writes too.
        let mine = writer(loader.clone(), versions.clone(), seed ^ 1000).await;
        assert_eq!(mine, 300);
        let bounded = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            for task in writers {
                assert_eq!(task.await.unwrap(), 300, "every writer's loads checked");
            }
            for task in readers {
                // 600 rounds of one to three keys, each answered.
                assert!(task.await.unwrap() >= 600, "a reader lost values");
            }
        });
        bounded.await.expect("the storm hung");
        // Quiet now: every key answers its latest version.
        for key in 0..KEYS {
            let latest = versions.0[key as usize].load(SeqCst);
            loader.clear(&key);
            assert_eq!(loader.load(key).await.unwrap(), Some(latest));
        }
    });
}

#[test]
fn clear_is_final_with_memo() {
    for _ in 0..8 {
        storm(true, 8);
    }
}

#[test]
fn clear_is_final_with_memo_and_single_key_batches() {
    for _ in 0..3 {
        storm(true, 1);
    }
}

#[test]
fn clear_is_final_without_memo() {
    for _ in 0..3 {
        storm(false, 8);
    }
}
