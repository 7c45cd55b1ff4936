//! Errors shared by every primitive: a builder's refusal ([`BuildError`]) and shared work that
//! failed to finish ([`TaskError`]), which each primitive's own error embeds.

mod build;
mod load;
mod task;

pub use build::BuildError;
pub(crate) use load::LoadFailure;
pub(crate) use task::Origin;
pub use task::TaskError;
