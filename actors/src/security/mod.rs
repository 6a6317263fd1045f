//! Authorization, audit and secrets for the node: a role-based `AuthorizationProvider`
//! configured from a file, audit loggers, an in-memory `SecretProvider`, and the
//! [`SecretRedactor`] that keeps secret values out of logs, records, events and reports.

mod rbac;
mod secrets;

pub use rbac::{RbacConfig, Role, RoleBasedAuthorizer};
pub use secrets::{
    MemorySecretProvider, RecordingSecretProvider, RedactingEventBus, SecretRedactor, REDACTED,
};

use std::sync::Mutex;

use async_trait::async_trait;
use ire_core::{AuditEntry, AuditLogger, Result};

/// An audit logger that keeps entries in memory (tests, the embedded demo, `ire status`).
#[derive(Debug, Default)]
pub struct MemoryAuditLogger {
    entries: Mutex<Vec<AuditEntry>>,
}

impl MemoryAuditLogger {
    /// An empty logger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every entry so far, oldest first.
    pub fn entries(&self) -> Vec<AuditEntry> {
        self.entries.lock().expect("audit lock").clone()
    }
}

#[async_trait]
impl AuditLogger for MemoryAuditLogger {
    async fn log_action(&self, entry: AuditEntry) -> Result<()> {
        self.entries.lock().expect("audit lock").push(entry);
        Ok(())
    }
}

/// An audit logger that writes each entry as a structured `tracing` event at info level
/// on the `ire::audit` target, for log shippers.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingAuditLogger;

#[async_trait]
impl AuditLogger for TracingAuditLogger {
    async fn log_action(&self, entry: AuditEntry) -> Result<()> {
        tracing::info!(
            target: "ire::audit",
            component = "audit",
            principal = %entry.principal,
            verb = %entry.action.verb,
            object = %entry.action.resource,
            resource_id = entry.resource.as_ref().map(|r| r.key.as_str()).unwrap_or(""),
            success = entry.result.success,
            error = %entry.result.error,
            duration_us = entry.result.duration.as_micros() as u64,
            "audited action"
        );
        Ok(())
    }
}
