//! The client part of the consensus crate.
