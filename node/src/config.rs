//! The node's configuration: a TOML file, read through the layered config (built-in
//! defaults, the file, `IRE_*` environment variables, `--set key=value`), in that order of
//! precedence from lowest to highest.
//!
//! ```toml
//! [node]
//! name = "node-1"            # lease holders, ledger entries, records
//! data-dir = "/var/lib/ire"  # default: a temporary directory, removed at exit
//! region = "eu-west"
//!
//! [lease]
//! ttl = "15s"
//!
//! [engine]
//! concurrency = 64
//!
//! [adapters.local]           # an adapter instance: the first segment of its resources' keys
//! type = "process"
//! config = { fleet-file = "fleet.yaml" }
//!
//! [adapters.docker]
//! type = "docker"
//! ```
//!
//! The same file serves `ire run`, `ire demo` and the daemon. Every section denies unknown
//! keys; [`NodeConfig::validate`] checks values without I/O. In `IRE_*` variables and
//! `--set`, numbers and booleans of the node's own settings may be written as strings
//! (`IRE_ENGINE__CONCURRENCY=8`); adapter configs are passed to the adapter as given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ire_actors::config::{
    priority, ArgsConfigProvider, EnvConfigProvider, LayeredConfig, MapConfigProvider,
};
use ire_core::{Config, Error, Result};
use serde::{Deserialize, Deserializer, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeConfig {
    /// Who the node is and where it keeps its state.
    #[serde(default)]
    pub node: NodeSection,
    /// Leases on resources.
    #[serde(default)]
    pub lease: LeaseSection,
    /// The execution engine.
    #[serde(default)]
    pub engine: EngineSection,
    /// Health probing of faulted resources (time to detect, time to recover).
    #[serde(default)]
    pub monitor: MonitorSection,
    /// Adapter instances by name.
    #[serde(default)]
    pub adapters: BTreeMap<String, AdapterSection>,
    /// Plugins: out-of-process plugins and per-plugin settings.
    #[serde(default)]
    pub plugins: PluginsSection,
    /// Where reports go.
    #[serde(default)]
    pub reports: ReportsSection,
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeSection {
    /// The node's name.
    #[serde(default = "default_node_name")]
    pub name: String,
    /// The data directory (raft log, state machine); a temporary one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// The node's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

fn default_node_name() -> String {
    "local".into()
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            name: default_node_name(),
            data_dir: None,
            region: None,
        }
    }
}

/// `[lease]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LeaseSection {
    /// A lease's time to live (renewed every third of it).
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
}

fn default_ttl() -> Duration {
    Duration::from_secs(15)
}

impl Default for LeaseSection {
    fn default() -> Self {
        LeaseSection { ttl: default_ttl() }
    }
}

/// `[engine]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EngineSection {
    /// Executions that run at once.
    #[serde(default = "default_concurrency", deserialize_with = "lenient_usize")]
    pub concurrency: usize,
    /// Executions that may wait for a worker.
    #[serde(default = "default_queue", deserialize_with = "lenient_usize")]
    pub queue: usize,
    /// How long an execution waits for a resource leased by someone else.
    #[serde(default = "default_lock_wait", with = "humantime_serde")]
    pub lock_wait: Duration,
}

fn default_concurrency() -> usize {
    64
}
fn default_queue() -> usize {
    100_000
}
fn default_lock_wait() -> Duration {
    Duration::from_secs(30)
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            concurrency: default_concurrency(),
            queue: default_queue(),
            lock_wait: default_lock_wait(),
        }
    }
}

/// `[monitor]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MonitorSection {
    /// Time between two health probes of a faulted resource.
    #[serde(default = "default_probe", with = "humantime_serde")]
    pub probe_interval: Duration,
}

fn default_probe() -> Duration {
    Duration::from_millis(250)
}

impl Default for MonitorSection {
    fn default() -> Self {
        MonitorSection {
            probe_interval: default_probe(),
        }
    }
}

/// One adapter instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AdapterSection {
    /// `process`, `docker` or `kubernetes`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The adapter's own settings (see `docs/adapters.md`).
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Leave it out (with a warning) when it cannot start, instead of failing the node.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub optional: bool,
}

/// The adapter types this node knows.
pub const ADAPTER_TYPES: &[&str] = &["process", "docker", "kubernetes"];

/// `[plugins]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginsSection {
    /// A directory of out-of-process plugins (`*/plugin.yaml`), loaded at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Settings handed to each plugin's `initialize`, by plugin name.
    #[serde(default)]
    pub settings: BTreeMap<String, serde_json::Value>,
}

/// `[reports]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReportsSection {
    /// Where HTML reports are written (default: `<temp>/ire-reports`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
}

impl ReportsSection {
    /// The report directory.
    pub fn dir(&self) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("ire-reports"))
    }
}

fn lenient_usize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        N(usize),
        S(String),
    }
    match N::deserialize(d)? {
        N::N(n) => Ok(n),
        N::S(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a whole number"))),
    }
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        B(bool),
        S(String),
    }
    match B::deserialize(d)? {
        B::B(b) => Ok(b),
        B::S(s) => match s.trim() {
            "true" | "yes" | "1" => Ok(true),
            "false" | "no" | "0" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "{other:?} is not true or false"
            ))),
        },
    }
}

impl NodeConfig {
    /// The built-in defaults: a process adapter named `local` (no processes until a fleet
    /// is given).
    pub fn defaults() -> Self {
        let mut adapters = BTreeMap::new();
        adapters.insert(
            "local".into(),
            AdapterSection {
                type_: "process".into(),
                config: Default::default(),
                optional: false,
            },
        );
        NodeConfig {
            adapters,
            ..NodeConfig::default()
        }
    }

    /// Adds an optional `docker` adapter when none is configured and a Docker daemon socket
    /// is there (`DOCKER_HOST`, or `/var/run/docker.sock`), so that campaigns on local
    /// containers need no config either. It is left out with a warning if it cannot start.
    pub fn with_detected_docker(mut self) -> Self {
        let configured = self.adapters.values().any(|a| a.type_ == "docker");
        let present =
            std::env::var_os("DOCKER_HOST").is_some() || Path::new("/var/run/docker.sock").exists();
        if !configured && present && !self.adapters.contains_key("docker") {
            self.adapters.insert(
                "docker".into(),
                AdapterSection {
                    type_: "docker".into(),
                    config: Default::default(),
                    optional: true,
                },
            );
        }
        self
    }

    /// Checks values without I/O; errors name the key.
    pub fn validate(&self) -> Result<()> {
        if self.node.name.trim().is_empty() || self.node.name.contains('/') {
            return Err(Error::invalid(
                "node.name",
                format!("{:?} must be non-empty and contain no /", self.node.name),
            ));
        }
        if self.lease.ttl < Duration::from_millis(100) {
            return Err(Error::invalid(
                "lease.ttl",
                format!("{:?} is too short (at least 100ms)", self.lease.ttl),
            ));
        }
        if self.engine.concurrency == 0 {
            return Err(Error::invalid("engine.concurrency", "must be at least 1"));
        }
        if self.monitor.probe_interval.is_zero() {
            return Err(Error::invalid(
                "monitor.probe-interval",
                "must be more than zero",
            ));
        }
        for (name, a) in &self.adapters {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(Error::invalid(
                    format!("adapters.{name}"),
                    "an adapter name is letters, digits, - and _",
                ));
            }
            if !ADAPTER_TYPES.contains(&a.type_.as_str()) {
                return Err(Error::invalid(
                    format!("adapters.{name}.type"),
                    format!(
                        "unknown adapter type {:?}; known: {}",
                        a.type_,
                        ADAPTER_TYPES.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Sets the process adapter `local`'s fleet file (`ire run --fleet`).
    pub fn with_fleet(mut self, fleet: &Path) -> Self {
        let local = self
            .adapters
            .entry("local".into())
            .or_insert_with(|| AdapterSection {
                type_: "process".into(),
                config: Default::default(),
                optional: false,
            });
        local.config.insert(
            "fleet-file".into(),
            serde_json::Value::String(fleet.display().to_string()),
        );
        self
    }
}

/// Where a configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    /// The TOML file, if any.
    pub file: Option<PathBuf>,
    /// `--set key=value` overrides.
    pub overrides: Vec<String>,
    /// Environment variables (None: the process's own).
    pub env: Option<Vec<(String, String)>>,
}

/// Reads the configuration: defaults, the file, `IRE_*`, `--set`.
pub async fn load(sources: &ConfigSources) -> Result<NodeConfig> {
    let layered = LayeredConfig::new();
    let defaults = serde_json::to_value(NodeConfig::defaults())
        .map_err(|e| Error::invalid("config defaults", e.to_string()))?;
    add(
        &layered,
        "defaults",
        priority::DEFAULTS,
        MapConfigProvider::new("defaults", &defaults),
    )
    .await?;
    if let Some(path) = &sources.file {
        let file = read_toml(path)?;
        let name = format!("file:{}", path.display());
        add(
            &layered,
            &name,
            priority::FILE,
            MapConfigProvider::new(name.clone(), &file),
        )
        .await?;
    }
    let env = match &sources.env {
        Some(vars) => EnvConfigProvider::from_vars("IRE", vars.clone()),
        None => EnvConfigProvider::from_vars(
            "IRE",
            std::env::vars().filter(|(k, _)| is_config_var(k)).collect(),
        ),
    };
    add(&layered, "env", priority::ENV, env).await?;
    add(
        &layered,
        "args",
        priority::ARGS,
        ArgsConfigProvider::parse(&sources.overrides)?,
    )
    .await?;
    let config: NodeConfig = layered.get_as("")?;
    layered.shutdown();
    config.validate()?;
    Ok(config)
}

/// `IRE_*` variables that are settings: those of the sections above. `IRE_NODE`, `IRE_TOKEN`
/// and `IRE_LOG` are the CLI's, not the config's.
fn is_config_var(name: &str) -> bool {
    const SECTIONS: &[&str] = &[
        "IRE_NODE__",
        "IRE_LEASE__",
        "IRE_ENGINE__",
        "IRE_MONITOR__",
        "IRE_ADAPTERS__",
        "IRE_PLUGINS__",
        "IRE_REPORTS__",
    ];
    SECTIONS.iter().any(|s| name.starts_with(s))
}

async fn add(
    layered: &LayeredConfig,
    name: &str,
    prio: i32,
    provider: impl ire_core::ConfigProvider,
) -> Result<()> {
    layered
        .add_provider(std::sync::Arc::new(provider), prio)
        .await
        .map_err(|e| e.context(format!("config source {name}")))
}

/// Reads and checks a TOML file; errors name the file, line and key.
pub fn read_toml(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::invalid(
            format!("config file {}", path.display()),
            format!("cannot be read: {e}"),
        )
    })?;
    // Checked against the schema first, so that a typo names its line.
    let checked: std::result::Result<NodeConfig, _> = toml::from_str(&text);
    if let Err(e) = checked {
        let at = e
            .span()
            .map(|s| {
                let line = text[..s.start].matches('\n').count() + 1;
                let col = s.start - text[..s.start].rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(":{line}:{col}")
            })
            .unwrap_or_default();
        return Err(Error::invalid(
            format!("config file {}{at}", path.display()),
            e.message().to_owned(),
        ));
    }
    let value: toml::Value = toml::from_str(&text)
        .map_err(|e| Error::invalid(format!("config file {}", path.display()), e.to_string()))?;
    serde_json::to_value(value)
        .map_err(|e| Error::invalid(format!("config file {}", path.display()), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn load_with(
        file: Option<&str>,
        env: &[(&str, &str)],
        set: &[&str],
    ) -> Result<NodeConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        load(&ConfigSources {
            file: file.map(|_| path.clone()),
            overrides: set.iter().map(|s| s.to_string()).collect(),
            env: Some(
                env.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        })
        .await
    }

    #[tokio::test]
    async fn no_config_at_all_gives_a_process_adapter() {
        let c = load_with(None, &[], &[]).await.unwrap();
        assert_eq!(c.adapters["local"].type_, "process");
        assert_eq!(c.node.name, "local");
        assert_eq!(c.lease.ttl, Duration::from_secs(15));
    }

    #[tokio::test]
    async fn file_env_and_args_layer_in_that_order() {
        let file = "[node]\nname = \"from-file\"\nregion = \"eu\"\n[engine]\nconcurrency = 4\n[adapters.shop]\ntype = \"docker\"\nconfig = { host = \"unix:///var/run/docker.sock\" }\n";
        let c = load_with(
            Some(file),
            &[
                ("IRE_ENGINE__CONCURRENCY", "8"),
                ("IRE_NODE__NAME", "from-env"),
            ],
            &["node.name=from-args", "lease.ttl=5s"],
        )
        .await
        .unwrap();
        assert_eq!(c.node.name, "from-args");
        assert_eq!(c.node.region.as_deref(), Some("eu"));
        assert_eq!(c.engine.concurrency, 8);
        assert_eq!(c.lease.ttl, Duration::from_secs(5));
        assert_eq!(c.adapters["shop"].type_, "docker");
        assert_eq!(
            c.adapters["shop"].config["host"],
            serde_json::json!("unix:///var/run/docker.sock")
        );
        // The defaults' adapters are still there.
        assert!(c.adapters.contains_key("local"));
    }

    #[tokio::test]
    async fn a_typo_names_the_file_line_and_key() {
        let e = load_with(Some("[engine]\nconcurency = 4\n"), &[], &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("node.toml:2:1"), "{e}");
        assert!(e.contains("concurency"), "{e}");
    }

    #[tokio::test]
    async fn bad_values_name_the_key() {
        let e = load_with(None, &[], &["engine.concurrency=0"])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("engine.concurrency"), "{e}");
        let e = load_with(Some("[adapters.x]\ntype = \"vmware\"\n"), &[], &[])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("adapters.x.type"), "{e}");
        let e = load_with(None, &[], &["engine.concurrency=many"])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not a whole number"), "{e}");
    }
}
