//! [`DataLoader`]: batches the keys asked for in one short window into one [`Loader`] call.
//!
//! Layout: [`Loader`] (the batch function users write), [`DataLoader`] (the handle),
//! [`Builder`] (settings), `state` (the `pub(crate)` scheduler state machine: which batch a key
//! goes to, when a batch closes and runs) and `dispatch` (the tasks that carry batches).

mod builder;
mod dispatch;
mod error;
mod future;
mod handle;
mod loader;
mod state;
mod stats;
mod window;

#[cfg(all(test, herder_loom))]
mod loom_tests;

pub use builder::Builder;
pub use error::LoadError;
pub use future::{Load, LoadMany};
pub use handle::DataLoader;
pub use loader::Loader;
pub use stats::DataLoaderStats;
