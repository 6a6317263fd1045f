//! The kubernetes adapter.
