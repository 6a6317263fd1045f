//! `pause` (a sustained fault: the resource is frozen until the revert thaws it) and
//! `unpause` (an action: thaws a frozen resource).

use async_trait::async_trait;
use ire_core::adapter::capability;
use ire_core::resource::phase;
use ire_core::{
    Error, FaultKind, Plugin, PluginConfig, PluginContext, PluginMetadata, Resource, Result,
    Snapshot, TypedConfig,
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::support::{self, PhaseBefore};

/// The pause plugin's name.
pub const PAUSE: &str = "pause";
/// The unpause plugin's name.
pub const UNPAUSE: &str = "unpause";

/// `pause`'s and `unpause`'s config: none.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseConfig {}

/// Freezes the resource for the fault's duration (cgroup freezer, SIGSTOP): a sustained
/// fault, reverted by thawing it.
#[derive(Debug, Default)]
pub struct Pause {
    config: TypedConfig<PauseConfig>,
}

impl Pause {
    /// The plugin.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Thaws a resource: what `pause`'s revert does, on its own.
///
/// Idempotent: a resource that is not paused, or is gone, is left as it is.
pub(crate) async fn thaw(ctx: &PluginContext, key: &str) -> Result<()> {
    match support::current(ctx, key).await? {
        None => Ok(()),
        Some(r) if r.status.phase != phase::PAUSED => Ok(()),
        Some(_) => match ctx.env.require_pausing()?.resume(key).await {
            Err(e) if support::is_gone(&e) || e.is_ignorable() => Ok(()),
            r => r,
        },
    }
}

#[async_trait]
impl Plugin for Pause {
    fn metadata(&self) -> PluginMetadata {
        support::metadata(
            PAUSE,
            "Freezes the resource for the fault's duration, then thaws it",
            FaultKind::Sustained,
            &[capability::PAUSE],
            &self.config,
        )
    }

    fn validate_config(&self, config: &PluginConfig) -> Result<()> {
        self.config.parse(PAUSE, config).map(|_| ())
    }

    async fn validate(&self, ctx: &PluginContext, resource: &Resource) -> Result<()> {
        self.config.parse(PAUSE, &ctx.config)?;
        ctx.env.require_pausing()?;
        support::require_running(ctx, resource, "only a running resource can be paused").await?;
        Ok(())
    }

    async fn pre_execute(
        &self,
        ctx: &PluginContext,
        resource: &Resource,
    ) -> Result<Option<Snapshot>> {
        let now = support::existing(ctx, resource).await?;
        support::snapshot(
            PAUSE,
            &now,
            &PhaseBefore {
                phase: now.status.phase.clone(),
            },
        )
    }

    async fn execute(&self, ctx: &PluginContext, resource: &Resource) -> Result<()> {
        ctx.env
            .require_pausing()?
            .pause(resource.key.as_str())
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
        if before.phase == phase::PAUSED {
            // It was paused before the fault: leave it so.
            return Ok(());
        }
        thaw(ctx, snapshot.resource.as_str())
            .await
            .map_err(|e| e.context(format!("thawing {}", resource.key)))
    }
}

/// Thaws a paused resource: an action.
#[derive(Debug, Default)]
pub struct Unpause {
    config: TypedConfig<PauseConfig>,
}

impl Unpause {
    /// The plugin.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Plugin for Unpause {
    fn metadata(&self) -> PluginMetadata {
        support::metadata(
            UNPAUSE,
            "Thaws a paused resource",
            FaultKind::Action,
            &[capability::PAUSE],
            &self.config,
        )
    }

    fn validate_config(&self, config: &PluginConfig) -> Result<()> {
        self.config.parse(UNPAUSE, config).map(|_| ())
    }

    async fn validate(&self, ctx: &PluginContext, resource: &Resource) -> Result<()> {
        self.config.parse(UNPAUSE, &ctx.config)?;
        ctx.env.require_pausing()?;
        support::existing(ctx, resource).await?;
        Ok(())
    }

    async fn pre_execute(&self, _: &PluginContext, _: &Resource) -> Result<Option<Snapshot>> {
        Ok(None)
    }

    async fn execute(&self, ctx: &PluginContext, resource: &Resource) -> Result<()> {
        let now = support::existing(ctx, resource).await?;
        if now.status.phase != phase::PAUSED {
            return Err(Error::AlreadyDone {
                message: format!("{} is {}, not paused", resource.key, now.status.phase),
            });
        }
        thaw(ctx, resource.key.as_str()).await
    }
}
