//! The types part of the consensus crate.
