//! The config part of the node runtime.
