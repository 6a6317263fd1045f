//! The docker adapter: containers of one Docker daemon as ire resources, with compose
//! awareness, signals, pause/resume and network faults.
//!
//! Keys are stable across recreation: `<instance>/<project>/<service>/<n>` for compose
//! containers (from compose's labels), `<instance>/<container-name>` for the others. Every
//! method accepts a container id, a name or such a key.

mod config;
mod convert;
mod error;
mod events;
mod exec;
mod filters;
mod net_fault;
mod recreate;
mod scaling;
mod stats;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bollard::query_parameters::{
    KillContainerOptions, ListContainersOptions, RemoveContainerOptions, RestartContainerOptions,
    StatsOptions, StopContainerOptions,
};
use bollard::{ClientVersion, Docker, API_DEFAULT_VERSION};
use futures::StreamExt;
use ire_core::adapter::capability;
use ire_core::{
    AdapterConfig, AdapterInfo, Cidr, DeleteOptions, EnvironmentAdapter, Error, ErrorClass,
    ExecOptions, ExecResult, Metrics, NetworkFault, NetworkFaultHandle, NetworkFaults,
    PauseControl, Resource, ResourceEventStream, ResourceFilter, ResourceSpec, Result, Scaling,
    Signal, SignalControl,
};
use tokio_util::sync::CancellationToken;

pub use config::{DockerConfig, DEFAULT_NET_FAULT_IMAGE, MANAGED_BY_LABEL};
pub use convert::{COMPOSE_NUMBER, COMPOSE_PROJECT, COMPOSE_SERVICE, KIND_CONTAINER};
pub use net_fault::{
    emulator_name as net_fault_emulator_name, FAULT_LABEL as NET_FAULT_LABEL,
    HELPER_LABEL as NET_FAULT_HELPER_LABEL,
};

use convert::{parse_ref, to_resource, ContainerRef, ContainerView};
use error::{from_bollard, is_not_modified};

/// The environment name the adapter reports.
pub const ENVIRONMENT: &str = "docker";

/// How long pause and resume wait for the daemon to report the new state.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often they look.
const SETTLE_POLL: Duration = Duration::from_millis(10);

/// Drives the containers of one Docker daemon.
pub struct DockerAdapter {
    name: String,
    config: DockerConfig,
    docker: Option<Docker>,
    /// Daemon clock minus local clock, in nanoseconds, for the event stream's `since`.
    clock_offset_ns: i64,
    /// Ended by `close`: stops every watch.
    closed: CancellationToken,
    /// Distinguishes names of containers created in the same nanosecond.
    created: AtomicU64,
}

impl Default for DockerAdapter {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for DockerAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerAdapter")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish()
    }
}

impl DockerAdapter {
    /// An adapter to be [initialized](EnvironmentAdapter::initialize).
    pub fn new() -> Self {
        DockerAdapter {
            name: "docker".into(),
            config: DockerConfig::default(),
            docker: None,
            clock_offset_ns: 0,
            closed: CancellationToken::new(),
            created: AtomicU64::new(0),
        }
    }

    /// Connects an adapter named `name` with `config`: a shortcut for `new` + `initialize`.
    pub async fn connect(name: &str, config: &DockerConfig) -> Result<Self> {
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

    /// The bollard client, for callers that need Docker calls the adapter does not offer.
    pub fn client(&self) -> Result<&Docker> {
        self.docker.as_ref().ok_or_else(|| {
            Error::other(
                ErrorClass::Fatal,
                format!("docker adapter {:?} is not initialized", self.name),
                None,
            )
        })
    }

    /// The API version in use after negotiation, as `major.minor`.
    pub fn api_version(&self) -> Result<String> {
        let v = self.client()?.client_version();
        Ok(format!("{}.{}", v.major_version, v.minor_version))
    }

    fn docker(&self) -> Result<&Docker> {
        self.client()
    }

    /// The Docker reference (id or name) of the container `id` names, which may be a key.
    async fn resolve(&self, id: &str) -> Result<String> {
        match parse_ref(&self.name, id) {
            ContainerRef::Direct(r) | ContainerRef::Name(r) => Ok(r),
            ContainerRef::Compose {
                project,
                service,
                number,
            } => {
                let filters = HashMap::from([(
                    "label".to_owned(),
                    vec![
                        format!("{COMPOSE_PROJECT}={project}"),
                        format!("{COMPOSE_SERVICE}={service}"),
                        format!("{COMPOSE_NUMBER}={number}"),
                    ],
                )]);
                let list = self
                    .docker()?
                    .list_containers(Some(ListContainersOptions {
                        all: true,
                        filters: Some(filters),
                        ..Default::default()
                    }))
                    .await
                    .map_err(|e| from_bollard(e, "resource", id))?;
                // While compose recreates a container, old and new briefly share the
                // labels: the newest is the one that stays.
                list.into_iter()
                    .max_by_key(|c| c.created.unwrap_or(0))
                    .and_then(|c| c.id)
                    .ok_or_else(|| Error::not_found("resource", id))
            }
        }
    }

    async fn inspect(&self, id: &str) -> Result<bollard::models::ContainerInspectResponse> {
        let r = self.resolve(id).await?;
        self.docker()?
            .inspect_container(&r, None)
            .await
            .map_err(|e| from_bollard(e, "resource", id))
    }

    /// Waits until the daemon reports the container (un)paused. The daemon answers the API
    /// call once containerd froze or thawed the cgroup, but records the new state from
    /// containerd's event a moment later: an inspect right after the call may still show the
    /// old one.
    async fn settle_paused(&self, r: &str, id: &str, paused: bool) -> Result<()> {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            let state = self
                .docker()?
                .inspect_container(r, None)
                .await
                .map_err(|e| from_bollard(e, "resource", id))?
                .state;
            if state.as_ref().and_then(|s| s.paused) == Some(paused) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Unavailable {
                    message: format!(
                        "the docker daemon accepted the {} of {id} but still reports it {} after {:?}",
                        if paused { "pause" } else { "resume" },
                        if paused { "running" } else { "paused" },
                        SETTLE_TIMEOUT
                    ),
                    source: None,
                });
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }

    /// The daemon's clock now, as the `secs.nanos` Docker's `since` takes.
    fn daemon_now(&self) -> String {
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) + self.clock_offset_ns;
        format!("{}.{:09}", now / 1_000_000_000, now % 1_000_000_000)
    }

    fn new_container_name(&self) -> String {
        let n = self.created.fetch_add(1, Ordering::Relaxed);
        let t = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64;
        let base: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        format!("{base}-{:x}{n:x}", t & 0xffff_ffff_ffff)
    }

    /// Stops a running container, giving it `grace` before Docker kills it.
    async fn stop_ref(&self, r: &str, id: &str, grace: Duration) -> Result<()> {
        let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        // The request lasts as long as the grace period: give it that on top of the timeout.
        let docker = self
            .docker()?
            .clone()
            .with_timeout(self.config.timeout + grace);
        match docker
            .stop_container(
                r,
                Some(StopContainerOptions {
                    signal: None,
                    t: Some(i32::try_from(secs).unwrap_or(i32::MAX)),
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_modified(&e) => Ok(()),
            Err(e) => Err(from_bollard(e, "resource", id)),
        }
    }
}

/// Connects to the daemon named by `host` (or `DOCKER_HOST`, or the default socket).
fn connect(config: &DockerConfig) -> Result<Docker> {
    let host = config
        .host
        .clone()
        .or_else(|| std::env::var("DOCKER_HOST").ok())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
    let version = match &config.api_version {
        Some(v) => {
            let (major_version, minor_version) = config::parse_api_version(v)?;
            ClientVersion {
                major_version,
                minor_version,
            }
        }
        None => ClientVersion {
            major_version: API_DEFAULT_VERSION.major_version,
            minor_version: API_DEFAULT_VERSION.minor_version,
        },
    };
    let timeout = config.timeout.as_secs().max(1);
    let result = if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(&host, timeout, &version)
    } else {
        Docker::connect_with_unix(&host, timeout, &version)
    };
    result.map_err(|e| Error::unavailable(format!("docker daemon at {host}"), e))
}

#[async_trait]
impl EnvironmentAdapter for DockerAdapter {
    async fn initialize(&mut self, config: AdapterConfig) -> Result<()> {
        let instance = config.name.clone();
        crate::telemetry::observed(ENVIRONMENT, &instance, "initialize", async {
            let cfg = DockerConfig::from_adapter_config(&config)?;
            if !config.name.is_empty() {
                self.name = config.name.clone();
            }
            let mut docker = connect(&cfg)?;
            if cfg.api_version.is_none() {
                // Docker 20.10 speaks API 1.41: agree on the highest version both know.
                docker = docker.negotiate_version().await.map_err(|e| {
                    Error::unavailable(format!("docker daemon of adapter {:?}", self.name), e)
                })?;
            }
            docker.ping().await.map_err(|e| {
                Error::unavailable(format!("docker daemon of adapter {:?}", self.name), e)
            })?;
            if let Ok(info) = docker.info().await {
                if let Some(t) = info
                    .system_time
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                {
                    let local = chrono::Utc::now();
                    self.clock_offset_ns = (t.with_timezone(&chrono::Utc) - local)
                        .num_nanoseconds()
                        .unwrap_or(0);
                }
            }
            tracing::info!(component = "docker-adapter", adapter = %self.name,
                api = %format!("{}.{}", docker.client_version().major_version, docker.client_version().minor_version),
                "connected");
            self.config = cfg;
            self.docker = Some(docker);
            self.closed = CancellationToken::new();
            Ok(())
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "close", async {
            self.closed.cancel();
            Ok(())
        })
        .await
    }

    async fn list_resources(&self, filter: &ResourceFilter) -> Result<Vec<Resource>> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "list_resources", async {
            filter.validate()?;
            let server = filters::server_filter(filter);
            if server.matches_nothing {
                return Ok(Vec::new());
            }
            // Docker's `limit` keeps the newest containers: usable for a page only when Docker
            // evaluates the whole filter.
            let limit = match (server.exact, filter.limit) {
                (true, Some(l)) => i32::try_from(l.saturating_add(filter.offset)).ok(),
                _ => None,
            };
            let list = self
                .docker()?
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    limit,
                    size: false,
                    filters: (!server.filters.is_empty()).then_some(server.filters),
                }))
                .await
                .map_err(|e| from_bollard(e, "resource list", &self.name))?;
            let resources = list.into_iter().filter_map(|c| {
                let view = ContainerView::from(c);
                let id = view.id.clone();
                to_resource(&self.name, view)
                    .inspect_err(|e| {
                        tracing::warn!(component = "docker-adapter", resource_id = %id, error = %e, "skipping a container without a valid key");
                    })
                    .ok()
            });
            Ok(filter.apply(resources))
        })
        .await
    }

    async fn get_resource(&self, id: &str) -> Result<Resource> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "get_resource", async {
            let c = self.inspect(id).await?;
            to_resource(&self.name, ContainerView::from(c))
        })
        .await
    }

    async fn start_resource(&self, id: &str) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "start_resource", async {
            let r = self.resolve(id).await?;
            match self.docker()?.start_container(&r, None).await {
                Ok(()) => Ok(()),
                Err(e) if is_not_modified(&e) => Ok(()),
                Err(e) => Err(from_bollard(e, "resource", id)),
            }
        })
        .await
    }

    async fn stop_resource(&self, id: &str, grace_period: Duration) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "stop_resource", async {
            let r = self.resolve(id).await?;
            self.stop_ref(&r, id, grace_period).await
        })
        .await
    }

    async fn restart_resource(&self, id: &str) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "restart_resource", async {
            let r = self.resolve(id).await?;
            let grace = self.config.restart_grace;
            let docker = self
                .docker()?
                .clone()
                .with_timeout(self.config.timeout + grace);
            docker
                .restart_container(
                    &r,
                    Some(RestartContainerOptions {
                        signal: None,
                        t: Some(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX)),
                    }),
                )
                .await
                .map_err(|e| from_bollard(e, "resource", id))
        })
        .await
    }

    async fn delete_resource(&self, id: &str, options: &DeleteOptions) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "delete_resource", async {
            let r = self.resolve(id).await?;
            if !options.force {
                // Without force, the container gets its grace period to stop first.
                self.stop_ref(&r, id, options.grace_period).await?;
            }
            self.docker()?
                .remove_container(
                    &r,
                    Some(RemoveContainerOptions {
                        force: options.force,
                        v: false,
                        link: false,
                    }),
                )
                .await
                .map_err(|e| from_bollard(e, "resource", id))
        })
        .await
    }

    async fn create_resource(&self, spec: &ResourceSpec) -> Result<Resource> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "create_resource", async {
            let name = self.new_container_name();
            let mut labels = self.config.labels.clone();
            labels.insert(MANAGED_BY_LABEL.to_owned(), self.name.clone());
            self.create_named(&name, spec, labels).await
        })
        .await
    }

    async fn recreate_resource(&self, resource: &Resource) -> Result<Resource> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "recreate_resource", async {
            // The same name and labels give the same key (compose's labels included); a
            // container of that name already there is a conflict, not a second copy.
            let labels = resource.labels.clone().into_iter().collect();
            self.create_named(&resource.name, &resource.spec, labels)
                .await
        })
        .await
    }

    async fn update_resource(&self, id: &str, spec: &ResourceSpec) -> Result<Resource> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "update_resource", async {
            let old = self.inspect(id).await?;
            let docker = self.docker()?;
            let new_id = recreate::recreate(docker, old, spec, self.config.restart_grace)
                .await
                .map_err(|e| e.context(format!("updating {id}")))?;
            self.get_resource(&new_id).await
        })
        .await
    }

    async fn watch_resources(&self, filter: &ResourceFilter) -> Result<ResourceEventStream> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "watch_resources", async {
            filter.validate()?;
            let watch = events::Watch {
                docker: self.docker()?.clone(),
                adapter: self.name.clone(),
                filter: filter.clone(),
                cancel: self.closed.child_token(),
                since: self.daemon_now(),
            };
            let (tx, rx) = tokio::sync::mpsc::channel(256);
            tokio::spawn(events::run(watch, tx));
            Ok(futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            })
            .boxed())
        })
        .await
    }

    async fn exec_in_resource(
        &self,
        id: &str,
        cmd: &[String],
        options: &ExecOptions,
    ) -> Result<ExecResult> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "exec_in_resource", async {
            let r = self.resolve(id).await?;
            exec::exec(self.docker()?, &r, id, cmd, options).await
        })
        .await
    }

    async fn get_metrics(&self, id: &str) -> Result<Metrics> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "get_metrics", async {
            let c = self.inspect(id).await?;
            let cid = c.id.clone().unwrap_or_default();
            let limit = c
                .host_config
                .as_ref()
                .and_then(|h| h.memory)
                .filter(|m| *m > 0)
                .map(|m| m as u64)
                .unwrap_or(0);
            // Not one-shot: Docker then samples twice, so `precpu_stats` gives a CPU delta.
            let mut stream = self.docker()?.stats(
                &cid,
                Some(StatsOptions {
                    stream: false,
                    one_shot: false,
                }),
            );
            let sample = stream
                .next()
                .await
                .ok_or_else(|| {
                    Error::unavailable("docker stats", std::io::Error::other("empty stats stream"))
                })?
                .map_err(|e| from_bollard(e, "resource", id))?;
            Ok(stats::normalize(&cid, &sample, limit))
        })
        .await
    }

    fn adapter_info(&self) -> AdapterInfo {
        AdapterInfo {
            name: self.name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            environment: ENVIRONMENT.into(),
            capabilities: [
                capability::EXEC,
                capability::WATCH,
                capability::METRICS,
                capability::SIGNALS,
                capability::PAUSE,
                capability::NETWORK,
                capability::SCALE,
                capability::CREATE,
            ]
            .map(String::from)
            .to_vec(),
        }
    }

    fn signals(&self) -> Option<&dyn SignalControl> {
        Some(self)
    }

    fn pausing(&self) -> Option<&dyn PauseControl> {
        Some(self)
    }

    fn network_faults(&self) -> Option<&dyn NetworkFaults> {
        Some(self)
    }

    fn scaling(&self) -> Option<&dyn Scaling> {
        Some(self)
    }
}

impl DockerAdapter {
    /// Creates and starts a container named `name` from `spec`, labelled `labels`.
    async fn create_named(
        &self,
        name: &str,
        spec: &ResourceSpec,
        labels: BTreeMap<String, String>,
    ) -> Result<Resource> {
        let name = name.to_owned();
        let body = recreate::create_body(spec, labels)?;
        let docker = self.docker()?;
        let created = docker
            .create_container(
                Some(bollard::query_parameters::CreateContainerOptions {
                    name: Some(name.clone()),
                    platform: String::new(),
                }),
                body,
            )
            .await
            .map_err(|e| match from_bollard(e, "image", &spec.image) {
                Error::NotFound { .. } => Error::not_found(
                    "image (the docker adapter does not pull: load or build it first)",
                    spec.image.clone(),
                ),
                other => other,
            })?;
        if let Err(e) = docker.start_container(&created.id, None).await {
            // Leave nothing half-made behind.
            let _ = docker
                .remove_container(
                    &created.id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
            return Err(from_bollard(e, "resource", &name));
        }
        self.get_resource(&created.id).await
    }
}

#[async_trait]
impl SignalControl for DockerAdapter {
    async fn send_signal(&self, id: &str, signal: &Signal) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "send_signal", async {
            let r = self.resolve(id).await?;
            self.docker()?
                .kill_container(
                    &r,
                    Some(KillContainerOptions {
                        signal: signal.name().to_owned(),
                    }),
                )
                .await
                .map_err(|e| from_bollard(e, "resource", id))
        })
        .await
    }
}

#[async_trait]
impl PauseControl for DockerAdapter {
    async fn pause(&self, id: &str) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "pause", async {
            let r = self.resolve(id).await?;
            self.docker()?
                .pause_container(&r)
                .await
                .map_err(|e| from_bollard(e, "resource", id))?;
            self.settle_paused(&r, id, true).await
        })
        .await
    }

    async fn resume(&self, id: &str) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "resume", async {
            let r = self.resolve(id).await?;
            self.docker()?
                .unpause_container(&r)
                .await
                .map_err(|e| from_bollard(e, "resource", id))?;
            self.settle_paused(&r, id, false).await
        })
        .await
    }
}

#[async_trait]
impl Scaling for DockerAdapter {
    async fn replicas(&self, id: &str) -> Result<i32> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "replicas", async {
            let (project, service) = self.compose_service(id).await?;
            let n = scaling::service_containers(self.docker()?, &project, &service)
                .await?
                .len();
            Ok(i32::try_from(n).unwrap_or(i32::MAX))
        })
        .await
    }

    async fn scale(&self, id: &str, replicas: i32) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "scale", async {
            let (project, service) = self.compose_service(id).await?;
            scaling::scale(
                self.docker()?,
                &project,
                &service,
                replicas,
                self.config.restart_grace,
            )
            .await
            .map_err(|e| e.context(format!("scaling {project}/{service} to {replicas}")))
        })
        .await
    }
}

#[async_trait]
impl NetworkFaults for DockerAdapter {
    async fn prepare(
        &self,
        id: &str,
        fault_id: &str,
        fault: &NetworkFault,
    ) -> Result<NetworkFaultHandle> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "network_prepare", async {
            crate::net_fault::check_request(fault_id, fault)?;
            let cid = self.running_container(id).await?;
            let peers = match &fault.peers.resources {
                Some(filter) => crate::net_fault::peers_found(self.addresses(filter).await?, id)?,
                None => Vec::new(),
            };
            let (data, backend) = self.runner()?.prepare(&cid, fault_id, fault, peers).await?;
            Ok(NetworkFaultHandle {
                fault_id: fault_id.to_owned(),
                resource_id: cid,
                fault: fault.clone(),
                backend,
                data,
            })
        })
        .await
    }

    async fn apply(&self, handle: &NetworkFaultHandle) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "network_apply", async {
            self.running_container(&handle.resource_id).await?;
            self.runner()?.apply(handle).await
        })
        .await
    }

    async fn revert(&self, handle: &NetworkFaultHandle) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, &self.name, "network_revert", async {
            self.runner()?.revert(handle).await
        })
        .await
    }
}

impl DockerAdapter {
    /// The compose project and service of the container `id` names.
    async fn compose_service(&self, id: &str) -> Result<(String, String)> {
        if let ContainerRef::Compose {
            project, service, ..
        } = parse_ref(&self.name, id)
        {
            return Ok((project, service));
        }
        let c = self.inspect(id).await?;
        let labels = c.config.and_then(|c| c.labels).unwrap_or_default();
        match (labels.get(COMPOSE_PROJECT), labels.get(COMPOSE_SERVICE)) {
            (Some(p), Some(s)) => Ok((p.clone(), s.clone())),
            _ => Err(Error::unsupported(
                format!("scaling {id} (not a compose service container)"),
                format!("docker adapter {:?}", self.name),
            )),
        }
    }

    /// The id of the running container `id` names; a stopped one has no network to fault.
    async fn running_container(&self, id: &str) -> Result<String> {
        let c = self.inspect(id).await?;
        if !c.state.as_ref().and_then(|s| s.running).unwrap_or(false) {
            return Err(Error::Conflict {
                message: format!("{id} is not running: its network cannot be faulted"),
            });
        }
        Ok(c.id.unwrap_or_default())
    }

    /// The addresses of the containers `filter` selects, on every network they joined.
    async fn addresses(&self, filter: &ResourceFilter) -> Result<Vec<Cidr>> {
        let mut out = Vec::new();
        for r in self.list_resources(filter).await? {
            let c = self.inspect(&r.id).await?;
            let nets = c
                .network_settings
                .and_then(|n| n.networks)
                .unwrap_or_default();
            for ep in nets.values() {
                for ip in [&ep.ip_address, &ep.global_ipv6_address]
                    .into_iter()
                    .flatten()
                {
                    if let Ok(addr) = ip.parse() {
                        out.push(Cidr::host(addr));
                    }
                }
            }
        }
        Ok(out)
    }

    fn runner(&self) -> Result<net_fault::NetFaultRunner> {
        Ok(net_fault::NetFaultRunner {
            docker: self.docker()?.clone(),
            image: self.config.net_fault_image.clone(),
            labels: self.config.labels.clone().into_iter().collect(),
        })
    }
}
