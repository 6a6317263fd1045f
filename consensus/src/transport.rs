//! The transport part of the consensus crate.
