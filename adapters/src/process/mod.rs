//! The process adapter: a fleet of local processes, described in a file, as ire resources.
//!
//! It needs nothing installed, which makes it the adapter of the embedded demo. Each
//! process runs in its own process group, so stop, kill, pause and resume reach what it
//! forked too. Exits are observed by awaiting the child (no polling), which is what the
//! watch stream reports. Metrics come from `/proc`.
//!
//! Keys are `<instance>/<process-name>`; a process's id is its current (or last) pid, and
//! every method accepts the key, the name, or a pid it had.

mod config;
mod fleet;
mod net_fault;
mod netns;
mod procfs;
mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use ire_core::adapter::capability;
use ire_core::{
    AdapterConfig, AdapterInfo, DeleteOptions, EnvironmentAdapter, Error, ExecOptions, ExecResult,
    Metrics, PauseControl, Resource, ResourceEventStream, ResourceFilter, ResourceSpec, Result,
    Signal, SignalControl,
};
use tokio::sync::broadcast;

pub use config::ProcessConfig;
pub use fleet::{FleetFile, ProcessNetwork, ProcessSpec};
pub use netns::NetworkConfig;
pub use supervisor::{ANNOTATION_ADDRESS, ANNOTATION_NETNS};

use supervisor::Supervisor;

/// The environment name the adapter reports.
pub const ENVIRONMENT: &str = "process";
/// The resource kind of every process.
pub const KIND_PROCESS: &str = "process";

/// Drives a fleet of local processes.
pub struct ProcessAdapter {
    sup: Arc<Supervisor>,
}

impl Default for ProcessAdapter {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ProcessAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessAdapter")
            .field("name", &self.sup.name())
            .finish()
    }
}

impl ProcessAdapter {
    /// An adapter to be [initialized](EnvironmentAdapter::initialize).
    pub fn new() -> Self {
        ProcessAdapter {
            sup: Arc::new(Supervisor::new("process", ProcessConfig::default())),
        }
    }

    /// Builds and initializes an adapter named `name`: a shortcut for `new` + `initialize`.
    pub async fn start(name: &str, config: &ProcessConfig) -> Result<Self> {
        let mut a = Self::new();
        let map = match serde_json::to_value(config) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        a.initialize(AdapterConfig {
            name: name.to_owned(),
            config: map,
        })
        .await?;
        Ok(a)
    }
}

#[async_trait]
impl EnvironmentAdapter for ProcessAdapter {
    async fn initialize(&mut self, config: AdapterConfig) -> Result<()> {
        let instance = config.name.clone();
        crate::telemetry::observed(ENVIRONMENT, &instance, "initialize", async {
            let cfg = ProcessConfig::from_adapter_config(&config)?;
            let fleet = cfg
                .fleet()
                .map_err(|e| e.context(format!("adapters.{}.config", config.name)))?;
            let name = if config.name.is_empty() {
                "process".to_owned()
            } else {
                config.name.clone()
            };
            fleet::validate_name(&name)
                .map_err(|m| Error::invalid(format!("adapters.{name}.name"), m))?;
            let autostart = cfg.autostart;
            let sup = Arc::new(Supervisor::new(&name, cfg));
            let added = fleet.iter().try_for_each(|spec| sup.add(spec.clone()));
            if let Err(e) = added {
                // Leave no network namespace behind a failed initialization.
                let _ = sup.release_networks();
                return Err(e);
            }
            if autostart {
                for spec in fleet.iter().filter(|s| s.autostart) {
                    if let Err(e) = sup.start(&spec.name) {
                        // Leave nothing running behind a failed initialization.
                        let _ = sup.stop_all(Duration::ZERO).await;
                        let _ = sup.release_networks();
                        return Err(e.context(format!("starting process {:?}", spec.name)));
                    }
                }
            }
            self.sup = sup;
            Ok(())
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, self.sup.name(), "close", async {
            self.sup.close().await
        })
        .await
    }

    async fn list_resources(&self, filter: &ResourceFilter) -> Result<Vec<Resource>> {
        crate::telemetry::observed(ENVIRONMENT, self.sup.name(), "list_resources", async {
            filter.validate()?;
            Ok(filter.apply(self.sup.resources()))
        })
        .await
    }

    async fn get_resource(&self, id: &str) -> Result<Resource> {
        crate::telemetry::observed(ENVIRONMENT, self.sup.name(), "get_resource", async {
            let name = self.sup.resolve(id)?;
            self.sup.resource(&name)
        })
        .await
    }

    async fn start_resource(&self, id: &str) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, self.sup.name(), "start_resource", async {
            let name = self.sup.resolve(id)?;
            self.sup.start(&name).map(|_| ())
        })
        .await
    }

    async fn stop_resource(&self, id: &str, grace_period: Duration) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, self.sup.name(), "stop_resource", async {
            let name = self.sup.resolve(id)?;
            self.sup.stop(&name, grace_period).await
        })
        .await
    }

    async fn restart_resource(&self, id: &str) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, self.sup.name(), "restart_resource", async {
            let name = self.sup.resolve(id)?;
            self.sup.stop(&name, self.sup.config().stop_grace).await?;
            self.sup.start(&name).map(|_| ())
        })
        .await
    }

    async fn delete_resource(&self, id: &str, options: &DeleteOptions) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, self.sup.name(), "delete_resource", async {
            let name = self.sup.resolve(id)?;
            let grace = if options.force {
                Duration::ZERO
            } else {
                options.grace_period
            };
            self.sup.stop(&name, grace).await?;
            self.sup.remove(&name)
        })
        .await
    }

    async fn create_resource(&self, spec: &ResourceSpec) -> Result<Resource> {
        crate::telemetry::observed(ENVIRONMENT, self.sup.name(), "create_resource", async {
            let p = self.sup.spec_from_resource_spec(spec)?;
            let name = p.name.clone();
            self.sup.add(p)?;
            if let Err(e) = self.sup.start(&name) {
                let _ = self.sup.remove(&name);
                return Err(e);
            }
            self.sup.resource(&name)
        })
        .await
    }

    async fn recreate_resource(&self, resource: &Resource) -> Result<Resource> {
        crate::telemetry::observed(ENVIRONMENT, self.sup.name(), "recreate_resource", async {
            // Under its own name (so its key), with its labels and working directory; a
            // process of that name still in the fleet is a conflict, not a second copy.
            let mut p = self.sup.spec_from_resource_spec(&resource.spec)?;
            p.name = resource.name.clone();
            p.labels = resource.labels.clone();
            p.working_dir = resource
                .annotations
                .get("process.working-dir")
                .map(std::path::PathBuf::from);
            p.validate(&format!("process {:?}", resource.name))?;
            let name = p.name.clone();
            self.sup.add(p)?;
            if let Err(e) = self.sup.start(&name) {
                let _ = self.sup.remove(&name);
                return Err(e);
            }
            self.sup.resource(&name)
        })
        .await
    }

    async fn update_resource(&self, id: &str, spec: &ResourceSpec) -> Result<Resource> {
        crate::telemetry::observed(ENVIRONMENT, self.sup.name(), "update_resource", async {
            let name = self.sup.resolve(id)?;
            let was_running = self.sup.update_spec(&name, spec)?;
            if was_running {
                // The new command, arguments or environment apply from the next start.
                self.sup.stop(&name, self.sup.config().stop_grace).await?;
                self.sup.start(&name)?;
            }
            self.sup.resource(&name)
        })
        .await
    }

    async fn watch_resources(&self, filter: &ResourceFilter) -> Result<ResourceEventStream> {
        crate::telemetry::observed(ENVIRONMENT, self.sup.name(), "watch_resources", async {
            filter.validate()?;
            let filter = filter.without_page();
            let instance = self.sup.name().to_owned();
            let rx = self.sup.subscribe();
            let closed = self.sup.closed();
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                match rx.recv().await {
                    Ok(ev) => Some((Ok(ev), rx)),
                    // The watcher learns it missed events instead of silently skipping them.
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let e = Error::Overloaded {
                            message: format!("process watch fell behind and lost {n} events"),
                        };
                        Some((Err(e), rx))
                    }
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            })
            .filter(move |ev| {
                let keep = match ev {
                    Ok(ev) => {
                        let keep = filter.matches(&ev.resource);
                        if keep {
                            crate::telemetry::watch_event(ENVIRONMENT, &instance, ev.type_);
                        }
                        keep
                    }
                    Err(_) => true,
                };
                futures::future::ready(keep)
            })
            .take_until(async move { closed.cancelled_owned().await });
            Ok(stream.boxed())
        })
        .await
    }

    async fn exec_in_resource(
        &self,
        id: &str,
        cmd: &[String],
        options: &ExecOptions,
    ) -> Result<ExecResult> {
        crate::telemetry::observed(ENVIRONMENT, self.sup.name(), "exec_in_resource", async {
            let name = self.sup.resolve(id)?;
            self.sup.exec(&name, cmd, options).await
        })
        .await
    }

    async fn get_metrics(&self, id: &str) -> Result<Metrics> {
        crate::telemetry::observed(ENVIRONMENT, self.sup.name(), "get_metrics", async {
            let name = self.sup.resolve(id)?;
            self.sup.metrics(&name).await
        })
        .await
    }

    fn adapter_info(&self) -> AdapterInfo {
        AdapterInfo {
            name: self.sup.name().to_owned(),
            version: env!("CARGO_PKG_VERSION").into(),
            environment: ENVIRONMENT.into(),
            capabilities: [
                capability::EXEC,
                capability::WATCH,
                capability::METRICS,
                capability::SIGNALS,
                capability::PAUSE,
                capability::NETWORK,
                capability::CREATE,
            ]
            .map(String::from)
            .to_vec(),
        }
    }

    fn signals(&self) -> Option<&dyn SignalControl> {
        Some(self)
    }

    fn network_faults(&self) -> Option<&dyn ire_core::NetworkFaults> {
        Some(self)
    }

    fn pausing(&self) -> Option<&dyn PauseControl> {
        Some(self)
    }
}

#[async_trait]
impl SignalControl for ProcessAdapter {
    async fn send_signal(&self, id: &str, signal: &Signal) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, self.sup.name(), "send_signal", async {
            let name = self.sup.resolve(id)?;
            self.sup.signal(&name, signal)
        })
        .await
    }
}

#[async_trait]
impl PauseControl for ProcessAdapter {
    async fn pause(&self, id: &str) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, self.sup.name(), "pause", async {
            let name = self.sup.resolve(id)?;
            self.sup.signal(&name, &"SIGSTOP".parse()?)
        })
        .await
    }

    async fn resume(&self, id: &str) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, self.sup.name(), "resume", async {
            let name = self.sup.resolve(id)?;
            self.sup.signal(&name, &"SIGCONT".parse()?)
        })
        .await
    }
}
