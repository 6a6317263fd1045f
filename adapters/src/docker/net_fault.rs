//! Network faults inside a container's network namespace, through the `ire/net-fault`
//! helper image (`ire-net-fault`, tc, nft, ip) run with `--network container:<target>`,
//! `NET_ADMIN` and `NET_RAW`.
//!
//! - prepare: a short-lived helper probes the namespace (does its kernel run netem? which
//!   interfaces?); the backend is chosen and the plan made.
//! - apply: with the userspace backend, the helper container `ire-nf-<fault id>` keeps
//!   running the emulator; otherwise a short-lived helper installs tc and nftables and exits.
//! - revert: the emulator's container is stopped (SIGTERM: it releases held packets and
//!   removes its rules) and removed, then a short-lived helper removes whatever is left of
//!   the fault. A container that stopped or was removed took its namespace, and the fault,
//!   with it: reverting it is then a no-op.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, LogsOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;
use ire_core::{Cidr, Error, ErrorClass, NetworkBackend, NetworkFault, NetworkFaultHandle, Result};
use ire_net_fault::probe::Probe;
use ire_net_fault::Plan;
use serde::{Deserialize, Serialize};

use super::error::from_bollard;
use crate::net_fault::{handle_data, helper_args, make_plan, parse_probe};

/// The label marking helper containers (its value: the target container's id).
pub const HELPER_LABEL: &str = "ire.net-fault-helper";
/// The label with the fault id, on the emulator's container.
pub const FAULT_LABEL: &str = "ire.fault-id";
/// Where the helper image has the helper.
const HELPER_BIN: &str = "/usr/local/bin/ire-net-fault";
/// How long the emulator's container gets to release its packets when stopped.
const STOP_GRACE_SECS: i32 = 5;
/// How long apply waits for the emulator to report it is in place.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`NetworkFaultHandle::data`] holds for a docker fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct DockerData {
    /// The target container's id.
    container: String,
    /// What the helper applies in its namespace.
    plan: Plan,
}

/// The name of the container that runs a fault's emulator.
pub fn emulator_name(fault_id: &str) -> String {
    format!("ire-nf-{fault_id}")
}

/// The outcome of one short-lived helper run.
struct HelperRun {
    exit_code: i64,
    stdout: String,
    stderr: String,
}

/// Applies and reverts network faults through the helper image.
#[derive(Clone)]
pub(crate) struct NetFaultRunner {
    pub docker: Docker,
    pub image: String,
    /// The adapter's labels, put on every helper container too.
    pub labels: HashMap<String, String>,
}

impl NetFaultRunner {
    /// Probes the running container `cid` and makes the plan.
    pub async fn prepare(
        &self,
        cid: &str,
        fault_id: &str,
        fault: &NetworkFault,
        peers: Vec<Cidr>,
    ) -> Result<(serde_json::Value, NetworkBackend)> {
        let probe = self.probe(cid, fault_id).await?;
        let plan = make_plan(fault_id, fault, &probe, peers, &format!("container {cid}"))?;
        let backend = plan.backend;
        let data = DockerData {
            container: cid.to_owned(),
            plan,
        };
        Ok((
            serde_json::to_value(data).expect("docker data serializes"),
            backend,
        ))
    }

    async fn probe(&self, cid: &str, fault_id: &str) -> Result<Probe> {
        let args = vec![
            "probe".to_owned(),
            "--fault-id".to_owned(),
            fault_id.to_owned(),
        ];
        let run = self.one_shot(cid, args).await?;
        if run.exit_code != 0 {
            return Err(helper_failed("probing the network of", cid, &run));
        }
        parse_probe(&run.stdout, &format!("container {cid}"))
    }

    /// Applies a prepared fault to its (running) container.
    pub async fn apply(&self, handle: &NetworkFaultHandle) -> Result<()> {
        let d: DockerData = handle_data(handle, "docker")?;
        if d.plan.needs_emulator() {
            return self.start_emulator(&d).await;
        }
        let run = self
            .one_shot(&d.container, helper_args("apply", &d.plan))
            .await?;
        if run.exit_code != 0 {
            // The helper took back what it had applied before failing.
            return Err(helper_failed(
                "applying a network fault to",
                &d.container,
                &run,
            ));
        }
        Ok(())
    }

    /// Reverts a fault from its handle alone.
    pub async fn revert(&self, handle: &NetworkFaultHandle) -> Result<()> {
        let d: DockerData = handle_data(handle, "docker")?;
        self.remove_emulator(&d.plan.fault_id).await?;
        match self.docker.inspect_container(&d.container, None).await {
            Ok(c) if c.state.as_ref().and_then(|s| s.running).unwrap_or(false) => {}
            // Stopped or gone: the namespace, and the fault, went with it.
            Ok(_) => return Ok(()),
            Err(e) => {
                let e = from_bollard(e, "container", &d.container);
                if matches!(e, Error::NotFound { .. }) {
                    return Ok(());
                }
                return Err(e);
            }
        }
        let run = self
            .one_shot(&d.container, helper_args("revert", &d.plan))
            .await?;
        if run.exit_code != 0 {
            let mut e = helper_failed("reverting the network fault on", &d.container, &run);
            if let Error::Other { class, .. } = &mut e {
                *class = ErrorClass::Retryable;
            }
            return Err(e);
        }
        Ok(())
    }

    fn body(
        &self,
        target: &str,
        args: Vec<String>,
        mut labels: HashMap<String, String>,
    ) -> ContainerCreateBody {
        for (k, v) in &self.labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        ContainerCreateBody {
            image: Some(self.image.clone()),
            entrypoint: Some(vec![HELPER_BIN.to_owned()]),
            cmd: Some(args),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(format!("container:{target}")),
                cap_add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn create(&self, name: Option<&str>, body: ContainerCreateBody) -> Result<String> {
        let options = name.map(|n| CreateContainerOptions {
            name: Some(n.to_owned()),
            ..Default::default()
        });
        self.docker
            .create_container(options, body)
            .await
            .map(|c| c.id)
            .map_err(|e| match from_bollard(e, "image", &self.image) {
                Error::NotFound { .. } => Error::other(
                    ErrorClass::Fatal,
                    format!(
                        "the network-fault helper image {} is not on the Docker host \
                         (build it with deploy/test-images/build.sh, or set net-fault-image)",
                        self.image
                    ),
                    None,
                ),
                other => other,
            })
    }

    /// Starts the emulator's container and waits for its ready line.
    async fn start_emulator(&self, d: &DockerData) -> Result<()> {
        let name = emulator_name(&d.plan.fault_id);
        // A leftover of an earlier attempt at the same fault is replaced.
        self.remove_emulator(&d.plan.fault_id).await?;
        let labels = HashMap::from([
            (HELPER_LABEL.to_owned(), d.container.clone()),
            (FAULT_LABEL.to_owned(), d.plan.fault_id.clone()),
        ]);
        let body = self.body(&d.container, helper_args("apply", &d.plan), labels);
        let id = self.create(Some(&name), body).await?;
        self.docker
            .start_container(&id, None)
            .await
            .map_err(|e| from_bollard(e, "container", &id))?;
        let mut logs = self.docker.logs(
            &id,
            Some(LogsOptions {
                follow: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        );
        let (mut stdout, mut stderr) = (String::new(), String::new());
        let ready = tokio::time::timeout(READY_TIMEOUT, async {
            while let Some(item) = logs.next().await {
                match item {
                    Ok(bollard::container::LogOutput::StdOut { message }) => {
                        stdout.push_str(&String::from_utf8_lossy(&message));
                        if stdout.contains("\"fault-id\"") {
                            return true;
                        }
                    }
                    Ok(other) => stderr.push_str(&String::from_utf8_lossy(&other.into_bytes())),
                    Err(_) => break,
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        if ready {
            return Ok(());
        }
        let _ = self.remove_emulator(&d.plan.fault_id).await;
        Err(Error::other(
            ErrorClass::Fatal,
            format!(
                "the network-fault emulator for container {} did not start: {}",
                d.container,
                stderr.trim()
            ),
            None,
        ))
    }

    /// Stops (SIGTERM, then SIGKILL after the grace period) and removes the fault's
    /// emulator container; none is fine.
    async fn remove_emulator(&self, fault_id: &str) -> Result<()> {
        let name = emulator_name(fault_id);
        let stop = StopContainerOptions {
            t: Some(STOP_GRACE_SECS),
            ..Default::default()
        };
        if let Err(e) = self.docker.stop_container(&name, Some(stop)).await {
            // Not running (304) is what we want; not there means nothing to do.
            if let Error::NotFound { .. } = from_bollard(e, "container", &name) {
                return Ok(());
            }
        }
        let rm = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self.docker.remove_container(&name, Some(rm)).await {
            Ok(()) => Ok(()),
            Err(e) => match from_bollard(e, "container", &name) {
                Error::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Runs the helper with `args` in `target`'s network namespace, and removes it.
    async fn one_shot(&self, target: &str, args: Vec<String>) -> Result<HelperRun> {
        let labels = HashMap::from([(HELPER_LABEL.to_owned(), target.to_owned())]);
        let id = self.create(None, self.body(target, args, labels)).await?;
        let result = self.start_and_collect(&id).await;
        let rm = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        if let Err(e) = self.docker.remove_container(&id, Some(rm)).await {
            tracing::warn!(component = "docker-adapter", helper = %id, error = %e, "could not remove the network-fault helper");
        }
        result
    }

    async fn start_and_collect(&self, id: &str) -> Result<HelperRun> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| from_bollard(e, "container", id))?;
        let mut wait = self.docker.wait_container(id, None);
        let exit_code = match wait.next().await {
            Some(Ok(r)) => r.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(e)) => return Err(from_bollard(e, "container", id)),
            None => -1,
        };
        let mut logs = self.docker.logs(
            id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        );
        let (mut stdout, mut stderr) = (String::new(), String::new());
        while let Some(item) = logs.next().await {
            match item {
                Ok(bollard::container::LogOutput::StdOut { message }) => {
                    stdout.push_str(&String::from_utf8_lossy(&message))
                }
                Ok(other) => stderr.push_str(&String::from_utf8_lossy(&other.into_bytes())),
                Err(_) => break,
            }
        }
        Ok(HelperRun {
            exit_code,
            stdout,
            stderr,
        })
    }
}

fn helper_failed(what: &str, container: &str, run: &HelperRun) -> Error {
    let stderr = run.stderr.trim();
    if stderr.contains("qdisc kind is unknown") {
        return Error::unsupported(
            format!("netem ({stderr})"),
            format!("the kernel of container {container}'s Docker host"),
        );
    }
    Error::other(
        ErrorClass::Fatal,
        format!(
            "{what} container {container} failed (exit {}): {stderr}",
            run.exit_code
        ),
        None,
    )
}
