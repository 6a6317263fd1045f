//! The process adapter with real local processes.
#![cfg(feature = "process")]

use std::time::Duration;

use futures::StreamExt;
use ire_adapters::process::{ProcessAdapter, ProcessConfig, ProcessSpec};
use ire_core::resource::phase;
use ire_core::{
    AdapterConfig, DeleteOptions, EnvironmentAdapter, Error, ExecOptions, Resource,
    ResourceEventStream, ResourceEventType, ResourceFilter, ResourceSpec, Signal,
};

const GRACEFUL: &str = "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done";

fn sh(name: &str, script: &str) -> ProcessSpec {
    ProcessSpec::new(name, "/bin/sh", &["-c", script])
}

async fn fleet(specs: Vec<ProcessSpec>) -> ProcessAdapter {
    ProcessAdapter::start(
        "proc",
        &ProcessConfig {
            processes: specs,
            stop_grace: Duration::from_secs(5),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

async fn next(events: &mut ResourceEventStream) -> ire_core::ResourceEvent {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within 10s")
        .expect("stream open")
        .expect("no stream error")
}

async fn wait_for(
    a: &ProcessAdapter,
    id: &str,
    what: &str,
    pred: impl Fn(&Resource) -> bool,
) -> Resource {
    let start = tokio::time::Instant::now();
    loop {
        let r = a.get_resource(id).await.unwrap();
        if pred(&r) {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{id}: {what} not reached: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The state letter of /proc/<pid>/stat (R, S, T, Z, ...).
fn proc_state(pid: &str) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap()
}

/// Waits until the process has set its disposition of `signal` (the `SigCgt` or `SigIgn`
/// mask of /proc/<pid>/status has the signal's bit): its shell reached its `trap`.
async fn wait_disposition(a: &ProcessAdapter, name: &str, mask: &str, signal: u32) {
    let pid = a.get_resource(name).await.unwrap().id;
    let start = tokio::time::Instant::now();
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let bits = status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{mask}:")))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap();
        if bits & (1 << (signal - 1)) != 0 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{name}: no {mask} for signal {signal}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_state(pid: &str, pred: impl Fn(char) -> bool, what: &str) {
    let start = tokio::time::Instant::now();
    while !pred(proc_state(pid)) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "pid {pid} not {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn fleet_file_processes_start_with_keys_labels_and_health_checks() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.yaml");
    std::fs::write(
        &file,
        format!(
            r#"
processes:
  - name: api
    command: /bin/sh
    args: ["-c", "{GRACEFUL}"]
    labels: {{tier: web}}
    health-check: {{type: tcp, endpoint: "127.0.0.1:9", interval: 1s}}
  - name: batch
    command: /bin/sleep
    args: ["30"]
    labels: {{tier: jobs}}
    autostart: false
"#
        ),
    )
    .unwrap();
    let mut a = ProcessAdapter::new();
    a.initialize(AdapterConfig {
        name: "proc".into(),
        config: serde_json::json!({"fleet-file": file})
            .as_object()
            .unwrap()
            .clone(),
    })
    .await
    .unwrap();
    let all = a
        .list_resources(&ResourceFilter::everything())
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let api = &all[0];
    assert_eq!(
        (api.key.as_str(), api.kind.as_str()),
        ("proc/api", "process")
    );
    assert!(api.is_running());
    assert!(
        std::path::Path::new(&format!("/proc/{}", api.id)).exists(),
        "id is the live pid"
    );
    assert_eq!(api.spec.health_check.as_ref().unwrap().type_, "tcp");
    assert_eq!(all[1].status.phase, phase::STOPPED);
    assert_eq!(all[1].status.reason, "NotStarted");

    let web = a
        .list_resources(&ResourceFilter::everything().with_label("tier", "web"))
        .await
        .unwrap();
    assert_eq!(web.len(), 1);
    let running = a
        .list_resources(&ResourceFilter::everything().with_status(phase::RUNNING))
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(
        a.list_resources(&ResourceFilter::everything().page(1, Some(5)))
            .await
            .unwrap()
            .len(),
        1
    );

    for id in ["proc/api", "api", api.id.as_str()] {
        assert_eq!(a.get_resource(id).await.unwrap().name, "api", "{id}");
    }
    let e = a.get_resource("proc/nope").await.unwrap_err();
    assert!(matches!(e.root(), Error::NotFound { .. }));
    a.close().await.unwrap();
    assert!(
        !a.get_resource("api").await.unwrap().is_running(),
        "close stops the fleet"
    );
}

#[tokio::test]
async fn a_typo_in_the_fleet_file_names_the_file_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.yaml");
    std::fs::write(&file, "processes:\n  - name: api\n    comand: /bin/true\n").unwrap();
    let mut a = ProcessAdapter::new();
    let e = a
        .initialize(AdapterConfig {
            name: "proc".into(),
            config: serde_json::json!({"fleet-file": file})
                .as_object()
                .unwrap()
                .clone(),
        })
        .await
        .unwrap_err();
    let m = e.chain_message();
    assert!(
        m.contains("fleet.yaml") && m.contains("comand") && m.contains("line 3"),
        "{m}"
    );
}

#[tokio::test]
async fn a_process_that_cannot_start_fails_initialization_and_stops_the_others() {
    let mut a = ProcessAdapter::new();
    let e = a
        .initialize(AdapterConfig {
            name: "proc".into(),
            config: serde_json::json!({"processes": [
                {"name": "ok", "command": "/bin/sleep", "args": ["30"]},
                {"name": "broken", "command": "/no/such/program"},
            ]})
            .as_object()
            .unwrap()
            .clone(),
        })
        .await
        .unwrap_err();
    assert!(
        e.chain_message().contains("/no/such/program"),
        "{}",
        e.chain_message()
    );
    assert!(e.is_fatal());
}

#[tokio::test]
async fn stop_terms_gracefully_and_kills_after_the_grace_period() {
    let a = fleet(vec![
        sh("graceful", GRACEFUL),
        sh("stubborn", "trap '' TERM; while :; do sleep 1; done"),
    ])
    .await;
    wait_disposition(&a, "graceful", "SigCgt", 15).await;
    wait_disposition(&a, "stubborn", "SigIgn", 15).await;
    a.stop_resource("graceful", Duration::from_secs(5))
        .await
        .unwrap();
    let g = a.get_resource("graceful").await.unwrap();
    assert_eq!(
        (g.status.phase.as_str(), g.status.reason.as_str()),
        (phase::STOPPED, "ExitCode0")
    );

    a.stop_resource("stubborn", Duration::from_millis(300))
        .await
        .unwrap();
    let s = a.get_resource("stubborn").await.unwrap();
    assert_eq!(
        (s.status.phase.as_str(), s.status.reason.as_str()),
        (phase::STOPPED, "SignalSIGKILL")
    );
    // Stopping again is a no-op; starting brings it back.
    a.stop_resource("stubborn", Duration::from_millis(300))
        .await
        .unwrap();
    a.start_resource("stubborn").await.unwrap();
    assert!(a.get_resource("stubborn").await.unwrap().is_running());
    a.close().await.unwrap();
}

#[tokio::test]
async fn any_signal_is_delivered_and_pause_resume_freeze_the_process() {
    let a = fleet(vec![
        sh(
            "usr1",
            "trap 'exit 42' USR1; while :; do sleep 1 & wait $!; done",
        ),
        ProcessSpec::new("sleeper", "/bin/sleep", &["30"]),
    ])
    .await;
    wait_disposition(&a, "usr1", "SigCgt", 10).await;
    let sig = a.signals().unwrap();
    sig.send_signal("usr1", &"USR1".parse().unwrap())
        .await
        .unwrap();
    let r = wait_for(&a, "usr1", "exit 42", |r| r.status.reason == "ExitCode42").await;
    assert_eq!(r.status.phase, phase::STOPPED);
    let e = sig.send_signal("usr1", &Signal::kill()).await.unwrap_err();
    assert!(matches!(e.root(), Error::Conflict { .. }), "{e}");

    let pid = a.get_resource("sleeper").await.unwrap().id;
    let sig = a.pausing().unwrap();
    sig.pause("proc/sleeper").await.unwrap();
    assert_eq!(
        a.get_resource("sleeper").await.unwrap().status.phase,
        phase::PAUSED
    );
    wait_state(&pid, |s| s == 'T', "stopped by SIGSTOP").await;
    sig.resume(&pid).await.unwrap();
    assert!(a.get_resource("sleeper").await.unwrap().is_running());
    wait_state(&pid, |s| s != 'T', "continued by SIGCONT").await;

    // A paused process still stops within its grace period.
    sig.pause("sleeper").await.unwrap();
    a.stop_resource("sleeper", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        a.get_resource("sleeper").await.unwrap().status.reason,
        "SignalSIGTERM"
    );
    a.close().await.unwrap();
}

#[tokio::test]
async fn watch_reports_a_kill_restart_and_deletion_from_child_exits() {
    let a = fleet(vec![
        ProcessSpec::new("watched", "/bin/sleep", &["30"]),
        ProcessSpec::new("other", "/bin/sleep", &["30"]),
    ])
    .await;
    let mut events = a
        .watch_resources(&ResourceFilter::everything().with_name("watched"))
        .await
        .unwrap();
    let sig = a.signals().unwrap();
    sig.send_signal("other", &Signal::kill()).await.unwrap();
    sig.send_signal("watched", &Signal::kill()).await.unwrap();
    let ev = next(&mut events).await;
    assert_eq!(ev.type_, ResourceEventType::Modified);
    assert_eq!(
        ev.resource.key.as_str(),
        "proc/watched",
        "only the watched process"
    );
    assert_eq!(ev.resource.status.phase, phase::STOPPED);
    assert_eq!(ev.resource.status.reason, "SignalSIGKILL");

    let old_pid = ev.resource.id.clone();
    a.restart_resource("watched").await.unwrap();
    let ev = next(&mut events).await;
    assert_eq!(ev.resource.status.phase, phase::RUNNING);
    assert_ne!(ev.resource.id, old_pid, "a new pid");
    // An id recorded before the restart still names the process.
    assert_eq!(a.get_resource(&old_pid).await.unwrap().id, ev.resource.id);

    a.delete_resource(
        "watched",
        &DeleteOptions {
            force: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut ev = next(&mut events).await;
    while ev.type_ != ResourceEventType::Deleted {
        assert_eq!(
            ev.resource.status.phase,
            phase::STOPPED,
            "killed by the forced delete"
        );
        ev = next(&mut events).await;
    }
    assert_eq!(ev.resource.key.as_str(), "proc/watched");
    assert!(matches!(
        a.get_resource("watched").await.unwrap_err().root(),
        Error::NotFound { .. }
    ));

    a.close().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap();
    assert!(end.is_none(), "close ends the watch");
}

#[tokio::test]
async fn exec_output_is_binary_safe_and_capped() {
    let a = fleet(vec![ProcessSpec::new("svc", "/bin/sleep", &["30"])]).await;
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let out = a
        .exec_in_resource(
            "svc",
            &["cat".to_owned()],
            &ExecOptions {
                stdin: Some(every_byte.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, every_byte);
    let sh = |s: &str| vec!["/bin/sh".to_owned(), "-c".to_owned(), s.to_owned()];
    let out = a
        .exec_in_resource(
            "svc",
            &sh("head -c 300000 /dev/zero; echo done >&2"),
            &ExecOptions {
                output_limit: Some(1000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((out.stdout.len(), out.stdout_dropped), (1000, 299_000));
    assert_eq!((&*out.stderr_text(), out.exit_code), ("done\n", 0));
}

#[tokio::test]
async fn exec_runs_in_the_process_environment_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ProcessSpec::new("svc", "/bin/sleep", &["30"]);
    spec.env.insert("SERVICE_MODE".into(), "blue".into());
    spec.working_dir = Some(dir.path().to_owned());
    let a = fleet(vec![spec]).await;
    let cmd = |s: &str| vec!["/bin/sh".to_owned(), "-c".to_owned(), s.to_owned()];
    let out = a
        .exec_in_resource(
            "proc/svc",
            &cmd("echo $SERVICE_MODE $EXTRA; pwd; cat; echo oops >&2; exit 7"),
            &ExecOptions {
                env: [("EXTRA".to_owned(), "x".to_owned())].into(),
                stdin: Some(b"in".to_vec()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(out.stdout_text(), format!("blue x\n{}\nin", cwd.display()));
    assert_eq!((&*out.stderr_text(), out.exit_code), ("oops\n", 7));

    let e = a
        .exec_in_resource(
            "svc",
            &cmd("sleep 30"),
            &ExecOptions {
                timeout: Some(Duration::from_millis(200)),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e.root(), Error::Timeout { .. }), "{e}");

    a.stop_resource("svc", Duration::from_secs(1))
        .await
        .unwrap();
    let e = a
        .exec_in_resource("svc", &cmd("true"), &ExecOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e.root(), Error::Conflict { .. }), "{e}");
    a.close().await.unwrap();
}

#[tokio::test]
async fn metrics_come_from_proc_for_the_whole_process_group() {
    let a = fleet(vec![
        // The work happens in a child of the shell: the group's usage must include it.
        sh("busy", "(while :; do echo x > /dev/null; done) & wait"),
        ProcessSpec::new("idle", "/bin/sleep", &["30"]),
    ])
    .await;
    let m = a.get_metrics("busy").await.unwrap();
    let idle = a.get_metrics("idle").await.unwrap();
    assert!(m.cpu.usage_percent > 5.0, "{:?}", m.cpu);
    assert!(
        idle.cpu.usage_percent < m.cpu.usage_percent,
        "{:?} vs {:?}",
        idle.cpu,
        m.cpu
    );
    assert!((m.cpu.usage_cores * 100.0 - m.cpu.usage_percent).abs() < 1e-9);
    assert!(m.memory.usage_bytes > 0);
    assert!(m.disk.write_ops > 0, "echo makes write calls: {:?}", m.disk);
    let again = a.get_metrics("busy").await.unwrap();
    assert!(again.disk.write_ops > m.disk.write_ops, "counters grow");
    a.close().await.unwrap();
}

#[tokio::test]
async fn create_update_and_delete_a_process_from_a_spec() {
    let a = fleet(vec![]).await;
    let r = a
        .create_resource(&ResourceSpec {
            command: vec!["/bin/sh".into(), "-c".into()],
            args: vec![GRACEFUL.into()],
            environment: [("COLOR".to_owned(), "red".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.key.as_str(), "proc/sh-1");
    assert!(r.is_running());
    let echo = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        "echo $COLOR".to_owned(),
    ];
    assert_eq!(
        a.exec_in_resource("sh-1", &echo, &ExecOptions::default())
            .await
            .unwrap()
            .stdout_text(),
        "red\n"
    );

    let updated = a
        .update_resource(
            &r.id,
            &ResourceSpec {
                environment: [("COLOR".to_owned(), "green".to_owned())].into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(updated.is_running());
    assert_ne!(updated.id, r.id, "restarted to apply the new environment");
    assert_eq!(
        a.exec_in_resource("sh-1", &echo, &ExecOptions::default())
            .await
            .unwrap()
            .stdout_text(),
        "green\n"
    );

    let e = a
        .create_resource(&ResourceSpec::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("spec.command"), "{e}");
    let e = a
        .create_resource(&ResourceSpec {
            command: vec!["/no/such/bin".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.is_fatal());
    assert_eq!(
        a.list_resources(&ResourceFilter::everything())
            .await
            .unwrap()
            .len(),
        1,
        "nothing half-made left"
    );

    a.delete_resource(
        "proc/sh-1",
        &DeleteOptions {
            grace_period: Duration::from_secs(5),
            force: false,
        },
    )
    .await
    .unwrap();
    assert!(a
        .list_resources(&ResourceFilter::everything())
        .await
        .unwrap()
        .is_empty());
    a.close().await.unwrap();
}
