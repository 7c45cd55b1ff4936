//! The cache against a plain model (a `HashMap` with expiry times), over random sequences of
//! inserts, invalidations, reads, read-through loads (found and not found) and clock jumps, on a
//! paused clock. Capacity is far above the key space, so eviction (quick_cache's business) never
//! interferes; what is checked is herder's part: freshness, negative caching, invalidation and
//! which reads reach the loader.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use herder::Cache;
use herder::cache::{Loaded, Status};
use proptest::prelude::*;

const TTL: u64 = 10;
const NEGATIVE_TTL: u64 = 3;

#[derive(Clone, Debug)]
enum Op {
    Insert(u8, u32),
    InsertWithTtl(u8, u32, u64),
    Invalidate(u8),
    InvalidateAll,
    Get(u8),
    /// Read through; the loader finds the key unless `absent`.
    Fetch {
        key: u8,
        absent: bool,
    },
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..6;
    prop_oneof![
        (key.clone(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
        (key.clone(), any::<u32>(), 1u64..30).prop_map(|(k, v, t)| Op::InsertWithTtl(k, v, t)),
        key.clone().prop_map(Op::Invalidate),
        Just(Op::InvalidateAll),
        key.clone().prop_map(Op::Get),
        (key, any::<bool>()).prop_map(|(key, absent)| Op::Fetch { key, absent }),
        (0u64..15).prop_map(Op::Advance),
    ]
}

/// What the model holds for a key: the value (`None`: cached absence) and its expiry second.
type Model = HashMap<u8, (Option<u32>, u64)>;

fn fresh(model: &Model, key: u8, now: u64) -> Option<Option<u32>> {
    model
        .get(&key)
        .filter(|(_, until)| now < *until)
        .map(|(value, _)| *value)
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let cache: Cache<u8, u32> = Cache::builder()
            .max_capacity(10_000)
            .time_to_live(Duration::from_secs(TTL))
            .negative_ttl(Duration::from_secs(NEGATIVE_TTL))
            .build()
            .unwrap();
        let mut model = Model::new();
        let mut now = 0u64;
        let next = Arc::new(AtomicU32::new(0));
        let mut loads = 0u64;
        for op in ops {
            match op {
                Op::Insert(key, value) => {
                    cache.insert(key, value);
                    model.insert(key, (Some(value), now + TTL));
                }
                Op::InsertWithTtl(key, value, ttl) => {
                    cache.insert_with_ttl(key, value, Duration::from_secs(ttl));
                    model.insert(key, (Some(value), now + ttl));
                }
                Op::Invalidate(key) => {
                    cache.invalidate(&key);
                    model.remove(&key);
                }
                Op::InvalidateAll => {
                    cache.invalidate_all();
                    model.clear();
                }
                Op::Get(key) => {
                    let expected = fresh(&model, key, now).flatten();
                    prop_assert_eq!(cache.get(&key), expected, "get({}) at {}s", key, now);
                }
                Op::Fetch { key, absent } => {
                    let counter = next.clone();
                    let load = move || async move {
                        let value = counter.fetch_add(1, SeqCst);
                        Ok::<_, std::convert::Infallible>(if absent {
                            Loaded::not_found()
                        } else {
                            Loaded::found(value)
                        })
                    };
                    let fetched = cache.fetch(key, load).await.unwrap();
                    match fresh(&model, key, now) {
                        Some(cached) => {
                            let status = if cached.is_some() {
                                Status::Hit
                            } else {
                                Status::NegativeHit
                            };
                            prop_assert_eq!(fetched.status, status);
                            prop_assert_eq!(fetched.value, cached);
                        }
                        None => {
                            loads += 1;
                            prop_assert_eq!(fetched.status, Status::Miss);
                            let loaded = next.load(SeqCst) - 1;
                            let (value, ttl) = if absent {
                                (None, NEGATIVE_TTL)
                            } else {
                                (Some(loaded), TTL)
                            };
                            prop_assert_eq!(fetched.value, value);
                            model.insert(key, (value, now + ttl));
                        }
                    }
                }
                Op::Advance(seconds) => {
                    tokio::time::advance(Duration::from_secs(seconds)).await;
                    now += seconds;
                }
            }
            prop_assert_eq!(cache.stats().loads, loads);
            prop_assert_eq!(cache.stats().in_flight, 0);
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_cache_behaves_like_a_map_with_expiry(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}
