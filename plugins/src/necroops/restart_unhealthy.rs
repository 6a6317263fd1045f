//! `restart-unhealthy`: restarts a resource whose health check has failed for at least a
//! threshold, with exponential backoff between restarts and a cap on their number.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use ire_core::execution::BackoffStrategy;
use ire_core::plugin::note;
use ire_core::{
    Error, ErrorClass, ExponentialBackoff, FaultKind, Monitor, Plugin, PluginConfig, PluginContext,
    PluginMetadata, Resource, Result, Snapshot, TypedConfig,
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::support;

/// The plugin's name.
pub const NAME: &str = "restart-unhealthy";

fn zero() -> Duration {
    Duration::ZERO
}
fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn three() -> u32 {
    3
}

/// `restart-unhealthy`'s config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RestartUnhealthyConfig {
    /// The resource must be seen unhealthy for at least this long before it is restarted
    /// (default 0s: at the first failed check). A resource that recovers meanwhile is left
    /// alone.
    #[serde(default = "zero", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub unhealthy_for: Duration,
    /// Time between health checks while observing (default 1s).
    #[serde(default = "one_second", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub interval: Duration,
    /// How long a restarted resource has to become healthy before the next restart
    /// (default 30s).
    #[serde(default = "thirty_seconds", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub healthy_within: Duration,
    /// Restarts at most (default 3); then the execution fails.
    #[serde(default = "three")]
    #[schemars(range(min = 1))]
    pub max_restarts: u32,
    /// The wait before the second restart (default 1s), doubling after each.
    #[serde(default = "one_second", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub backoff_initial: Duration,
    /// The longest wait between restarts (default 30s).
    #[serde(default = "thirty_seconds", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub backoff_max: Duration,
    /// A restarted resource counts as healed once every check has passed for this long
    /// (default 1s): a process that crashes right after starting looks healthy at first.
    #[serde(default = "one_second", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub stable_for: Duration,
    /// How long to observe a resource that is healthy before concluding there is nothing
    /// to heal (default 0s: one check).
    #[serde(default = "zero", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub observe_for: Duration,
}

/// Heals a resource by restarting it: an action. It notes `timeToDetectMs` (start of
/// observation to the first failed check), `timeToRecoverMs` (first failed check to healthy
/// again: the MTTR), `restarts`, and `healed` (false when there was nothing to heal).
#[derive(Debug, Default)]
pub struct RestartUnhealthy {
    config: TypedConfig<RestartUnhealthyConfig>,
}

impl RestartUnhealthy {
    /// The plugin.
    pub fn new() -> Self {
        Self::default()
    }
}

/// True when the resource is healthy now; a check that cannot run is an error.
async fn healthy(monitor: &dyn Monitor, resource: &Resource) -> Result<(bool, String)> {
    let s = monitor.check_health(resource).await?;
    Ok((s.is_healthy(), s.message))
}

/// Waits until every check has passed for `c.stable_for`, within `c.healthy_within`.
async fn wait_stable(
    ctx: &PluginContext,
    monitor: &dyn Monitor,
    resource: &Resource,
    c: &RestartUnhealthyConfig,
) -> Result<()> {
    let deadline = Instant::now() + c.healthy_within;
    let mut since: Option<Instant> = None;
    let mut last = String::from("not checked");
    loop {
        match healthy(monitor, resource).await {
            Ok((true, _)) => {
                let t = *since.get_or_insert_with(Instant::now);
                if t.elapsed() >= c.stable_for {
                    return Ok(());
                }
            }
            Ok((false, m)) => {
                since = None;
                last = m;
            }
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => {
                since = None;
                last = e.chain_message();
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                operation: format!(
                    "waiting for {} to stay healthy for {:?} (last: {last})",
                    resource.key, c.stable_for
                ),
                after: c.healthy_within,
            });
        }
        support::sleep_or_cancel(ctx, c.interval).await?;
    }
}

/// When the resource was first seen unhealthy, once it has been unhealthy for `threshold`;
/// `None` when it was healthy (or recovered before the threshold).
async fn observe(
    ctx: &PluginContext,
    monitor: &dyn Monitor,
    resource: &Resource,
    c: &RestartUnhealthyConfig,
) -> Result<Option<Instant>> {
    let started = Instant::now();
    let mut first_bad: Option<Instant> = None;
    loop {
        let (ok, message) = healthy(monitor, resource).await?;
        let now = Instant::now();
        match (ok, first_bad) {
            (true, None) if now - started >= c.observe_for => return Ok(None),
            (true, None) => {}
            (true, Some(_)) => {
                tracing::info!(plugin = NAME, resource_id = %resource.key,
                    "recovered before the unhealthy threshold; not restarted");
                ctx.note("recoveredBy", "itself");
                return Ok(None);
            }
            (false, None) => {
                tracing::info!(plugin = NAME, resource_id = %resource.key, "unhealthy: {message}");
                ctx.note(note::TIME_TO_DETECT_MS, (now - started).as_millis() as u64);
                first_bad = Some(now);
                if c.unhealthy_for.is_zero() {
                    return Ok(first_bad);
                }
            }
            (false, Some(t)) if now - t >= c.unhealthy_for => return Ok(Some(t)),
            (false, Some(_)) => {}
        }
        support::sleep_or_cancel(ctx, c.interval).await?;
    }
}

#[async_trait]
impl Plugin for RestartUnhealthy {
    fn metadata(&self) -> PluginMetadata {
        support::metadata(
            NAME,
            "Restarts the resource when it has been unhealthy for at least a threshold, with backoff and a retry cap",
            FaultKind::Action,
            &[],
            &self.config,
        )
    }

    fn validate_config(&self, config: &PluginConfig) -> Result<()> {
        let c = self.config.parse(NAME, config)?;
        if c.backoff_max < c.backoff_initial {
            return Err(Error::invalid(
                format!("config of plugin {NAME} field backoff-max"),
                "must not be shorter than backoff-initial",
            ));
        }
        Ok(())
    }

    async fn validate(&self, ctx: &PluginContext, _resource: &Resource) -> Result<()> {
        self.validate_config(&ctx.config)?;
        support::monitor(ctx, NAME)?;
        Ok(())
    }

    async fn pre_execute(&self, _: &PluginContext, _: &Resource) -> Result<Option<Snapshot>> {
        Ok(None)
    }

    async fn execute(&self, ctx: &PluginContext, resource: &Resource) -> Result<()> {
        let c = self.config.parse(NAME, &ctx.config)?;
        let monitor = support::monitor(ctx, NAME)?;
        let Some(first_bad) = observe(ctx, monitor.as_ref(), resource, &c).await? else {
            ctx.note("healed", false);
            ctx.note("restarts", 0);
            return Ok(());
        };
        let backoff = ExponentialBackoff {
            initial: c.backoff_initial,
            max: c.backoff_max,
        };
        let mut last = String::new();
        for restart in 1..=c.max_restarts {
            if restart > 1 {
                support::sleep_or_cancel(ctx, backoff.next_delay(restart - 1)).await?;
            }
            ctx.report_progress(
                (restart * 100 / (c.max_restarts + 1)) as u8,
                "restart",
                format!("restart {restart} of at most {}", c.max_restarts),
            );
            ctx.note("restarts", restart);
            ctx.env.restart_resource(resource.key.as_str()).await?;
            match wait_stable(ctx, monitor.as_ref(), resource, &c).await {
                Ok(()) => {
                    let mttr = first_bad.elapsed();
                    ctx.note(note::TIME_TO_RECOVER_MS, mttr.as_millis() as u64);
                    ctx.note("healed", true);
                    tracing::info!(plugin = NAME, resource_id = %resource.key, restarts = restart,
                        mttr_ms = mttr.as_millis() as u64, "healed");
                    return Ok(());
                }
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => last = e.chain_message(),
            }
        }
        ctx.note("healed", false);
        Err(Error::other(
            ErrorClass::Fatal,
            format!(
                "{} still unhealthy after {} restart(s): {last}",
                resource.key, c.max_restarts
            ),
            None,
        ))
    }
}
