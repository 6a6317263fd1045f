//! The environment-agnostic resource model (the seed's Resource and its parts).
//!
//! Kinds and phases are free-form strings: an adapter for a new environment brings its own
//! without any change here (seed properties 6-10).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Free-form, environment-specific data attached to a model object.
pub type Metadata = BTreeMap<String, serde_json::Value>;

/// Key-value labels or annotations.
pub type Labels = BTreeMap<String, String>;

/// The stable identity of a resource: `adapter/segment/...`.
///
/// Unlike [`Resource::id`] (a container id, a pod UID), the key survives the resource being
/// recreated: `compose/shop/redis/1` stays the same when compose replaces the container, so a
/// lock or a pending revert keyed by it still applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceKey(String);

impl ResourceKey {
    /// Builds a key from the adapter instance name and the resource's stable path segments.
    ///
    /// Segments must be non-empty and must not contain `/`.
    pub fn new<I, S>(adapter: &str, segments: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut key = String::from(adapter);
        for s in segments {
            key.push('/');
            key.push_str(s.as_ref());
        }
        key.parse()
    }

    /// The adapter instance this resource belongs to (the first segment).
    pub fn adapter(&self) -> &str {
        self.0.split('/').next().unwrap_or_default()
    }

    /// The segments after the adapter.
    pub fn path(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').skip(1)
    }

    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ResourceKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let mut parts = s.split('/');
        let adapter = parts.next().unwrap_or_default();
        if adapter.is_empty() {
            return Err(Error::invalid(
                "resource key",
                format!("{s:?} has no adapter"),
            ));
        }
        let mut n = 0;
        for p in parts {
            n += 1;
            if p.is_empty() {
                return Err(Error::invalid(
                    "resource key",
                    format!("{s:?} has an empty segment"),
                ));
            }
        }
        if n == 0 {
            return Err(Error::invalid(
                "resource key",
                format!("{s:?} names an adapter but no resource (expected adapter/...)"),
            ));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::invalid(
                "resource key",
                format!("{s:?} contains whitespace"),
            ));
        }
        Ok(ResourceKey(s.to_owned()))
    }
}

impl TryFrom<String> for ResourceKey {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<ResourceKey> for String {
    fn from(k: ResourceKey) -> String {
        k.0
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ResourceKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Well-known phases. Adapters may report others: a phase is a free-form string.
pub mod phase {
    /// Created but not running yet.
    pub const PENDING: &str = "pending";
    /// Running.
    pub const RUNNING: &str = "running";
    /// Stopped (exited, completed).
    pub const STOPPED: &str = "stopped";
    /// Paused (frozen).
    pub const PAUSED: &str = "paused";
    /// Failed.
    pub const FAILED: &str = "failed";
    /// Deleted.
    pub const DELETED: &str = "deleted";
    /// The adapter cannot tell.
    pub const UNKNOWN: &str = "unknown";
}

/// Any infrastructure resource (container, pod, process, VM, ...), in one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// The stable identity (survives recreation).
    pub key: ResourceKey,
    /// The runtime id (container id, pod UID, pid, ...).
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Free-form kind: container, pod, process, deployment, ...
    pub kind: String,
    /// Labels for selection and grouping.
    #[serde(default)]
    pub labels: Labels,
    /// Additional metadata that is not used for selection.
    #[serde(default)]
    pub annotations: Labels,
    /// Observed state.
    #[serde(default)]
    pub status: ResourceStatus,
    /// Desired specification.
    #[serde(default)]
    pub spec: ResourceSpec,
    /// Arbitrary environment-specific data.
    #[serde(default)]
    pub metadata: Metadata,
}

impl Resource {
    /// True when the phase is `running`.
    pub fn is_running(&self) -> bool {
        self.status.phase == phase::RUNNING
    }

    /// The condition of the given type, if reported.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// Observed state, in the same shape for every environment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// Free-form phase (see [`phase`] for the common ones).
    pub phase: String,
    /// Detailed conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Human-readable status message.
    #[serde(default)]
    pub message: String,
    /// Machine-readable reason code.
    #[serde(default)]
    pub reason: String,
}

/// A detailed condition (Ready, Healthy, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type: Ready, Healthy, Initialized, ...
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// CamelCase reason.
    #[serde(default)]
    pub reason: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// When the status last changed.
    pub last_transition_time: DateTime<Utc>,
}

impl Condition {
    /// A condition of `type_` with `status`, transitioned now.
    pub fn new(type_: impl Into<String>, status: impl Into<String>) -> Self {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: String::new(),
            message: String::new(),
            last_transition_time: Utc::now(),
        }
    }
}

/// The desired specification of a resource.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSpec {
    /// Container or VM image.
    #[serde(default)]
    pub image: String,
    /// Desired replicas, where the resource scales.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Exposed ports.
    #[serde(default)]
    pub ports: Vec<Port>,
    /// Environment variables.
    #[serde(default)]
    pub environment: Labels,
    /// Mounted volumes.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// Entrypoint command.
    #[serde(default)]
    pub command: Vec<String>,
    /// Command arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Health check configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckConfig>,
}

/// An exposed port.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// Port name.
    #[serde(default)]
    pub name: String,
    /// Port inside the resource.
    pub container_port: i32,
    /// Port on the host, 0 when not published.
    #[serde(default)]
    pub host_port: i32,
    /// TCP or UDP.
    #[serde(default)]
    pub protocol: String,
}

/// A mounted volume.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Volume name.
    #[serde(default)]
    pub name: String,
    /// Where it is mounted.
    pub mount_path: String,
    /// Mounted read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Where its content comes from.
    #[serde(default)]
    pub source: VolumeSource,
}

/// Where a volume's content comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSource {
    /// A path on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// A config map's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<String>,
    /// A secret's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// A temporary directory.
    #[serde(default)]
    pub empty_dir: bool,
}

/// How a resource's health is checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckConfig {
    /// The strategy's name: http, tcp, exec, or a custom one registered with the monitor.
    #[serde(rename = "type")]
    pub type_: String,
    /// URL for http, address for tcp, command for exec.
    pub endpoint: String,
    /// Time between checks.
    #[serde(with = "humantime_serde", default = "default_interval")]
    pub interval: Duration,
    /// Time one check may take.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// Consecutive failures before the resource counts as unhealthy.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_retries() -> u32 {
    3
}

/// Adapter configuration: the adapter's own keys (socket path, API credentials, fleet file, ...).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AdapterConfig {
    /// The adapter instance's name, the first segment of its resources' keys.
    pub name: String,
    /// Environment-specific settings.
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

impl AdapterConfig {
    /// A string setting, if present.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.config.get(key).and_then(|v| v.as_str())
    }
}

/// The kind of change a [`ResourceEvent`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResourceEventType {
    /// The resource appeared.
    Added,
    /// The resource changed (state, spec, labels).
    Modified,
    /// The resource went away.
    Deleted,
}

/// A change to a watched resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceEvent {
    /// What happened.
    #[serde(rename = "type")]
    pub type_: ResourceEventType,
    /// The resource after the change (before it, for `Deleted`).
    pub resource: Resource,
    /// When the adapter observed it.
    pub observed_at: DateTime<Utc>,
}

/// Options of a delete.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOptions {
    /// Time to stop gracefully before being killed.
    #[serde(with = "humantime_serde", default)]
    pub grace_period: Duration,
    /// Delete even when running.
    #[serde(default)]
    pub force: bool,
}

/// Options of an exec. Output is captured into [`ExecResult`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecOptions {
    /// Bytes written to the command's stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<Vec<u8>>,
    /// Allocate a terminal.
    #[serde(default)]
    pub tty: bool,
    /// Extra environment variables.
    #[serde(default)]
    pub env: Labels,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Kill the command after this long.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Most bytes kept of each of stdout and stderr ([`DEFAULT_EXEC_OUTPUT_LIMIT`] when
    /// unset). What comes after is read and dropped, so the command is never blocked on a
    /// full pipe, and the result counts what was dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_limit: Option<usize>,
}

/// How many bytes of each output stream an exec keeps unless its options say otherwise.
pub const DEFAULT_EXEC_OUTPUT_LIMIT: usize = 16 * 1024 * 1024;

impl ExecOptions {
    /// The per-stream output cap in effect.
    pub fn output_limit(&self) -> usize {
        self.output_limit.unwrap_or(DEFAULT_EXEC_OUTPUT_LIMIT)
    }
}

/// The outcome of an exec. Output is kept as the bytes the command wrote (binary-safe);
/// [`ExecResult::stdout_text`] decodes it for display. In JSON, output that is valid UTF-8
/// is a string, other output `{"base64": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecResult {
    /// Captured standard output, up to the output limit.
    #[serde(with = "output_bytes")]
    pub stdout: Vec<u8>,
    /// Captured standard error, up to the output limit.
    #[serde(with = "output_bytes")]
    pub stderr: Vec<u8>,
    /// The command's exit code.
    pub exit_code: i64,
    /// Bytes of stdout dropped beyond the output limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stdout_dropped: u64,
    /// Bytes of stderr dropped beyond the output limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stderr_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ExecResult {
    /// A result from the two collected streams and the exit code.
    pub fn from_output(stdout: OutputBuffer, stderr: OutputBuffer, exit_code: i64) -> Self {
        let (stdout, stdout_dropped) = stdout.into_parts();
        let (stderr, stderr_dropped) = stderr.into_parts();
        ExecResult {
            stdout,
            stderr,
            exit_code,
            stdout_dropped,
            stderr_dropped,
        }
    }

    /// Stdout as text (invalid UTF-8 replaced), for display and matching.
    pub fn stdout_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    /// Stderr as text (invalid UTF-8 replaced), for display and matching.
    pub fn stderr_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.stderr)
    }

    /// True when the command exited with 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// True when some output was dropped at the output limit.
    pub fn is_truncated(&self) -> bool {
        self.stdout_dropped > 0 || self.stderr_dropped > 0
    }
}

/// Collects one output stream up to a limit and counts the bytes it drops beyond it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutputBuffer {
    bytes: Vec<u8>,
    limit: usize,
    dropped: u64,
}

impl OutputBuffer {
    /// An empty buffer that keeps at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        OutputBuffer {
            bytes: Vec::new(),
            limit,
            dropped: 0,
        }
    }

    /// Appends what fits and counts the rest as dropped.
    pub fn push(&mut self, chunk: &[u8]) {
        let room = self.limit.saturating_sub(self.bytes.len());
        let kept = room.min(chunk.len());
        self.bytes.extend_from_slice(&chunk[..kept]);
        self.dropped += (chunk.len() - kept) as u64;
    }

    /// The bytes kept so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes kept and how many were dropped.
    pub fn into_parts(self) -> (Vec<u8>, u64) {
        (self.bytes, self.dropped)
    }
}

/// Output bytes in JSON: a string when they are UTF-8, `{"base64": "..."}` otherwise.
mod output_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Binary { base64: String },
    }

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(bytes) {
            Ok(text) => s.serialize_str(text),
            Err(_) => Repr::Binary {
                base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            }
            .serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Text(t) => Ok(t.into_bytes()),
            Repr::Binary { base64 } => base64::engine::general_purpose::STANDARD
                .decode(base64)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Normalized resource metrics.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    /// When they were read.
    pub timestamp: DateTime<Utc>,
    /// The resource's runtime id.
    pub resource_id: String,
    /// CPU usage.
    pub cpu: CpuMetrics,
    /// Memory usage.
    pub memory: MemoryMetrics,
    /// Network counters.
    pub network: NetworkMetrics,
    /// Disk counters.
    pub disk: DiskMetrics,
}

/// CPU usage.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuMetrics {
    /// Percent of one core (100 = one core fully busy).
    pub usage_percent: f64,
    /// Cores in use.
    pub usage_cores: f64,
}

/// Memory usage.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryMetrics {
    /// Bytes in use.
    pub usage_bytes: u64,
    /// The limit, 0 when unlimited.
    pub limit_bytes: u64,
    /// Percent of the limit (0 when unlimited).
    pub usage_percent: f64,
}

/// Network counters since the resource started.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkMetrics {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
}

/// Disk counters since the resource started.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskMetrics {
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Read operations.
    pub read_ops: u64,
    /// Write operations.
    pub write_ops: u64,
}

/// What an adapter is and can do.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdapterInfo {
    /// The adapter instance's name.
    pub name: String,
    /// The adapter's version.
    pub version: String,
    /// The environment it drives, free-form.
    pub environment: String,
    /// The features it supports (see [`crate::adapter::capability`]).
    pub capabilities: Vec<String>,
}

impl AdapterInfo {
    /// True when the adapter lists the capability.
    pub fn has_capability(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_key_parses_and_rejects() {
        let k: ResourceKey = "compose/shop/redis/1".parse().unwrap();
        assert_eq!(k.adapter(), "compose");
        assert_eq!(k.path().collect::<Vec<_>>(), ["shop", "redis", "1"]);
        assert_eq!(
            ResourceKey::new("proc", ["web"]).unwrap().as_str(),
            "proc/web"
        );
        for bad in [
            "",
            "compose",
            "/x",
            "compose//x",
            "compose/x/",
            "compose/a b",
        ] {
            assert!(bad.parse::<ResourceKey>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn output_buffer_keeps_up_to_its_limit_and_counts_the_rest() {
        let mut b = OutputBuffer::new(5);
        b.push(b"abc");
        b.push(b"defgh");
        b.push(b"ij");
        assert_eq!(b.as_bytes(), b"abcde");
        assert_eq!(b.into_parts().1, 5);
    }

    #[test]
    fn exec_output_round_trips_text_and_binary_through_json() {
        let r = ExecResult {
            stdout: b"hello\n".to_vec(),
            stderr: vec![0, 159, 146, 150, 255],
            exit_code: 3,
            stdout_dropped: 0,
            stderr_dropped: 7,
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["stdout"], "hello\n");
        assert_eq!(json["stderr"]["base64"], "AJ+Slv8=");
        assert!(json.get("stdoutDropped").is_none());
        let back: ExecResult = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.stdout_text(), "hello\n");
        assert!(back.is_truncated() && !back.success());
    }

    #[test]
    fn resource_key_deserialization_validates() {
        assert!(serde_json::from_str::<ResourceKey>("\"compose\"").is_err());
        let k: ResourceKey = serde_json::from_str("\"cluster-a/default/web-0\"").unwrap();
        assert_eq!(
            serde_json::to_string(&k).unwrap(),
            "\"cluster-a/default/web-0\""
        );
    }
}
