//! The workflow part of the node runtime.
