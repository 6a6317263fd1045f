//! `scale`: sets the replica count for the fault's duration, then restores the original.

use async_trait::async_trait;
use ire_core::adapter::capability;
use ire_core::{
    FaultKind, Plugin, PluginConfig, PluginContext, PluginMetadata, Resource, Result, Snapshot,
    TypedConfig,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::support;

/// The plugin's name.
pub const NAME: &str = "scale";

/// `scale`'s config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScaleConfig {
    /// The replica count during the fault.
    #[schemars(range(min = 0))]
    pub replicas: i32,
}

/// The replica count before the fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicasBefore {
    /// The count.
    pub replicas: i32,
}

/// Sets the replica count: a sustained fault, reverted to the original count.
#[derive(Debug, Default)]
pub struct Scale {
    config: TypedConfig<ScaleConfig>,
}

impl Scale {
    /// The plugin.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Plugin for Scale {
    fn metadata(&self) -> PluginMetadata {
        support::metadata(
            NAME,
            "Sets the replica count for the fault's duration, then restores the original count",
            FaultKind::Sustained,
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

    async fn pre_execute(
        &self,
        ctx: &PluginContext,
        resource: &Resource,
    ) -> Result<Option<Snapshot>> {
        let replicas = ctx
            .env
            .require_scaling()?
            .replicas(resource.key.as_str())
            .await?;
        support::snapshot(NAME, resource, &ReplicasBefore { replicas })
    }

    async fn execute(&self, ctx: &PluginContext, resource: &Resource) -> Result<()> {
        let c = self.config.parse(NAME, &ctx.config)?;
        ctx.env
            .require_scaling()?
            .scale(resource.key.as_str(), c.replicas)
            .await
    }

    fn supports_rollback(&self) -> bool {
        true
    }

    async fn rollback(
        &self,
        ctx: &PluginContext,
        _resource: &Resource,
        snapshot: &Snapshot,
    ) -> Result<()> {
        let before: ReplicasBefore = snapshot.state_as()?;
        let scaling = ctx.env.require_scaling()?;
        let key = snapshot.resource.as_str();
        // Setting a count is idempotent; reading first spares the environment a no-op.
        if scaling.replicas(key).await.ok() == Some(before.replicas) {
            return Ok(());
        }
        scaling.scale(key, before.replicas).await
    }
}
