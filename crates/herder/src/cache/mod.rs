//! [`Cache`]: a bounded, async, read-through cache with stampede protection, stale-while-revalidate,
//! fail-safe, early refresh, negative caching and timeouts that never defeat the cache.
//!
//! Layout: [`Cache`] (the handle), [`Builder`] (settings), `fetch` (the read path), `load` (a
//! load as its own task, its timeouts and its store step), `bulk` (`get_many_with`), `tiered` (a
//! batch of misses through the shared tier, for `bulk` and the DataLoader), `front` (the narrow
//! interface a DataLoader in front of the cache goes through), `entry`
//! (the fresh → stale → kept → gone timeline), `storage` (quick_cache underneath).

mod builder;
mod bulk;
mod clock;
mod config;
mod entry;
mod error;
mod fetch;
mod front;
mod handle;
mod listener;
mod load;
mod span;
mod stats;
mod status;
mod storage;
mod tier;
mod tiered;
mod write;

pub(crate) use front::{
    BatchEnd, CacheFront, Consult, JoinedFailure, JoinedLoad, LoadTicket, Ttls,
};

pub use builder::Builder;
pub use config::EarlyRefresh;
pub use entry::Loaded;
pub use error::CacheError;
pub use handle::Cache;
pub use listener::RemovalCause;
pub use stats::CacheStats;
pub use status::{Fetched, Status};
pub use tier::{Acquired, Acquisition, Lease, LocalCache, Tier, TierFuture};
