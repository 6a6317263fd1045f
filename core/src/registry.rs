//! The plugin registry's contract: registration, discovery, validation and reload.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::plugin::{Plugin, PluginFilter, PluginMetadata};

/// Loads plugins that live outside the binary (a manifest and an executable).
#[async_trait]
pub trait PluginLoader: Send + Sync + 'static {
    /// Loads the plugin described at `path` (a manifest file or a plugin directory).
    async fn load(&self, path: &Path) -> Result<Arc<dyn Plugin>>;
    /// Releases what loading took (processes, handles).
    async fn unload(&self, plugin: &Arc<dyn Plugin>) -> Result<()>;
}

/// An extra check run on every registration.
pub trait PluginValidator: Send + Sync + 'static {
    /// `Ok` when the plugin may be registered.
    fn validate(&self, plugin: &dyn Plugin) -> Result<()>;
}

/// Holds the node's plugins (the seed's PluginRegistry).
#[async_trait]
pub trait PluginRegistry: Send + Sync + 'static {
    /// Validates and registers a plugin; its dependencies must be registered.
    async fn register(&self, plugin: Arc<dyn Plugin>) -> Result<()>;
    /// Removes a plugin; fails while others depend on it.
    async fn unregister(&self, name: &str) -> Result<()>;
    /// Loads and registers the plugin at a path.
    async fn discover(&self, path: &Path) -> Result<PluginMetadata>;
    /// Loads and registers every plugin in a directory.
    async fn discover_from_directory(&self, dir: &Path) -> Result<Vec<PluginMetadata>>;
    /// A plugin by name, or `NotFound`.
    fn get(&self, name: &str) -> Result<Arc<dyn Plugin>>;
    /// Plugins that match, by name.
    fn list(&self, filter: &PluginFilter) -> Result<Vec<PluginMetadata>>;
    /// Checks metadata and runs the validators, without registering.
    fn validate(&self, plugin: &dyn Plugin) -> Result<()>;
    /// Checks that the plugin's dependencies are registered, in range, and acyclic.
    fn validate_dependencies(&self, plugin: &dyn Plugin) -> Result<()>;
    /// Loads a discovered plugin again from where it was found, replacing it in place.
    async fn reload(&self, name: &str) -> Result<PluginMetadata>;
    /// Sets the loader used by discovery and reload.
    fn set_loader(&self, loader: Arc<dyn PluginLoader>) -> Result<()>;
}
