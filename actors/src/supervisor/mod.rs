//! The supervisor part of the node runtime.
