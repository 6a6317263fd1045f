//! `restart`: restarts the resource (stop, then start; a rollout for workloads).

use async_trait::async_trait;
use ire_core::{
    FaultKind, Plugin, PluginConfig, PluginContext, PluginMetadata, Resource, Result, Snapshot,
    TypedConfig,
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::support;

/// The plugin's name.
pub const NAME: &str = "restart";

/// `restart`'s config: none.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartConfig {}

/// Restarts the resource: an action.
#[derive(Debug, Default)]
pub struct Restart {
    config: TypedConfig<RestartConfig>,
}

impl Restart {
    /// The plugin.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Plugin for Restart {
    fn metadata(&self) -> PluginMetadata {
        support::metadata(
            NAME,
            "Restarts the resource",
            FaultKind::Action,
            &[],
            &self.config,
        )
    }

    fn validate_config(&self, config: &PluginConfig) -> Result<()> {
        self.config.parse(NAME, config).map(|_| ())
    }

    async fn validate(&self, ctx: &PluginContext, resource: &Resource) -> Result<()> {
        self.config.parse(NAME, &ctx.config)?;
        support::existing(ctx, resource).await?;
        Ok(())
    }

    async fn pre_execute(&self, _: &PluginContext, _: &Resource) -> Result<Option<Snapshot>> {
        Ok(None)
    }

    async fn execute(&self, ctx: &PluginContext, resource: &Resource) -> Result<()> {
        ctx.env.restart_resource(resource.key.as_str()).await
    }
}
