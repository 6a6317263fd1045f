//! The process adapter's configuration, read from [`ire_core::AdapterConfig::config`].

use std::path::PathBuf;
use std::time::Duration;

use ire_core::{AdapterConfig, Error, Result};
use serde::{Deserialize, Serialize};

use super::fleet::{FleetFile, ProcessSpec};
use super::netns::NetworkConfig;

/// Settings of one process adapter instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProcessConfig {
    /// A YAML fleet file describing the processes.
    #[serde(default)]
    pub fleet_file: Option<PathBuf>,
    /// Processes described inline (added to the fleet file's).
    #[serde(default)]
    pub processes: Vec<ProcessSpec>,
    /// Grace period of restarts and of the stop at `close` before SIGKILL.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub stop_grace: Duration,
    /// Start the processes marked `autostart` when the adapter initializes.
    #[serde(default = "default_true")]
    pub autostart: bool,
    /// Stop every managed process when the adapter closes.
    #[serde(default = "default_true")]
    pub stop_on_close: bool,
    /// Where each process's stdout and stderr are appended (`<dir>/<name>.log`);
    /// discarded when unset.
    #[serde(default)]
    pub log_dir: Option<PathBuf>,
    /// The network of processes with their own namespace.
    #[serde(default)]
    pub network: NetworkConfig,
    /// The network-fault helper (default: `ire-net-fault` on `PATH`, then beside the
    /// running program).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_fault_helper: Option<PathBuf>,
}

fn default_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_true() -> bool {
    true
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            fleet_file: None,
            processes: Vec::new(),
            stop_grace: default_grace(),
            autostart: true,
            stop_on_close: true,
            log_dir: None,
            network: NetworkConfig::default(),
            net_fault_helper: None,
        }
    }
}

impl ProcessConfig {
    /// Reads the settings of an adapter instance; errors name the field.
    pub fn from_adapter_config(config: &AdapterConfig) -> Result<Self> {
        serde_json::from_value(serde_json::Value::Object(config.config.clone()))
            .map_err(|e| Error::invalid(format!("adapters.{}.config", config.name), e.to_string()))
    }

    /// Every process: the fleet file's, then the inline ones; names are unique.
    pub fn fleet(&self) -> Result<Vec<ProcessSpec>> {
        self.network.validate("config")?;
        let mut fleet = match &self.fleet_file {
            Some(path) => FleetFile::load(path)?,
            None => FleetFile::default(),
        };
        fleet.processes.extend(self.processes.iter().cloned());
        fleet.validate(
            &self
                .fleet_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "processes".into()),
        )?;
        Ok(fleet.processes)
    }
}
