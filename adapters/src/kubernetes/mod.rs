//! The kubernetes adapter (kube): pods as resources, deployments and statefulsets as
//! scalable resources.
//!
//! - Keys: `<adapter>/<namespace>/<pod>` for pods (stable for statefulset pods, which keep
//!   their names when recreated; a deployment's replacement pod gets a new name and so a
//!   new key), `<adapter>/<namespace>/deployment/<name>` and
//!   `<adapter>/<namespace>/statefulset/<name>` for workloads. Ids are object UIDs.
//! - Lists send label selectors and field selectors (names, pod phases) to the API server,
//!   one `page-size` page at a time with `continue` tokens ([`KubernetesAdapter::list_page`],
//!   [`KubernetesAdapter::list_pages`]); the rest of a filter is checked here.
//! - Watches use kube-runtime's `watcher`; exec uses the `pods/exec` websocket; metrics
//!   come from metrics.k8s.io where metrics-server serves it.
//! - Configuration: [`KubernetesConfig`] (kubeconfig, context, in-cluster, namespace).

mod config;
mod convert;
mod error;
mod exec;
mod metrics;
mod net_fault;
mod ops;
mod pages;
mod selector;
mod watch;

#[cfg(feature = "kube-fake")]
pub mod fake_api;

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use ire_core::adapter::capability;
use ire_core::{
    AdapterConfig, AdapterInfo, DeleteOptions, EnvironmentAdapter, Error, ErrorClass, ExecOptions,
    ExecResult, Metrics, NetworkFault, NetworkFaultHandle, NetworkFaults, Resource,
    ResourceEventStream, ResourceFilter, ResourceSpec, Result, Scaling, Signal, SignalControl,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

pub use config::KubernetesConfig;
pub use convert::{ObjectRef, WorkloadKind};
pub use metrics::parse_quantity;
pub use net_fault::{container_names as net_fault_container_names, DEFAULT_NET_FAULT_IMAGE};
pub use ops::{MANAGED_BY, REPLICAS_BEFORE_STOP, WORKLOAD_LABEL};
pub use pages::{PageToken, ResourcePage};
pub use selector::{label_selector_string, server_selectors, ServerSelectors};

/// The environment name in [`AdapterInfo`].
pub const ENVIRONMENT: &str = "kubernetes";

/// A connected adapter's state, cheap to clone (the client is shared).
#[derive(Clone)]
pub(crate) struct Inner {
    client: Client,
    name: String,
    /// The namespace of keys without one, and of everything when not all-namespaces.
    namespace: String,
    all_namespaces: bool,
    page_size: u32,
    closed: CancellationToken,
    /// The network-fault helper image.
    net_fault_image: String,
}

impl Inner {
    /// The API of `K` in a namespace, or across all of them.
    fn api<K>(&self, ns: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match ns {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// The namespace lists are scoped to, `None` for all.
    fn list_scope(&self) -> Option<&str> {
        (!self.all_namespaces).then_some(self.namespace.as_str())
    }

    /// What an id or key names, checked against this adapter's namespace.
    async fn resolve(&self, id: &str) -> Result<(WorkloadKind, String, String)> {
        let (kind, ns, name) = match ObjectRef::parse(id, &self.name, &self.namespace)? {
            ObjectRef::Named {
                kind,
                namespace,
                name,
            } => (kind, namespace, name),
            ObjectRef::Uid(uid) => {
                let r = self.find_by_uid(&uid).await?;
                let ns = r
                    .metadata
                    .get("namespace")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned();
                let kind = WorkloadKind::parse(&r.kind).unwrap_or(WorkloadKind::Pod);
                (kind, ns, r.name)
            }
        };
        if !self.all_namespaces && ns != self.namespace {
            return Err(Error::invalid(
                "resource id",
                format!(
                    "{id:?} is in namespace {ns:?}, outside this adapter's namespace {:?}",
                    self.namespace
                ),
            ));
        }
        Ok((kind, ns, name))
    }

    /// The pod an id names, or for a workload its first running pod (as
    /// `kubectl exec deployment/<name>` picks one).
    async fn resolve_pod(&self, id: &str) -> Result<(String, String)> {
        match self.resolve(id).await? {
            (WorkloadKind::Pod, ns, name) => Ok((ns, name)),
            (kind, ns, name) => {
                let selector = self.workload_selector(kind, &ns, &name).await?;
                let lp = kube::api::ListParams {
                    label_selector: Some(selector),
                    field_selector: Some("status.phase=Running".into()),
                    limit: Some(1),
                    ..Default::default()
                };
                let pods = self
                    .api::<k8s_openapi::api::core::v1::Pod>(Some(&ns))
                    .list(&lp)
                    .await
                    .map_err(|e| {
                        error::from_kube(
                            e,
                            error::Target {
                                kind: "pod",
                                name: &name,
                            },
                        )
                    })?;
                let pod = pods
                    .items
                    .first()
                    .and_then(|p| p.metadata.name.clone())
                    .ok_or_else(|| {
                        Error::unavailable(
                            format!("{} {ns}/{name}", kind.as_str()),
                            std::io::Error::other("it has no running pod"),
                        )
                    })?;
                Ok((ns, pod))
            }
        }
    }
}

/// The kubernetes adapter. Call [`EnvironmentAdapter::initialize`] first (or build it
/// connected with [`KubernetesAdapter::connect`]).
#[derive(Default)]
pub struct KubernetesAdapter {
    inner: Option<Inner>,
}

impl KubernetesAdapter {
    /// An adapter that is not connected yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// An adapter named `name` using an existing client, checked against the API server.
    pub async fn connect(name: &str, client: Client, config: &KubernetesConfig) -> Result<Self> {
        config.validate()?;
        let namespace = config
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        client
            .apiserver_version()
            .await
            .map_err(|e| Error::unavailable("Kubernetes API server (GET /version)", e))?;
        Ok(KubernetesAdapter {
            inner: Some(Inner {
                client,
                name: name.to_owned(),
                namespace,
                all_namespaces: config.all_namespaces,
                page_size: config.page_size,
                closed: CancellationToken::new(),
                net_fault_image: config
                    .net_fault_image
                    .clone()
                    .unwrap_or_else(|| net_fault::DEFAULT_NET_FAULT_IMAGE.to_owned()),
            }),
        })
    }

    fn inner(&self) -> Result<&Inner> {
        self.inner.as_ref().ok_or_else(|| {
            Error::other(
                ErrorClass::Fatal,
                "the kubernetes adapter is used before initialize",
                None,
            )
        })
    }

    /// One page of matching resources, starting at `token` (the first page for `None`).
    /// `filter.limit` and `offset` are ignored: pages are the API server's.
    pub async fn list_page(
        &self,
        filter: &ResourceFilter,
        token: Option<&PageToken>,
    ) -> Result<ResourcePage> {
        self.inner()?.list_page(filter, token).await
    }

    /// Every matching resource, one page per item, requested as the stream is consumed:
    /// memory stays bounded by the page size however many resources there are.
    pub fn list_pages(
        &self,
        filter: &ResourceFilter,
    ) -> Result<BoxStream<'static, Result<Vec<Resource>>>> {
        Ok(self.inner()?.clone().list_pages(filter.without_page()))
    }

    /// The namespace keys default to (and lists are scoped to unless all-namespaces).
    pub fn namespace(&self) -> Result<&str> {
        Ok(self.inner()?.namespace.as_str())
    }
}

async fn client_for(config: &KubernetesConfig) -> Result<Client> {
    let kube_config = if config.in_cluster {
        kube::Config::incluster().map_err(|e| {
            Error::invalid("in-cluster", format!("no in-cluster configuration: {e}"))
        })?
    } else if let Some(path) = &config.kubeconfig {
        let kc = Kubeconfig::read_from(path)
            .map_err(|e| Error::invalid("kubeconfig", format!("{}: {e}", path.display())))?;
        let options = KubeConfigOptions {
            context: config.context.clone(),
            ..KubeConfigOptions::default()
        };
        kube::Config::from_custom_kubeconfig(kc, &options)
            .await
            .map_err(|e| Error::invalid("kubeconfig", format!("{}: {e}", path.display())))?
    } else if config.context.is_some() {
        let options = KubeConfigOptions {
            context: config.context.clone(),
            ..KubeConfigOptions::default()
        };
        kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| Error::invalid("context", e.to_string()))?
    } else {
        kube::Config::infer().await.map_err(|e| {
            Error::invalid(
                "kubeconfig",
                format!("no kubeconfig or in-cluster configuration found: {e}"),
            )
        })?
    };
    // The node links two rustls providers (ring for kube, aws-lc-rs through ractor_cluster),
    // so rustls cannot choose one by itself: install ring unless a provider is already set.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::try_from(kube_config)
        .map_err(|e| Error::invalid("kubeconfig", format!("cannot build a client: {e}")))
}

#[async_trait]
impl EnvironmentAdapter for KubernetesAdapter {
    async fn initialize(&mut self, config: AdapterConfig) -> Result<()> {
        let settings = KubernetesConfig::from_adapter_config(&config)?;
        let field = format!("adapters.{}", config.name);
        let client = client_for(&settings)
            .await
            .map_err(|e| e.context(field.clone()))?;
        let connected = KubernetesAdapter::connect(&config.name, client, &settings)
            .await
            .map_err(|e| e.context(field))?;
        self.inner = connected.inner;
        tracing::info!(component = "kubernetes-adapter", adapter = %config.name, namespace = %self.namespace()?, "connected");
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        if let Some(inner) = &self.inner {
            inner.closed.cancel();
        }
        Ok(())
    }

    async fn list_resources(&self, filter: &ResourceFilter) -> Result<Vec<Resource>> {
        self.inner()?.list_resources(filter).await
    }

    async fn get_resource(&self, id: &str) -> Result<Resource> {
        let inner = self.inner()?;
        let (kind, ns, name) = inner.resolve(id).await?;
        inner.get_named(kind, &ns, &name).await
    }

    async fn start_resource(&self, id: &str) -> Result<()> {
        let inner = self.inner()?;
        let (kind, ns, name) = inner.resolve(id).await?;
        inner.start(kind, &ns, &name).await
    }

    async fn stop_resource(&self, id: &str, grace_period: Duration) -> Result<()> {
        let inner = self.inner()?;
        let (kind, ns, name) = inner.resolve(id).await?;
        inner.stop(kind, &ns, &name, grace_period).await
    }

    async fn restart_resource(&self, id: &str) -> Result<()> {
        let inner = self.inner()?;
        let (kind, ns, name) = inner.resolve(id).await?;
        inner.restart(kind, &ns, &name).await
    }

    async fn delete_resource(&self, id: &str, options: &DeleteOptions) -> Result<()> {
        let inner = self.inner()?;
        let (kind, ns, name) = inner.resolve(id).await?;
        let grace = if options.force {
            Duration::ZERO
        } else {
            options.grace_period
        };
        inner.delete_named(kind, &ns, &name, Some(grace)).await
    }

    async fn create_resource(&self, spec: &ResourceSpec) -> Result<Resource> {
        self.inner()?.create(spec).await
    }

    async fn update_resource(&self, id: &str, spec: &ResourceSpec) -> Result<Resource> {
        let inner = self.inner()?;
        let (kind, ns, name) = inner.resolve(id).await?;
        inner.update(kind, &ns, &name, spec).await
    }

    async fn watch_resources(&self, filter: &ResourceFilter) -> Result<ResourceEventStream> {
        self.inner()?.watch(filter).await
    }

    async fn exec_in_resource(
        &self,
        id: &str,
        cmd: &[String],
        options: &ExecOptions,
    ) -> Result<ExecResult> {
        let inner = self.inner()?;
        let (ns, name) = inner.resolve_pod(id).await?;
        inner.exec(&ns, &name, cmd, options).await
    }

    async fn get_metrics(&self, id: &str) -> Result<Metrics> {
        let inner = self.inner()?;
        match inner.resolve(id).await? {
            (WorkloadKind::Pod, ns, name) => inner.metrics(&ns, &name).await,
            (kind, ns, name) => inner.workload_metrics(kind, &ns, &name).await,
        }
    }

    fn adapter_info(&self) -> AdapterInfo {
        AdapterInfo {
            name: self
                .inner
                .as_ref()
                .map(|i| i.name.clone())
                .unwrap_or_else(|| ENVIRONMENT.into()),
            version: env!("CARGO_PKG_VERSION").into(),
            environment: ENVIRONMENT.into(),
            capabilities: [
                capability::EXEC,
                capability::WATCH,
                capability::METRICS,
                capability::SIGNALS,
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

    fn scaling(&self) -> Option<&dyn Scaling> {
        Some(self)
    }

    fn network_faults(&self) -> Option<&dyn NetworkFaults> {
        Some(self)
    }
}

#[async_trait]
impl NetworkFaults for KubernetesAdapter {
    async fn prepare(
        &self,
        id: &str,
        fault_id: &str,
        fault: &NetworkFault,
    ) -> Result<NetworkFaultHandle> {
        crate::net_fault::check_request(fault_id, fault)?;
        let inner = self.inner()?;
        let (kind, ns, name) = inner.resolve(id).await?;
        if kind != WorkloadKind::Pod {
            return Err(Error::invalid(
                "resource",
                format!(
                    "{id:?} is a {}: network faults act on pods (select the workload's pods)",
                    kind.as_str()
                ),
            ));
        }
        let (data, backend) = inner
            .net_prepare(&ns, &name, &inner.net_fault_image, fault_id, fault)
            .await?;
        let uid = data["uid"].as_str().unwrap_or_default().to_owned();
        Ok(NetworkFaultHandle {
            fault_id: fault_id.to_owned(),
            resource_id: uid,
            fault: fault.clone(),
            backend,
            data,
        })
    }

    async fn apply(&self, handle: &NetworkFaultHandle) -> Result<()> {
        self.inner()?.net_apply(handle).await
    }

    async fn revert(&self, handle: &NetworkFaultHandle) -> Result<()> {
        self.inner()?.net_revert(handle).await
    }
}

#[async_trait]
impl SignalControl for KubernetesAdapter {
    async fn send_signal(&self, id: &str, signal: &Signal) -> Result<()> {
        let inner = self.inner()?;
        let (kind, ns, name) = inner.resolve(id).await?;
        inner.signal(kind, &ns, &name, signal).await
    }
}

#[async_trait]
impl Scaling for KubernetesAdapter {
    async fn replicas(&self, id: &str) -> Result<i32> {
        let inner = self.inner()?;
        let (kind, ns, name) = inner.resolve(id).await?;
        inner.replicas(kind, &ns, &name).await
    }

    async fn scale(&self, id: &str, replicas: i32) -> Result<()> {
        let inner = self.inner()?;
        let (kind, ns, name) = inner.resolve(id).await?;
        inner.scale(kind, &ns, &name, replicas).await
    }
}
