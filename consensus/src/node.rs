//! The node part of the consensus crate.
