//! Test support for ire and its extensions: builders, fakes of every trait, and the
//! conformance suites that every implementation of a core trait runs.
//!
//! Enable with the `testsuite` feature in `[dev-dependencies]`.

mod builders;
pub mod conformance;
mod fake_adapter;
mod fake_plugin;
mod fake_runtime;
mod memory;
pub mod process_stats;
pub mod strategies;

pub use builders::{
    sample_audit_entry, sample_execution_record, PluginMetadataBuilder, ResourceBuilder,
};
pub use conformance::{
    adapter_conformance, eventually, ledger_conformance, lock_conformance, plugin_conformance,
    storage_conformance, AdapterFixture,
};
pub use fake_adapter::{AdapterCall, FakeAdapter};
pub use fake_plugin::{FakePlugin, Hook};
pub use fake_runtime::{
    CountingStrategy, FakeConfig, FakeEngine, FakeEventBus, FakeFormatter, FakeHealthCheck,
    FakeLoader, FakeMonitor, FakeRegistry, FakeReporter,
};
pub use memory::{
    Clock, MemoryAuditLog, MemoryLedger, MemoryLockService, MemorySecrets, MemoryStorage,
    StaticAuthorizer, StaticConfigProvider,
};
