//! An in-memory environment adapter with every capability, for tests of the layers above
//! adapters. It is a fake: real adapters are tested against their real environments.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures::StreamExt;
use tokio::sync::broadcast;

use crate::adapter::{
    capability, EnvironmentAdapter, PauseControl, ResourceEventStream, Scaling, Signal,
    SignalControl,
};
use crate::error::{Error, Result};
use crate::network::{
    BackendChoice, NetworkBackend, NetworkFault, NetworkFaultHandle, NetworkFaults,
};
use crate::resource::{
    phase, AdapterConfig, AdapterInfo, DeleteOptions, ExecOptions, ExecResult, Metrics, Resource,
    ResourceEvent, ResourceEventType, ResourceKey, ResourceSpec,
};
use crate::selector::ResourceFilter;

/// One call made to the fake, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterCall {
    /// Method name (`stop_resource`, `send_signal`, ...).
    pub method: String,
    /// The resource id or key it was called with.
    pub id: String,
    /// Extra detail (signal name, replicas, command).
    pub detail: String,
}

#[derive(Default)]
struct State {
    resources: BTreeMap<String, Resource>,
    calls: Vec<AdapterCall>,
    active_faults: BTreeMap<String, NetworkFaultHandle>,
    failures: BTreeMap<String, Error>,
    next_id: u64,
    /// When set, the only capabilities offered (listed and returned by the accessors).
    capabilities: Option<Vec<String>>,
}

/// An in-memory [`EnvironmentAdapter`] offering signals, network faults and scaling.
///
/// Resources are added with [`FakeAdapter::insert`]. Calls are logged; any method can be
/// made to fail once with [`FakeAdapter::fail_next`]. `exec` runs nothing: `echo ARGS`
/// prints its arguments, `false` exits 1, `exit N` exits N, anything else exits 0.
#[derive(Clone)]
pub struct FakeAdapter {
    name: String,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<ResourceEvent>,
}

impl std::fmt::Debug for FakeAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeAdapter")
            .field("name", &self.name)
            .finish()
    }
}

impl FakeAdapter {
    /// An empty fake adapter whose instance name is `name`.
    pub fn new(name: &str) -> Self {
        FakeAdapter {
            name: name.to_owned(),
            state: Arc::default(),
            events: broadcast::channel(1024).0,
        }
    }

    /// Adds (or replaces) a resource; its key's adapter segment is set to this adapter.
    pub fn insert(&self, mut resource: Resource) -> Resource {
        let path: Vec<&str> = resource.key.path().collect();
        resource.key = ResourceKey::new(&self.name, path).expect("valid key");
        let mut st = self.state.lock().unwrap();
        let existed = st
            .resources
            .insert(resource.id.clone(), resource.clone())
            .is_some();
        drop(st);
        self.emit(
            if existed {
                ResourceEventType::Modified
            } else {
                ResourceEventType::Added
            },
            &resource,
        );
        resource
    }

    /// Offers only these capabilities from now on (an adapter without pause, say): they
    /// are what `adapter_info` lists and which capability accessors return `Some`.
    pub fn limit_capabilities(&self, capabilities: &[&str]) {
        self.state.lock().unwrap().capabilities =
            Some(capabilities.iter().map(|c| (*c).to_owned()).collect());
    }

    fn offers(&self, capability: &str) -> bool {
        match &self.state.lock().unwrap().capabilities {
            Some(c) => c.iter().any(|x| x == capability),
            None => true,
        }
    }

    /// Every call made so far.
    pub fn calls(&self) -> Vec<AdapterCall> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Calls made to one method.
    pub fn calls_to(&self, method: &str) -> Vec<AdapterCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// Makes the next call to `method` fail with `error`.
    pub fn fail_next(&self, method: &str, error: Error) {
        self.state
            .lock()
            .unwrap()
            .failures
            .insert(method.to_owned(), error);
    }

    /// Network faults currently applied, by fault id.
    pub fn active_network_faults(&self) -> BTreeMap<String, NetworkFaultHandle> {
        self.state.lock().unwrap().active_faults.clone()
    }

    /// A resource's current state, by id or key.
    pub fn resource(&self, id: &str) -> Option<Resource> {
        let st = self.state.lock().unwrap();
        Self::find(&st, id).cloned()
    }

    /// Sets a resource's phase, emitting a `Modified` event.
    pub fn set_phase(&self, id: &str, new_phase: &str) -> Result<()> {
        self.mutate(id, |r| {
            r.status.phase = new_phase.to_owned();
            Ok(())
        })
        .map(|_| ())
    }

    fn find<'a>(st: &'a State, id: &str) -> Option<&'a Resource> {
        st.resources
            .get(id)
            .or_else(|| st.resources.values().find(|r| r.key.as_str() == id))
    }

    fn record(&self, method: &str, id: &str, detail: impl Into<String>) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        st.calls.push(AdapterCall {
            method: method.to_owned(),
            id: id.to_owned(),
            detail: detail.into(),
        });
        match st.failures.remove(method) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn emit(&self, type_: ResourceEventType, resource: &Resource) {
        // No receivers is fine: nobody watches.
        let _ = self.events.send(ResourceEvent {
            type_,
            resource: resource.clone(),
            observed_at: Utc::now(),
        });
    }

    fn mutate(&self, id: &str, f: impl FnOnce(&mut Resource) -> Result<()>) -> Result<Resource> {
        let mut st = self.state.lock().unwrap();
        let rid = Self::find(&st, id)
            .map(|r| r.id.clone())
            .ok_or_else(|| Error::not_found("resource", id))?;
        let r = st.resources.get_mut(&rid).expect("found above");
        f(r)?;
        let r = r.clone();
        drop(st);
        self.emit(ResourceEventType::Modified, &r);
        Ok(r)
    }
}

#[async_trait]
impl EnvironmentAdapter for FakeAdapter {
    async fn initialize(&mut self, config: AdapterConfig) -> Result<()> {
        if !config.name.is_empty() {
            self.name = config.name;
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }

    async fn list_resources(&self, filter: &ResourceFilter) -> Result<Vec<Resource>> {
        self.record("list_resources", "", "")?;
        let all: Vec<Resource> = self
            .state
            .lock()
            .unwrap()
            .resources
            .values()
            .cloned()
            .collect();
        Ok(filter.apply(all))
    }

    async fn get_resource(&self, id: &str) -> Result<Resource> {
        self.record("get_resource", id, "")?;
        self.resource(id)
            .ok_or_else(|| Error::not_found("resource", id))
    }

    async fn start_resource(&self, id: &str) -> Result<()> {
        self.record("start_resource", id, "")?;
        self.mutate(id, |r| {
            r.status.phase = phase::RUNNING.into();
            Ok(())
        })
        .map(|_| ())
    }

    async fn stop_resource(&self, id: &str, grace_period: Duration) -> Result<()> {
        self.record("stop_resource", id, format!("{grace_period:?}"))?;
        self.mutate(id, |r| {
            r.status.phase = phase::STOPPED.into();
            Ok(())
        })
        .map(|_| ())
    }

    async fn restart_resource(&self, id: &str) -> Result<()> {
        self.record("restart_resource", id, "")?;
        self.mutate(id, |r| {
            r.status.phase = phase::RUNNING.into();
            Ok(())
        })
        .map(|_| ())
    }

    async fn delete_resource(&self, id: &str, options: &DeleteOptions) -> Result<()> {
        self.record("delete_resource", id, format!("force={}", options.force))?;
        let mut st = self.state.lock().unwrap();
        let rid = Self::find(&st, id)
            .map(|r| r.id.clone())
            .ok_or_else(|| Error::not_found("resource", id))?;
        let r = st.resources.remove(&rid).expect("found above");
        drop(st);
        self.emit(ResourceEventType::Deleted, &r);
        Ok(())
    }

    async fn create_resource(&self, spec: &ResourceSpec) -> Result<Resource> {
        self.record("create_resource", "", spec.image.clone())?;
        let n = {
            let mut st = self.state.lock().unwrap();
            st.next_id += 1;
            st.next_id
        };
        let name = format!("created-{n}");
        let r = Resource {
            key: ResourceKey::new(&self.name, [&name])?,
            id: format!("id-{name}"),
            name,
            kind: "container".into(),
            labels: Default::default(),
            annotations: Default::default(),
            status: crate::resource::ResourceStatus {
                phase: phase::RUNNING.into(),
                ..Default::default()
            },
            spec: spec.clone(),
            metadata: Default::default(),
        };
        Ok(self.insert(r))
    }

    async fn update_resource(&self, id: &str, spec: &ResourceSpec) -> Result<Resource> {
        self.record("update_resource", id, "")?;
        self.mutate(id, |r| {
            r.spec = spec.clone();
            Ok(())
        })
    }

    async fn watch_resources(&self, filter: &ResourceFilter) -> Result<ResourceEventStream> {
        self.record("watch_resources", "", "")?;
        let filter = filter.without_page();
        let rx = self.events.subscribe();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => return Some((Ok(ev), rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .filter(move |ev| {
            let keep = match ev {
                Ok(ev) => filter.matches(&ev.resource),
                Err(_) => true,
            };
            futures::future::ready(keep)
        });
        Ok(stream.boxed())
    }

    async fn exec_in_resource(
        &self,
        id: &str,
        cmd: &[String],
        _options: &ExecOptions,
    ) -> Result<ExecResult> {
        self.record("exec_in_resource", id, cmd.join(" "))?;
        let r = self
            .resource(id)
            .ok_or_else(|| Error::not_found("resource", id))?;
        if !r.is_running() {
            return Err(Error::Conflict {
                message: format!("{} is not running", r.key),
            });
        }
        let result = match cmd.first().map(String::as_str) {
            Some("echo") => ExecResult {
                stdout: format!("{}\n", cmd[1..].join(" ")).into_bytes(),
                exit_code: 0,
                ..Default::default()
            },
            Some("false") => ExecResult {
                exit_code: 1,
                ..Default::default()
            },
            Some("exit") => ExecResult {
                exit_code: cmd.get(1).and_then(|c| c.parse().ok()).unwrap_or(0),
                ..Default::default()
            },
            Some(_) => ExecResult::default(),
            None => return Err(Error::invalid("command", "empty")),
        };
        Ok(result)
    }

    async fn get_metrics(&self, id: &str) -> Result<Metrics> {
        self.record("get_metrics", id, "")?;
        let r = self
            .resource(id)
            .ok_or_else(|| Error::not_found("resource", id))?;
        Ok(Metrics {
            timestamp: Utc::now(),
            resource_id: r.id,
            ..Default::default()
        })
    }

    fn adapter_info(&self) -> AdapterInfo {
        AdapterInfo {
            name: self.name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            environment: "fake".into(),
            capabilities: capability::ALL
                .iter()
                .filter(|c| self.offers(c))
                .map(|c| (*c).to_owned())
                .collect(),
        }
    }

    fn signals(&self) -> Option<&dyn SignalControl> {
        self.offers(capability::SIGNALS).then_some(self as _)
    }

    fn pausing(&self) -> Option<&dyn PauseControl> {
        self.offers(capability::PAUSE).then_some(self as _)
    }

    fn network_faults(&self) -> Option<&dyn NetworkFaults> {
        self.offers(capability::NETWORK).then_some(self as _)
    }

    fn scaling(&self) -> Option<&dyn Scaling> {
        self.offers(capability::SCALE).then_some(self as _)
    }
}

#[async_trait]
impl SignalControl for FakeAdapter {
    async fn send_signal(&self, id: &str, signal: &Signal) -> Result<()> {
        self.record("send_signal", id, signal.name())?;
        let stops = matches!(signal.name(), "SIGKILL" | "SIGTERM" | "SIGINT" | "SIGQUIT");
        self.mutate(id, |r| {
            if stops {
                r.status.phase = phase::STOPPED.into();
            }
            Ok(())
        })
        .map(|_| ())
    }
}

#[async_trait]
impl PauseControl for FakeAdapter {
    async fn pause(&self, id: &str) -> Result<()> {
        self.record("pause", id, "")?;
        self.mutate(id, |r| {
            r.status.phase = phase::PAUSED.into();
            Ok(())
        })
        .map(|_| ())
    }

    async fn resume(&self, id: &str) -> Result<()> {
        self.record("resume", id, "")?;
        self.mutate(id, |r| {
            r.status.phase = phase::RUNNING.into();
            Ok(())
        })
        .map(|_| ())
    }
}

#[async_trait]
impl NetworkFaults for FakeAdapter {
    async fn prepare(
        &self,
        id: &str,
        fault_id: &str,
        fault: &NetworkFault,
    ) -> Result<NetworkFaultHandle> {
        self.record("network_prepare", id, fault_id)?;
        crate::network::check_fault_id(fault_id)?;
        fault.validate()?;
        let r = self
            .resource(id)
            .ok_or_else(|| Error::not_found("resource", id))?;
        Ok(NetworkFaultHandle {
            fault_id: fault_id.to_owned(),
            resource_id: r.id,
            fault: fault.clone(),
            backend: match fault.backend {
                BackendChoice::Netem => NetworkBackend::Netem,
                _ => NetworkBackend::Userspace,
            },
            data: serde_json::Value::Null,
        })
    }

    async fn apply(&self, handle: &NetworkFaultHandle) -> Result<()> {
        self.record(
            "network_apply",
            &handle.resource_id,
            format!("{} {:?}", handle.fault_id, handle.fault),
        )?;
        self.state
            .lock()
            .unwrap()
            .active_faults
            .insert(handle.fault_id.clone(), handle.clone());
        Ok(())
    }

    async fn revert(&self, handle: &NetworkFaultHandle) -> Result<()> {
        self.record("network_revert", &handle.resource_id, &handle.fault_id)?;
        self.state
            .lock()
            .unwrap()
            .active_faults
            .remove(&handle.fault_id);
        Ok(())
    }
}

#[async_trait]
impl Scaling for FakeAdapter {
    async fn replicas(&self, id: &str) -> Result<i32> {
        self.record("replicas", id, "")?;
        let r = self
            .resource(id)
            .ok_or_else(|| Error::not_found("resource", id))?;
        Ok(r.spec.replicas.unwrap_or(1))
    }

    async fn scale(&self, id: &str, replicas: i32) -> Result<()> {
        self.record("scale", id, replicas.to_string())?;
        if replicas < 0 {
            return Err(Error::invalid(
                "replicas",
                format!("{replicas} is negative"),
            ));
        }
        self.mutate(id, |r| {
            r.spec.replicas = Some(replicas);
            Ok(())
        })
        .map(|_| ())
    }
}
