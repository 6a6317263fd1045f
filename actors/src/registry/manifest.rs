//! The manifest of an out-of-process plugin (`plugin.yaml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ire_core::{Error, FaultKind, PluginDependency, PluginMetadata, Result};
use serde::Deserialize;

/// The file name a plugin directory holds its manifest under.
pub const MANIFEST_FILE: &str = "plugin.yaml";

fn default_hook_timeout() -> Duration {
    Duration::from_secs(60)
}

/// What `plugin.yaml` says (see `docs/engine.md`, "Out-of-process plugins").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginManifest {
    /// Unique name.
    pub name: String,
    /// Semantic version.
    pub version: semver::Version,
    /// One line on what it does.
    pub description: String,
    /// Who wrote it.
    #[serde(default)]
    pub author: String,
    /// `action` (nothing stays to revert) or `sustained` (active until its rollback hook
    /// reverts it); required: a plugin must say which it is.
    pub fault_kind: FaultKind,
    /// Resource kinds it works on (empty: every kind).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Capabilities it needs from the adapter.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Plugins it needs: name -> semver requirement.
    #[serde(default)]
    pub dependencies: BTreeMap<String, semver::VersionReq>,
    /// JSON schema of its step config.
    #[serde(default)]
    pub config_schema: serde_json::Value,
    /// The program to run, relative to the manifest's directory.
    pub executable: PathBuf,
    /// Arguments given to the program before the protocol starts.
    #[serde(default)]
    pub args: Vec<String>,
    /// True when the program implements the `rollback` hook.
    #[serde(default)]
    pub rollback: bool,
    /// How long one hook may take.
    #[serde(default = "default_hook_timeout", with = "humantime_serde_compat")]
    pub hook_timeout: Duration,
}

/// humantime durations for serde without another dependency.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

impl PluginManifest {
    /// Parses manifest text; errors name the file, line and field.
    pub fn parse(text: &str, origin: &Path) -> Result<Self> {
        let m: PluginManifest = serde_yaml_ng::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(" line {}", l.line()))
                .unwrap_or_default();
            Error::invalid(
                format!("plugin manifest {}{at}", origin.display()),
                e.to_string(),
            )
        })?;
        m.metadata()
            .validate()
            .map_err(|e| e.context(format!("plugin manifest {}", origin.display())))?;
        // A schema that is not JSON schema is refused here, not at the first campaign.
        ire_core::ConfigSchema::compile(&m.name, &m.config_schema).map_err(|e| {
            e.context(format!(
                "plugin manifest {} config-schema",
                origin.display()
            ))
        })?;
        if m.fault_kind == FaultKind::Sustained && !m.rollback {
            return Err(Error::invalid(
                format!("plugin manifest {} rollback", origin.display()),
                "a sustained fault must implement the rollback hook (rollback: true): it is how the fault is reverted",
            ));
        }
        if m.executable.as_os_str().is_empty() {
            return Err(Error::invalid(
                format!("plugin manifest {} executable", origin.display()),
                "must name a program",
            ));
        }
        Ok(m)
    }

    /// Reads and parses a manifest file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid(
                format!("plugin manifest {}", path.display()),
                format!("cannot read: {e}"),
            )
        })?;
        Self::parse(&text, path)
    }

    /// The plugin's metadata.
    pub fn metadata(&self) -> PluginMetadata {
        PluginMetadata {
            name: self.name.clone(),
            version: self.version.clone(),
            description: self.description.clone(),
            author: self.author.clone(),
            fault_kind: self.fault_kind,
            supported_kinds: self.kinds.clone(),
            required_capabilities: self.capabilities.clone(),
            dependencies: self
                .dependencies
                .iter()
                .map(|(n, v)| PluginDependency {
                    plugin_name: n.clone(),
                    version: v.clone(),
                })
                .collect(),
            config_schema: self.config_schema.clone(),
        }
    }
}

/// The manifest file for a path that is a manifest or a plugin directory.
pub fn manifest_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(MANIFEST_FILE)
    } else {
        path.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_maps_to_metadata() {
        let m = PluginManifest::parse(
            "name: marker\nversion: 1.2.3\ndescription: d\nfault-kind: action\nkinds: [container]\n\
             capabilities: [exec]\ndependencies: {base: \"^1\"}\nexecutable: ./p.sh\n\
             hook-timeout: 5s\n",
            Path::new("p/plugin.yaml"),
        )
        .unwrap();
        let md = m.metadata();
        assert_eq!(md.version, semver::Version::new(1, 2, 3));
        assert_eq!(md.dependencies[0].plugin_name, "base");
        assert_eq!(m.hook_timeout, Duration::from_secs(5));
    }

    #[test]
    fn unknown_field_is_an_error_with_file_and_line() {
        let e = PluginManifest::parse(
            "name: marker\nversion: 1.0.0\ndescription: d\nfault-kind: action\nexecutabel: x\n",
            Path::new("p/plugin.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("p/plugin.yaml line 5") && e.contains("executabel"),
            "{e}"
        );
    }

    #[test]
    fn bad_version_is_rejected() {
        let e = PluginManifest::parse(
            "name: marker\nversion: one\ndescription: d\nexecutable: x\n",
            Path::new("plugin.yaml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
