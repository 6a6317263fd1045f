//! Authorization, audit and secrets (the seed's Security interfaces).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::resource::{Metadata, Resource};

/// Well-known verbs.
pub mod verb {
    /// Read one thing.
    pub const GET: &str = "get";
    /// Read many things.
    pub const LIST: &str = "list";
    /// Create.
    pub const CREATE: &str = "create";
    /// Change.
    pub const UPDATE: &str = "update";
    /// Remove.
    pub const DELETE: &str = "delete";
    /// Run a plugin.
    pub const EXECUTE: &str = "execute";
}

/// Something a principal wants to do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Action {
    /// get, list, create, update, delete, execute, ...
    pub verb: String,
    /// A resource kind, plugin, or specific id the verb applies to.
    pub resource: String,
}

impl Action {
    /// An action `verb` on `resource`.
    pub fn new(verb: impl Into<String>, resource: impl Into<String>) -> Self {
        Action {
            verb: verb.into(),
            resource: resource.into(),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)
    }
}

/// Decides whether a principal may perform an action.
#[async_trait]
pub trait AuthorizationProvider: Send + Sync + 'static {
    /// `Ok` when allowed, [`crate::Error::Unauthorized`] when not.
    async fn authorize(
        &self,
        principal: &str,
        action: &Action,
        resource: Option<&Resource>,
    ) -> Result<()>;
}

/// How an audited action ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    /// It succeeded.
    pub success: bool,
    /// The error, when it failed.
    #[serde(default)]
    pub error: String,
    /// How long it took.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

/// One audited action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// Who did it.
    pub principal: String,
    /// What they did.
    pub action: Action,
    /// What they did it to, when it was a resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    /// How it ended.
    pub result: ActionResult,
    /// Free-form context (execution id, campaign, node).
    #[serde(default)]
    pub metadata: Metadata,
}

/// Records audited actions.
#[async_trait]
pub trait AuditLogger: Send + Sync + 'static {
    /// Records one entry.
    async fn log_action(&self, entry: AuditEntry) -> Result<()>;
}

/// A secret value. Its `Debug` and `Display` print `[REDACTED]`, so a secret that reaches a
/// log line, a record or a report through formatting does not leak.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value itself; call only where it is handed to the system that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str("[REDACTED]")
    }
}

/// Stores and hands out secrets.
#[async_trait]
pub trait SecretProvider: Send + Sync + 'static {
    /// The secret under a key.
    async fn get_secret(&self, key: &str) -> Result<Secret>;
    /// Stores a secret.
    async fn set_secret(&self, key: &str, value: Secret) -> Result<()>;
    /// Removes a secret.
    async fn delete_secret(&self, key: &str) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_formats_its_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s} {s:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }
}
