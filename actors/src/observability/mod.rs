//! The observability part of the node runtime.
