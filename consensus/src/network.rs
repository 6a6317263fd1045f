//! The network part of the consensus crate.
