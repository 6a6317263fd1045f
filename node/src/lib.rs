//! ire-node: the `ire` binary's library. The CLI (`cli`) is a thin layer over it, and the
//! daemon and the cluster coordinator drive the same parts: the embedded node
//! ([`wiring::Node`]), its config ([`config`]), campaigns and their executor
//! ([`campaign`]), the applications GrimOps, NecroOps and BackupOps ([`apps`]) and the
//! demo ([`demo`]).

pub mod apps;
pub mod campaign;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod demo;
pub mod interim;
pub mod wiring;
