//! The process adapter.
