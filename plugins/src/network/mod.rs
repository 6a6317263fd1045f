//! Network faults, each a sustained fault reverted at the end of its duration:
//! `network-delay`, `network-loss`, `network-corrupt`, `network-duplicate`,
//! `network-reorder`, `network-bandwidth`, `network-partition`.
//!
//! They are written against ire-core's [`ire_core::NetworkFaults`] capability alone, so one
//! plugin runs on every adapter that offers it (docker, processes with their own network
//! namespace, kubernetes pods). PreExecute *prepares* the fault (the adapter chooses the
//! backend, netem or the userspace emulator, resolves the peers, and names everything after
//! the fault id, changing nothing): the handle is the snapshot, recorded in the ledger
//! before Execute applies it. The revert needs that snapshot alone, on any node.

pub mod config;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ire_core::adapter::capability;
use ire_core::{
    Error, FaultKind, NetworkFaultHandle, Plugin, PluginConfig, PluginContext, PluginMetadata,
    Resource, Result, Snapshot, TypedConfig,
};

use crate::support;
use config::{
    BandwidthConfig, CorruptConfig, DelayConfig, DuplicateConfig, FaultConfig, LossConfig,
    PartitionConfig, ReorderConfig,
};

/// `network-delay`.
pub const DELAY: &str = "network-delay";
/// `network-loss`.
pub const LOSS: &str = "network-loss";
/// `network-corrupt`.
pub const CORRUPT: &str = "network-corrupt";
/// `network-duplicate`.
pub const DUPLICATE: &str = "network-duplicate";
/// `network-reorder`.
pub const REORDER: &str = "network-reorder";
/// `network-bandwidth`.
pub const BANDWIDTH: &str = "network-bandwidth";
/// `network-partition`.
pub const PARTITION: &str = "network-partition";

/// One network plugin: its config type says what the fault does.
pub struct NetworkPlugin<C: FaultConfig> {
    name: &'static str,
    description: &'static str,
    config: TypedConfig<C>,
    /// Handles prepared by PreExecute for Execute, by fault id.
    prepared: Mutex<HashMap<String, NetworkFaultHandle>>,
}

impl<C: FaultConfig> std::fmt::Debug for NetworkPlugin<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkPlugin")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<C: FaultConfig> NetworkPlugin<C> {
    fn new(name: &'static str, description: &'static str) -> Self {
        NetworkPlugin {
            name,
            description,
            config: TypedConfig::new(),
            prepared: Mutex::new(HashMap::new()),
        }
    }

    /// The fault a step's config asks for; errors name the plugin and the field.
    fn fault(&self, config: &PluginConfig) -> Result<ire_core::NetworkFault> {
        self.config
            .parse(self.name, config)?
            .fault()
            .map_err(|e| e.context(format!("config of plugin {}", self.name)))
    }

    fn prepared(&self) -> std::sync::MutexGuard<'_, HashMap<String, NetworkFaultHandle>> {
        self.prepared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The fault id the engine assigned: every artifact is named after it.
fn fault_id(ctx: &PluginContext) -> Result<&str> {
    if ctx.fault_id.is_empty() {
        return Err(Error::invalid(
            "fault id",
            "network faults need the fault id the engine assigns before PreExecute",
        ));
    }
    Ok(&ctx.fault_id)
}

#[async_trait]
impl<C: FaultConfig> Plugin for NetworkPlugin<C> {
    fn metadata(&self) -> PluginMetadata {
        support::metadata(
            self.name,
            self.description,
            FaultKind::Sustained,
            &[capability::NETWORK],
            &self.config,
        )
    }

    fn validate_config(&self, config: &PluginConfig) -> Result<()> {
        self.fault(config).map(|_| ())
    }

    async fn validate(&self, ctx: &PluginContext, _resource: &Resource) -> Result<()> {
        self.fault(&ctx.config)?;
        ctx.env.require_network_faults()?;
        Ok(())
    }

    async fn pre_execute(
        &self,
        ctx: &PluginContext,
        resource: &Resource,
    ) -> Result<Option<Snapshot>> {
        let fault = self.fault(&ctx.config)?;
        let id = fault_id(ctx)?;
        let handle = ctx
            .env
            .require_network_faults()?
            .prepare(resource.key.as_str(), id, &fault)
            .await?;
        ctx.note("networkBackend", handle.backend.to_string());
        let snapshot = support::snapshot(self.name, resource, &handle)?;
        self.prepared().insert(id.to_owned(), handle);
        Ok(snapshot)
    }

    async fn execute(&self, ctx: &PluginContext, _resource: &Resource) -> Result<()> {
        let id = fault_id(ctx)?;
        let handle = self.prepared().remove(id).ok_or_else(|| {
            Error::invalid(
                "fault id",
                format!("{id}: no fault was prepared under it (PreExecute did not run)"),
            )
        })?;
        ctx.env.require_network_faults()?.apply(&handle).await
    }

    async fn cleanup(&self, ctx: &PluginContext, _resource: &Resource) -> Result<()> {
        self.prepared().remove(&ctx.fault_id);
        Ok(())
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
        let handle: NetworkFaultHandle = snapshot.state_as()?;
        ctx.env
            .require_network_faults()?
            .revert(&handle)
            .await
            .map_err(|e| {
                e.context(format!(
                    "reverting network fault {} on {}",
                    handle.fault_id, resource.key
                ))
            })
    }
}

/// The network plugins, one instance each.
pub fn plugins() -> Vec<Arc<dyn Plugin>> {
    vec![
        Arc::new(NetworkPlugin::<DelayConfig>::new(
            DELAY,
            "Adds latency (with jitter and correlation) to the resource's packets for the \
             fault's duration",
        )),
        Arc::new(NetworkPlugin::<LossConfig>::new(
            LOSS,
            "Drops a share of the resource's packets for the fault's duration",
        )),
        Arc::new(NetworkPlugin::<CorruptConfig>::new(
            CORRUPT,
            "Flips one bit in a share of the resource's packets for the fault's duration",
        )),
        Arc::new(NetworkPlugin::<DuplicateConfig>::new(
            DUPLICATE,
            "Sends a share of the resource's packets twice for the fault's duration",
        )),
        Arc::new(NetworkPlugin::<ReorderConfig>::new(
            REORDER,
            "Sends a share of the resource's packets ahead of delayed ones for the fault's \
             duration",
        )),
        Arc::new(NetworkPlugin::<BandwidthConfig>::new(
            BANDWIDTH,
            "Limits the resource's bandwidth for the fault's duration",
        )),
        Arc::new(NetworkPlugin::<PartitionConfig>::new(
            PARTITION,
            "Cuts the resource off from the given peers (or all) for the fault's duration",
        )),
    ]
}
