//! The docker adapter.
