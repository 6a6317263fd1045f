//! Network faults on pods, through ephemeral containers of the helper image that share the
//! pod's network namespace (`NET_ADMIN`, `NET_RAW`).
//!
//! - prepare: an ephemeral container `ire-nfp-<h>` runs `ire-net-fault probe` and exits; its
//!   answer comes back as the container's termination message.
//! - apply: `ire-nf-<h>` runs `ire-net-fault apply`. With the userspace backend it keeps
//!   running the emulator, and apply returns once `ire-net-fault status`, exec'd in it,
//!   reports the fault in place; otherwise it installs tc and nftables and exits 0.
//! - revert: a running emulator is told to stop (an exec of `revert` in its container: on
//!   SIGTERM it releases held packets and removes everything it installed, and its container
//!   ends); in every other case an ephemeral container `ire-nfr-<h>-<n>` runs
//!   `ire-net-fault revert`. A pod that is gone, or was recreated (another UID), took its
//!   namespace and the fault with it.
//!
//! `<h>` is eight hex digits of the fault id's hash: container names are DNS labels.
//! Kubernetes never removes an ephemeral container: each fault leaves two or three
//! terminated ones in the pod's spec until the pod is replaced.

use std::time::Duration;

use ire_core::{
    Cidr, Error, ErrorClass, ExecOptions, NetworkBackend, NetworkFault, NetworkFaultHandle,
    ResourceFilter, Result,
};
use ire_net_fault::plan::short_hash;
use ire_net_fault::Plan;
use k8s_openapi::api::core::v1::{Capabilities, EphemeralContainer, Pod, SecurityContext};
use kube::api::PostParams;
use serde::{Deserialize, Serialize};

use super::error::{from_kube, Target};
use super::Inner;
use crate::net_fault::{helper_args, make_plan, parse_probe};

/// Where the helper image has the helper.
const HELPER_BIN: &str = "/usr/local/bin/ire-net-fault";
/// Where the helper writes what the pod's status should carry.
const TERMINATION_LOG: &str = "/dev/termination-log";
/// How long a helper container may take to start, or to finish.
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);
/// The default helper image.
pub const DEFAULT_NET_FAULT_IMAGE: &str = "ire/net-fault:latest";

/// What [`NetworkFaultHandle::data`] holds for a pod's fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct PodData {
    namespace: String,
    pod: String,
    /// The pod's UID when the fault was prepared: a recreated pod is another namespace.
    uid: String,
    /// The helper image used.
    image: String,
    /// What the helper applies in the pod's namespace.
    plan: Plan,
}

/// The names of a fault's ephemeral containers: probe, apply, and the revert prefix.
pub fn container_names(fault_id: &str) -> (String, String, String) {
    let h = short_hash(fault_id);
    (
        format!("ire-nfp-{h}"),
        format!("ire-nf-{h}"),
        format!("ire-nfr-{h}"),
    )
}

/// An ephemeral container's state as the kubelet reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Terminated { exit_code: i32, message: String },
}

fn state_of(pod: &Pod, container: &str) -> Option<State> {
    let declared = pod
        .spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.name == container));
    if !declared {
        return None;
    }
    let st = pod
        .status
        .as_ref()
        .and_then(|s| s.ephemeral_container_statuses.as_ref())
        .and_then(|ss| ss.iter().find(|s| s.name == container))
        .and_then(|s| s.state.clone());
    Some(match st {
        Some(s) if s.running.is_some() => State::Running,
        Some(s) => match s.terminated {
            Some(t) => State::Terminated {
                exit_code: t.exit_code,
                message: t.message.unwrap_or_default(),
            },
            None => State::Waiting,
        },
        None => State::Waiting,
    })
}

fn pod_uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

impl Inner {
    async fn get_pod(&self, ns: &str, name: &str) -> Result<Option<Pod>> {
        match self.api::<Pod>(Some(ns)).get(name).await {
            Ok(p) => Ok(Some(p)),
            Err(e) => match from_kube(e, Target { kind: "pod", name }) {
                Error::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Adds an ephemeral container running the helper with `args` (none if it exists).
    async fn add_helper(
        &self,
        ns: &str,
        pod: &str,
        image: &str,
        name: &str,
        args: Vec<String>,
    ) -> Result<()> {
        let api = self.api::<Pod>(Some(ns));
        for _ in 0..5 {
            let mut p = self
                .get_pod(ns, pod)
                .await?
                .ok_or_else(|| Error::not_found("pod", format!("{ns}/{pod}")))?;
            let spec = p.spec.get_or_insert_with(Default::default);
            let list = spec.ephemeral_containers.get_or_insert_with(Vec::new);
            if list.iter().any(|c| c.name == name) {
                return Ok(());
            }
            list.push(EphemeralContainer {
                name: name.to_owned(),
                image: Some(image.to_owned()),
                image_pull_policy: Some("IfNotPresent".into()),
                command: Some(vec![HELPER_BIN.to_owned()]),
                args: Some(args.clone()),
                termination_message_path: Some(TERMINATION_LOG.into()),
                security_context: Some(SecurityContext {
                    capabilities: Some(Capabilities {
                        add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                        drop: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
            match api
                .replace_ephemeral_containers(pod, &PostParams::default(), &p)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => match from_kube(
                    e,
                    Target {
                        kind: "pod",
                        name: pod,
                    },
                ) {
                    // The pod changed under us: read it again.
                    Error::Conflict { .. } => continue,
                    other => return Err(other),
                },
            }
        }
        Err(Error::other(
            ErrorClass::Retryable,
            format!("pod {ns}/{pod} kept changing while ephemeral container {name} was added"),
            None,
        ))
    }

    /// Waits until `container` runs (when `until_running`) or has terminated.
    async fn wait_helper(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        until_running: bool,
    ) -> Result<State> {
        let deadline = tokio::time::Instant::now() + HELPER_TIMEOUT;
        loop {
            let p = self
                .get_pod(ns, pod)
                .await?
                .ok_or_else(|| Error::not_found("pod", format!("{ns}/{pod}")))?;
            match state_of(&p, container) {
                Some(s @ State::Terminated { .. }) => return Ok(s),
                Some(State::Running) if until_running => return Ok(State::Running),
                _ => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Timeout {
                    operation: format!(
                        "waiting for the network-fault helper {container} in pod {ns}/{pod} \
                         (is the helper image on its node, or pullable?)"
                    ),
                    after: HELPER_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs a helper container to its end; its termination message, or an error with it.
    async fn run_helper(
        &self,
        d: &HelperSite<'_>,
        name: &str,
        args: Vec<String>,
        what: &str,
    ) -> Result<String> {
        self.add_helper(d.ns, d.pod, d.image, name, args).await?;
        match self.wait_helper(d.ns, d.pod, name, false).await? {
            State::Terminated {
                exit_code: 0,
                message,
            } => Ok(message),
            State::Terminated { exit_code, message } => Err(Error::other(
                ErrorClass::Fatal,
                format!(
                    "{what} in pod {}/{} failed (exit {exit_code}): {}",
                    d.ns,
                    d.pod,
                    message.trim()
                ),
                None,
            )),
            _ => unreachable!("waited for termination"),
        }
    }

    /// The addresses of the pods `filter` selects.
    async fn pod_addresses(&self, filter: &ResourceFilter) -> Result<Vec<Cidr>> {
        let mut f = filter.clone();
        f.kinds = vec![super::convert::WorkloadKind::Pod.as_str().to_owned()];
        Ok(self
            .list_resources(&f)
            .await?
            .iter()
            .filter_map(|r| r.metadata.get("podIP")?.as_str()?.parse().ok())
            .map(Cidr::host)
            .collect())
    }

    /// `prepare` for a pod.
    pub(crate) async fn net_prepare(
        &self,
        ns: &str,
        pod: &str,
        image: &str,
        fault_id: &str,
        fault: &NetworkFault,
    ) -> Result<(serde_json::Value, NetworkBackend)> {
        let p = self
            .get_pod(ns, pod)
            .await?
            .ok_or_else(|| Error::not_found("pod", format!("{ns}/{pod}")))?;
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase != "Running" || p.metadata.deletion_timestamp.is_some() {
            return Err(Error::Conflict {
                message: format!(
                    "pod {ns}/{pod} is not running ({phase}): its network cannot be faulted"
                ),
            });
        }
        let peers = match &fault.peers.resources {
            Some(f) => crate::net_fault::peers_found(self.pod_addresses(f).await?, pod)?,
            None => Vec::new(),
        };
        let (probe_name, _, _) = container_names(fault_id);
        let target = HelperSite { ns, pod, image };
        let args = vec![
            "probe".into(),
            "--fault-id".into(),
            fault_id.into(),
            "--termination-log".into(),
            TERMINATION_LOG.into(),
        ];
        let answer = self
            .run_helper(&target, &probe_name, args, "probing the pod's network")
            .await?;
        let where_ = format!("pod {ns}/{pod}");
        let plan = make_plan(
            fault_id,
            fault,
            &parse_probe(&answer, &where_)?,
            peers,
            &where_,
        )?;
        let backend = plan.backend;
        let data = PodData {
            namespace: ns.to_owned(),
            pod: pod.to_owned(),
            uid: pod_uid(&p),
            image: image.to_owned(),
            plan,
        };
        Ok((
            serde_json::to_value(data).expect("pod data serializes"),
            backend,
        ))
    }

    /// `apply` for a pod.
    pub(crate) async fn net_apply(&self, handle: &NetworkFaultHandle) -> Result<()> {
        let d: PodData = crate::net_fault::handle_data(handle, "kubernetes")?;
        let p = self.get_pod(&d.namespace, &d.pod).await?;
        if p.as_ref().map(pod_uid) != Some(d.uid.clone()) {
            return Err(Error::Conflict {
                message: format!(
                    "pod {}/{} is gone or was recreated since the fault was prepared",
                    d.namespace, d.pod
                ),
            });
        }
        let (_, apply_name, _) = container_names(&d.plan.fault_id);
        let target = HelperSite {
            ns: &d.namespace,
            pod: &d.pod,
            image: &d.image,
        };
        let mut args = helper_args("apply", &d.plan);
        args.extend(["--termination-log".to_owned(), TERMINATION_LOG.to_owned()]);
        if !d.plan.needs_emulator() {
            return self
                .run_helper(&target, &apply_name, args, "applying the network fault")
                .await
                .map(|_| ());
        }
        self.add_helper(&d.namespace, &d.pod, &d.image, &apply_name, args)
            .await?;
        if let State::Terminated { exit_code, message } = self
            .wait_helper(&d.namespace, &d.pod, &apply_name, true)
            .await?
        {
            return Err(Error::other(
                ErrorClass::Fatal,
                format!(
                    "the network-fault emulator in pod {}/{} exited ({exit_code}): {}",
                    d.namespace,
                    d.pod,
                    message.trim()
                ),
                None,
            ));
        }
        // Running is not yet in place: ask the helper itself.
        let status = helper_args("status", &d.plan);
        let deadline = tokio::time::Instant::now() + HELPER_TIMEOUT;
        loop {
            let cmd: Vec<String> = std::iter::once(HELPER_BIN.to_owned())
                .chain(status.iter().cloned())
                .collect();
            let r = self
                .exec_in(
                    &d.namespace,
                    &d.pod,
                    Some(&apply_name),
                    &cmd,
                    &ExecOptions::default(),
                )
                .await;
            if matches!(r, Ok(ref out) if out.exit_code == 0) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Timeout {
                    operation: format!(
                        "waiting for the network fault in pod {}/{} to be in place",
                        d.namespace, d.pod
                    ),
                    after: HELPER_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `revert` for a pod, from the handle alone.
    pub(crate) async fn net_revert(&self, handle: &NetworkFaultHandle) -> Result<()> {
        let d: PodData = crate::net_fault::handle_data(handle, "kubernetes")?;
        let Some(p) = self.get_pod(&d.namespace, &d.pod).await? else {
            return Ok(());
        };
        if pod_uid(&p) != d.uid {
            return Ok(());
        }
        let (_, apply_name, revert_prefix) = container_names(&d.plan.fault_id);
        if state_of(&p, &apply_name) == Some(State::Running) && d.plan.needs_emulator() {
            // The emulator takes everything back on SIGTERM; the exec may be cut short
            // when its container ends with it, which is the point.
            let cmd: Vec<String> = std::iter::once(HELPER_BIN.to_owned())
                .chain(helper_args("revert", &d.plan))
                .collect();
            let _ = self
                .exec_in(
                    &d.namespace,
                    &d.pod,
                    Some(&apply_name),
                    &cmd,
                    &ExecOptions::default(),
                )
                .await;
            if let Ok(State::Terminated { exit_code: 0, .. }) = self
                .wait_helper(&d.namespace, &d.pod, &apply_name, false)
                .await
            {
                return Ok(());
            }
        }
        // A short-lived helper removes whatever is left; a revert that already succeeded is
        // not run again.
        let existing: Vec<String> = p
            .spec
            .as_ref()
            .and_then(|s| s.ephemeral_containers.as_ref())
            .into_iter()
            .flatten()
            .map(|c| c.name.clone())
            .filter(|n| n.starts_with(&revert_prefix))
            .collect();
        if let Some(last) = existing.last() {
            if let Some(State::Terminated { exit_code: 0, .. }) = state_of(&p, last) {
                return Ok(());
            }
        }
        let name = format!("{revert_prefix}-{}", existing.len() + 1);
        let target = HelperSite {
            ns: &d.namespace,
            pod: &d.pod,
            image: &d.image,
        };
        self.run_helper(
            &target,
            &name,
            helper_args("revert", &d.plan),
            "reverting the network fault",
        )
        .await
        .map(|_| ())
        .map_err(|e| match e {
            Error::Other {
                message, source, ..
            } => Error::Other {
                message,
                source,
                class: ErrorClass::Retryable,
            },
            other => other,
        })
    }
}

/// Where a helper container goes.
struct HelperSite<'a> {
    ns: &'a str,
    pod: &'a str,
    image: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_are_dns_labels_named_after_the_fault() {
        let (p, a, r) = container_names("exec_ABC-1");
        for n in [&p, &a, &r] {
            assert!(n.len() <= 63);
            assert!(n
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        }
        assert_eq!(container_names("exec_ABC-1"), (p, a, r));
        assert_ne!(container_names("other").1, container_names("exec_ABC-1").1);
    }
}
