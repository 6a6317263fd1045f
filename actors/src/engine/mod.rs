//! The engine part of the node runtime.
