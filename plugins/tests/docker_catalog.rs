//! Every plugin of the catalog on real Docker containers (images built locally by
//! `deploy/test-images/build.sh`), through the engine, and their hooks called directly for
//! snapshot, fault and revert.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ire_adapters::docker::{DockerAdapter, DockerConfig};
use ire_core::resource::phase;
use ire_core::{ExecutionEngine, ExecutionStatus, Plugin, Snapshot};
use ire_plugins::grimops::{Delete, Pause, Stop};
use serde_json::json;
use support::docker::{docker, Containers};
use support::{assert_restored, Rig};

/// A workload that exits 0 on SIGTERM.
const GRACEFUL: &str = "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done";

async fn rig(c: &Containers) -> Rig {
    let config = DockerConfig {
        labels: c.labels(),
        ..Default::default()
    };
    let a = DockerAdapter::connect("dk", &config)
        .await
        .expect("the Docker daemon on this machine is reachable");
    Rig::new("dk", Arc::new(a)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_unhealthy_heal_a_container() {
    let c = Containers::new("kill");
    let id = c.run("k", &[], &["sh", "-c", GRACEFUL]);
    let rig = rig(&c).await;
    let key = rig.env.get_resource(&id).await.unwrap().key.to_string();
    let r = rig
        .run("kill", &key, json!({"signal": "KILL"}), None)
        .await
        .unwrap();
    assert!(r.is_success(), "{r:?}");
    let dead = rig
        .wait_for(&key, "killed", |r| r.status.phase == phase::STOPPED)
        .await;
    assert_eq!(dead.status.reason, "ExitCode137", "{dead:?}");

    let r = rig
        .run(
            "restart-unhealthy",
            &key,
            json!({"interval": "100ms", "stable-for": "300ms", "healthy-within": "20s"}),
            None,
        )
        .await
        .unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(r.metadata["healed"], json!(true));
    assert!(rig.env.get_resource(&key).await.unwrap().is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_is_held_for_its_duration_then_thawed() {
    let c = Containers::new("pause");
    let id = c.run("p", &[], &["sh", "-c", GRACEFUL]);
    let rig = rig(&c).await;
    let key = rig.env.get_resource(&id).await.unwrap().key.to_string();
    let req = rig.request("pause", &key, json!({}), Some("1s")).await;
    let mut h = rig.engine.execute_async(req).await.unwrap();
    rig.wait_for(&key, "paused", |r| r.status.phase == phase::PAUSED)
        .await;
    assert_eq!(docker(&["inspect", "-f", "{{.State.Paused}}", &id]), "true");
    let r = h.wait().await.unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Paused}}", &id]),
        "false"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stop_and_delete_revert_to_the_original_field_by_field() {
    let c = Containers::new("revert");
    let rig = rig(&c).await;
    let plugins: [(&str, Arc<dyn Plugin>, serde_json::Value); 3] = [
        ("pause", Arc::new(Pause::new()), json!({})),
        ("stop", Arc::new(Stop::new()), json!({"grace-period": "5s"})),
        ("delete", Arc::new(Delete::new()), json!({"force": true})),
    ];
    for (name, plugin, config) in plugins {
        let id = c.run(name, &[("role", name)], &["sh", "-c", GRACEFUL]);
        let before = rig.env.get_resource(&id).await.unwrap();
        let ctx = rig.context(&format!("direct-{name}"), config);
        plugin.validate(&ctx, &before).await.unwrap();
        let snap = plugin.pre_execute(&ctx, &before).await.unwrap().unwrap();
        plugin.execute(&ctx, &before).await.unwrap();
        // Only the snapshot's bytes reach the revert, as from a ledger entry.
        let snap = Snapshot::from_bytes(&snap.to_bytes().unwrap()).unwrap();
        plugin.rollback(&ctx, &before, &snap).await.unwrap();
        plugin.rollback(&ctx, &before, &snap).await.unwrap();
        // Docker keeps the container's id across pause and stop; a deleted one comes back
        // under its name (so its key) with a new id.
        let after = rig.env.get_resource(before.key.as_str()).await.unwrap();
        assert_restored(&before, &after);
        assert!(after.is_running());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_and_unpause() {
    let c = Containers::new("restart");
    let id = c.run("r", &[], &["sh", "-c", GRACEFUL]);
    let rig = rig(&c).await;
    let key = rig.env.get_resource(&id).await.unwrap().key.to_string();
    let started = docker(&["inspect", "-f", "{{.State.StartedAt}}", &id]);
    let r = rig.run("restart", &key, json!({}), None).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_ne!(
        docker(&["inspect", "-f", "{{.State.StartedAt}}", &id]),
        started
    );
    docker(&["pause", &id]);
    let r = rig.run("unpause", &key, json!({}), None).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Paused}}", &id]),
        "false"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_a_compose_service_for_a_while_then_back_and_scale_to() {
    let c = Containers::new("scale");
    let project = c.project();
    let labels = [
        ("com.docker.compose.project", project.as_str()),
        ("com.docker.compose.service", "web"),
        ("com.docker.compose.container-number", "1"),
        ("com.docker.compose.oneoff", "False"),
    ];
    c.run("web-1", &labels, &["sh", "-c", GRACEFUL]);
    let rig = rig(&c).await;
    let key = format!("dk/{project}/web/1");
    let count = || {
        let out = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
        ]);
        out.lines().filter(|l| !l.is_empty()).count()
    };
    assert_eq!(count(), 1);
    let req = rig
        .request("scale", &key, json!({"replicas": 3}), Some("1s"))
        .await;
    let mut h = rig.engine.execute_async(req).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while count() != 3 {
        assert!(tokio::time::Instant::now() < deadline, "never scaled to 3");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = h.wait().await.unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(count(), 1, "reverted to the original count");

    let r = rig
        .run("scale-to", &key, json!({"replicas": 2}), None)
        .await
        .unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(r.metadata["replicasBefore"], json!(1));
    assert_eq!(count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_healthy_on_a_stopped_container_times_out_then_succeeds_once_started() {
    let c = Containers::new("wait");
    let id = c.run("w", &[], &["sh", "-c", GRACEFUL]);
    docker(&["stop", "-t", "0", &id]);
    let rig = rig(&c).await;
    let key = rig.env.get_resource(&id).await.unwrap().key.to_string();
    let r = rig
        .run("wait-healthy", &key, json!({"timeout": "500ms"}), None)
        .await
        .unwrap();
    assert_eq!(r.status, ExecutionStatus::Timeout, "{r:?}");
    docker(&["start", &id]);
    let r = rig
        .run("wait-healthy", &key, json!({"timeout": "20s"}), None)
        .await
        .unwrap();
    assert!(r.is_success(), "{r:?}");
}
