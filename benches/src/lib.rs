//! Shared pieces of the benches: peer adapters and workloads.
