//! Kubernetes objects as ire resources, and resource keys and ids back to objects.
//!
//! Keys: a pod is `<adapter>/<namespace>/<pod>`, a deployment
//! `<adapter>/<namespace>/deployment/<name>`, a statefulset
//! `<adapter>/<namespace>/statefulset/<name>`. A resource's `id` is the object's UID.

use std::collections::BTreeMap;

use chrono::Utc;
use ire_core::{
    resource::phase, Condition, Error, Labels, Metadata, Port, Resource, ResourceKey, ResourceSpec,
    ResourceStatus, Result,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

/// The kinds this adapter maps onto resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    /// A pod: the resource faults act on.
    Pod,
    /// A deployment: scalable.
    Deployment,
    /// A statefulset: scalable, with stable pod names.
    StatefulSet,
}

impl WorkloadKind {
    /// Every kind, in listing order.
    pub const ALL: [WorkloadKind; 3] = [
        WorkloadKind::Pod,
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
    ];

    /// The resource `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Pod => "pod",
            WorkloadKind::Deployment => "deployment",
            WorkloadKind::StatefulSet => "statefulset",
        }
    }

    /// The kind named by a resource `kind` string.
    pub fn parse(s: &str) -> Option<Self> {
        WorkloadKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Kubernetes pod phases.
pub const POD_PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];

/// ire's phase for a pod phase.
pub fn pod_phase(k8s: Option<&str>) -> &'static str {
    match k8s {
        Some("Pending") => phase::PENDING,
        Some("Running") => phase::RUNNING,
        Some("Succeeded") => phase::STOPPED,
        Some("Failed") => phase::FAILED,
        _ => phase::UNKNOWN,
    }
}

/// What a resource id or key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectRef {
    /// An object by namespace and name.
    Named {
        /// Its kind.
        kind: WorkloadKind,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A pod by UID (found by walking the pod list page by page).
    Uid(String),
}

impl ObjectRef {
    /// Parses a key (`<adapter>/<ns>/<pod>`, `<adapter>/<ns>/<kind>/<name>`), the same
    /// without the adapter, a bare pod name (in `default_ns`) or a pod UID.
    pub fn parse(id: &str, adapter: &str, default_ns: &str) -> Result<Self> {
        let rest = id
            .strip_prefix(adapter)
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(id);
        let segs: Vec<&str> = rest.split('/').collect();
        if segs.iter().any(|s| s.is_empty()) {
            return Err(Error::invalid(
                "resource id",
                format!("{id:?} has an empty segment"),
            ));
        }
        let named = |kind, ns: &str, name: &str| ObjectRef::Named {
            kind,
            namespace: ns.to_owned(),
            name: name.to_owned(),
        };
        match segs.as_slice() {
            [one] if uuid::Uuid::parse_str(one).is_ok() => Ok(ObjectRef::Uid((*one).to_owned())),
            [name] => Ok(named(WorkloadKind::Pod, default_ns, name)),
            [ns, name] => Ok(named(WorkloadKind::Pod, ns, name)),
            [ns, kind, name] => match WorkloadKind::parse(kind) {
                Some(k) if k != WorkloadKind::Pod => Ok(named(k, ns, name)),
                _ => Err(Error::invalid(
                    "resource id",
                    format!("{id:?}: {kind:?} is not deployment or statefulset"),
                )),
            },
            _ => Err(Error::invalid(
                "resource id",
                format!(
                    "{id:?} is not {adapter}/<namespace>/<pod>, {adapter}/<namespace>/<deployment|statefulset>/<name> or a pod UID"
                ),
            )),
        }
    }
}

/// The key of an object.
pub fn key_of(adapter: &str, kind: WorkloadKind, ns: &str, name: &str) -> Result<ResourceKey> {
    match kind {
        WorkloadKind::Pod => ResourceKey::new(adapter, [ns, name]),
        k => ResourceKey::new(adapter, [ns, k.as_str(), name]),
    }
}

fn labels(m: &Option<BTreeMap<String, String>>) -> Labels {
    m.clone().unwrap_or_default()
}

fn common_metadata(meta: &ObjectMeta) -> Metadata {
    let mut m = Metadata::new();
    m.insert("namespace".into(), json!(meta.namespace));
    m.insert("uid".into(), json!(meta.uid));
    m.insert("resourceVersion".into(), json!(meta.resource_version));
    if let Some(t) = &meta.creation_timestamp {
        m.insert("creationTimestamp".into(), json!(t.0.to_string()));
    }
    if let Some(owner) = meta.owner_references.as_ref().and_then(|o| o.first()) {
        m.insert("ownerKind".into(), json!(owner.kind));
        m.insert("ownerName".into(), json!(owner.name));
    }
    m
}

fn container_spec(c: Option<&Container>) -> ResourceSpec {
    let Some(c) = c else {
        return ResourceSpec::default();
    };
    ResourceSpec {
        image: c.image.clone().unwrap_or_default(),
        command: c.command.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        environment: c
            .env
            .iter()
            .flatten()
            .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
            .collect(),
        ports: c
            .ports
            .iter()
            .flatten()
            .map(|p| Port {
                name: p.name.clone().unwrap_or_default(),
                container_port: p.container_port,
                host_port: p.host_port.unwrap_or(0),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            })
            .collect(),
        ..ResourceSpec::default()
    }
}

fn required<'a>(v: &'a Option<String>, what: &str) -> Result<&'a str> {
    v.as_deref().ok_or_else(|| {
        Error::other(
            ire_core::ErrorClass::Fatal,
            format!("the API server returned an object without {what}"),
            None,
        )
    })
}

/// A pod as a resource.
pub fn pod_to_resource(adapter: &str, pod: &Pod) -> Result<Resource> {
    let meta = &pod.metadata;
    let ns = required(&meta.namespace, "metadata.namespace")?;
    let name = required(&meta.name, "metadata.name")?;
    let status = pod.status.as_ref();
    let mut conditions: Vec<Condition> = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .map(|c| Condition {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
            last_transition_time: c
                .last_transition_time
                .as_ref()
                .map(|t| t.0.to_string().parse().unwrap_or_else(|_| Utc::now()))
                .unwrap_or_else(Utc::now),
        })
        .collect();
    let terminating = meta.deletion_timestamp.is_some();
    if terminating {
        let mut c = Condition::new("Terminating", "True");
        c.reason = "DeletionRequested".into();
        conditions.push(c);
    }
    let restarts: i32 = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    let spec = pod.spec.as_ref();
    let mut metadata = common_metadata(meta);
    metadata.insert("restartCount".into(), json!(restarts));
    metadata.insert("terminating".into(), json!(terminating));
    if let Some(s) = spec {
        metadata.insert("nodeName".into(), json!(s.node_name));
        metadata.insert(
            "containers".into(),
            json!(s.containers.iter().map(|c| &c.name).collect::<Vec<_>>()),
        );
    }
    if let Some(ip) = status.and_then(|s| s.pod_ip.as_ref()) {
        metadata.insert("podIP".into(), json!(ip));
    }
    Ok(Resource {
        key: key_of(adapter, WorkloadKind::Pod, ns, name)?,
        id: meta.uid.clone().unwrap_or_default(),
        name: name.to_owned(),
        kind: WorkloadKind::Pod.as_str().into(),
        labels: labels(&meta.labels),
        annotations: labels(&meta.annotations),
        status: ResourceStatus {
            phase: pod_phase(status.and_then(|s| s.phase.as_deref())).into(),
            conditions,
            message: status.and_then(|s| s.message.clone()).unwrap_or_default(),
            reason: if terminating {
                "Terminating".into()
            } else {
                status.and_then(|s| s.reason.clone()).unwrap_or_default()
            },
        },
        spec: container_spec(spec.and_then(|s| s.containers.first())),
        metadata,
    })
}

/// Replica counts of a workload: desired, ready.
fn workload_resource(
    adapter: &str,
    kind: WorkloadKind,
    meta: &ObjectMeta,
    template: &PodTemplateSpec,
    desired: i32,
    ready: i32,
) -> Result<Resource> {
    let ns = required(&meta.namespace, "metadata.namespace")?;
    let name = required(&meta.name, "metadata.name")?;
    let phase = if desired == 0 {
        phase::STOPPED
    } else if ready >= desired {
        phase::RUNNING
    } else {
        phase::PENDING
    };
    let mut spec = container_spec(template.spec.as_ref().and_then(|s| s.containers.first()));
    spec.replicas = Some(desired);
    let mut metadata = common_metadata(meta);
    metadata.insert("readyReplicas".into(), json!(ready));
    let mut available =
        Condition::new("Available", if ready >= desired { "True" } else { "False" });
    available.message = format!("{ready}/{desired} replicas ready");
    Ok(Resource {
        key: key_of(adapter, kind, ns, name)?,
        id: meta.uid.clone().unwrap_or_default(),
        name: name.to_owned(),
        kind: kind.as_str().into(),
        labels: labels(&meta.labels),
        annotations: labels(&meta.annotations),
        status: ResourceStatus {
            phase: phase.into(),
            conditions: vec![available],
            message: String::new(),
            reason: String::new(),
        },
        spec,
        metadata,
    })
}

/// A deployment as a resource.
pub fn deployment_to_resource(adapter: &str, d: &Deployment) -> Result<Resource> {
    let spec = d.spec.clone().unwrap_or_default();
    let ready = d
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    workload_resource(
        adapter,
        WorkloadKind::Deployment,
        &d.metadata,
        &spec.template,
        spec.replicas.unwrap_or(1),
        ready,
    )
}

/// A statefulset as a resource.
pub fn statefulset_to_resource(adapter: &str, s: &StatefulSet) -> Result<Resource> {
    let spec = s.spec.clone().unwrap_or_default();
    let ready = s
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    workload_resource(
        adapter,
        WorkloadKind::StatefulSet,
        &s.metadata,
        &spec.template,
        spec.replicas.unwrap_or(1),
        ready,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_keys_parse() {
        let p = |s| ObjectRef::parse(s, "k8s", "default");
        assert_eq!(
            p("k8s/shop/web-0").unwrap(),
            ObjectRef::Named {
                kind: WorkloadKind::Pod,
                namespace: "shop".into(),
                name: "web-0".into()
            }
        );
        assert_eq!(
            p("k8s/shop/statefulset/web").unwrap(),
            ObjectRef::Named {
                kind: WorkloadKind::StatefulSet,
                namespace: "shop".into(),
                name: "web".into()
            }
        );
        assert_eq!(
            p("web-0").unwrap(),
            ObjectRef::Named {
                kind: WorkloadKind::Pod,
                namespace: "default".into(),
                name: "web-0".into()
            }
        );
        assert!(matches!(
            p("0f8b1c1e-8c5e-4a8e-9a43-2f2b3b8d1c11").unwrap(),
            ObjectRef::Uid(_)
        ));
        assert!(p("k8s/shop/pod/x").is_err());
        assert!(p("k8s//x").is_err());
        assert!(p("a/b/c/d/e").is_err());
    }
}
