//! `scale-to`: sets a replica count (restores capacity).

use async_trait::async_trait;
use ire_core::adapter::capability;
use ire_core::{
    FaultKind, Plugin, PluginConfig, PluginContext, PluginMetadata, Resource, Result, Snapshot,
    TypedConfig,
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::support;

/// The plugin's name.
pub const NAME: &str = "scale-to";

/// `scale-to`'s config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScaleToConfig {
    /// The replica count to set.
    #[schemars(range(min = 0))]
    pub replicas: i32,
}

/// Sets the replica count: an action (healing: it is the desired state, nothing to revert).
/// Notes the count it found (`replicasBefore`).
#[derive(Debug, Default)]
pub struct ScaleTo {
    config: TypedConfig<ScaleToConfig>,
}

impl ScaleTo {
    /// The plugin.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Plugin for ScaleTo {
    fn metadata(&self) -> PluginMetadata {
        support::metadata(
            NAME,
            "Sets the resource's replica count (restores capacity)",
            FaultKind::Action,
            &[capability::SCALE],
            &self.config,
        )
    }

    fn validate_config(&self, config: &PluginConfig) -> Result<()> {
        self.config.parse(NAME, config).map(|_| ())
    }

    async fn validate(&self, ctx: &PluginContext, _resource: &Resource) -> Result<()> {
        self.config.parse(NAME, &ctx.config)?;
        ctx.env.require_scaling()?;
        Ok(())
    }

    async fn pre_execute(&self, _: &PluginContext, _: &Resource) -> Result<Option<Snapshot>> {
        Ok(None)
    }

    async fn execute(&self, ctx: &PluginContext, resource: &Resource) -> Result<()> {
        let c = self.config.parse(NAME, &ctx.config)?;
        let scaling = ctx.env.require_scaling()?;
        let key = resource.key.as_str();
        let before = scaling.replicas(key).await?;
        ctx.note("replicasBefore", before);
        if before == c.replicas {
            return Ok(());
        }
        scaling.scale(key, c.replicas).await
    }
}
