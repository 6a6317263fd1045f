//! `stop`: stops the resource, killing it after a grace period.

use std::time::Duration;

use async_trait::async_trait;
use ire_core::resource::phase;
use ire_core::{
    Error, FaultKind, Plugin, PluginConfig, PluginContext, PluginMetadata, Resource, Result,
    Snapshot, TypedConfig,
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::support::{self, PhaseBefore};

/// The plugin's name.
pub const NAME: &str = "stop";

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

/// `stop`'s config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StopConfig {
    /// How long the resource gets to stop after SIGTERM before it is killed (default 10s).
    #[serde(default = "ten_seconds", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub grace_period: Duration,
}

/// Stops the resource gracefully: an action. A workflow's rollback starts it again.
#[derive(Debug, Default)]
pub struct Stop {
    config: TypedConfig<StopConfig>,
}

impl Stop {
    /// The plugin.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Plugin for Stop {
    fn metadata(&self) -> PluginMetadata {
        support::metadata(
            NAME,
            "Stops the resource (SIGTERM, then SIGKILL after the grace period)",
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
        support::require_running(ctx, resource, "there is nothing to stop").await?;
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
            &PhaseBefore {
                phase: now.status.phase.clone(),
            },
        )
    }

    async fn execute(&self, ctx: &PluginContext, resource: &Resource) -> Result<()> {
        let c = self.config.parse(NAME, &ctx.config)?;
        ctx.env
            .stop_resource(resource.key.as_str(), c.grace_period)
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
        let before: PhaseBefore = snapshot.state_as()?;
        if before.phase != phase::RUNNING {
            return Ok(());
        }
        match support::current(ctx, resource.key.as_str()).await? {
            None => Err(
                Error::not_found("resource", resource.key.as_str()).context(format!(
                    "starting {} again: it was deleted meanwhile",
                    resource.key
                )),
            ),
            Some(r) if r.is_running() => Ok(()),
            Some(_) => match ctx.env.start_resource(resource.key.as_str()).await {
                Err(e) if e.is_ignorable() => Ok(()),
                r => r,
            },
        }
    }
}
