//! The node's plugins: the built-in catalog of `ire-plugins`, out-of-process plugins from a
//! directory, and what the campaign format needs to know of a plugin (fault or not; action
//! or sustained).

use std::sync::Arc;

use ire_actors::registry::DefaultPluginRegistry;
use ire_core::{Error, Plugin, PluginConfig, PluginMetadata, PluginRegistry, Result};

use crate::config::PluginsSection;

/// Plugins that act once and leave nothing to revert; every other plugin is a sustained
/// fault, active until reverted.
const ACTIONS: &[&str] = &[
    "kill",
    "stop",
    "restart",
    "delete",
    "wait-healthy",
    "restart-unhealthy",
    "scale-to",
    "backup",
    "restore",
    "restore-drill",
];

/// Plugins that heal or check rather than break: their tasks are not faults, so the
/// report measures no time to detect or recover for them.
const NOT_FAULTS: &[&str] = &[
    "wait-healthy",
    "restart-unhealthy",
    "scale-to",
    "backup",
    "restore",
    "restore-drill",
];

/// True when the plugin leaves a fault active until it is reverted.
pub fn is_sustained(md: &PluginMetadata) -> bool {
    !ACTIONS.contains(&md.name.as_str())
}

/// True when the plugin's executions are faults whose detection and recovery are measured.
pub fn is_fault(md: &PluginMetadata) -> bool {
    !NOT_FAULTS.contains(&md.name.as_str())
}

/// Every plugin of the built-in catalog.
pub fn builtin() -> Vec<Arc<dyn Plugin>> {
    crate::interim::catalog()
}

/// Registers the built-in catalog, then the out-of-process plugins of `settings.dir`, and
/// initializes each with its settings.
pub async fn register(registry: &DefaultPluginRegistry, settings: &PluginsSection) -> Result<()> {
    for p in builtin() {
        let name = p.metadata().name;
        let config = PluginConfig(
            settings
                .settings
                .get(&name)
                .cloned()
                .unwrap_or(serde_json::Value::Null),
        );
        p.initialize(&config)
            .await
            .map_err(|e| e.context(format!("initializing plugin {name}")))?;
        registry.register(p).await?;
    }
    if let Some(dir) = &settings.dir {
        registry
            .discover_from_directory(dir)
            .await
            .map_err(|e| e.context(format!("loading the plugins of {}", dir.display())))?;
    }
    for name in settings.settings.keys() {
        if registry.get(name).is_err() {
            return Err(Error::invalid(
                format!("plugins.settings.{name}"),
                format!("no plugin {name:?} is registered"),
            ));
        }
    }
    Ok(())
}
