//! Shared pieces of the benches: the peers herder is compared with, behind one trait, and the
//! workloads that both the criterion benches and the `compare` binary run.
//!
//! Every DataLoader peer loads the same trivial data (`key * 2`) and counts its loader calls, so
//! the numbers measure the batching machinery and nothing else; every queue peer runs the same
//! trivial operations (`i * 2`, see [`queue`]).

pub mod cache;
pub mod contract;
pub mod fleet;
pub mod peers;
pub mod queue;
pub mod report;
pub mod workloads;
pub mod zipf;
