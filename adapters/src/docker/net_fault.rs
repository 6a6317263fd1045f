//! Network faults inside a container's network namespace, applied by a short-lived helper
//! container that joins it (`--network container:<target>`, `NET_ADMIN`).
//!
//! - latency and jitter: `tc qdisc ... netem delay` (needs the kernel's `sch_netem`);
//! - bandwidth: `netem rate` with a latency, else `tc qdisc ... tbf`;
//! - loss and partition: an nftables table `inet ire_fault` that drops a random share of
//!   outgoing packets, or every packet in and out except loopback. nftables is used for
//!   them because it is present wherever Docker's own networking works, while `sch_netem`
//!   is missing from some kernels.
//!
//! Reverting deletes the root qdisc and the table. A container that stopped or was removed
//! took its namespace, and the fault, with it: reverting it is a no-op.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{LogsOptions, RemoveContainerOptions};
use bollard::Docker;
use futures::StreamExt;
use ire_core::{Error, ErrorClass, NetworkFault, NetworkFaultHandle, Result};
use serde::{Deserialize, Serialize};

use super::error::from_bollard;

/// The nftables table the adapter owns in a target's namespace.
const TABLE: &str = "inet ire_fault";
/// The interface faulted when the fault names none.
const DEFAULT_INTERFACE: &str = "eth0";
/// The label marking helper containers (and the target they act on).
pub const HELPER_LABEL: &str = "ire.net-fault-helper";

/// What [`NetworkFaultHandle::data`] holds for a docker fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FaultData {
    container: String,
    interface: String,
    tc: bool,
    nft: bool,
}

/// The shell script that applies `fault` (and what it touches), after validating it.
fn apply_script(fault: &NetworkFault) -> Result<(String, FaultData)> {
    let iface = fault.interface.as_deref().unwrap_or(DEFAULT_INTERFACE);
    let iface_ok = !iface.is_empty()
        && iface.len() <= 15
        && iface
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !iface_ok {
        return Err(Error::invalid(
            "interface",
            format!("{iface:?} is not a network interface name"),
        ));
    }
    if fault.jitter.is_some() && fault.latency.is_none() {
        return Err(Error::invalid("jitter", "needs a latency"));
    }
    if let Some(loss) = fault.loss_percent {
        if !(0.0..=100.0).contains(&loss) || loss.is_nan() {
            return Err(Error::invalid(
                "loss-percent",
                format!("{loss} is not a percentage (0-100)"),
            ));
        }
    }
    if fault.rate_bps == Some(0) {
        return Err(Error::invalid("rate-bps", "must be more than 0"));
    }
    let mut script = String::from("set -e\n");
    let mut tc = false;
    let mut nft = false;
    match (fault.latency, fault.rate_bps) {
        (Some(latency), rate) => {
            script.push_str(&format!(
                "/sbin/tc qdisc replace dev {iface} root netem delay {}us",
                latency.as_micros()
            ));
            if let Some(j) = fault.jitter {
                script.push_str(&format!(" {}us", j.as_micros()));
            }
            if let Some(r) = rate {
                script.push_str(&format!(" rate {r}bit"));
            }
            script.push('\n');
            tc = true;
        }
        (None, Some(rate)) => {
            // A tenth of a second of traffic per burst, at least 16 KiB so full frames pass.
            let burst = (rate / 8 / 10).max(16 * 1024);
            script.push_str(&format!(
                "/sbin/tc qdisc replace dev {iface} root tbf rate {rate}bit burst {burst} latency 50ms\n"
            ));
            tc = true;
        }
        (None, None) => {}
    }
    let drop_rule = if fault.partition {
        Some(format!(
            "add rule {TABLE} output oifname != \"lo\" drop; add rule {TABLE} input iifname != \"lo\" drop"
        ))
    } else {
        fault.loss_percent.filter(|l| *l > 0.0).map(|loss| {
            // In basis points, so 0.5% is expressible.
            let bp = (loss * 100.0).round() as u64;
            if bp >= 10_000 {
                format!("add rule {TABLE} output oifname != \"lo\" drop")
            } else {
                format!(
                    "add rule {TABLE} output oifname != \"lo\" numgen random mod 10000 < {bp} drop"
                )
            }
        })
    };
    if let Some(rule) = drop_rule {
        script.push_str(&format!(
            "/sbin/nft delete table {TABLE} 2>/dev/null || true\n\
             /sbin/nft 'add table {TABLE}; \
             add chain {TABLE} output {{ type filter hook output priority 0; policy accept; }}; \
             add chain {TABLE} input {{ type filter hook input priority 0; policy accept; }}; \
             {rule}'\n"
        ));
        nft = true;
    }
    if !tc && !nft {
        return Err(Error::invalid(
            "network fault",
            "sets none of latency, rate-bps, loss-percent, partition",
        ));
    }
    Ok((
        script,
        FaultData {
            container: String::new(),
            interface: iface.to_owned(),
            tc,
            nft,
        },
    ))
}

/// The script that takes a fault back; what is already gone is fine.
fn revert_script(d: &FaultData) -> String {
    let mut s = String::new();
    if d.tc {
        s.push_str(&format!(
            "out=$(/sbin/tc qdisc del dev {} root 2>&1) || case \"$out\" in \
             *'handle of zero'*|*'No such file'*|*'Cannot find device'*) ;; \
             *) echo \"$out\" >&2; exit 1;; esac\n",
            d.interface
        ));
    }
    if d.nft {
        s.push_str(&format!(
            "out=$(/sbin/nft delete table {TABLE} 2>&1) || case \"$out\" in \
             *'No such file'*) ;; *) echo \"$out\" >&2; exit 1;; esac\n"
        ));
    }
    s.push_str("exit 0\n");
    s
}

/// The outcome of one helper run.
struct HelperRun {
    exit_code: i64,
    stderr: String,
}

/// Applies and reverts network faults through the helper image.
#[derive(Clone)]
pub(crate) struct NetFaultRunner {
    pub docker: Docker,
    pub image: String,
}

impl NetFaultRunner {
    /// Applies `fault` to the running container `container_id`.
    pub async fn apply(
        &self,
        container_id: &str,
        fault: &NetworkFault,
    ) -> Result<NetworkFaultHandle> {
        let (script, mut data) = apply_script(fault)?;
        data.container = container_id.to_owned();
        let run = self.run_helper(container_id, &script).await?;
        if run.exit_code != 0 {
            // Take back whatever part was applied before the failing command.
            let _ = self.run_helper(container_id, &revert_script(&data)).await;
            if run.stderr.contains("qdisc kind is unknown") {
                return Err(Error::unsupported(
                    "network latency and rate (tc netem/tbf)",
                    "this Docker host's kernel (no sch_netem/sch_tbf module)",
                ));
            }
            return Err(Error::other(
                ErrorClass::Fatal,
                format!(
                    "applying a network fault to container {container_id} failed (exit {}): {}",
                    run.exit_code,
                    run.stderr.trim()
                ),
                None,
            ));
        }
        Ok(NetworkFaultHandle {
            resource_id: container_id.to_owned(),
            fault: fault.clone(),
            data: serde_json::to_value(&data).expect("fault data serializes"),
        })
    }

    /// Reverts a fault applied by [`NetFaultRunner::apply`].
    pub async fn revert(&self, handle: &NetworkFaultHandle) -> Result<()> {
        let data: FaultData = serde_json::from_value(handle.data.clone()).map_err(|e| {
            Error::invalid(
                "network fault handle data",
                format!("not a docker adapter handle: {e}"),
            )
        })?;
        match self.docker.inspect_container(&data.container, None).await {
            Ok(c) if c.state.as_ref().and_then(|s| s.running).unwrap_or(false) => {}
            // Stopped or gone: the namespace, and the fault, went with it.
            Ok(_) => return Ok(()),
            Err(e) => {
                let e = from_bollard(e, "container", &data.container);
                if matches!(e, Error::NotFound { .. }) {
                    return Ok(());
                }
                return Err(e);
            }
        }
        let run = self
            .run_helper(&data.container, &revert_script(&data))
            .await?;
        if run.exit_code != 0 {
            return Err(Error::other(
                ErrorClass::Retryable,
                format!(
                    "reverting the network fault on container {} failed (exit {}): {}",
                    data.container,
                    run.exit_code,
                    run.stderr.trim()
                ),
                None,
            ));
        }
        Ok(())
    }

    /// Runs `script` in a helper container in `target`'s network namespace and removes it.
    async fn run_helper(&self, target: &str, script: &str) -> Result<HelperRun> {
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            cmd: Some(vec![script.to_owned()]),
            labels: Some(HashMap::from([(
                HELPER_LABEL.to_owned(),
                target.to_owned(),
            )])),
            host_config: Some(HostConfig {
                network_mode: Some(format!("container:{target}")),
                cap_add: Some(vec!["NET_ADMIN".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created =
            self.docker
                .create_container(None, body)
                .await
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
                })?;
        let id = created.id;
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
        let mut stderr = String::new();
        while let Some(item) = logs.next().await {
            if let Ok(out) = item {
                stderr.push_str(&String::from_utf8_lossy(&out.into_bytes()));
            }
        }
        Ok(HelperRun { exit_code, stderr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn latency_and_loss_build_one_netem_and_one_nft_step() {
        let f = NetworkFault {
            latency: Some(Duration::from_millis(200)),
            jitter: Some(Duration::from_millis(20)),
            loss_percent: Some(12.5),
            ..Default::default()
        };
        let (s, d) = apply_script(&f).unwrap();
        assert!(s.contains("netem delay 200000us 20000us"), "{s}");
        assert!(s.contains("numgen random mod 10000 < 1250 drop"), "{s}");
        assert!(d.tc && d.nft);
    }

    #[test]
    fn partition_drops_both_directions_but_not_loopback() {
        let (s, d) = apply_script(&NetworkFault {
            partition: true,
            ..Default::default()
        })
        .unwrap();
        assert!(s.contains("output oifname != \"lo\" drop"));
        assert!(s.contains("input iifname != \"lo\" drop"));
        assert!(!d.tc && d.nft);
        let r = revert_script(&d);
        assert!(r.contains("nft delete table inet ire_fault") && !r.contains("tc qdisc"));
    }

    #[test]
    fn bad_faults_are_rejected_with_the_field() {
        let cases = [
            (NetworkFault::default(), "network fault"),
            (
                NetworkFault {
                    loss_percent: Some(150.0),
                    ..Default::default()
                },
                "loss-percent",
            ),
            (
                NetworkFault {
                    jitter: Some(Duration::from_millis(1)),
                    ..Default::default()
                },
                "jitter",
            ),
            (
                NetworkFault {
                    partition: true,
                    interface: Some("eth0; reboot".into()),
                    ..Default::default()
                },
                "interface",
            ),
        ];
        for (f, field) in cases {
            let e = apply_script(&f).unwrap_err();
            assert!(e.to_string().contains(field), "{e}");
        }
    }
}
