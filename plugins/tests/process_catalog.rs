//! Every plugin of the catalog on real local processes (the process adapter), through the
//! engine, and their hooks called directly for snapshot, fault and revert.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ire_adapters::process::{ProcessAdapter, ProcessConfig, ProcessSpec};
use ire_core::resource::phase;
use ire_core::{Error, ExecutionStatus, Plugin};
use ire_plugins::grimops::{Delete, Pause, Stop};
use serde_json::json;
use support::{assert_restored, Rig};

/// A process that exits 0 on SIGTERM and otherwise runs until stopped.
const GRACEFUL: &str = "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done";

fn sh(name: &str, script: &str) -> ProcessSpec {
    ProcessSpec::new(name, "/bin/sh", &["-c", script])
}

async fn rig(specs: Vec<ProcessSpec>) -> Rig {
    let a = ProcessAdapter::start(
        "proc",
        &ProcessConfig {
            processes: specs,
            stop_grace: Duration::from_secs(5),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    Rig::new("proc", Arc::new(a)).await
}

/// The state letter of /proc/<pid>/stat (R, S, T, Z, ...).
fn proc_state(pid: &str) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap()
}

#[tokio::test]
async fn kill_sends_any_signal_and_names_a_bad_config_field() {
    let rig = rig(vec![sh("a", GRACEFUL), sh("b", GRACEFUL)]).await;
    let r = rig
        .run("kill", "proc/a", json!({"signal": "TERM"}), None)
        .await
        .unwrap();
    assert!(r.is_success(), "{r:?}");
    let a = rig
        .wait_for("proc/a", "stopped by SIGTERM", |r| {
            r.status.phase == phase::STOPPED
        })
        .await;
    assert_eq!(a.status.reason, "ExitCode0", "the TERM trap ran");

    let r = rig.run("kill", "proc/b", json!({}), None).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    let b = rig
        .wait_for("proc/b", "killed", |r| r.status.phase == phase::STOPPED)
        .await;
    assert_eq!(b.status.reason, "SignalSIGKILL", "SIGKILL is the default");

    for (config, field) in [
        (json!({"signal": "SIGNOPE"}), "signal"),
        (json!({"sginal": "KILL"}), "sginal"),
    ] {
        let e = rig
            .run("kill", "proc/a", config, None)
            .await
            .unwrap_err()
            .chain_message();
        assert!(
            e.contains(field) && e.contains("config of plugin kill"),
            "{e}"
        );
    }
    // The monitor watched the fault: the record is written again, with the time to detect
    // and the time to recover, once the process runs again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    rig.env.start_resource("proc/b").await.unwrap();
    let rec = rig
        .record(&r.execution_id, |r| r.time_to_recover.is_some())
        .await;
    let (detect, recover) = (rec.time_to_detect.unwrap(), rec.time_to_recover.unwrap());
    assert!(
        recover >= detect + Duration::from_millis(250),
        "detected {detect:?}, recovered {recover:?}"
    );

    // A stopped process: nothing to kill, said clearly, nothing sent.
    let r = rig.run("kill", "proc/a", json!({}), None).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Failed);
    assert!(r.error.unwrap().contains("is stopped, not running"));
}

#[tokio::test]
async fn pause_is_sustained_held_for_its_duration_then_thawed() {
    let rig = rig(vec![sh("p", GRACEFUL)]).await;
    let pid = rig.env.get_resource("proc/p").await.unwrap().id;

    // A sustained fault without a duration is refused before anything runs.
    let e = rig
        .run("pause", "proc/p", json!({}), None)
        .await
        .unwrap_err();
    assert!(matches!(e.root(), Error::Invalid { .. }), "{e}");
    assert!(e.chain_message().contains("label duration"), "{e}");
    assert_ne!(proc_state(&pid), 'T');

    let req = rig
        .request("pause", "proc/p", json!({}), Some("600ms"))
        .await;
    let mut h = ire_core::ExecutionEngine::execute_async(&rig.engine, req)
        .await
        .unwrap();
    rig.wait_for("proc/p", "paused", |r| r.status.phase == phase::PAUSED)
        .await;
    assert_eq!(proc_state(&pid), 'T', "the process is stopped by SIGSTOP");
    let r = h.wait().await.unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(r.metadata["reverted"], json!(true));
    let p = rig.env.get_resource("proc/p").await.unwrap();
    assert_eq!(p.status.phase, phase::RUNNING);
    assert_ne!(proc_state(&pid), 'T', "thawed");
}

#[tokio::test]
async fn pause_snapshot_fault_revert_restores_the_resource_and_a_second_revert_is_harmless() {
    let rig = rig(vec![sh("p", GRACEFUL)]).await;
    let before = rig.env.get_resource("proc/p").await.unwrap();
    let pause = Pause::new();
    let ctx = rig.context("direct-pause", json!({}));
    pause.validate(&ctx, &before).await.unwrap();
    let snap = pause.pre_execute(&ctx, &before).await.unwrap().unwrap();
    pause.execute(&ctx, &before).await.unwrap();
    assert_eq!(proc_state(&before.id), 'T');
    // The revert gets only what the ledger holds: the snapshot, through its bytes.
    let snap = ire_core::Snapshot::from_bytes(&snap.to_bytes().unwrap()).unwrap();
    pause.rollback(&ctx, &before, &snap).await.unwrap();
    let after = rig.env.get_resource("proc/p").await.unwrap();
    assert_restored(&before, &after);
    assert_eq!(after.id, before.id, "the same process, thawed");
    assert_ne!(proc_state(&before.id), 'T');
    pause.rollback(&ctx, &before, &snap).await.unwrap();
    assert_restored(&before, &rig.env.get_resource("proc/p").await.unwrap());
}

#[tokio::test]
async fn unpause_thaws_and_is_already_done_on_a_running_process() {
    let rig = rig(vec![sh("u", GRACEFUL)]).await;
    let pid = rig.env.get_resource("proc/u").await.unwrap().id;
    rig.env.pausing().unwrap().pause("proc/u").await.unwrap();
    let r = rig.run("unpause", "proc/u", json!({}), None).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_ne!(proc_state(&pid), 'T');
    // Nothing to thaw: an ignorable "already done", so the execution still succeeds.
    let r = rig.run("unpause", "proc/u", json!({}), None).await.unwrap();
    assert!(r.is_success(), "{r:?}");
}

#[tokio::test]
async fn stop_then_its_rollback_starts_it_again_twice_harmlessly() {
    let rig = rig(vec![sh("s", GRACEFUL)]).await;
    let before = rig.env.get_resource("proc/s").await.unwrap();
    let stop = Stop::new();
    let ctx = rig.context("direct-stop", json!({"grace-period": "2s"}));
    stop.validate(&ctx, &before).await.unwrap();
    let snap = stop.pre_execute(&ctx, &before).await.unwrap().unwrap();
    stop.execute(&ctx, &before).await.unwrap();
    let stopped = rig.env.get_resource("proc/s").await.unwrap();
    assert_eq!(stopped.status.phase, phase::STOPPED);
    assert_eq!(stopped.status.reason, "ExitCode0", "stopped gracefully");
    stop.rollback(&ctx, &before, &snap).await.unwrap();
    let after = rig.env.get_resource("proc/s").await.unwrap();
    assert_restored(&before, &after);
    assert_ne!(after.id, before.id, "a new process");
    stop.rollback(&ctx, &before, &snap).await.unwrap();
    assert_eq!(
        rig.env.get_resource("proc/s").await.unwrap().id,
        after.id,
        "not restarted twice"
    );

    // Through the engine, with the config's grace period.
    let r = rig
        .run("stop", "proc/s", json!({"grace-period": "1s"}), None)
        .await
        .unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(
        rig.env.get_resource("proc/s").await.unwrap().status.phase,
        phase::STOPPED
    );
}

#[tokio::test]
async fn restart_gives_a_new_process() {
    let rig = rig(vec![sh("r", GRACEFUL)]).await;
    let before = rig.env.get_resource("proc/r").await.unwrap();
    let r = rig.run("restart", "proc/r", json!({}), None).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    let after = rig.env.get_resource("proc/r").await.unwrap();
    assert!(after.is_running());
    assert_ne!(after.id, before.id);
}

#[tokio::test]
async fn delete_then_its_rollback_creates_it_again_under_its_key_once() {
    let mut spec = sh("d", GRACEFUL);
    spec.env.insert("MARK".into(), "1".into());
    let rig = rig(vec![spec]).await;
    let before = rig.env.get_resource("proc/d").await.unwrap();
    let delete = Delete::new();
    let ctx = rig.context("direct-delete", json!({"force": true}));
    delete.validate(&ctx, &before).await.unwrap();
    let snap = delete.pre_execute(&ctx, &before).await.unwrap().unwrap();
    delete.execute(&ctx, &before).await.unwrap();
    assert!(rig.env.get_resource("proc/d").await.is_err(), "deleted");
    let snap = ire_core::Snapshot::from_bytes(&snap.to_bytes().unwrap()).unwrap();
    delete.rollback(&ctx, &before, &snap).await.unwrap();
    let after = rig.env.get_resource("proc/d").await.unwrap();
    assert_restored(&before, &after);
    assert!(after.is_running());
    // A second revert finds it back and creates nothing.
    delete.rollback(&ctx, &before, &snap).await.unwrap();
    assert_eq!(rig.env.get_resource("proc/d").await.unwrap().id, after.id);
    let all = rig
        .env
        .list_resources(&ire_core::ResourceFilter::everything())
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
}

#[tokio::test]
async fn scale_needs_a_capability_the_process_adapter_lacks_and_says_so() {
    let rig = rig(vec![sh("x", GRACEFUL)]).await;
    for plugin in ["scale", "scale-to"] {
        let e = rig
            .run(plugin, "proc/x", json!({"replicas": 2}), Some("1s"))
            .await
            .unwrap_err();
        assert!(matches!(e.root(), Error::Unsupported { .. }), "{e}");
        let m = e.chain_message();
        assert!(
            m.contains("needs the capability scale") && m.contains("adapter proc"),
            "{m}"
        );
    }
}

#[tokio::test]
async fn wait_healthy_succeeds_once_healthy_and_fails_after_its_timeout() {
    let mut late = sh("late", GRACEFUL);
    late.autostart = false;
    let rig = rig(vec![late]).await;
    let e = rig
        .run(
            "wait-healthy",
            "proc/late",
            json!({"timeout": "300ms"}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(e.status, ExecutionStatus::Timeout, "{e:?}");

    let env = rig.env.clone();
    let starter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        env.start_resource("proc/late").await.unwrap();
    });
    let r = rig
        .run("wait-healthy", "proc/late", json!({"timeout": "10s"}), None)
        .await
        .unwrap();
    starter.await.unwrap();
    assert!(r.is_success(), "{r:?}");
    assert!(
        r.metadata["timeToRecoverMs"].as_u64().unwrap() >= 250,
        "{r:?}"
    );
}

#[tokio::test]
async fn restart_unhealthy_heals_a_dead_process_and_notes_detection_and_mttr() {
    let rig = rig(vec![sh("h", GRACEFUL)]).await;
    let config = json!({"unhealthy-for": "200ms", "interval": "50ms", "healthy-within": "5s", "stable-for": "300ms"});

    // Healthy: nothing to heal, nothing restarted.
    let pid = rig.env.get_resource("proc/h").await.unwrap().id;
    let r = rig
        .run("restart-unhealthy", "proc/h", config.clone(), None)
        .await
        .unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(r.metadata["healed"], json!(false));
    assert_eq!(rig.env.get_resource("proc/h").await.unwrap().id, pid);

    // Dead: restarted once, healthy again, with the times it measured.
    rig.env
        .signals()
        .unwrap()
        .send_signal("proc/h", &ire_core::Signal::kill())
        .await
        .unwrap();
    rig.wait_for("proc/h", "dead", |r| r.status.phase == phase::STOPPED)
        .await;
    let r = rig
        .run("restart-unhealthy", "proc/h", config, None)
        .await
        .unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(r.metadata["healed"], json!(true), "{r:?}");
    assert_eq!(r.metadata["restarts"], json!(1));
    assert!(r.metadata["timeToDetectMs"].as_u64().is_some(), "{r:?}");
    let mttr = r.metadata["timeToRecoverMs"].as_u64().unwrap();
    assert!(
        mttr >= 200,
        "the threshold passes before the restart: {mttr} ms"
    );
    assert!(rig.env.get_resource("proc/h").await.unwrap().is_running());
}

#[tokio::test]
async fn restart_unhealthy_gives_up_after_its_retry_cap_with_backoff() {
    let rig = rig(vec![sh("crash", "exit 3")]).await;
    rig.wait_for("proc/crash", "exited", |r| r.status.phase == phase::STOPPED)
        .await;
    let started = tokio::time::Instant::now();
    let r = rig
        .run(
            "restart-unhealthy",
            "proc/crash",
            json!({"interval": "20ms", "healthy-within": "200ms", "max-restarts": 3, "stable-for": "100ms",
                   "backoff-initial": "100ms", "backoff-max": "150ms"}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, ExecutionStatus::Failed);
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("still unhealthy after 3 restart(s)"),
        "{r:?}"
    );
    // Three restarts with 100 ms then 150 ms (capped) between them.
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    let starts = rig.env.get_resource("proc/crash").await.unwrap().metadata["starts"].clone();
    assert_eq!(starts, json!(4), "started once, then restarted three times");
}
