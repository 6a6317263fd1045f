//! The state part of the consensus crate.
