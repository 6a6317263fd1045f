//! `kill`: sends a signal (SIGKILL by default) to the resource's main process.

use async_trait::async_trait;
use ire_core::adapter::capability;
use ire_core::{
    FaultKind, Plugin, PluginConfig, PluginContext, PluginMetadata, Resource, Result, Signal,
    Snapshot, TypedConfig,
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::support;

/// The plugin's name.
pub const NAME: &str = "kill";

/// `kill`'s config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KillConfig {
    /// The signal to send (default SIGKILL).
    #[serde(default = "Signal::kill")]
    pub signal: Signal,
}

/// Sends a signal to the resource: an action (nothing stays to revert; what happens next is
/// the environment's restart policy, or NecroOps').
#[derive(Debug, Default)]
pub struct Kill {
    config: TypedConfig<KillConfig>,
}

impl Kill {
    /// The plugin.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Plugin for Kill {
    fn metadata(&self) -> PluginMetadata {
        support::metadata(
            NAME,
            "Sends a signal (SIGKILL by default) to the resource's main process",
            FaultKind::Action,
            &[capability::SIGNALS],
            &self.config,
        )
    }

    fn validate_config(&self, config: &PluginConfig) -> Result<()> {
        self.config.parse(NAME, config).map(|_| ())
    }

    async fn validate(&self, ctx: &PluginContext, resource: &Resource) -> Result<()> {
        self.config.parse(NAME, &ctx.config)?;
        ctx.env.require_signals()?;
        support::require_running(ctx, resource, "there is nothing to kill").await?;
        Ok(())
    }

    async fn pre_execute(&self, _: &PluginContext, _: &Resource) -> Result<Option<Snapshot>> {
        Ok(None)
    }

    async fn execute(&self, ctx: &PluginContext, resource: &Resource) -> Result<()> {
        let c = self.config.parse(NAME, &ctx.config)?;
        ctx.env
            .require_signals()?
            .send_signal(resource.key.as_str(), &c.signal)
            .await
    }
}
