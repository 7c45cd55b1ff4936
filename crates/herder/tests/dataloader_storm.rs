//! A randomized storm on the DataLoader's window and batches, on a multi-thread runtime and
//! from its `block_on` thread: loads and `load_many`s that complete, are dropped after one poll
//! (openers among them), are parked for a while and then dropped or awaited, or are given up
//! by a timeout; a loader that answers at once, after a yield or a short sleep, omits keys,
//! fails, panics in its future or panics while building it; `clear`, `clear_all` and `prime`
//! meanwhile; random batch sizes, batch slots, memo and load timeout. Nothing may hang, every
//! answer must be the loader's (or primed) value, and afterwards every key loads again.
//! The seed is printed; `HERDER_STORM_SEED` replays it.

mod support;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use herder::{DataLoader, Loader};

/// Keys ≡ 2 (mod 20) are omitted; ≡ 5 fail the batch; ≡ 7 panic in the loader's future;
/// ≡ 11 panic while the future is built. Every other key loads to `2 * key`.
#[derive(Clone)]
struct Stormy;

impl Loader for Stormy {
    type Key = u64;
    type Value = u64;
    type Error = String;

    fn load(&self, keys: &[u64]) -> impl Future<Output = Result<HashMap<u64, u64>, String>> + Send {
        assert!(!keys.iter().any(|k| k % 20 == 11), "panics while building");
        let keys = keys.to_vec();
        async move {
            match keys.iter().map(|k| k % 3).sum::<u64>() % 3 {
                0 => {}
                1 => tokio::task::yield_now().await,
                _ => tokio::time::sleep(Duration::from_micros(300)).await,
            }
            if keys.iter().any(|k| k % 20 == 7) {
                panic!("panics in the future");
            }
            if keys.iter().any(|k| k % 20 == 5) {
                return Err("backend down".to_owned());
            }
            Ok(keys
                .iter()
                .filter(|k| *k % 20 != 2)
                .map(|k| (*k, k * 2))
                .collect())
        }
    }
}

/// An answer must be the loader's: the value `2 * key`, or nothing for an omitted key.
fn check(key: u64, answer: Option<u64>) {
    match answer {
        Some(value) => assert_eq!(value, key * 2, "key {key}"),
        None => assert_eq!(key % 20, 2, "key {key} answered nothing"),
    }
}

const KEYS: u64 = 60;

async fn storm_task(loader: DataLoader<Stormy>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut parked: Vec<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = Vec::new();
    for _ in 0..150 {
        let key = rng.u64(..KEYS);
        match rng.u8(..10) {
            0 => loader.clear(&key),
            1 if rng.u8(..10) == 0 => loader.clear_all(),
            2 if key % 20 != 2 => loader.prime(key, key * 2),
            3 => {
                let keys: Vec<u64> = (0..rng.usize(1..6)).map(|_| rng.u64(..KEYS)).collect();
                if let Ok(values) = loader.load_many(keys.clone()).await {
                    for (key, value) in values {
                        assert!(keys.contains(&key));
                        check(key, Some(value));
                    }
                }
            }
            4 => {
                // Polled once (perhaps opening a window), then parked.
                let loader = &loader;
                let mut load: Pin<Box<dyn Future<Output = ()> + Send + '_>> =
                    Box::pin(async move {
                        if let Ok(answer) = loader.load(key).await {
                            check(key, answer);
                        }
                    });
                if support::poll_once(&mut load).await {
                    parked.push(load);
                }
            }
            5 => {
                // Given up half-way.
                let _ = tokio::time::timeout(Duration::from_micros(50), loader.load(key)).await;
            }
            6 if !parked.is_empty() => {
                let load = parked.swap_remove(rng.usize(..parked.len()));
                if rng.bool() {
                    load.await;
                }
            }
            _ => {
                if let Ok(answer) = loader.load(key).await {
                    check(key, answer);
                }
            }
        }
    }
    // What is still parked: half awaited, half dropped.
    for load in parked {
        if rng.bool() {
            load.await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_loads_drops_parks_and_clears_never_hangs_and_answers_right() {
    let seed = support::storm_seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    for round in 0..6u64 {
        let loader = DataLoader::builder(Stormy)
            .max_batch_size(rng.usize(1..8))
            .max_concurrent_batches(rng.usize(1..4))
            .memo(rng.bool())
            .load_timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let run = async {
            let spawned: Vec<_> = (0..6)
                .map(|t| tokio::spawn(storm_task(loader.clone(), seed ^ (round << 8) ^ t)))
                .collect();
            // The test's body is the runtime's `block_on` thread: it storms too.
            storm_task(loader.clone(), seed ^ (round << 8) ^ 99).await;
            for task in spawned {
                task.await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .unwrap_or_else(|_| panic!("the storm hung (seed {seed}, round {round})"));
        // Nothing is left stuck in the loader: every key loads again.
        loader.clear_all();
        for key in 0..KEYS {
            let answer = tokio::time::timeout(Duration::from_secs(5), loader.load(key))
                .await
                .unwrap_or_else(|_| panic!("key {key} hung after the storm (seed {seed})"));
            if let Ok(answer) = answer {
                check(key, answer);
            }
        }
    }
}
