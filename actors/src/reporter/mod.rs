//! The reporter part of the node runtime.
