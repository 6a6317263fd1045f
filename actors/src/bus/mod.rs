//! The bus part of the node runtime.
