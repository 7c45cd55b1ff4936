//! The scenarios of the report, one file each. Every scenario runs each of its modes on fresh
//! state (cold caches), from the same database, and returns what it measured: round trips or
//! backend calls from real counters, and latencies from the clock.

pub mod fleet;
mod measure;
pub mod n_plus_one;
pub mod stampede;
pub mod storm;
pub mod upstream;

pub use measure::{Burst, Latencies, burst};

use crate::DemoError;

/// The errors of a GraphQL response, as one [`DemoError`] (`None` if there were none).
pub(crate) fn response_error(
    scenario: &str,
    response: &async_graphql::Response,
) -> Option<DemoError> {
    let first = response.errors.first()?;
    Some(DemoError::new(format!(
        "{scenario}: the GraphQL request failed: {} ({} errors)",
        first.message,
        response.errors.len()
    )))
}
