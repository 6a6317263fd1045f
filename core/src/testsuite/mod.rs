//! Test support for ire and its extensions: builders, fakes of every trait, and the
//! conformance suites that every implementation of a core trait runs.

mod builders;

pub use builders::{PluginMetadataBuilder, ResourceBuilder};
