//! ire-consensus: replicated lease locks, fault ledger, campaigns and audit log on openraft
//! (storage-v2) with a sled store, and the raft transport over ractor_cluster.

// The replicated data and its storage.
pub mod error;
pub mod state;
pub mod store;
pub mod testing;
pub mod types;

// The cluster: transport, raft node, client API.
pub mod client;
pub mod control;
pub mod network;
pub mod node;
pub mod proposer;
pub mod storage;
pub mod transport;
