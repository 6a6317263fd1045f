//! Builds a node: the embedded single-node raft cluster (leases, ledger, campaigns, records,
//! audit), the supervisor tree (resource-lock, engine, monitor, reporter), the adapters by
//! name and the plugin registry.
//!
//! `ire run`, `ire demo`, `ire heal` and `ire backup` start one with [`Node::start`] and stop
//! it with [`Node::shutdown`], which also stops every process the process adapters started
//! and removes a temporary data directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ire_actors::bus::LocalEventBus;
use ire_actors::engine::{AllowAll, Engine, EngineConfig, EngineDeps};
use ire_actors::lock::{LockConfig, LockManager};
use ire_actors::monitor::{
    Adapters, FaultWatch, FaultWatchConfig, HealthMonitor, MonitorActor, MonitorArgs,
};
use ire_actors::registry::DefaultPluginRegistry;
use ire_actors::reporter::{ReporterActor, ReporterArgs, ReporterConfig, ReporterHandle};
use ire_actors::supervisor::{ChildSpec, NodeSupervisor, SpawnedChild, SupervisorHandle};
use ire_adapters::docker::DockerAdapter;
use ire_adapters::kubernetes::KubernetesAdapter;
use ire_adapters::process::ProcessAdapter;
use ire_consensus::client::ConsensusClient;
use ire_consensus::node::{RaftNode, RaftNodeConfig};
use ire_core::{
    AdapterConfig, AdapterInfo, EnvironmentAdapter, Error, ErrorClass, EventBus, FaultLedger,
    LockService, Monitor, Reporter, Result,
};
use ractor::Actor;

use crate::config::{AdapterSection, NodeConfig};

/// A running node's parts. Cheap to share through `Arc`.
pub struct Node {
    /// The node's name.
    pub name: String,
    /// Its configuration.
    pub config: NodeConfig,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The raft node.
    pub raft: RaftNode,
    /// The replicated store: leases, ledger, campaigns, records, audit.
    pub store: ConsensusClient,
    /// Adapter instances by name.
    pub adapters: BTreeMap<String, Arc<dyn EnvironmentAdapter>>,
    /// What each adapter reported about itself at start.
    pub adapter_infos: BTreeMap<String, AdapterInfo>,
    /// The plugins.
    pub registry: Arc<DefaultPluginRegistry>,
    /// The execution engine.
    pub engine: Engine,
    /// Leases through the resource-lock actor.
    pub locks: LockManager,
    /// Health checks over the adapters.
    pub monitor: Arc<HealthMonitor>,
    /// Time to detect and recover, per fault.
    pub fault_watch: FaultWatch,
    /// The event bus.
    pub bus: Arc<LocalEventBus>,
    /// The reporter.
    pub reporter: ReporterHandle,
    supervisor: SupervisorHandle,
    temp: std::sync::Mutex<Option<tempfile::TempDir>>,
    stopped: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("data_dir", &self.data_dir)
            .field("adapters", &self.adapters.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Extra adapter instances handed to [`Node::start_with`], beside those of the config
/// (tests, simulated fleets).
pub type ExtraAdapters = Vec<(String, Arc<dyn EnvironmentAdapter>)>;

impl Node {
    /// Starts a node from its config (see the module docs).
    pub async fn start(config: NodeConfig) -> Result<Node> {
        Self::start_with(config, Vec::new()).await
    }

    /// Starts a node with adapters of its own beside those of the config.
    pub async fn start_with(config: NodeConfig, extra: ExtraAdapters) -> Result<Node> {
        config.validate()?;
        let (temp, data_dir) = match &config.node.data_dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| {
                    Error::invalid("node.data-dir", format!("{}: {e}", d.display()))
                })?;
                (None, d.clone())
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("ire-node-")
                    .tempdir()
                    .map_err(|e| {
                        Error::other(ErrorClass::Fatal, format!("temporary data dir: {e}"), None)
                    })?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };

        let raft = start_raft(&config, &data_dir).await?;
        let store = ConsensusClient::new(raft.clone());

        let mut adapters: BTreeMap<String, Arc<dyn EnvironmentAdapter>> = BTreeMap::new();
        let mut started = Vec::new();
        for (name, section) in &config.adapters {
            match start_adapter(name, section).await {
                Ok(a) => {
                    started.push(a.clone());
                    adapters.insert(name.clone(), a);
                }
                Err(e) if section.optional => {
                    tracing::warn!(component = "node", adapter = %name, error = %e, "optional adapter left out");
                }
                Err(e) => {
                    for a in started {
                        let _ = a.close().await;
                    }
                    raft.shutdown().await;
                    return Err(e.context(format!("starting adapter {name} ({})", section.type_)));
                }
            }
        }
        for (name, a) in extra {
            adapters.insert(name, a);
        }
        let adapter_infos = adapters
            .iter()
            .map(|(n, a)| (n.clone(), a.adapter_info()))
            .collect();

        let registry = Arc::new(DefaultPluginRegistry::new());
        if let Err(e) = crate::catalog::register(&registry, &config.plugins).await {
            close_all(&adapters).await;
            raft.shutdown().await;
            return Err(e);
        }

        let bus = Arc::new(LocalEventBus::new());
        let monitor_adapters = Adapters::new();
        for (n, a) in &adapters {
            monitor_adapters.insert(n.clone(), a.clone());
        }
        let monitor = Arc::new(HealthMonitor::new(monitor_adapters));
        let store_arc = Arc::new(store.clone());
        let locks = LockManager::new(
            store_arc.clone() as Arc<dyn LockService>,
            LockConfig {
                ttl: config.lease.ttl,
                ..LockConfig::default()
            },
        );
        let watch_args = MonitorArgs::new(
            monitor.clone() as Arc<dyn Monitor>,
            Some(bus.clone() as Arc<dyn EventBus>),
            FaultWatchConfig {
                probe_interval: config.monitor.probe_interval,
                ..FaultWatchConfig::default()
            },
        );
        let fault_watch = watch_args.handle();
        let reporter_args = ReporterArgs::new(store_arc.clone(), ReporterConfig::default());
        let reporter = reporter_args.handle();

        let mut deps = EngineDeps::new(registry.clone(), adapters.clone());
        deps.auth = Arc::new(AllowAll);
        deps.audit = store_arc.clone();
        deps.event_bus = Some(bus.clone());
        deps.reporter = Some(Arc::new(reporter.clone()) as Arc<dyn Reporter>);
        deps.monitor = Some(monitor.clone());
        deps.locks = Some(locks.clone());
        deps.ledger = Some(store_arc.clone() as Arc<dyn FaultLedger>);
        let engine = Engine::new(
            EngineConfig {
                node: config.node.name.clone(),
                concurrency_limit: config.engine.concurrency,
                queue_capacity: config.engine.queue,
                lock_wait: config.engine.lock_wait,
                ..EngineConfig::default()
            },
            deps,
        );

        let children = vec![
            locks.child_spec(),
            engine.child_spec(),
            actor_child("monitor", MonitorActor, watch_args),
            actor_child("reporter", ReporterActor, reporter_args),
        ];
        let supervisor = match NodeSupervisor::start(
            Some(format!("ire-{}", config.node.name)),
            children,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                close_all(&adapters).await;
                raft.shutdown().await;
                return Err(e.context("starting the supervisor tree"));
            }
        };
        wait_ready(&engine, &fault_watch, &reporter).await?;

        Ok(Node {
            name: config.node.name.clone(),
            config,
            data_dir,
            raft,
            store,
            adapters,
            adapter_infos,
            registry,
            engine,
            locks,
            monitor,
            fault_watch,
            bus,
            reporter,
            supervisor,
            temp: std::sync::Mutex::new(temp),
            stopped: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The adapter instance `name`.
    pub fn adapter(&self, name: &str) -> Result<&Arc<dyn EnvironmentAdapter>> {
        self.adapters.get(name).ok_or_else(|| {
            Error::not_found("adapter", name).context(format!(
                "the node has {}",
                if self.adapters.is_empty() {
                    "no adapters".to_owned()
                } else {
                    self.adapters.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ))
        })
    }

    /// Stops everything: the supervisor tree (executions are canceled and roll back), the
    /// adapters (a process adapter stops the processes it started), raft; a temporary data
    /// directory is removed.
    ///
    /// Only the first call does anything; the node is unusable afterwards.
    pub async fn shutdown(&self) -> Result<()> {
        if self.stopped.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let _ = self.reporter.flush().await;
        let report = self.supervisor.shutdown(Duration::from_secs(40)).await;
        close_all(&self.adapters).await;
        self.raft.shutdown().await;
        drop(self.temp.lock().expect("temp dir lock").take());
        report.map(|_| ())
    }
}

async fn start_raft(config: &NodeConfig, data_dir: &std::path::Path) -> Result<RaftNode> {
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("a socket address");
    let cookie = uuid::Uuid::new_v4().simple().to_string();
    let mut rc = RaftNodeConfig::new(1, listen, data_dir.join("raft"), cookie);
    rc.region = config.node.region.clone();
    let raft = RaftNode::start(rc)
        .await
        .map_err(|e| Error::from(e).context("starting the embedded raft node"))?;
    raft.bootstrap()
        .await
        .map_err(|e| Error::from(e).context("bootstrapping the embedded raft node"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !raft.is_leader() {
        if Instant::now() > deadline {
            raft.shutdown().await;
            return Err(Error::Timeout {
                operation: "electing the embedded node leader".into(),
                after: Duration::from_secs(30),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(raft)
}

/// Builds and initializes an adapter instance of the section's type.
pub async fn start_adapter(
    name: &str,
    section: &AdapterSection,
) -> Result<Arc<dyn EnvironmentAdapter>> {
    let config = AdapterConfig {
        name: name.to_owned(),
        config: section.config.clone(),
    };
    let adapter: Arc<dyn EnvironmentAdapter> = match section.type_.as_str() {
        "process" => {
            let mut a = ProcessAdapter::new();
            a.initialize(config).await?;
            Arc::new(a)
        }
        "docker" => {
            let mut a = DockerAdapter::new();
            a.initialize(config).await?;
            Arc::new(a)
        }
        "kubernetes" => {
            let mut a = KubernetesAdapter::new();
            a.initialize(config).await?;
            Arc::new(a)
        }
        other => {
            return Err(Error::invalid(
                format!("adapters.{name}.type"),
                format!("unknown adapter type {other:?}"),
            ))
        }
    };
    Ok(adapter)
}

async fn close_all(adapters: &BTreeMap<String, Arc<dyn EnvironmentAdapter>>) {
    for (name, a) in adapters {
        if let Err(e) = a.close().await {
            tracing::warn!(component = "node", adapter = %name, error = %e, "closing adapter");
        }
    }
}

/// A supervisor child running `actor` with `args`, restarted with the same arguments.
fn actor_child<A>(name: &str, actor: A, args: A::Arguments) -> ChildSpec
where
    A: Actor + Clone,
    A::Arguments: Clone + Sync,
{
    ChildSpec::new(
        name,
        Arc::new(move |sup| {
            let actor = actor.clone();
            let args = args.clone();
            Box::pin(async move {
                let (a, _) = Actor::spawn_linked(None, actor, args, sup).await?;
                Ok(SpawnedChild {
                    cell: a.get_cell(),
                    ping: None,
                })
            })
        }),
    )
}

/// Waits until the supervisor's children answer through their handles.
async fn wait_ready(engine: &Engine, watch: &FaultWatch, reporter: &ReporterHandle) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = watch.actor().is_ok() && reporter.actor().is_ok() && engine.load().2 > 0;
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                operation: "starting the node's actors".into(),
                after: Duration::from_secs(10),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What each configured adapter can do, without starting it (for `ire validate`).
pub fn static_adapter_infos(config: &NodeConfig) -> BTreeMap<String, AdapterInfo> {
    config
        .adapters
        .iter()
        .filter_map(|(name, a)| {
            let mut info = match a.type_.as_str() {
                "process" => ProcessAdapter::new().adapter_info(),
                "docker" => DockerAdapter::new().adapter_info(),
                "kubernetes" => KubernetesAdapter::new().adapter_info(),
                _ => return None,
            };
            info.name = name.clone();
            Some((name.clone(), info))
        })
        .collect()
}
