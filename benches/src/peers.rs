//! One adapter per DataLoader implementation, all behind [`Batcher`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// A DataLoader under test: loads `u64` keys to `key * 2` and counts its loader calls.
pub trait Batcher: Clone + Send + Sync + 'static {
    /// The name in reports.
    const NAME: &'static str;
    /// Loads one key.
    fn load(&self, key: u64) -> impl Future<Output = Option<u64>> + Send;
    /// What its loader counts (`None`: a floor, which has no loader).
    fn counter(&self) -> Option<&Counter>;
    /// Loader calls so far.
    fn calls(&self) -> usize {
        self.counter().map_or(0, |c| c.calls.load(Relaxed))
    }
    /// Keys sent to the loader so far.
    fn keys(&self) -> usize {
        self.counter().map_or(0, |c| c.keys.load(Relaxed))
    }
}

/// A peer loader's calls and the keys sent to it.
#[derive(Clone, Default)]
pub struct Counter {
    calls: Arc<AtomicUsize>,
    keys: Arc<AtomicUsize>,
}

impl Counter {
    fn record(&self, keys: &[u64]) -> HashMap<u64, u64> {
        self.calls.fetch_add(1, Relaxed);
        self.keys.fetch_add(keys.len(), Relaxed);
        keys.iter().map(|k| (*k, k * 2)).collect()
    }
}

// ---- herder ----

#[derive(Clone, Default)]
pub struct HerderLoader(Counter);

impl herder::Loader for HerderLoader {
    type Key = u64;
    type Value = u64;
    type Error = std::convert::Infallible;

    async fn load(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, Self::Error> {
        Ok(self.0.record(keys))
    }
}

/// herder's `DataLoader` with its default settings (no timer window, batches of 1000).
#[derive(Clone)]
pub struct Herder {
    loader: herder::DataLoader<HerderLoader>,
}

impl Herder {
    pub fn new() -> Self {
        Herder {
            loader: herder::DataLoader::new(HerderLoader::default()),
        }
    }

    /// With `memo(true)`, the setting herder's docs recommend for a request-scoped loader.
    pub fn memo() -> Self {
        Herder {
            loader: herder::DataLoader::builder(HerderLoader::default())
                .memo(true)
                .build()
                .unwrap(),
        }
    }
}

impl Default for Herder {
    fn default() -> Self {
        Self::new()
    }
}

impl Batcher for Herder {
    const NAME: &'static str = "herder";

    async fn load(&self, key: u64) -> Option<u64> {
        self.loader.load(key).await.unwrap()
    }

    fn counter(&self) -> Option<&Counter> {
        Some(&self.loader.loader().0)
    }
}

// ---- async-graphql 7 and 8 (release candidate) ----

/// The loader, `DataLoader` and `DataLoader` + `HashMapCache` adapters of one async-graphql
/// version: its crate, its `new` and `with_cache` (8 adds a timer), and the report names.
macro_rules! async_graphql_peers {
    (
        $krate:ident, $loader:ident, $plain:ident, $cached:ident,
        $name:literal, $cached_name:literal,
        new($l:ident) = $new:expr,
        with_cache($lc:ident) = $with_cache:expr $(,)?
    ) => {
        #[derive(Clone, Default)]
        pub struct $loader(Counter);

        impl $krate::dataloader::Loader<u64> for $loader {
            type Value = u64;
            type Error = Arc<str>;

            async fn load(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, Self::Error> {
                Ok(self.0.record(keys))
            }
        }

        #[doc = concat!($name, "'s `DataLoader` with its default settings (1 ms delay, batches of 1000).")]
        #[derive(Clone)]
        pub struct $plain {
            loader: Arc<$krate::dataloader::DataLoader<$loader>>,
            counter: Counter,
        }

        impl $plain {
            pub fn new() -> Self {
                let counter = Counter::default();
                let $l = $loader(counter.clone());
                $plain {
                    loader: Arc::new($new),
                    counter,
                }
            }
        }

        impl Default for $plain {
            fn default() -> Self {
                Self::new()
            }
        }

        impl Batcher for $plain {
            const NAME: &'static str = $name;

            async fn load(&self, key: u64) -> Option<u64> {
                self.loader.load_one(key).await.unwrap()
            }

            fn counter(&self) -> Option<&Counter> {
                Some(&self.counter)
            }
        }

        #[doc = concat!($name, "'s `DataLoader` with its request-scoped cache (`HashMapCache`).")]
        #[derive(Clone)]
        pub struct $cached {
            loader: Arc<$krate::dataloader::DataLoader<$loader, $krate::dataloader::HashMapCache>>,
            counter: Counter,
        }

        impl $cached {
            pub fn new() -> Self {
                let counter = Counter::default();
                let $lc = $loader(counter.clone());
                $cached {
                    loader: Arc::new($with_cache),
                    counter,
                }
            }
        }

        impl Default for $cached {
            fn default() -> Self {
                Self::new()
            }
        }

        impl Batcher for $cached {
            const NAME: &'static str = $cached_name;

            async fn load(&self, key: u64) -> Option<u64> {
                self.loader.load_one(key).await.unwrap()
            }

            fn counter(&self) -> Option<&Counter> {
                Some(&self.counter)
            }
        }
    };
}

async_graphql_peers!(
    async_graphql,
    AgLoader,
    AsyncGraphql,
    AsyncGraphqlCached,
    "async-graphql 7",
    "async-graphql 7, HashMapCache",
    new(loader) = async_graphql::dataloader::DataLoader::new(loader, tokio::spawn),
    with_cache(loader) = async_graphql::dataloader::DataLoader::with_cache(
        loader,
        tokio::spawn,
        async_graphql::dataloader::HashMapCache::default(),
    ),
);

async_graphql_peers!(
    async_graphql_8,
    Ag8Loader,
    AsyncGraphql8,
    AsyncGraphql8Cached,
    "async-graphql 8 (rc.5)",
    "async-graphql 8 (rc.5), HashMapCache",
    new(loader) = async_graphql_8::dataloader::DataLoader::new(
        loader,
        async_graphql_8::runtime::TokioSpawner::current(),
        async_graphql_8::runtime::TokioTimer::default(),
    ),
    with_cache(loader) = async_graphql_8::dataloader::DataLoader::with_cache(
        loader,
        async_graphql_8::runtime::TokioSpawner::current(),
        async_graphql_8::runtime::TokioTimer::default(),
        async_graphql_8::dataloader::HashMapCache::default(),
    ),
);

// ---- dataloader (cksac) ----

#[derive(Clone, Default)]
pub struct CkLoader(Counter);

impl dataloader::BatchFn<u64, u64> for CkLoader {
    async fn load(&mut self, keys: &[u64]) -> HashMap<u64, u64> {
        self.0.record(keys)
    }
}

/// The `dataloader` crate's non-caching loader, batch size raised to 1000 like the others
/// (its default is 200), yield count left at its default (10).
#[derive(Clone)]
pub struct Cksac {
    loader: dataloader::non_cached::Loader<u64, u64, CkLoader>,
    counter: Counter,
}

impl Cksac {
    pub fn new() -> Self {
        let counter = Counter::default();
        let loader = dataloader::non_cached::Loader::new(CkLoader(counter.clone()))
            .with_max_batch_size(1000);
        Cksac { loader, counter }
    }
}

impl Default for Cksac {
    fn default() -> Self {
        Self::new()
    }
}

impl Batcher for Cksac {
    const NAME: &'static str = "dataloader 0.18";

    async fn load(&self, key: u64) -> Option<u64> {
        self.loader.try_load(key).await.ok()
    }

    fn counter(&self) -> Option<&Counter> {
        Some(&self.counter)
    }
}

/// The `dataloader` crate's caching loader (a `HashMap` for the life of the loader), batch
/// size 1000.
#[derive(Clone)]
pub struct CksacCached {
    loader: dataloader::cached::Loader<u64, u64, CkLoader>,
    counter: Counter,
}

impl CksacCached {
    pub fn new() -> Self {
        let counter = Counter::default();
        let loader =
            dataloader::cached::Loader::new(CkLoader(counter.clone())).with_max_batch_size(1000);
        CksacCached { loader, counter }
    }
}

impl Default for CksacCached {
    fn default() -> Self {
        Self::new()
    }
}

impl Batcher for CksacCached {
    const NAME: &'static str = "dataloader 0.18, cached";

    async fn load(&self, key: u64) -> Option<u64> {
        self.loader.try_load(key).await.ok()
    }

    fn counter(&self) -> Option<&Counter> {
        Some(&self.counter)
    }
}

// ---- floors: what the work costs without any DataLoader ----

/// A `HashMap` get per load: with one spawned task per load, the fan-out's floor.
#[derive(Clone)]
pub struct MapFloor {
    map: Arc<HashMap<u64, u64>>,
}

impl MapFloor {
    pub fn new(distinct: u64) -> Self {
        MapFloor {
            map: Arc::new((0..distinct).map(|k| (k, k * 2)).collect()),
        }
    }
}

impl Batcher for MapFloor {
    const NAME: &'static str = "floor: spawn + HashMap get";

    async fn load(&self, key: u64) -> Option<u64> {
        self.map.get(&key).copied()
    }

    fn counter(&self) -> Option<&Counter> {
        None
    }
}

/// One spawned task that answers at once, awaited: what any DataLoader that runs its batches
/// as tasks pays at least, and the floor of a lone load's latency.
#[derive(Clone, Default)]
pub struct SpawnFloor;

impl Batcher for SpawnFloor {
    const NAME: &'static str = "floor: spawn + await an instant task";

    async fn load(&self, key: u64) -> Option<u64> {
        tokio::spawn(async move { key * 2 }).await.ok()
    }

    fn counter(&self) -> Option<&Counter> {
        None
    }
}

/// Every DataLoader peer as one type, so one workload closure serves all of them
/// (dispatch with [`on_peer!`](crate::on_peer)).
#[derive(Clone)]
pub enum Peer {
    Herder(Herder),
    AsyncGraphql(AsyncGraphql),
    Cksac(Cksac),
    AsyncGraphqlCached(AsyncGraphqlCached),
    AsyncGraphql8(AsyncGraphql8),
    AsyncGraphql8Cached(AsyncGraphql8Cached),
    CksacCached(CksacCached),
    MapFloor(MapFloor),
    SpawnFloor(SpawnFloor),
    /// herder with `memo(true)`.
    HerderMemo(Herder),
}

/// Runs `$body` with `$b` bound to the concrete peer inside a [`Peer`].
#[macro_export]
macro_rules! on_peer {
    ($peer:expr, $b:ident => $body:expr) => {
        match $peer {
            $crate::peers::Peer::Herder($b) => $body,
            $crate::peers::Peer::AsyncGraphql($b) => $body,
            $crate::peers::Peer::Cksac($b) => $body,
            $crate::peers::Peer::AsyncGraphqlCached($b) => $body,
            $crate::peers::Peer::AsyncGraphql8($b) => $body,
            $crate::peers::Peer::AsyncGraphql8Cached($b) => $body,
            $crate::peers::Peer::CksacCached($b) => $body,
            $crate::peers::Peer::MapFloor($b) => $body,
            $crate::peers::Peer::SpawnFloor($b) => $body,
            $crate::peers::Peer::HerderMemo($b) => $body,
        }
    };
}

impl Peer {
    /// herder first (the baseline of the ratios), then the others.
    pub fn all() -> Vec<Peer> {
        vec![
            Peer::Herder(Herder::new()),
            Peer::AsyncGraphql(AsyncGraphql::new()),
            Peer::AsyncGraphql8(AsyncGraphql8::new()),
            Peer::Cksac(Cksac::new()),
        ]
    }

    /// herder and each peer with its defaults, then the floor of one spawned task per load.
    pub fn lone() -> Vec<Peer> {
        let mut peers = Self::all();
        peers.push(Peer::SpawnFloor(SpawnFloor));
        peers
    }

    /// Every configuration of every peer, for the spawned fan-out over `distinct` keys, and
    /// its floor.
    pub fn fan_out(distinct: u64) -> Vec<Peer> {
        vec![
            Peer::Herder(Herder::new()),
            Peer::HerderMemo(Herder::memo()),
            Peer::AsyncGraphql(AsyncGraphql::new()),
            Peer::AsyncGraphqlCached(AsyncGraphqlCached::new()),
            Peer::AsyncGraphql8(AsyncGraphql8::new()),
            Peer::AsyncGraphql8Cached(AsyncGraphql8Cached::new()),
            Peer::Cksac(Cksac::new()),
            Peer::CksacCached(CksacCached::new()),
            Peer::MapFloor(MapFloor::new(distinct)),
        ]
    }

    /// Each peer's caching configuration (the memo or cache of a request-scoped loader), and
    /// the floor of a plain `HashMap` get over `distinct` keys.
    pub fn caching(distinct: u64) -> Vec<Peer> {
        vec![
            Peer::HerderMemo(Herder::memo()),
            Peer::AsyncGraphqlCached(AsyncGraphqlCached::new()),
            Peer::AsyncGraphql8Cached(AsyncGraphql8Cached::new()),
            Peer::CksacCached(CksacCached::new()),
            Peer::MapFloor(MapFloor::new(distinct)),
        ]
    }

    /// A new loader of the same configuration: nothing memoized or cached, counters at zero.
    pub fn fresh(&self) -> Peer {
        match self {
            Peer::Herder(_) => Peer::Herder(Herder::new()),
            Peer::HerderMemo(_) => Peer::HerderMemo(Herder::memo()),
            Peer::AsyncGraphql(_) => Peer::AsyncGraphql(AsyncGraphql::new()),
            Peer::AsyncGraphqlCached(_) => Peer::AsyncGraphqlCached(AsyncGraphqlCached::new()),
            Peer::AsyncGraphql8(_) => Peer::AsyncGraphql8(AsyncGraphql8::new()),
            Peer::AsyncGraphql8Cached(_) => Peer::AsyncGraphql8Cached(AsyncGraphql8Cached::new()),
            Peer::Cksac(_) => Peer::Cksac(Cksac::new()),
            Peer::CksacCached(_) => Peer::CksacCached(CksacCached::new()),
            Peer::MapFloor(floor) => Peer::MapFloor(floor.clone()),
            Peer::SpawnFloor(_) => Peer::SpawnFloor(SpawnFloor),
        }
    }

    /// `true` for async-graphql, whose 1 ms timer makes each sample long.
    pub fn is_slow(&self) -> bool {
        matches!(
            self,
            Peer::AsyncGraphql(_)
                | Peer::AsyncGraphqlCached(_)
                | Peer::AsyncGraphql8(_)
                | Peer::AsyncGraphql8Cached(_)
        )
    }

    pub fn name(&self) -> &'static str {
        fn name<B: Batcher>(_: &B) -> &'static str {
            B::NAME
        }
        match self {
            Peer::HerderMemo(_) => "herder, memo(true)",
            _ => on_peer!(self, b => name(b)),
        }
    }
}
