//! What the catalog's plugins share: metadata, the resource's current state, "already gone".

use std::time::Duration;

use ire_core::resource::phase;
use ire_core::{
    Error, FaultKind, PluginContext, PluginMetadata, Resource, Result, Snapshot, TypedConfig,
};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The catalog's version: the crate's.
fn version() -> semver::Version {
    env!("CARGO_PKG_VERSION")
        .parse()
        .expect("the crate version is semver")
}

/// A catalog plugin's metadata.
pub(crate) fn metadata<C: JsonSchema + DeserializeOwned>(
    name: &str,
    description: &str,
    kind: FaultKind,
    capabilities: &[&str],
    config: &TypedConfig<C>,
) -> PluginMetadata {
    let mut md = PluginMetadata::new(name, version(), description, kind);
    md.author = "ire".into();
    md.required_capabilities = capabilities.iter().map(|c| (*c).to_owned()).collect();
    md.config_schema = config.schema();
    md
}

/// True when the error says the thing is not there (any more).
pub(crate) fn is_gone(e: &Error) -> bool {
    matches!(e.root(), Error::NotFound { .. })
}

/// The resource as the adapter sees it now, by its stable key; `None` when it is gone.
pub(crate) async fn current(ctx: &PluginContext, key: &str) -> Result<Option<Resource>> {
    match ctx.env.get_resource(key).await {
        Ok(r) => Ok(Some(r)),
        Err(e) if is_gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The resource's current state; an error naming it when it is gone.
pub(crate) async fn existing(ctx: &PluginContext, resource: &Resource) -> Result<Resource> {
    current(ctx, resource.key.as_str())
        .await?
        .ok_or_else(|| Error::not_found("resource", resource.key.as_str()))
}

/// Fails unless the resource is running now: `what` says what needs it running.
pub(crate) async fn require_running(
    ctx: &PluginContext,
    resource: &Resource,
    what: &str,
) -> Result<Resource> {
    let now = existing(ctx, resource).await?;
    if now.status.phase != phase::RUNNING {
        return Err(Error::invalid(
            format!("resource {}", resource.key),
            format!("is {}, not running: {what}", now.status.phase),
        ));
    }
    Ok(now)
}

/// The phase a resource had before a fault, the snapshot of faults whose revert puts it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PhaseBefore {
    /// The phase.
    pub phase: String,
}

/// A snapshot of `state` for `plugin`, taken from the resource's current state.
pub(crate) fn snapshot<T: Serialize>(
    plugin: &str,
    resource: &Resource,
    state: &T,
) -> Result<Option<Snapshot>> {
    Snapshot::new(plugin, resource, state).map(Some)
}

/// Sleeps `d`, or fails with `Canceled` as soon as the execution is canceled.
pub(crate) async fn sleep_or_cancel(ctx: &PluginContext, d: Duration) -> Result<()> {
    tokio::select! {
        _ = ctx.cancel.cancelled() => Err(Error::Canceled { message: format!("execution {}", ctx.execution_id) }),
        _ = tokio::time::sleep(d) => Ok(()),
    }
}

/// The monitor the engine gave the plugin, or an error saying the node has none.
pub(crate) fn monitor(
    ctx: &PluginContext,
    plugin: &str,
) -> Result<std::sync::Arc<dyn ire_core::Monitor>> {
    ctx.monitor.clone().ok_or_else(|| {
        Error::unsupported(
            format!("plugin {plugin} (it checks health through the node's monitor)"),
            "this engine (no monitor is configured)",
        )
    })
}
