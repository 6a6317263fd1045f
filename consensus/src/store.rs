//! The store part of the consensus crate.
