//! Network faults on processes with their own network namespace: the helper
//! (`ire-net-fault`) runs on the host and enters the namespace (`--netns`).
//!
//! The userspace emulator runs detached from the node (its own process group), so it
//! outlives a crashed node; a revert on any node finds it by the fault id on its command
//! line and stops it (SIGTERM: it releases held packets and removes its rules), then removes
//! what is left. A process that shares the host's network has nothing of its own to fault:
//! asking is an `Unsupported` error that says how to give it a namespace.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use ire_core::{
    Cidr, Error, ErrorClass, NetworkFault, NetworkFaultHandle, NetworkFaults, ResourceFilter,
    Result,
};
use ire_net_fault::Plan;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::supervisor::ANNOTATION_ADDRESS;
use super::{ProcessAdapter, ENVIRONMENT};
use crate::net_fault::{
    check_request, handle_data, helper_args, make_plan, parse_probe, peers_found,
};

/// How long apply waits for the emulator to report it is in place.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`NetworkFaultHandle::data`] holds for a process fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ProcessData {
    /// The process's network namespace (`/run/netns/<name>`).
    namespace: String,
    /// What the helper applies there.
    plan: Plan,
}

impl ProcessData {
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.namespace))
    }
}

/// The helper's path: the configured one, else `ire-net-fault` on `PATH`, else beside the
/// running program (or one directory up, for test binaries in `target/*/deps`).
fn helper_path(configured: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = configured {
        return Ok(p.to_owned());
    }
    let name = ire_net_fault::PROGRAM;
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
        .map(|d| vec![d.join(name), d.join("..").join(name)])
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(beside)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::other(
                ErrorClass::Fatal,
                format!(
                    "the network-fault helper {name} was not found (install it on PATH, or set \
                     the process adapter's net-fault-helper)"
                ),
                None,
            )
        })
}

impl ProcessAdapter {
    fn helper(&self, netns: &Path, args: Vec<String>) -> Result<tokio::process::Command> {
        let mut c = tokio::process::Command::new(helper_path(
            self.sup.config().net_fault_helper.as_deref(),
        )?);
        c.arg("--netns").arg(netns).args(args).stdin(Stdio::null());
        Ok(c)
    }

    /// Runs the helper to completion; its standard output, or an error with its stderr.
    async fn run_helper(&self, netns: &Path, args: Vec<String>, what: &str) -> Result<String> {
        let out = self
            .helper(netns, args)?
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| {
                Error::other(
                    ErrorClass::Fatal,
                    format!("running the network-fault helper ({what})"),
                    Some(Box::new(e)),
                )
            })?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(Error::other(
            ErrorClass::Fatal,
            format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            None,
        ))
    }

    /// The addresses of the processes `filter` selects (those with a namespace).
    fn peer_addresses(&self, filter: &ResourceFilter) -> Vec<Cidr> {
        filter
            .apply(self.sup.resources())
            .iter()
            .filter_map(|r| r.annotations.get(ANNOTATION_ADDRESS)?.parse().ok())
            .map(Cidr::host)
            .collect()
    }

    /// Starts the emulator detached from this process and waits for its ready line.
    async fn start_emulator(&self, d: &ProcessData) -> Result<()> {
        let mut child = self
            .helper(&d.path(), helper_args("apply", &d.plan))?
            // Its own process group, and not killed with the node: the fault stays until a
            // revert, on whichever node, stops it.
            .process_group(0)
            .kill_on_drop(false)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::other(
                    ErrorClass::Fatal,
                    "starting the network-fault emulator",
                    Some(Box::new(e)),
                )
            })?;
        let stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let mut line = String::new();
        let ready =
            tokio::time::timeout(READY_TIMEOUT, BufReader::new(stdout).read_line(&mut line))
                .await
                .map(|r| r.is_ok() && line.contains("\"fault-id\""))
                .unwrap_or(false);
        if ready {
            // Reaped when it exits, so it does not linger as a zombie while the node runs.
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            return Ok(());
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err).await;
        Err(Error::other(
            ErrorClass::Fatal,
            format!(
                "the network-fault emulator for namespace {} did not start: {}",
                d.namespace,
                err.trim()
            ),
            None,
        ))
    }
}

#[async_trait]
impl NetworkFaults for ProcessAdapter {
    async fn prepare(
        &self,
        id: &str,
        fault_id: &str,
        fault: &NetworkFault,
    ) -> Result<NetworkFaultHandle> {
        crate::telemetry::observed(ENVIRONMENT, self.sup.name(), "network_prepare", async {
            check_request(fault_id, fault)?;
            let name = self.sup.resolve(id)?;
            let netns = self.sup.netns(&name)?.ok_or_else(|| {
                Error::unsupported(
                    format!(
                        "network faults on process {name:?}, which shares the host's network \
                         (give it its own with `network: {{namespace: true}}` in the fleet file)"
                    ),
                    format!("process adapter {:?}", self.sup.name()),
                )
            })?;
            let peers = match &fault.peers.resources {
                Some(f) => peers_found(self.peer_addresses(f), &name)?,
                None => Vec::new(),
            };
            let out = self
                .run_helper(
                    &netns.path(),
                    vec!["probe".into(), "--fault-id".into(), fault_id.into()],
                    "probing the process's network namespace",
                )
                .await?;
            let target = format!("process {name:?}");
            let probe = parse_probe(&out, &target)?;
            let plan = make_plan(fault_id, fault, &probe, peers, &target)?;
            let backend = plan.backend;
            let data = ProcessData {
                namespace: netns.name,
                plan,
            };
            Ok(NetworkFaultHandle {
                fault_id: fault_id.to_owned(),
                resource_id: self.sup.resource(&name)?.id,
                fault: fault.clone(),
                backend,
                data: serde_json::to_value(data).expect("process data serializes"),
            })
        })
        .await
    }

    async fn apply(&self, handle: &NetworkFaultHandle) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, self.sup.name(), "network_apply", async {
            let d: ProcessData = handle_data(handle, "process")?;
            if !d.path().exists() {
                return Err(Error::Conflict {
                    message: format!("the network namespace {} is gone", d.namespace),
                });
            }
            if d.plan.needs_emulator() {
                return self.start_emulator(&d).await;
            }
            self.run_helper(
                &d.path(),
                helper_args("apply", &d.plan),
                "applying the network fault",
            )
            .await
            .map(|_| ())
        })
        .await
    }

    async fn revert(&self, handle: &NetworkFaultHandle) -> Result<()> {
        crate::telemetry::observed(ENVIRONMENT, self.sup.name(), "network_revert", async {
            let d: ProcessData = handle_data(handle, "process")?;
            if !d.path().exists() {
                // The namespace is gone with the fault's rules; an emulator may still hold it.
                let id = d.plan.fault_id.clone();
                return tokio::task::spawn_blocking(move || {
                    ire_net_fault::ops::stop_emulators(&id)
                })
                .await
                .map_err(|e| {
                    Error::other(
                        ErrorClass::Retryable,
                        "stopping the emulator",
                        Some(Box::new(e)),
                    )
                });
            }
            self.run_helper(
                &d.path(),
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
        })
        .await
    }
}
