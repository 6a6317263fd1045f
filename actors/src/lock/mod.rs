//! The lock part of the node runtime.
