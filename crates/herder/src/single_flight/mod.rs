//! [`SingleFlight`]: concurrent calls for one key share one execution (Go's `singleflight`).
//!
//! Unlike Go's, the work runs as its own task: the caller that started it may be cancelled
//! without failing the others, and the work still finishes (or, with
//! [`Builder::abort_unused`], stops once nobody waits). A panic reaches every waiter as a
//! [`RunError`].

mod builder;
mod error;
mod future;
mod handle;
mod stats;

pub use builder::Builder;
pub use error::RunError;
pub use future::Run;
pub use handle::SingleFlight;
pub use stats::SingleFlightStats;
