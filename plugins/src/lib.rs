//! ire-plugins: the plugin catalog that campaigns run.
//!
//! - [`grimops`] (chaos): `kill`, `stop`, `pause` (sustained), `unpause`, `restart`,
//!   `delete`, `scale` (sustained).
//! - [`necroops`] (healing): `restart-unhealthy`, `wait-healthy`, `scale-to`.
//! - [`network`] (chaos, sustained): `network-delay`, `network-loss`, `network-corrupt`,
//!   `network-duplicate`, `network-reorder`, `network-bandwidth`, `network-partition`.
//!
//! Every plugin is written against ire-core alone: it names the adapter capabilities it
//! needs (the engine checks them before anything runs), declares whether it is an action
//! or a sustained fault, and describes its config with a type whose JSON schema is its
//! metadata's `config_schema`. A sustained fault's snapshot holds everything its revert
//! needs, so the revert runs from the ledger entry alone, on any node; a revert of what is
//! already gone succeeds. `docs/plugins.md` is the catalog.

pub mod grimops;
pub mod necroops;
pub mod network;
mod support;

use std::sync::Arc;

use ire_core::{Plugin, PluginRegistry, Result};

/// Every plugin of the catalog, one instance each.
pub fn catalog() -> Vec<Arc<dyn Plugin>> {
    let mut all = grimops::plugins();
    all.extend(necroops::plugins());
    all.extend(network::plugins());
    all
}

/// Registers every plugin of the catalog.
pub async fn register_all(registry: &dyn PluginRegistry) -> Result<()> {
    for p in catalog() {
        registry.register(p).await?;
    }
    Ok(())
}
