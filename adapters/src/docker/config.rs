//! The docker adapter's configuration, read from [`ire_core::AdapterConfig::config`].

use std::collections::BTreeMap;
use std::time::Duration;

use ire_core::{AdapterConfig, Error, Result};
use serde::{Deserialize, Serialize};

/// The image of the network-fault helper (`tc` and `nft`), built by
/// `deploy/test-images/build.sh`.
pub const DEFAULT_NET_FAULT_IMAGE: &str = "ire/net-fault:latest";

/// The label every container created by the adapter carries, valued with the instance name.
pub const MANAGED_BY_LABEL: &str = "ire.managed-by";

/// Settings of one docker adapter instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DockerConfig {
    /// The daemon: `unix:///path/docker.sock`, a socket path, or `tcp://host:port`
    /// (default: `DOCKER_HOST`, then `/var/run/docker.sock`).
    #[serde(default)]
    pub host: Option<String>,
    /// Pins the API version (`"1.41"`); by default the client negotiates down to the
    /// daemon's version.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Time one request may take before it fails (streams are not bounded by it).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Grace period of `restart_resource` before Docker kills the container.
    #[serde(default = "default_restart_grace", with = "humantime_serde")]
    pub restart_grace: Duration,
    /// Image of the helper that applies network faults in a container's namespace.
    #[serde(default = "default_net_fault_image")]
    pub net_fault_image: String,
    /// Labels put on every container this adapter creates (besides `ire.managed-by`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_restart_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_net_fault_image() -> String {
    DEFAULT_NET_FAULT_IMAGE.to_owned()
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: None,
            api_version: None,
            timeout: default_timeout(),
            restart_grace: default_restart_grace(),
            net_fault_image: default_net_fault_image(),
            labels: BTreeMap::new(),
        }
    }
}

impl DockerConfig {
    /// Reads and validates the settings of an adapter instance; errors name the field.
    pub fn from_adapter_config(config: &AdapterConfig) -> Result<Self> {
        let cfg: DockerConfig = serde_json::from_value(serde_json::Value::Object(
            config.config.clone(),
        ))
        .map_err(|e| Error::invalid(format!("adapters.{}.config", config.name), e.to_string()))?;
        cfg.validate()
            .map_err(|e| e.context(format!("adapters.{}.config", config.name)))?;
        Ok(cfg)
    }

    /// Checks values without doing I/O.
    pub fn validate(&self) -> Result<()> {
        if let Some(v) = &self.api_version {
            parse_api_version(v)?;
        }
        if let Some(h) = &self.host {
            let ok = h.starts_with("unix://")
                || h.starts_with("tcp://")
                || h.starts_with("http://")
                || h.starts_with('/');
            if !ok {
                return Err(Error::invalid(
                    "host",
                    format!("{h:?}: expected unix:///path, /path or tcp://host:port"),
                ));
            }
        }
        if self.timeout.is_zero() {
            return Err(Error::invalid("timeout", "must be more than 0s"));
        }
        if self.net_fault_image.trim().is_empty() {
            return Err(Error::invalid("net-fault-image", "must not be empty"));
        }
        Ok(())
    }
}

/// Parses `"1.41"` into (major, minor).
pub(crate) fn parse_api_version(v: &str) -> Result<(usize, usize)> {
    let bad = || {
        Error::invalid(
            "api-version",
            format!("{v:?}: expected MAJOR.MINOR like 1.41"),
        )
    };
    let (major, minor) = v.trim().split_once('.').ok_or_else(bad)?;
    Ok((
        major.parse().map_err(|_| bad())?,
        minor.parse().map_err(|_| bad())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: serde_json::Value) -> AdapterConfig {
        AdapterConfig {
            name: "docker".into(),
            config: json.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn defaults_apply_when_config_is_empty() {
        let c = DockerConfig::from_adapter_config(&cfg(serde_json::json!({}))).unwrap();
        assert_eq!(c, DockerConfig::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e =
            DockerConfig::from_adapter_config(&cfg(serde_json::json!({"hots": "x"}))).unwrap_err();
        assert!(e.chain_message().contains("hots"), "{}", e.chain_message());
        let e = DockerConfig::from_adapter_config(&cfg(serde_json::json!({"api-version": "x"})))
            .unwrap_err();
        assert!(
            e.chain_message().contains("api-version"),
            "{}",
            e.chain_message()
        );
        let e = DockerConfig::from_adapter_config(&cfg(serde_json::json!({"host": "ftp://x"})))
            .unwrap_err();
        assert!(e.chain_message().contains("host"), "{}", e.chain_message());
    }

    #[test]
    fn durations_and_versions_parse() {
        let c = DockerConfig::from_adapter_config(&cfg(
            serde_json::json!({"timeout": "5s", "api-version": "1.41", "host": "tcp://127.0.0.1:2375"}),
        ))
        .unwrap();
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(parse_api_version("1.41").unwrap(), (1, 41));
    }
}
