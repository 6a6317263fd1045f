//! The fleet file: the local processes the process adapter manages.
//!
//! ```yaml
//! processes:
//!   - name: api
//!     command: /usr/bin/python3
//!     args: ["-m", "http.server", "8080"]
//!     env: {PYTHONUNBUFFERED: "1"}
//!     working-dir: /srv/api
//!     labels: {tier: web}
//!     health-check: {type: http, endpoint: "http://127.0.0.1:8080/", interval: 5s}
//!     autostart: true
//!     network: {namespace: true, address: 198.18.0.20}   # its own network namespace
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ire_core::{Error, HealthCheckConfig, Labels, Result};
use serde::{Deserialize, Serialize};

/// A fleet file's content.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FleetFile {
    /// The processes, each started unless `autostart: false`.
    #[serde(default)]
    pub processes: Vec<ProcessSpec>,
}

/// One process of the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProcessSpec {
    /// Unique name; the resource key is `<adapter>/<name>`.
    pub name: String,
    /// The program (a path, or a name looked up in `PATH`).
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables set on top of the adapter's own environment.
    #[serde(default)]
    pub env: Labels,
    /// Working directory (default: the adapter's).
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// Labels for selection.
    #[serde(default)]
    pub labels: Labels,
    /// How ire's monitor checks its health.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Start it when the adapter initializes.
    #[serde(default = "default_true")]
    pub autostart: bool,
    /// Its own network namespace (network faults need one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<ProcessNetwork>,
}

/// A process's own network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProcessNetwork {
    /// Run the process in its own network namespace, joined to the adapter's switch.
    #[serde(default)]
    pub namespace: bool,
    /// Its address there (default: the next free one of the adapter's subnet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
}

impl ProcessSpec {
    /// True when the process runs in its own network namespace.
    pub fn has_namespace(&self) -> bool {
        self.network.as_ref().is_some_and(|n| n.namespace)
    }
}

fn default_true() -> bool {
    true
}

impl ProcessSpec {
    /// A spec running `command args...`, started at initialization.
    pub fn new(name: &str, command: &str, args: &[&str]) -> Self {
        ProcessSpec {
            name: name.to_owned(),
            command: command.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: Labels::new(),
            working_dir: None,
            labels: Labels::new(),
            health_check: None,
            autostart: true,
            network: None,
        }
    }

    /// Checks the spec without I/O; `at` says where it comes from, for errors.
    pub fn validate(&self, at: &str) -> Result<()> {
        validate_name(&self.name).map_err(|m| Error::invalid(format!("{at}.name"), m))?;
        if self.command.trim().is_empty() {
            return Err(Error::invalid(format!("{at}.command"), "must not be empty"));
        }
        if let Some(n) = &self.network {
            if n.address.is_some() && !n.namespace {
                return Err(Error::invalid(
                    format!("{at}.network.address"),
                    "needs `namespace: true`",
                ));
            }
        }
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(Error::invalid(
                    format!("{at}.env"),
                    format!("{k:?} is not a variable name"),
                ));
            }
        }
        Ok(())
    }
}

/// A process name must be usable as one segment of a resource key.
pub(crate) fn validate_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.contains('/') || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{name:?} must not contain '/' or whitespace"));
    }
    Ok(())
}

impl FleetFile {
    /// Parses YAML; errors carry the line and column, and `source` names the file.
    pub fn parse(yaml: &str, source: &str) -> Result<Self> {
        let fleet: FleetFile = serde_yaml_ng::from_str(yaml)
            .map_err(|e| Error::invalid(source.to_owned(), e.to_string()))?;
        fleet.validate(source)?;
        Ok(fleet)
    }

    /// Reads and parses a fleet file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid("fleet-file", format!("cannot read {}: {e}", path.display()))
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Checks every process and that names are unique.
    pub fn validate(&self, source: &str) -> Result<()> {
        let mut seen = BTreeSet::new();
        for (i, p) in self.processes.iter().enumerate() {
            let at = format!("{source}: processes[{i}]");
            p.validate(&at)?;
            if !seen.insert(p.name.as_str()) {
                return Err(Error::invalid(
                    format!("{at}.name"),
                    format!("{:?} is used by another process", p.name),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_fleet_file_parses() {
        let f = FleetFile::parse(
            r#"
processes:
  - name: api
    command: /bin/sleep
    args: ["30"]
    env: {A: "1"}
    working-dir: /tmp
    labels: {tier: web}
    health-check: {type: tcp, endpoint: "127.0.0.1:80", interval: 2s}
  - name: worker
    command: sleep
    autostart: false
"#,
            "fleet.yaml",
        )
        .unwrap();
        assert_eq!(f.processes.len(), 2);
        assert_eq!(f.processes[0].labels["tier"], "web");
        assert_eq!(
            f.processes[0].health_check.as_ref().unwrap().interval,
            std::time::Duration::from_secs(2)
        );
        assert!(!f.processes[1].autostart);
    }

    #[test]
    fn a_process_can_ask_for_its_own_network_namespace() {
        let f = FleetFile::parse(
            "processes:\n  - name: db\n    command: x\n    network: {namespace: true, address: 198.18.0.20}\n",
            "fleet.yaml",
        )
        .unwrap();
        assert!(f.processes[0].has_namespace());
        let e = FleetFile::parse(
            "processes:\n  - name: db\n    command: x\n    network: {address: 198.18.0.20}\n",
            "fleet.yaml",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("processes[0].network.address"),
            "{e}"
        );
    }

    #[test]
    fn a_typo_names_the_field_and_line() {
        let e = FleetFile::parse(
            "processes:\n  - name: api\n    comand: /bin/true\n",
            "fleet.yaml",
        )
        .unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("fleet.yaml") && m.contains("comand") && m.contains("line 3"),
            "{m}"
        );
    }

    #[test]
    fn duplicate_and_bad_names_are_rejected() {
        let e = FleetFile::parse(
            "processes:\n  - {name: a, command: x}\n  - {name: a, command: y}\n",
            "f.yaml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("processes[1].name"), "{e}");
        let e =
            FleetFile::parse("processes:\n  - {name: a/b, command: x}\n", "f.yaml").unwrap_err();
        assert!(e.to_string().contains("processes[0].name"), "{e}");
        let e = FleetFile::parse("processes:\n  - {name: a, command: ''}\n", "f.yaml").unwrap_err();
        assert!(e.to_string().contains("processes[0].command"), "{e}");
    }
}
