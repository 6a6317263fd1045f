//! Lifecycle operations, scaling and signals.
//!
//! Kubernetes has no stop/start for a pod: a pod is stopped by deleting it (its controller
//! replaces it, as after a crash) and restarted by deleting it and letting its controller,
//! or this adapter for a pod without one, create it again. Deployments and statefulsets
//! stop by scaling to zero (the previous count is kept in an annotation) and restart with
//! a rollout, as `kubectl rollout restart` does.

use std::time::Duration;

use chrono::Utc;
use ire_core::{Error, Resource, ResourceSpec, Result, Signal};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet};
use k8s_openapi::api::core::v1::{Container, ContainerPort, EnvVar, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::convert::{
    deployment_to_resource, pod_to_resource, statefulset_to_resource, WorkloadKind,
};
use super::error::{from_kube, Target};
use super::Inner;

/// Annotation holding a workload's replica count while it is stopped.
pub const REPLICAS_BEFORE_STOP: &str = "ire.dev/replicas-before-stop";
/// Label on everything this adapter creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "ire");
/// Label selecting the pods of a deployment this adapter created.
pub const WORKLOAD_LABEL: &str = "ire.dev/workload";
/// How long a restart waits for a bare pod to be gone before creating it again.
const RECREATE_TIMEOUT_MARGIN: Duration = Duration::from_secs(30);

fn containers_from(spec: &ResourceSpec) -> Result<Vec<Container>> {
    if spec.image.is_empty() {
        return Err(Error::invalid("spec.image", "required to create a pod"));
    }
    Ok(vec![Container {
        name: "main".into(),
        image: Some(spec.image.clone()),
        command: (!spec.command.is_empty()).then(|| spec.command.clone()),
        args: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: (!spec.environment.is_empty()).then(|| {
            spec.environment
                .iter()
                .map(|(k, v)| EnvVar {
                    name: k.clone(),
                    value: Some(v.clone()),
                    ..EnvVar::default()
                })
                .collect()
        }),
        ports: (!spec.ports.is_empty()).then(|| {
            spec.ports
                .iter()
                .map(|p| ContainerPort {
                    name: (!p.name.is_empty()).then(|| p.name.clone()),
                    container_port: p.container_port,
                    host_port: (p.host_port != 0).then_some(p.host_port),
                    protocol: (!p.protocol.is_empty()).then(|| p.protocol.to_ascii_uppercase()),
                    ..ContainerPort::default()
                })
                .collect()
        }),
        ..Container::default()
    }])
}

/// Changes the first container toward `spec`; empty fields of `spec` leave it unchanged.
/// Applies a spec to a deployment's or statefulset's replicas and pod template.
fn apply_to_workload(
    replicas: &mut Option<i32>,
    template: &mut PodTemplateSpec,
    spec: &ResourceSpec,
) {
    if spec.replicas.is_some() {
        *replicas = spec.replicas;
    }
    if let Some(c) = template
        .spec
        .as_mut()
        .and_then(|p| p.containers.first_mut())
    {
        apply_to_container(c, spec);
    }
}

fn apply_to_container(c: &mut Container, spec: &ResourceSpec) {
    if !spec.image.is_empty() {
        c.image = Some(spec.image.clone());
    }
    if !spec.command.is_empty() {
        c.command = Some(spec.command.clone());
    }
    if !spec.args.is_empty() {
        c.args = Some(spec.args.clone());
    }
    if !spec.environment.is_empty() {
        let env = c.env.get_or_insert_with(Vec::new);
        for (k, v) in &spec.environment {
            env.retain(|e| &e.name != k);
            env.push(EnvVar {
                name: k.clone(),
                value: Some(v.clone()),
                ..EnvVar::default()
            });
        }
    }
}

impl Inner {
    /// A resource by kind, namespace and name.
    pub(crate) async fn get_named(
        &self,
        kind: WorkloadKind,
        ns: &str,
        name: &str,
    ) -> Result<Resource> {
        let t = || Target {
            kind: kind.as_str(),
            name,
        };
        match kind {
            WorkloadKind::Pod => pod_to_resource(
                &self.name,
                &self
                    .api::<Pod>(Some(ns))
                    .get(name)
                    .await
                    .map_err(|e| from_kube(e, t()))?,
            ),
            WorkloadKind::Deployment => deployment_to_resource(
                &self.name,
                &self
                    .api::<Deployment>(Some(ns))
                    .get(name)
                    .await
                    .map_err(|e| from_kube(e, t()))?,
            ),
            WorkloadKind::StatefulSet => statefulset_to_resource(
                &self.name,
                &self
                    .api::<StatefulSet>(Some(ns))
                    .get(name)
                    .await
                    .map_err(|e| from_kube(e, t()))?,
            ),
        }
    }

    /// Deletes an object; `grace` for pods (None: the pod's own period).
    pub(crate) async fn delete_named(
        &self,
        kind: WorkloadKind,
        ns: &str,
        name: &str,
        grace: Option<Duration>,
    ) -> Result<()> {
        let dp = DeleteParams {
            grace_period_seconds: grace.map(|g| g.as_secs().min(u32::MAX as u64) as u32),
            ..DeleteParams::background()
        };
        let t = || Target {
            kind: kind.as_str(),
            name,
        };
        match kind {
            WorkloadKind::Pod => self
                .api::<Pod>(Some(ns))
                .delete(name, &dp)
                .await
                .map(|_| ()),
            WorkloadKind::Deployment => self
                .api::<Deployment>(Some(ns))
                .delete(name, &dp)
                .await
                .map(|_| ()),
            WorkloadKind::StatefulSet => self
                .api::<StatefulSet>(Some(ns))
                .delete(name, &dp)
                .await
                .map(|_| ()),
        }
        .map_err(|e| from_kube(e, t()))?;
        tracing::info!(component = "kubernetes-adapter", resource_id = %format!("{ns}/{name}"), kind = kind.as_str(), grace_secs = ?grace.map(|g| g.as_secs()), "deleted");
        Ok(())
    }

    /// The desired replicas of a workload.
    pub(crate) async fn replicas(&self, kind: WorkloadKind, ns: &str, name: &str) -> Result<i32> {
        let t = || Target {
            kind: kind.as_str(),
            name,
        };
        let scale = match kind {
            WorkloadKind::Deployment => self.api::<Deployment>(Some(ns)).get_scale(name).await,
            WorkloadKind::StatefulSet => self.api::<StatefulSet>(Some(ns)).get_scale(name).await,
            WorkloadKind::Pod => return Err(not_scalable(ns, name)),
        }
        .map_err(|e| from_kube(e, t()))?;
        Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0))
    }

    /// Sets the desired replicas of a workload through its `scale` subresource.
    pub(crate) async fn scale(
        &self,
        kind: WorkloadKind,
        ns: &str,
        name: &str,
        replicas: i32,
    ) -> Result<()> {
        if replicas < 0 {
            return Err(Error::invalid(
                "replicas",
                format!("{replicas} is negative"),
            ));
        }
        let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
        let pp = PatchParams::default();
        let t = || Target {
            kind: kind.as_str(),
            name,
        };
        match kind {
            WorkloadKind::Deployment => {
                self.api::<Deployment>(Some(ns))
                    .patch_scale(name, &pp, &patch)
                    .await
            }
            WorkloadKind::StatefulSet => {
                self.api::<StatefulSet>(Some(ns))
                    .patch_scale(name, &pp, &patch)
                    .await
            }
            WorkloadKind::Pod => return Err(not_scalable(ns, name)),
        }
        .map_err(|e| from_kube(e, t()))?;
        tracing::info!(component = "kubernetes-adapter", resource_id = %format!("{ns}/{name}"), replicas, "scaled");
        Ok(())
    }

    async fn patch_workload(
        &self,
        kind: WorkloadKind,
        ns: &str,
        name: &str,
        patch: serde_json::Value,
    ) -> Result<()> {
        let patch = Patch::Merge(patch);
        let pp = PatchParams::default();
        let t = || Target {
            kind: kind.as_str(),
            name,
        };
        match kind {
            WorkloadKind::Deployment => self
                .api::<Deployment>(Some(ns))
                .patch(name, &pp, &patch)
                .await
                .map(|_| ()),
            WorkloadKind::StatefulSet => self
                .api::<StatefulSet>(Some(ns))
                .patch(name, &pp, &patch)
                .await
                .map(|_| ()),
            WorkloadKind::Pod => self
                .api::<Pod>(Some(ns))
                .patch(name, &pp, &patch)
                .await
                .map(|_| ()),
        }
        .map_err(|e| from_kube(e, t()))
    }

    /// Stops: a pod is deleted with the grace period; a workload is scaled to zero.
    pub(crate) async fn stop(
        &self,
        kind: WorkloadKind,
        ns: &str,
        name: &str,
        grace: Duration,
    ) -> Result<()> {
        if kind == WorkloadKind::Pod {
            return self.delete_named(kind, ns, name, Some(grace)).await;
        }
        let current = self.replicas(kind, ns, name).await?;
        if current == 0 {
            return Err(Error::AlreadyDone {
                message: format!("{} {ns}/{name} is scaled to 0", kind.as_str()),
            });
        }
        self.patch_workload(
            kind,
            ns,
            name,
            json!({"metadata": {"annotations": {REPLICAS_BEFORE_STOP: current.to_string()}}}),
        )
        .await?;
        self.scale(kind, ns, name, 0).await
    }

    /// Starts a stopped workload at its previous replica count (1 if unknown). A running
    /// pod is already started; a pod cannot be started otherwise.
    pub(crate) async fn start(&self, kind: WorkloadKind, ns: &str, name: &str) -> Result<()> {
        let r = self.get_named(kind, ns, name).await?;
        if kind == WorkloadKind::Pod {
            return if r.is_running() {
                Err(Error::AlreadyDone {
                    message: format!("pod {ns}/{name} is running"),
                })
            } else {
                Err(Error::unsupported(
                    format!("starting pod {ns}/{name} (phase {}): pods are started by their controller; restart it or scale its workload", r.status.phase),
                    self.name.clone(),
                ))
            };
        }
        if r.spec.replicas.unwrap_or(0) > 0 {
            return Err(Error::AlreadyDone {
                message: format!("{} {ns}/{name} has replicas", kind.as_str()),
            });
        }
        let previous = r
            .annotations
            .get(REPLICAS_BEFORE_STOP)
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(1);
        self.scale(kind, ns, name, previous).await?;
        self.patch_workload(
            kind,
            ns,
            name,
            json!({"metadata": {"annotations": {REPLICAS_BEFORE_STOP: null}}}),
        )
        .await
    }

    /// Restarts: a workload by a rollout, a controlled pod by deleting it (its controller
    /// replaces it), a bare pod by deleting it and creating it again from its spec.
    pub(crate) async fn restart(&self, kind: WorkloadKind, ns: &str, name: &str) -> Result<()> {
        if kind != WorkloadKind::Pod {
            let patch = json!({"spec": {"template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": Utc::now().to_rfc3339(),
            }}}}});
            return self.patch_workload(kind, ns, name, patch).await;
        }
        let api = self.api::<Pod>(Some(ns));
        let pod = api
            .get(name)
            .await
            .map_err(|e| from_kube(e, Target { kind: "pod", name }))?;
        let controlled = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true));
        self.delete_named(kind, ns, name, None).await?;
        if controlled {
            return Ok(());
        }
        let grace = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(grace.max(0) as u64)
            + RECREATE_TIMEOUT_MARGIN;
        let uid = pod.metadata.uid.clone();
        loop {
            match api
                .get_opt(name)
                .await
                .map_err(|e| from_kube(e, Target { kind: "pod", name }))?
            {
                Some(p) if p.metadata.uid == uid => {}
                _ => break,
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    operation: format!(
                        "waiting for pod {ns}/{name} to terminate before recreating it"
                    ),
                    after: Duration::from_secs(grace as u64) + RECREATE_TIMEOUT_MARGIN,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut spec = pod.spec.clone().unwrap_or_default();
        spec.node_name = None;
        let fresh = Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(ns.to_owned()),
                labels: pod.metadata.labels.clone(),
                annotations: pod.metadata.annotations.clone(),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
            status: None,
        };
        match api.create(&PostParams::default(), &fresh).await {
            Ok(_) => Ok(()),
            // Someone (a controller we did not see) already recreated it.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(from_kube(e, Target { kind: "pod", name })),
        }
    }

    /// Creates a bare pod, or a deployment when `spec.replicas` is set.
    pub(crate) async fn create(&self, spec: &ResourceSpec) -> Result<Resource> {
        let containers = containers_from(spec)?;
        let ns = self.namespace.as_str();
        let mut labels =
            std::collections::BTreeMap::from([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())]);
        let pod_spec = PodSpec {
            containers,
            ..PodSpec::default()
        };
        let t = Target {
            kind: "resource",
            name: "(generated)",
        };
        match spec.replicas {
            None => {
                let pod = Pod {
                    metadata: ObjectMeta {
                        generate_name: Some("ire-".into()),
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    },
                    spec: Some(pod_spec),
                    status: None,
                };
                let created = self
                    .api::<Pod>(Some(ns))
                    .create(&PostParams::default(), &pod)
                    .await
                    .map_err(|e| from_kube(e, t))?;
                pod_to_resource(&self.name, &created)
            }
            Some(replicas) if replicas < 0 => Err(Error::invalid(
                "spec.replicas",
                format!("{replicas} is negative"),
            )),
            Some(replicas) => {
                let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
                labels.insert(WORKLOAD_LABEL.into(), id.clone());
                let selector = std::collections::BTreeMap::from([(WORKLOAD_LABEL.to_owned(), id)]);
                let d = Deployment {
                    metadata: ObjectMeta {
                        generate_name: Some("ire-".into()),
                        labels: Some(labels.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(DeploymentSpec {
                        replicas: Some(replicas),
                        selector: LabelSelector {
                            match_labels: Some(selector),
                            ..LabelSelector::default()
                        },
                        template: PodTemplateSpec {
                            metadata: Some(ObjectMeta {
                                labels: Some(labels),
                                ..ObjectMeta::default()
                            }),
                            spec: Some(pod_spec),
                        },
                        ..DeploymentSpec::default()
                    }),
                    status: None,
                };
                let created = self
                    .api::<Deployment>(Some(ns))
                    .create(&PostParams::default(), &d)
                    .await
                    .map_err(|e| from_kube(e, t))?;
                deployment_to_resource(&self.name, &created)
            }
        }
    }

    /// Changes a resource toward `spec` (empty fields are left as they are). A pod only
    /// accepts a new image, as the API server allows; a workload takes replicas and its
    /// template's first container. Replaced with the read `resourceVersion`, so a
    /// concurrent change is a `Conflict`.
    pub(crate) async fn update(
        &self,
        kind: WorkloadKind,
        ns: &str,
        name: &str,
        spec: &ResourceSpec,
    ) -> Result<Resource> {
        let t = || Target {
            kind: kind.as_str(),
            name,
        };
        let pp = PostParams::default();
        match kind {
            WorkloadKind::Pod => {
                if spec.replicas.is_some()
                    || !spec.command.is_empty()
                    || !spec.args.is_empty()
                    || !spec.environment.is_empty()
                    || !spec.ports.is_empty()
                    || !spec.volumes.is_empty()
                {
                    return Err(Error::invalid(
                        "spec",
                        format!("pod {ns}/{name} can only change its image; change its deployment or statefulset instead"),
                    ));
                }
                let api = self.api::<Pod>(Some(ns));
                let mut pod = api.get(name).await.map_err(|e| from_kube(e, t()))?;
                if let Some(c) = pod.spec.as_mut().and_then(|s| s.containers.first_mut()) {
                    apply_to_container(c, spec);
                }
                let updated = api
                    .replace(name, &pp, &pod)
                    .await
                    .map_err(|e| from_kube(e, t()))?;
                pod_to_resource(&self.name, &updated)
            }
            WorkloadKind::Deployment => {
                let api = self.api::<Deployment>(Some(ns));
                let mut d = api.get(name).await.map_err(|e| from_kube(e, t()))?;
                if let Some(s) = d.spec.as_mut() {
                    apply_to_workload(&mut s.replicas, &mut s.template, spec);
                }
                let updated = api
                    .replace(name, &pp, &d)
                    .await
                    .map_err(|e| from_kube(e, t()))?;
                deployment_to_resource(&self.name, &updated)
            }
            WorkloadKind::StatefulSet => {
                let api = self.api::<StatefulSet>(Some(ns));
                let mut s = api.get(name).await.map_err(|e| from_kube(e, t()))?;
                if let Some(sp) = s.spec.as_mut() {
                    apply_to_workload(&mut sp.replicas, &mut sp.template, spec);
                }
                let updated = api
                    .replace(name, &pp, &s)
                    .await
                    .map_err(|e| from_kube(e, t()))?;
                statefulset_to_resource(&self.name, &updated)
            }
        }
    }

    /// Signals a pod's main process. SIGKILL deletes the pod with no grace period (a
    /// process cannot SIGKILL its namespace's PID 1 from inside); other signals run
    /// `kill -<n> 1` in the container (the image needs `kill`, and PID 1 must handle the
    /// signal).
    pub(crate) async fn signal(
        &self,
        kind: WorkloadKind,
        ns: &str,
        name: &str,
        signal: &Signal,
    ) -> Result<()> {
        if kind != WorkloadKind::Pod {
            return Err(Error::unsupported(
                format!("signals to {} {ns}/{name} (signal its pods)", kind.as_str()),
                self.name.clone(),
            ));
        }
        if signal.number() == 9 {
            return self
                .delete_named(kind, ns, name, Some(Duration::ZERO))
                .await;
        }
        let cmd = vec![
            "kill".to_owned(),
            format!("-{}", signal.number()),
            "1".to_owned(),
        ];
        let r = self.exec(ns, name, &cmd, &Default::default()).await?;
        if r.exit_code != 0 {
            return Err(Error::other(
                ire_core::ErrorClass::Fatal,
                format!(
                    "kill -{} 1 in pod {ns}/{name} exited {}: {}",
                    signal.number(),
                    r.exit_code,
                    r.stderr_text().trim()
                ),
                None,
            ));
        }
        Ok(())
    }
}

/// A Kubernetes label selector as the selector string the API takes.
pub(crate) fn selector_string(sel: &LabelSelector) -> Result<String> {
    use ire_core::{Operator, SelectorRequirement};
    let mut ire = ire_core::LabelSelector {
        match_labels: sel.match_labels.clone().unwrap_or_default(),
        ..Default::default()
    };
    for e in sel.match_expressions.iter().flatten() {
        let op = match e.operator.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => {
                return Err(Error::invalid(
                    "spec.selector",
                    format!("unknown operator {other:?}"),
                ))
            }
        };
        ire.match_expressions.push(SelectorRequirement::new(
            e.key.clone(),
            op,
            e.values.clone().unwrap_or_default(),
        ));
    }
    super::selector::label_selector_string(&ire)?
        .ok_or_else(|| Error::invalid("spec.selector", "the workload selects every pod"))
}

impl Inner {
    /// The label selector string of a workload's pods.
    pub(crate) async fn workload_selector(
        &self,
        kind: WorkloadKind,
        ns: &str,
        name: &str,
    ) -> Result<String> {
        let t = || Target {
            kind: kind.as_str(),
            name,
        };
        let sel = match kind {
            WorkloadKind::Deployment => self
                .api::<Deployment>(Some(ns))
                .get(name)
                .await
                .map_err(|e| from_kube(e, t()))?
                .spec
                .map(|s| s.selector),
            WorkloadKind::StatefulSet => self
                .api::<StatefulSet>(Some(ns))
                .get(name)
                .await
                .map_err(|e| from_kube(e, t()))?
                .spec
                .map(|s| s.selector),
            WorkloadKind::Pod => {
                return Err(Error::invalid(
                    "resource",
                    format!("pod {ns}/{name} is not a workload"),
                ))
            }
        };
        selector_string(&sel.unwrap_or_default())
    }
}

fn not_scalable(ns: &str, name: &str) -> Error {
    Error::invalid(
        "resource",
        format!("pod {ns}/{name} is not scalable; scale its deployment or statefulset"),
    )
}
