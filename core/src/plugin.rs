//! The plugin contract: metadata, lifecycle hooks, snapshots and the execution context.
//!
//! The engine drives a plugin through Validate, PreExecute (which returns the snapshot a
//! revert needs), Execute, PostExecute and Cleanup, with Rollback when Execute fails.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::adapter::EnvironmentAdapter;
use crate::error::{Error, ErrorClass, Result};
use crate::event::{Event, EventBus};
use crate::lock::FencingToken;
use crate::monitor::Monitor;
use crate::report::Reporter;
use crate::resource::{Labels, Metadata, Resource, ResourceKey};
use crate::security::{AuthorizationProvider, SecretProvider};

/// Capabilities a plugin can require: the adapter capabilities
/// ([`crate::adapter::capability`], checked against [`crate::AdapterInfo::capabilities`]
/// before anything runs) and [`requirement::ADMIN`], a requirement on the principal.
pub mod requirement {
    pub use crate::adapter::capability::*;
    /// Needs admin privileges (principal with the admin role), not an adapter capability.
    pub const ADMIN: &str = "admin";

    /// True when the requirement is asked of the adapter (every one but [`ADMIN`]).
    pub fn is_adapter_capability(requirement: &str) -> bool {
        requirement != ADMIN
    }
}

/// Whether what a plugin does stays after Execute.
///
/// An **action** (kill, restart, delete) leaves nothing to revert: its ledger entry is
/// closed when it ends. A **sustained** fault (pause, network fault, stress, scale) is
/// active until reverted: its ledger entry holds everything the revert needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// Nothing stays to revert.
    Action,
    /// Active until reverted.
    #[default]
    Sustained,
}

impl FaultKind {
    /// `action` or `sustained`.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Action => "action",
            FaultKind::Sustained => "sustained",
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dependency on another plugin, with a semver constraint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginDependency {
    /// The plugin depended on.
    pub plugin_name: String,
    /// The versions accepted (`>=1.0.0`, `^2`).
    pub version: semver::VersionReq,
}

/// What a plugin is, what it works on and what it needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginMetadata {
    /// Unique name (`kill`, `network-delay`).
    pub name: String,
    /// Semantic version.
    pub version: semver::Version,
    /// One line on what it does.
    pub description: String,
    /// Who wrote it.
    #[serde(default)]
    pub author: String,
    /// Action (nothing stays to revert) or sustained fault (active until reverted).
    pub fault_kind: FaultKind,
    /// Kinds it works on (empty: every kind).
    #[serde(default)]
    pub supported_kinds: Vec<String>,
    /// Capabilities it needs from the adapter (see [`requirement`]).
    #[serde(default)]
    pub required_capabilities: Vec<String>,
    /// Plugins it needs.
    #[serde(default)]
    pub dependencies: Vec<PluginDependency>,
    /// JSON schema of its step config.
    #[serde(default)]
    pub config_schema: serde_json::Value,
}

impl PluginMetadata {
    /// Metadata with the required fields; the rest empty.
    pub fn new(
        name: impl Into<String>,
        version: semver::Version,
        description: impl Into<String>,
        fault_kind: FaultKind,
    ) -> Self {
        PluginMetadata {
            name: name.into(),
            version,
            description: description.into(),
            fault_kind,
            author: String::new(),
            supported_kinds: Vec::new(),
            required_capabilities: Vec::new(),
            dependencies: Vec::new(),
            config_schema: serde_json::Value::Null,
        }
    }

    /// Checks the metadata is complete (seed property 11).
    pub fn validate(&self) -> Result<()> {
        let valid_name = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid_name {
            return Err(Error::invalid(
                "plugin name",
                format!(
                    "{:?} must be non-empty lowercase letters, digits, - or _",
                    self.name
                ),
            ));
        }
        if self.description.trim().is_empty() {
            return Err(Error::invalid(
                format!("plugin {} description", self.name),
                "must not be empty",
            ));
        }
        if let Some(d) = self
            .dependencies
            .iter()
            .find(|d| d.plugin_name == self.name)
        {
            return Err(Error::invalid(
                format!("plugin {} dependencies", self.name),
                format!("depends on itself ({})", d.version),
            ));
        }
        Ok(())
    }

    /// The adapter capabilities among the requirements ([`requirement::ADMIN`] left out).
    pub fn adapter_capabilities(&self) -> impl Iterator<Item = &str> {
        self.required_capabilities
            .iter()
            .map(String::as_str)
            .filter(|c| requirement::is_adapter_capability(c))
    }

    /// The required adapter capabilities that `info` does not list, or `Unsupported`
    /// naming them, the plugin and the adapter.
    pub fn check_capabilities(&self, info: &crate::AdapterInfo) -> Result<()> {
        let missing: Vec<&str> = self
            .adapter_capabilities()
            .filter(|c| !info.has_capability(c))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::unsupported(
            format!(
                "plugin {} (it needs the capabilit{} {})",
                self.name,
                if missing.len() == 1 { "y" } else { "ies" },
                missing.join(", ")
            ),
            format!(
                "adapter {} ({}; it offers {})",
                info.name,
                info.environment,
                if info.capabilities.is_empty() {
                    "none".to_owned()
                } else {
                    info.capabilities.join(", ")
                }
            ),
        ))
    }

    /// True when the plugin works on the kind.
    pub fn supports_kind(&self, kind: &str) -> bool {
        self.supported_kinds.is_empty() || self.supported_kinds.iter().any(|k| k == kind)
    }
}

/// Which plugins to list: a plugin must meet every non-empty criterion.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginFilter {
    /// Accepted names.
    #[serde(default)]
    pub names: Vec<String>,
    /// Accepted version constraints.
    #[serde(default)]
    pub versions: Vec<semver::VersionReq>,
    /// Kinds the plugin must support.
    #[serde(default)]
    pub supported_kinds: Vec<String>,
    /// Capabilities the plugin must require.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

impl PluginFilter {
    /// True when the metadata meets every criterion.
    pub fn matches(&self, m: &PluginMetadata) -> bool {
        (self.names.is_empty() || self.names.contains(&m.name))
            && (self.versions.is_empty() || self.versions.iter().any(|v| v.matches(&m.version)))
            && self.supported_kinds.iter().all(|k| m.supports_kind(k))
            && self
                .capabilities
                .iter()
                .all(|c| m.required_capabilities.contains(c))
    }
}

/// A step's configuration for a plugin, as written in a campaign.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PluginConfig(pub serde_json::Value);

impl PluginConfig {
    /// An empty config.
    pub fn empty() -> Self {
        PluginConfig(serde_json::Value::Object(Default::default()))
    }

    /// Parses the config into the plugin's typed config; errors name the field (plugins
    /// with a schema use [`crate::schema::TypedConfig::parse`], which checks it first).
    pub fn parse<T: DeserializeOwned>(&self, plugin: &str) -> Result<T> {
        let value = match &self.0 {
            serde_json::Value::Null => serde_json::Value::Object(Default::default()),
            v => v.clone(),
        };
        serde_path_to_error::deserialize(value).map_err(|e| {
            Error::invalid(
                format!("config of plugin {plugin} field {}", e.path()),
                e.inner().to_string(),
            )
        })
    }
}

/// A progress report from a running plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressUpdate {
    /// The execution it belongs to.
    pub execution_id: String,
    /// 0 to 100.
    pub percent: u8,
    /// What is happening.
    pub message: String,
    /// The lifecycle stage or a plugin-defined stage.
    pub stage: String,
}

/// What a plugin captured before acting, enough to put the resource back.
///
/// It is plain data, serializable to bytes, so it can be written to the replicated ledger
/// and used to revert the fault on another node; [`Plugin::rollback`] restores from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The plugin that took it (and knows how to restore it).
    pub plugin: String,
    /// The resource it describes.
    pub resource: ResourceKey,
    /// The resource's runtime id when it was taken.
    pub resource_id: String,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
    /// The plugin's own state.
    pub state: serde_json::Value,
}

impl Snapshot {
    /// A snapshot of `state` taken by `plugin` on `resource`.
    pub fn new<T: Serialize>(plugin: &str, resource: &Resource, state: &T) -> Result<Self> {
        let state = serde_json::to_value(state)
            .map_err(|e| Error::invalid(format!("snapshot of plugin {plugin}"), e.to_string()))?;
        Ok(Snapshot {
            plugin: plugin.to_owned(),
            resource: resource.key.clone(),
            resource_id: resource.id.clone(),
            taken_at: Utc::now(),
            state,
        })
    }

    /// The plugin's state, typed.
    pub fn state_as<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.state.clone()).map_err(|e| {
            Error::invalid(format!("snapshot of plugin {}", self.plugin), e.to_string())
        })
    }

    /// Serializes to bytes (the seed's Serialize).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::invalid("snapshot", e.to_string()))
    }

    /// Reconstructs from bytes (the seed's Deserialize).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::invalid("snapshot", e.to_string()))
    }
}

/// How an execution ended (or where it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    /// Accepted, not started.
    Pending,
    /// Running.
    Running,
    /// Succeeded.
    Success,
    /// Failed.
    Failed,
    /// Ran out of time.
    Timeout,
    /// Canceled.
    Canceled,
    /// Not run (its condition was false).
    Skipped,
}

impl ExecutionStatus {
    /// Every status, in declaration order (`status as usize` is its position here).
    pub const ALL: [ExecutionStatus; 7] = [
        ExecutionStatus::Pending,
        ExecutionStatus::Running,
        ExecutionStatus::Success,
        ExecutionStatus::Failed,
        ExecutionStatus::Timeout,
        ExecutionStatus::Canceled,
        ExecutionStatus::Skipped,
    ];

    /// The status's name as serialized (lowercase), for labels, logs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Pending => "pending",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Success => "success",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Timeout => "timeout",
            ExecutionStatus::Canceled => "canceled",
            ExecutionStatus::Skipped => "skipped",
        }
    }

    /// True once the execution has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, ExecutionStatus::Pending | ExecutionStatus::Running)
    }
}

/// The outcome of one execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionResult {
    /// Execution id.
    pub execution_id: String,
    /// How it ended.
    pub status: ExecutionStatus,
    /// When it started.
    pub start_time: DateTime<Utc>,
    /// When it ended.
    pub end_time: DateTime<Utc>,
    /// How long it took.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// The error chain, when it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The error's class, when it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// How many attempts the strategy made.
    #[serde(default = "one")]
    pub attempts: u32,
    /// Free-form data (snapshot taken, fault id, ...).
    #[serde(default)]
    pub metadata: Metadata,
}

fn one() -> u32 {
    1
}

impl ExecutionResult {
    /// A result that started at `start` and ends now.
    pub fn finished(execution_id: &str, status: ExecutionStatus, start: DateTime<Utc>) -> Self {
        let end = Utc::now();
        ExecutionResult {
            execution_id: execution_id.to_owned(),
            status,
            start_time: start,
            end_time: end,
            duration: (end - start).to_std().unwrap_or_default(),
            error: None,
            error_class: None,
            attempts: 1,
            metadata: Metadata::new(),
        }
    }

    /// Sets the error.
    pub fn with_error(mut self, e: &Error) -> Self {
        self.error = Some(e.chain_message());
        self.error_class = Some(e.class());
        self
    }

    /// True when it succeeded.
    pub fn is_success(&self) -> bool {
        self.status == ExecutionStatus::Success
    }
}

/// Everything a plugin gets while it runs.
#[derive(Clone)]
pub struct PluginContext {
    /// The execution's id.
    pub execution_id: String,
    /// The id of the fault this attempt injects: set before PreExecute, recorded in the
    /// ledger, and the name by which the plugin owns whatever it leaves in the environment
    /// (a table `ire_<fault id>`, a helper labelled with it). Empty outside an execution.
    pub fault_id: String,
    /// How long the whole lifecycle may take.
    pub timeout: Duration,
    /// Canceled when the execution is canceled or times out; plugins stop promptly.
    pub cancel: CancellationToken,
    /// The step's config for this plugin.
    pub config: PluginConfig,
    /// The adapter that reaches the resource.
    pub env: Arc<dyn EnvironmentAdapter>,
    /// The node's monitor.
    pub monitor: Option<Arc<dyn Monitor>>,
    /// The node's reporter.
    pub reporter: Option<Arc<dyn Reporter>>,
    /// The node's event bus.
    pub event_bus: Option<Arc<dyn EventBus>>,
    /// Where progress updates go.
    pub progress: Option<mpsc::Sender<ProgressUpdate>>,
    /// Who asked for the execution.
    pub principal: String,
    /// Authorization, for plugins that act on further resources.
    pub auth: Option<Arc<dyn AuthorizationProvider>>,
    /// Secrets.
    pub secrets: Option<Arc<dyn SecretProvider>>,
    /// The lease's token, when the resource was locked.
    pub fencing_token: Option<FencingToken>,
    /// The execution's span; plugins' own spans are children of it.
    pub span: tracing::Span,
    /// Labels of the execution (campaign, step, node), copied onto events.
    pub labels: Labels,
    /// What the plugin noted for the execution's result (see [`PluginContext::note`]).
    pub notes: Notes,
}

/// Result metadata a plugin notes while it runs; the engine copies it into the execution's
/// result and record. Shared by the copies of a context.
#[derive(Debug, Clone, Default)]
pub struct Notes(Arc<std::sync::Mutex<Metadata>>);

impl Notes {
    /// Everything noted so far.
    pub fn snapshot(&self) -> Metadata {
        self.0.lock().expect("notes lock").clone()
    }

    /// Notes `value` under `key` (replacing an earlier note of the key).
    pub fn insert(&self, key: &str, value: serde_json::Value) {
        self.0
            .lock()
            .expect("notes lock")
            .insert(key.to_owned(), value);
    }
}

/// Keys of notes the engine understands.
pub mod note {
    /// Milliseconds from the start of observation to the failure being detected (a healing
    /// plugin's own measure); the engine puts it in the record's `time_to_detect`.
    pub const TIME_TO_DETECT_MS: &str = "timeToDetectMs";
    /// Milliseconds from detection to the resource being healthy again (MTTR); the record's
    /// `time_to_recover`.
    pub const TIME_TO_RECOVER_MS: &str = "timeToRecoverMs";
}

impl std::fmt::Debug for PluginContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginContext")
            .field("execution_id", &self.execution_id)
            .field("fault_id", &self.fault_id)
            .field("timeout", &self.timeout)
            .field("principal", &self.principal)
            .field("fencing_token", &self.fencing_token)
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl PluginContext {
    /// A context with the adapter and defaults; the engine fills the rest.
    pub fn new(execution_id: impl Into<String>, env: Arc<dyn EnvironmentAdapter>) -> Self {
        PluginContext {
            execution_id: execution_id.into(),
            fault_id: String::new(),
            timeout: Duration::from_secs(300),
            cancel: CancellationToken::new(),
            config: PluginConfig::empty(),
            env,
            monitor: None,
            reporter: None,
            event_bus: None,
            progress: None,
            principal: String::new(),
            auth: None,
            secrets: None,
            fencing_token: None,
            span: tracing::Span::none(),
            labels: Labels::new(),
            notes: Notes::default(),
        }
    }

    /// Notes a value for the execution's result metadata.
    pub fn note(&self, key: &str, value: impl Into<serde_json::Value>) {
        self.notes.insert(key, value.into());
    }

    /// Sends a progress update; a full or absent channel drops it (progress is advisory).
    pub fn report_progress(&self, percent: u8, stage: &str, message: impl Into<String>) {
        if let Some(tx) = &self.progress {
            let _ = tx.try_send(ProgressUpdate {
                execution_id: self.execution_id.clone(),
                percent: percent.min(100),
                message: message.into(),
                stage: stage.to_owned(),
            });
        }
    }

    /// Publishes an event on the bus, tagged with the execution's id and labels.
    pub async fn publish(&self, mut event: Event) -> Result<()> {
        let Some(bus) = &self.event_bus else {
            return Ok(());
        };
        event
            .metadata
            .insert("execution_id".into(), self.execution_id.clone());
        for (k, v) in &self.labels {
            event.metadata.entry(k.clone()).or_insert_with(|| v.clone());
        }
        bus.publish(event).await
    }

    /// Fails with `Canceled` once the execution has been canceled.
    pub fn check_canceled(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            Err(Error::Canceled {
                message: format!("execution {}", self.execution_id),
            })
        } else {
            Ok(())
        }
    }
}

/// A fault, a healing action or a backup: anything the engine runs on a resource.
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// What the plugin is.
    fn metadata(&self) -> PluginMetadata;

    /// Called once when the plugin is registered.
    async fn initialize(&self, _config: &PluginConfig) -> Result<()> {
        Ok(())
    }

    /// Checks a step's config without touching anything (campaign validation). The default
    /// checks it against the metadata's JSON schema; the error names the field.
    fn validate_config(&self, config: &PluginConfig) -> Result<()> {
        let md = self.metadata();
        crate::schema::check_config(&md.name, &md.config_schema, &config.0)
    }

    /// Checks that the plugin can act on the resource now.
    async fn validate(&self, ctx: &PluginContext, resource: &Resource) -> Result<()>;

    /// Captures what a revert needs; `None` when there is nothing to revert.
    async fn pre_execute(
        &self,
        ctx: &PluginContext,
        resource: &Resource,
    ) -> Result<Option<Snapshot>>;

    /// Does the work.
    async fn execute(&self, ctx: &PluginContext, resource: &Resource) -> Result<()>;

    /// Follows up after Execute; a failure here is logged, not fatal.
    async fn post_execute(
        &self,
        _ctx: &PluginContext,
        _resource: &Resource,
        _result: &ExecutionResult,
    ) -> Result<()> {
        Ok(())
    }

    /// Releases what the execution held; always called.
    async fn cleanup(&self, _ctx: &PluginContext, _resource: &Resource) -> Result<()> {
        Ok(())
    }

    /// True when [`Plugin::rollback`] can restore a snapshot.
    fn supports_rollback(&self) -> bool {
        false
    }

    /// Restores the resource from the snapshot (a failed Execute, or a fault's revert).
    async fn rollback(
        &self,
        _ctx: &PluginContext,
        _resource: &Resource,
        _snapshot: &Snapshot,
    ) -> Result<()> {
        Err(Error::unsupported("rollback", self.metadata().name))
    }
}

#[cfg(test)]
mod status_tests {
    use super::ExecutionStatus;

    #[test]
    fn status_names_are_the_serialized_ones_and_all_is_in_declaration_order() {
        for (i, s) in ExecutionStatus::ALL.into_iter().enumerate() {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::from(s.as_str())
            );
            assert_eq!(s as usize, i, "{s:?} is out of place in ALL");
        }
    }
}
