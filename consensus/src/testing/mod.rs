//! Test support: an in-memory raft network with fault injection and an in-process cluster
//! of real nodes on real sled stores. Used by the crate's cluster and recovery tests, and
//! available to other crates' tests.

pub mod cluster;
pub mod history;
pub mod network;

pub use cluster::{ClusterOptions, TestCluster, TestNode, WriteError};
pub use network::{Faults, Rng, Router};
