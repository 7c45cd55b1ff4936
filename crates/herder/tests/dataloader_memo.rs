//! The memo's fast path (`memo(true)`: a memoized key is answered without the loader's lock)
//! against `clear`, `clear_all` and `prime` from another thread, on a multi-thread runtime.
//!
//! Every value carries a generation: the loader answers `key * 1000 + generation` as of its
//! call, and `prime` stores `key * 1000 + round`. The writer (the test's own task, on the
//! `block_on` thread) raises the generation, then clears (or primes) every key, then publishes
//! the round; readers (spawned tasks, on the workers) read the published round, then load. A
//! load started after a write returned sees that write or a later one, so its value's
//! generation is at least the round it read: nothing older survives a `clear`, and a `prime`
//! hides every older value. No sleeps: the writer yields between rounds, the readers run a
//! fixed number of loads.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

use herder::{DataLoader, Loader};

const KEYS: u64 = 16;
const READERS: u64 = 4;
const LOADS_PER_READER: u64 = 4000;

/// Answers every key with `key * 1000 + generation`, the generation read at the call.
#[derive(Clone, Default)]
struct Generations {
    generation: Arc<AtomicU64>,
    calls: Arc<AtomicU64>,
}

impl Loader for Generations {
    type Key = u64;
    type Value = u64;
    type Error = Infallible;

    async fn load(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, Infallible> {
        self.calls.fetch_add(1, SeqCst);
        let generation = self.generation.load(SeqCst);
        Ok(keys.iter().map(|k| (*k, k * 1000 + generation)).collect())
    }
}

#[derive(Clone, Copy, Debug)]
enum Write {
    Clear,
    ClearAll,
    Prime,
    /// Clear, clear all and prime, round by round.
    Mixed,
}

/// Checks one value read by a load started after round `published` was published.
fn check(key: u64, value: Option<u64>, published: u64) {
    let value = value.expect("the loader answers every key");
    assert_eq!(value / 1000, key, "another key's value: {value}");
    let generation = value % 1000;
    assert!(
        generation >= published,
        "key {key}: a load started after round {published} was written saw generation \
         {generation}"
    );
}

async fn writes_race_fast_path_hits(write: Write) {
    let backend = Generations::default();
    let loader = DataLoader::builder(backend.clone())
        .memo(true)
        .build()
        .unwrap();
    // Everything memoized before the readers start: most of their loads take the fast path.
    loader.load_many(0..KEYS).await.unwrap();
    let published = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|reader| {
            let (loader, published) = (loader.clone(), published.clone());
            tokio::spawn(async move {
                for i in 0..LOADS_PER_READER {
                    let key = (i * 7 + reader) % KEYS;
                    let round = published.load(SeqCst);
                    if i % 5 == 0 {
                        let keys = [key, (key + 1) % KEYS];
                        let values = loader.load_many(keys).await.unwrap();
                        for key in keys {
                            check(key, values.get(&key).copied(), round);
                        }
                    } else {
                        check(key, loader.load(key).await.unwrap(), round);
                    }
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    let writer = {
        let (loader, done) = (loader.clone(), done.clone());
        let (generation, published) = (backend.generation.clone(), published.clone());
        async move {
            let mut round = 0;
            // At most 999 rounds: a generation fits in a value's last three digits.
            while !done.load(SeqCst) && round < 999 {
                round += 1;
                generation.store(round, SeqCst);
                let this = match write {
                    Write::Mixed => {
                        [Write::Clear, Write::ClearAll, Write::Prime][round as usize % 3]
                    }
                    write => write,
                };
                match this {
                    Write::Clear => (0..KEYS).for_each(|key| loader.clear(&key)),
                    Write::ClearAll => loader.clear_all(),
                    Write::Prime => (0..KEYS).for_each(|key| loader.prime(key, key * 1000 + round)),
                    Write::Mixed => unreachable!("picked above"),
                }
                published.store(round, SeqCst);
                tokio::task::yield_now().await;
            }
            round
        }
    };
    let writer = tokio::spawn(writer);
    for reader in readers {
        reader.await.unwrap();
    }
    done.store(true, SeqCst);
    let rounds = writer.await.unwrap();
    assert!(rounds > 0);

    // Exact counts: every key asked for was answered by the memo, joined a batch, or was
    // loaded; one `load_many` in five asks for two keys.
    let stats = loader.stats();
    let asked = KEYS + READERS * (LOADS_PER_READER + LOADS_PER_READER.div_ceil(5));
    assert_eq!(stats.requests, asked, "{stats:?}");
    assert_eq!(
        stats.memo_hits + stats.joined + stats.batched_keys,
        asked,
        "{stats:?}"
    );
    assert_eq!(stats.batches, backend.calls.load(SeqCst));
    assert_eq!(stats.in_flight, 0);
    assert!(stats.memo_hits > 0, "no load hit the memo: {stats:?}");
    // After the last write, every key loads (or is primed) at the latest generation.
    let last = published.load(SeqCst);
    for key in 0..KEYS {
        check(key, loader.load(key).await.unwrap(), last);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_racing_memo_hits_is_never_undone() {
    writes_race_fast_path_hits(Write::Clear).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_all_racing_memo_hits_is_never_undone() {
    writes_race_fast_path_hits(Write::ClearAll).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prime_racing_memo_hits_hides_every_older_value() {
    writes_race_fast_path_hits(Write::Prime).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clears_and_primes_racing_memo_hits() {
    writes_race_fast_path_hits(Write::Mixed).await;
}

/// A memoized key needs neither the loader's lock nor a runtime: its load is ready at the
/// first poll, counted as a memo hit.
#[test]
fn a_memoized_key_is_answered_at_the_first_poll() {
    let loader = DataLoader::builder(Generations::default())
        .memo(true)
        .build()
        .unwrap();
    loader.prime(1, 1000);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut load = std::pin::pin!(loader.load(1));
    assert!(matches!(
        load.as_mut().poll(&mut cx),
        std::task::Poll::Ready(Ok(Some(1000)))
    ));
    let mut many = std::pin::pin!(loader.load_many([1, 1]));
    let std::task::Poll::Ready(Ok(values)) = many.as_mut().poll(&mut cx) else {
        panic!("a memoized key is answered at once")
    };
    assert_eq!(values, HashMap::from([(1, 1000)]));
    let stats = loader.stats();
    assert_eq!((stats.requests, stats.memo_hits), (2, 2));
}
