//! A local fake Kubernetes API server, for tests, benchmarks and rehearsals where no
//! cluster can be run (feature `kube-fake`).
//!
//! It serves, shaped as the real API server's, the calls the kubernetes adapter makes:
//! `/version`; pods (core/v1) and deployments and statefulsets (apps/v1): list with
//! `labelSelector`, `fieldSelector`, `limit` and `continue` (a `metadata.continue` token
//! and `resourceVersion`), get, create (with `generateName`), replace (with
//! `resourceVersion` conflicts), merge patch, delete (graceful for pods: the pod is marked
//! terminating and goes when its grace period ends); watch (`?watch=true`: newline-
//! delimited `WatchEvent`s, `BOOKMARK`s, `410 Expired` for compacted versions); the
//! `scale` subresource; `pods/exec` over a websocket (v5/v4 channel protocol, commands
//! run as local processes); the `ephemeralcontainers` subresource (see [`ephemeral`]: a
//! test says what becomes of each ephemeral container and what an exec into one answers);
//! and metrics.k8s.io, which can be switched off.
//!
//! A small controller keeps each workload's pods at `spec.replicas` (statefulset pods
//! `<name>-<ordinal>`, deployment pods `<name>-<hash>-<suffix>`) and a fake kubelet starts
//! every pod at once (`Running`, `Ready`).

pub mod ephemeral;
mod exec;
mod selector;
mod server;
mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use selector::{ParsedFieldSelector, ParsedLabelSelector};
pub use store::{ApiError, RecordedRequest};

use server::Shared;
use store::{Store, DEPLOYMENTS, PODS, STATEFULSETS};

/// Watch history kept for resuming watches; older versions answer `410 Expired`.
const DEFAULT_HISTORY: usize = 20_000;

/// A running fake API server on `127.0.0.1`.
pub struct FakeApiServer {
    addr: SocketAddr,
    cluster: FakeCluster,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Starts a server on a free port with an empty cluster.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(Duration::from_secs(1)).await
    }

    /// Starts a server whose watches get a BOOKMARK every `bookmark_interval`.
    pub async fn start_with(bookmark_interval: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let cluster = FakeCluster {
            store: Arc::new(Mutex::new(Store::new(DEFAULT_HISTORY))),
        };
        let shared = Shared {
            store: cluster.store.clone(),
            shutdown: shutdown.clone(),
            bookmark_interval,
        };
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let stream = tokio::select! {
                    _ = token.cancelled() => break,
                    r = listener.accept() => match r {
                        Ok((s, _)) => s,
                        Err(e) => {
                            tracing::warn!(component = "kube-fake", error = %e, "accept failed");
                            continue;
                        }
                    },
                };
                let shared = shared.clone();
                let svc =
                    hyper::service::service_fn(move |req| server::handle(shared.clone(), req));
                conns.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
                // Reap finished connections so a long benchmark does not accumulate them.
                while conns.try_join_next().is_some() {}
            }
            conns.abort_all();
        });
        Ok(FakeApiServer {
            addr,
            cluster,
            shutdown,
            task: Some(task),
        })
    }

    /// The server's base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The cluster state, to seed and inspect.
    pub fn cluster(&self) -> &FakeCluster {
        &self.cluster
    }

    /// Writes a kubeconfig whose current context points at this server.
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) -> std::io::Result<()> {
        // JSON is YAML: kube reads it as a kubeconfig.
        let kc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url()}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            "current-context": "fake",
        });
        std::fs::write(path, kc.to_string())
    }

    /// Stops serving: ends watches and exec sessions and closes connections.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A handle on the fake cluster's state.
#[derive(Clone)]
pub struct FakeCluster {
    store: Arc<Mutex<Store>>,
}

/// A container spec with the given image, named `main`.
fn container(image: &str) -> Value {
    json!({"name": "main", "image": image, "terminationMessagePolicy": "File"})
}

impl FakeCluster {
    fn with<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut self.store.lock().expect("store lock"))
    }

    /// Adds a running pod with one container `main`.
    pub fn add_pod(&self, ns: &str, name: &str, labels: &[(&str, &str)]) -> Value {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let pod = json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [container("busybox:fake")], "terminationGracePeriodSeconds": 30},
        });
        self.with(|s| s.create(PODS, ns, pod))
            .unwrap_or_else(|e| panic!("adding pod {ns}/{name}: {}", e.message))
    }

    /// Adds `count` running pods named `<prefix>-<i>` with the same labels.
    pub fn add_pods(&self, ns: &str, prefix: &str, count: usize, labels: &[(&str, &str)]) {
        for i in 0..count {
            self.add_pod(ns, &format!("{prefix}-{i:05}"), labels);
        }
    }

    fn workload(
        &self,
        plural: &'static str,
        ns: &str,
        name: &str,
        replicas: i32,
        labels: &[(&str, &str)],
    ) -> Value {
        let mut selector: BTreeMap<&str, &str> = labels.iter().copied().collect();
        if selector.is_empty() {
            selector.insert("app", name);
        }
        let obj = json!({
            "metadata": {"name": name, "labels": selector},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": selector},
                    "spec": {"containers": [container("busybox:fake")], "terminationGracePeriodSeconds": 30},
                },
            },
        });
        self.with(|s| s.create(plural, ns, obj))
            .unwrap_or_else(|e| panic!("adding {plural} {ns}/{name}: {}", e.message))
    }

    /// Adds a deployment whose controller starts `replicas` pods.
    pub fn add_deployment(
        &self,
        ns: &str,
        name: &str,
        replicas: i32,
        labels: &[(&str, &str)],
    ) -> Value {
        self.workload(DEPLOYMENTS, ns, name, replicas, labels)
    }

    /// Adds a statefulset whose controller starts pods `<name>-0..replicas`.
    pub fn add_statefulset(
        &self,
        ns: &str,
        name: &str,
        replicas: i32,
        labels: &[(&str, &str)],
    ) -> Value {
        self.workload(STATEFULSETS, ns, name, replicas, labels)
    }

    /// A pod's current object.
    pub fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        self.with(|s| s.get(PODS, ns, name).ok())
    }

    /// A deployment's current object.
    pub fn deployment(&self, ns: &str, name: &str) -> Option<Value> {
        self.with(|s| s.get(DEPLOYMENTS, ns, name).ok())
    }

    /// A statefulset's current object.
    pub fn statefulset(&self, ns: &str, name: &str) -> Option<Value> {
        self.with(|s| s.get(STATEFULSETS, ns, name).ok())
    }

    /// Names of the pods in a namespace, in the API's order.
    pub fn pod_names(&self, ns: &str) -> Vec<String> {
        self.with(|s| {
            s.list(
                PODS,
                Some(ns),
                &Default::default(),
                &Default::default(),
                None,
                None,
            )
            .map(|(items, _, _)| items.iter().map(store::name_of).collect())
            .unwrap_or_default()
        })
    }

    /// Sets a pod's phase, as its kubelet would report it.
    pub fn set_pod_phase(&self, ns: &str, name: &str, phase: &str) {
        self.with(|s| s.set_pod_phase(ns, name, phase))
            .unwrap_or_else(|e| panic!("{}", e.message));
    }

    /// Sets a pod's termination grace period, which graceful deletes default to.
    pub fn set_pod_grace(&self, ns: &str, name: &str, secs: i64) {
        self.with(|s| s.set_pod_grace(ns, name, secs))
            .unwrap_or_else(|e| panic!("{}", e.message));
    }

    /// Replaces a pod's labels.
    pub fn set_pod_labels(&self, ns: &str, name: &str, labels: &[(&str, &str)]) {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.with(|s| s.set_pod_labels(ns, name, &labels))
            .unwrap_or_else(|e| panic!("{}", e.message));
    }

    /// Removes a pod at once, as if its node vanished.
    pub fn remove_pod(&self, ns: &str, name: &str) {
        self.with(|s| s.delete(PODS, ns, name, Some(0)))
            .unwrap_or_else(|e| panic!("{}", e.message));
    }

    /// Sets what the fake kubelet does with ephemeral containers.
    pub fn set_ephemeral_behavior(&self, behavior: ephemeral::Behavior) {
        self.with(|s| s.ephemeral = behavior);
    }

    /// Sets an ephemeral container's state (say, its process crashed).
    pub fn set_ephemeral_state(&self, ns: &str, pod: &str, container: &str, fate: ephemeral::Fate) {
        self.with(|s| s.set_ephemeral_state(ns, pod, container, &fate))
            .unwrap_or_else(|e| panic!("{}", e.message));
    }

    /// Signals delivered to a pod's main process through `kill -<sig> 1` execs.
    pub fn signals(&self, ns: &str, name: &str) -> Vec<i32> {
        self.with(|s| s.signals_of(ns, name))
    }

    /// Serves metrics.k8s.io (metrics-server installed) or not.
    pub fn set_metrics_served(&self, served: bool) {
        self.with(|s| s.metrics_served = served);
    }

    /// Sets the usage metrics-server reports for a pod (`"250m"`, `"64Mi"`).
    pub fn set_pod_metrics(&self, ns: &str, name: &str, cpu: &str, memory: &str) {
        self.with(|s| s.set_pod_metrics(ns, name, cpu, memory));
    }

    /// The requests received so far (the latest 4096).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.with(|s| s.requests())
    }

    /// Drops the watch history: watches resuming from an older version get `410 Expired`
    /// and clients must list again.
    pub fn compact(&self) {
        self.with(|s| s.compact());
    }
}
