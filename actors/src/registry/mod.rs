//! The registry part of the node runtime.
