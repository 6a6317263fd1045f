//! A stand-in for the plugin catalog of `ire-plugins` until it lands: `kill`, `pause`,
//! `wait-healthy` and `restart-unhealthy`, just enough for `ire demo`. Removed when the
//! catalog is on main.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ire_core::{
    Error, Plugin, PluginConfig, PluginContext, PluginMetadata, Resource, Result, Signal, Snapshot,
};
use serde::Deserialize;

fn meta(name: &str, description: &str, caps: &[&str]) -> PluginMetadata {
    let kind = if matches!(name, "pause" | "scale") {
        ire_core::FaultKind::Sustained
    } else {
        ire_core::FaultKind::Action
    };
    let mut m = PluginMetadata::new(name, semver::Version::new(0, 1, 0), description, kind);
    m.required_capabilities = caps.iter().map(|c| (*c).to_owned()).collect();
    m
}

/// Parses a config, naming the field that is wrong (`config of plugin kill field signal`).
fn parse<T: serde::de::DeserializeOwned>(plugin: &str, c: &PluginConfig) -> Result<T> {
    let v = match &c.0 {
        serde_json::Value::Null => serde_json::json!({}),
        v => v.clone(),
    };
    serde_path_to_error::deserialize(v).map_err(|e| {
        Error::invalid(
            format!("config of plugin {plugin} field {}", e.path()),
            e.inner().to_string(),
        )
    })
}

fn monitor(ctx: &PluginContext) -> Result<Arc<dyn ire_core::Monitor>> {
    ctx.monitor
        .clone()
        .ok_or_else(|| Error::unsupported("health checks", "this node (no monitor)"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KillConfig {
    #[serde(default = "kill")]
    signal: Signal,
}
fn kill() -> Signal {
    Signal::kill()
}

struct Kill;

#[async_trait]
impl Plugin for Kill {
    fn metadata(&self) -> PluginMetadata {
        meta("kill", "Sends a signal (SIGKILL by default)", &["signals"])
    }
    fn validate_config(&self, c: &PluginConfig) -> Result<()> {
        parse::<KillConfig>("kill", c).map(|_| ())
    }
    async fn validate(&self, ctx: &PluginContext, _: &Resource) -> Result<()> {
        self.validate_config(&ctx.config)
    }
    async fn pre_execute(&self, _: &PluginContext, _: &Resource) -> Result<Option<Snapshot>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &PluginContext, r: &Resource) -> Result<()> {
        let c: KillConfig = parse("kill", &ctx.config)?;
        ctx.env
            .require_signals()?
            .send_signal(r.key.as_str(), &c.signal)
            .await
    }
}

struct Pause;

#[async_trait]
impl Plugin for Pause {
    fn metadata(&self) -> PluginMetadata {
        meta("pause", "Freezes the resource until reverted", &["pause"])
    }
    async fn validate(&self, _: &PluginContext, _: &Resource) -> Result<()> {
        Ok(())
    }
    async fn pre_execute(&self, _: &PluginContext, r: &Resource) -> Result<Option<Snapshot>> {
        Snapshot::new("pause", r, &r.status.phase).map(Some)
    }
    async fn execute(&self, ctx: &PluginContext, r: &Resource) -> Result<()> {
        ctx.env.require_pausing()?.pause(r.key.as_str()).await
    }
    fn supports_rollback(&self) -> bool {
        true
    }
    async fn rollback(&self, ctx: &PluginContext, r: &Resource, _: &Snapshot) -> Result<()> {
        ctx.env.require_pausing()?.resume(r.key.as_str()).await
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct WaitConfig {
    #[serde(default = "sixty", with = "humantime_serde")]
    timeout: Duration,
}
fn sixty() -> Duration {
    Duration::from_secs(60)
}

struct WaitHealthy;

#[async_trait]
impl Plugin for WaitHealthy {
    fn metadata(&self) -> PluginMetadata {
        meta("wait-healthy", "Waits until the resource is healthy", &[])
    }
    fn validate_config(&self, c: &PluginConfig) -> Result<()> {
        parse::<WaitConfig>("wait-healthy", c).map(|_| ())
    }
    async fn validate(&self, _: &PluginContext, _: &Resource) -> Result<()> {
        Ok(())
    }
    async fn pre_execute(&self, _: &PluginContext, _: &Resource) -> Result<Option<Snapshot>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &PluginContext, r: &Resource) -> Result<()> {
        let c: WaitConfig = parse("wait-healthy", &ctx.config)?;
        monitor(ctx)?.wait_for_healthy(r, c.timeout).await
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct HealConfig {
    #[serde(default, with = "humantime_serde")]
    unhealthy_for: Duration,
    #[serde(default = "thirty", with = "humantime_serde")]
    healthy_within: Duration,
}
fn thirty() -> Duration {
    Duration::from_secs(30)
}

struct RestartUnhealthy;

#[async_trait]
impl Plugin for RestartUnhealthy {
    fn metadata(&self) -> PluginMetadata {
        meta(
            "restart-unhealthy",
            "Restarts the resource when unhealthy",
            &[],
        )
    }
    async fn validate(&self, _: &PluginContext, _: &Resource) -> Result<()> {
        Ok(())
    }
    async fn pre_execute(&self, _: &PluginContext, _: &Resource) -> Result<Option<Snapshot>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &PluginContext, r: &Resource) -> Result<()> {
        let c: HealConfig = parse("restart-unhealthy", &ctx.config)?;
        let m = monitor(ctx)?;
        let first = Instant::now();
        loop {
            if m.check_health(r)
                .await
                .map(|h| h.is_healthy())
                .unwrap_or(false)
            {
                ctx.note_interim("healed", false);
                return Ok(());
            }
            if first.elapsed() >= c.unhealthy_for {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ctx.env.restart_resource(r.key.as_str()).await?;
        m.wait_for_healthy(r, c.healthy_within).await?;
        ctx.note_interim("restarts", 1u64);
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleConfig {
    replicas: i32,
}

struct Scale;

#[async_trait]
impl Plugin for Scale {
    fn metadata(&self) -> PluginMetadata {
        meta("scale", "Sets the replica count until reverted", &["scale"])
    }
    fn validate_config(&self, c: &PluginConfig) -> Result<()> {
        parse::<ScaleConfig>("scale", c).map(|_| ())
    }
    async fn validate(&self, ctx: &PluginContext, _: &Resource) -> Result<()> {
        self.validate_config(&ctx.config)
    }
    async fn pre_execute(&self, ctx: &PluginContext, r: &Resource) -> Result<Option<Snapshot>> {
        let n = ctx.env.require_scaling()?.replicas(r.key.as_str()).await?;
        Snapshot::new("scale", r, &n).map(Some)
    }
    async fn execute(&self, ctx: &PluginContext, r: &Resource) -> Result<()> {
        let c: ScaleConfig = parse("scale", &ctx.config)?;
        ctx.env
            .require_scaling()?
            .scale(r.key.as_str(), c.replicas)
            .await
    }
    fn supports_rollback(&self) -> bool {
        true
    }
    async fn rollback(&self, ctx: &PluginContext, r: &Resource, s: &Snapshot) -> Result<()> {
        let n: i32 = s.state_as()?;
        ctx.env.require_scaling()?.scale(r.key.as_str(), n).await
    }
}

trait Note {
    fn note_interim(&self, _key: &str, _v: impl Into<serde_json::Value>) {}
}
impl Note for PluginContext {}

/// The stand-in catalog.
pub fn catalog() -> Vec<Arc<dyn Plugin>> {
    vec![
        Arc::new(Kill),
        Arc::new(Pause),
        Arc::new(WaitHealthy),
        Arc::new(RestartUnhealthy),
        Arc::new(Scale),
    ]
}
