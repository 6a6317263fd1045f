//! Shared setup of the docker adapter's tests: a connected adapter, labelled test
//! containers, and their removal even when a test fails.
#![allow(dead_code)]

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::CreateContainerOptions;
use ire_adapters::docker::{DockerAdapter, DockerConfig};
use ire_core::{EnvironmentAdapter, Resource, Result};

/// The image every test container runs (built by deploy/test-images/build.sh).
pub const IMAGE: &str = "ire/test-busybox:latest";
/// The label that marks this crate's test containers, valued with the run id.
pub const RUN_LABEL: &str = "ire.test.adapters";
/// The label holding the pid of the test process that made the container.
pub const PID_LABEL: &str = "ire.test.pid";
/// A workload that exits 0 on SIGTERM (`/tmp/ready` exists once the handler is set).
pub const GRACEFUL: &[&str] = &[
    "sh",
    "-c",
    "trap 'exit 0' TERM; touch /tmp/ready; while :; do sleep 1 & wait $!; done",
];
/// A workload that ignores SIGTERM (as PID 1 without a handler): only SIGKILL ends it.
pub const STUBBORN: &[&str] = &["sleep", "3600"];

/// One test's docker context: the adapter, and a guard removing the test's containers.
pub struct DockerTest {
    pub adapter: DockerAdapter,
    pub run_id: String,
    pub adapter_name: String,
}

impl DockerTest {
    /// Connects an adapter instance, after removing containers left by dead test runs.
    pub async fn new(adapter_name: &str) -> DockerTest {
        sweep_dead_runs();
        assert_image_present(IMAGE);
        let run_id = format!(
            "{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap()
        );
        let config = DockerConfig {
            labels: [
                (RUN_LABEL.to_owned(), run_id.clone()),
                (PID_LABEL.to_owned(), std::process::id().to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let adapter = DockerAdapter::connect(adapter_name, &config)
            .await
            .expect("the Docker daemon on this machine is reachable");
        DockerTest {
            adapter,
            run_id,
            adapter_name: adapter_name.to_owned(),
        }
    }

    /// Labels every test container carries.
    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (RUN_LABEL.to_owned(), self.run_id.clone()),
            (PID_LABEL.to_owned(), std::process::id().to_string()),
        ])
    }

    /// A unique container name for this test run.
    pub fn name(&self, suffix: &str) -> String {
        format!("ire-t-{}-{suffix}", self.run_id)
    }

    /// Creates and starts a labelled container running `cmd`; returns its resource.
    pub async fn spawn(&self, suffix: &str, cmd: &[&str], labels: &[(&str, &str)]) -> Resource {
        self.spawn_with(suffix, cmd, labels, HostConfig::default())
            .await
    }

    /// Like [`DockerTest::spawn`] with a host config (memory limit, ...).
    pub async fn spawn_with(
        &self,
        suffix: &str,
        cmd: &[&str],
        labels: &[(&str, &str)],
        host: HostConfig,
    ) -> Resource {
        let docker = self.adapter.client().unwrap();
        let mut all = self.labels();
        for (k, v) in labels {
            all.insert((*k).to_owned(), (*v).to_owned());
        }
        let name = self.name(suffix);
        let created = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    platform: String::new(),
                }),
                ContainerCreateBody {
                    image: Some(IMAGE.into()),
                    cmd: Some(cmd.iter().map(|s| (*s).to_owned()).collect()),
                    labels: Some(all),
                    host_config: Some(host),
                    ..Default::default()
                },
            )
            .await
            .expect("create test container");
        docker
            .start_container(&created.id, None)
            .await
            .expect("start test container");
        if cmd.iter().any(|c| c.contains("/tmp/ready")) {
            self.wait_ready(&created.id).await;
        }
        self.adapter.get_resource(&created.id).await.unwrap()
    }

    /// Waits until the workload has created `/tmp/ready` (its signal handlers are set).
    pub async fn wait_ready(&self, id: &str) {
        let start = tokio::time::Instant::now();
        let cmd = ["test".to_owned(), "-f".to_owned(), "/tmp/ready".to_owned()];
        loop {
            let r = self
                .adapter
                .exec_in_resource(id, &cmd, &Default::default())
                .await;
            if matches!(&r, Ok(out) if out.exit_code == 0) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{id} not ready: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `get_resource` until `pred` holds, failing after `deadline`.
    pub async fn wait_for(
        &self,
        id: &str,
        deadline: Duration,
        what: &str,
        pred: impl Fn(&Resource) -> bool,
    ) -> Resource {
        let start = tokio::time::Instant::now();
        loop {
            let last: Result<Resource> = self.adapter.get_resource(id).await;
            if let Ok(r) = &last {
                if pred(r) {
                    return r.clone();
                }
            }
            if start.elapsed() > deadline {
                panic!("{id}: {what} not reached within {deadline:?}; last: {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The container's IP address on the default bridge.
    pub async fn ip(&self, id: &str) -> String {
        let c = self
            .adapter
            .client()
            .unwrap()
            .inspect_container(id, None)
            .await
            .unwrap();
        c.network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.into_values().next())
            .and_then(|e| e.ip_address)
            .filter(|ip| !ip.is_empty())
            .expect("container has an IP address")
    }
}

impl Drop for DockerTest {
    fn drop(&mut self) {
        remove_labelled(&format!("{RUN_LABEL}={}", self.run_id));
    }
}

/// Removes every container carrying `label` (runs even while a test panics).
pub fn remove_labelled(label: &str) {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output()
        .expect("docker CLI");
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .output();
    }
}

/// Removes test containers whose test process is gone (a crashed or killed earlier run).
pub fn sweep_dead_runs() {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label={RUN_LABEL}"),
            "--format",
            &format!("{{{{.ID}}}} {{{{.Label \"{PID_LABEL}\"}}}}"),
        ])
        .output()
        .expect("docker CLI");
    let dead: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (id, pid) = l.split_once(' ')?;
            let alive = !pid.is_empty() && std::path::Path::new(&format!("/proc/{pid}")).exists();
            (!alive).then(|| id.to_owned())
        })
        .collect();
    if !dead.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&dead)
            .output();
    }
}

/// Fails with the fix when a test image is missing.
pub fn assert_image_present(image: &str) {
    let ok = Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "test image {image} is missing: run deploy/test-images/build.sh (or scripts/install-test-deps.sh)"
    );
}
