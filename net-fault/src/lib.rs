//! ire's network-fault helper: what it applies in a target's network namespace, and how.
//!
//! A [`plan::Plan`] is a network fault resolved for one namespace, its artifacts named after
//! the fault id. [`ops::apply`] installs it with the kernel's tools: tc (htb for bandwidth,
//! netem for the netem backend), an nftables table `inet ire_<fault id>` (partitions, and
//! the rule that feeds the userspace emulator), and, for the userspace backend, runs
//! [`emulator::Emulator`] on the fault's NFQUEUE. [`ops::revert`] takes it back from the plan
//! alone. The `ire-net-fault` binary runs these where the target's network is: inside a
//! helper container sharing a container's namespace, an ephemeral container of a pod, or
//! on the host in a process's namespace.

pub mod cmd;
pub mod emulator;
pub mod model;
pub mod netns;
pub mod nft;
pub mod nftnl;
pub mod ops;
pub mod plan;
pub mod probe;
pub mod tc;

pub use plan::{Names, Plan};

/// The helper's program name (also how a revert recognises a fault's emulator process).
pub const PROGRAM: &str = "ire-net-fault";
