//! The monitor part of the node runtime.
