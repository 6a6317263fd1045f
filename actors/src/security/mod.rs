//! The security part of the node runtime.
