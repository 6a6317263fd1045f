//! `wait-healthy`: succeeds once the resource is healthy, within a timeout.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use ire_core::plugin::note;
use ire_core::{
    Error, FaultKind, Plugin, PluginConfig, PluginContext, PluginMetadata, Resource, Result,
    Snapshot, TypedConfig,
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::support;

/// The plugin's name.
pub const NAME: &str = "wait-healthy";

fn sixty_seconds() -> Duration {
    Duration::from_secs(60)
}

/// `wait-healthy`'s config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WaitHealthyConfig {
    /// How long the resource has to become healthy (default 60s).
    #[serde(default = "sixty_seconds", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

/// Waits until the resource is healthy (by its health check, or running when it has none):
/// an action that changes nothing. Notes how long it waited (`timeToRecoverMs`).
#[derive(Debug, Default)]
pub struct WaitHealthy {
    config: TypedConfig<WaitHealthyConfig>,
}

impl WaitHealthy {
    /// The plugin.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Plugin for WaitHealthy {
    fn metadata(&self) -> PluginMetadata {
        support::metadata(
            NAME,
            "Succeeds once the resource is healthy; fails when it is not within the timeout",
            FaultKind::Action,
            &[],
            &self.config,
        )
    }

    fn validate_config(&self, config: &PluginConfig) -> Result<()> {
        self.config.parse(NAME, config).map(|_| ())
    }

    async fn validate(&self, ctx: &PluginContext, _resource: &Resource) -> Result<()> {
        self.config.parse(NAME, &ctx.config)?;
        support::monitor(ctx, NAME)?;
        Ok(())
    }

    async fn pre_execute(&self, _: &PluginContext, _: &Resource) -> Result<Option<Snapshot>> {
        Ok(None)
    }

    async fn execute(&self, ctx: &PluginContext, resource: &Resource) -> Result<()> {
        let c = self.config.parse(NAME, &ctx.config)?;
        let monitor = support::monitor(ctx, NAME)?;
        let started = Instant::now();
        let waited = tokio::select! {
            _ = ctx.cancel.cancelled() => Err(Error::Canceled { message: format!("waiting for {} to be healthy", resource.key) }),
            r = monitor.wait_for_healthy(resource, c.timeout) => r,
        };
        waited?;
        ctx.note(
            note::TIME_TO_RECOVER_MS,
            started.elapsed().as_millis() as u64,
        );
        Ok(())
    }
}
