//! `delete`: deletes the resource; a workflow's rollback creates it again from its spec
//! where the adapter can create resources.

use std::time::Duration;

use async_trait::async_trait;
use ire_core::adapter::capability;
use ire_core::resource::DeleteOptions;
use ire_core::{
    Error, FaultKind, Plugin, PluginConfig, PluginContext, PluginMetadata, Resource, Result,
    Snapshot, TypedConfig,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::support;

/// The plugin's name.
pub const NAME: &str = "delete";

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

/// `delete`'s config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeleteConfig {
    /// How long the resource gets to stop before it is removed (default 10s).
    #[serde(default = "ten_seconds", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub grace_period: Duration,
    /// Remove it at once, without the grace period.
    #[serde(default)]
    pub force: bool,
}

/// What `delete` keeps to create the resource again: the resource as it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deleted {
    /// The resource before it was deleted (its spec is what is created again).
    pub resource: Resource,
}

/// Deletes the resource: an action. A workflow's rollback creates it again as it was (its
/// name and labels, so its key, and its spec: image, command, arguments, environment,
/// ports, volumes, health check), where the adapter lists `create` and can name what it
/// creates (`EnvironmentAdapter::recreate_resource`: docker, process).
#[derive(Debug, Default)]
pub struct Delete {
    config: TypedConfig<DeleteConfig>,
}

impl Delete {
    /// The plugin.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Plugin for Delete {
    fn metadata(&self) -> PluginMetadata {
        support::metadata(
            NAME,
            "Deletes the resource (created again from its spec on rollback where the adapter can create)",
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

    async fn pre_execute(
        &self,
        ctx: &PluginContext,
        resource: &Resource,
    ) -> Result<Option<Snapshot>> {
        let now = support::existing(ctx, resource).await?;
        support::snapshot(
            NAME,
            &now,
            &Deleted {
                resource: now.clone(),
            },
        )
    }

    async fn execute(&self, ctx: &PluginContext, resource: &Resource) -> Result<()> {
        let c = self.config.parse(NAME, &ctx.config)?;
        let options = DeleteOptions {
            grace_period: c.grace_period,
            force: c.force,
        };
        ctx.env
            .delete_resource(resource.key.as_str(), &options)
            .await
    }

    fn supports_rollback(&self) -> bool {
        true
    }

    async fn rollback(
        &self,
        ctx: &PluginContext,
        resource: &Resource,
        snapshot: &Snapshot,
    ) -> Result<()> {
        let deleted: Deleted = snapshot.state_as()?;
        // Already back (its controller or compose recreated it, or a revert ran before).
        if support::current(ctx, snapshot.resource.as_str())
            .await?
            .is_some()
        {
            return Ok(());
        }
        let info = ctx.env.adapter_info();
        if !info.has_capability(capability::CREATE) {
            return Err(Error::unsupported(
                format!("creating {} again after its deletion", resource.key),
                format!("adapter {} (it cannot create resources)", info.name),
            ));
        }
        match ctx.env.recreate_resource(&deleted.resource).await {
            Ok(created) => {
                tracing::info!(plugin = NAME, resource_id = %created.key, "deleted resource created again");
                Ok(())
            }
            // Created meanwhile under its name (a concurrent revert): it is back.
            Err(e)
                if matches!(e.root(), Error::Conflict { .. })
                    && support::current(ctx, snapshot.resource.as_str())
                        .await?
                        .is_some() =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
