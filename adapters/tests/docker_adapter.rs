//! The docker adapter against this machine's Docker Engine.
#![cfg(feature = "docker")]

mod docker_support;

use std::time::Duration;

use bollard::models::HostConfig;
use docker_support::{DockerTest, GRACEFUL, RUN_LABEL, STUBBORN};
use futures::StreamExt;
use ire_core::resource::phase;
use ire_core::{
    DeleteOptions, EnvironmentAdapter, Error, ExecOptions, Operator, ResourceEventType,
    ResourceFilter, ResourceSpec, SelectorRequirement, Signal,
};

fn ids(rs: &[ire_core::Resource]) -> Vec<&str> {
    rs.iter().map(|r| r.id.as_str()).collect()
}

fn run_filter(t: &DockerTest) -> ResourceFilter {
    ResourceFilter::everything().with_label(RUN_LABEL, &t.run_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_negotiates_the_daemons_api_version() {
    let t = DockerTest::new("dk").await;
    let server = t.adapter.client().unwrap().version().await.unwrap();
    let server_api = server.api_version.unwrap();
    assert_eq!(t.adapter.api_version().unwrap(), server_api);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_daemon_is_a_retryable_error() {
    let mut a = ire_adapters::docker::DockerAdapter::new();
    let e = a
        .initialize(ire_core::AdapterConfig {
            name: "dk".into(),
            config: serde_json::json!({"host": "tcp://127.0.0.1:1", "timeout": "2s"})
                .as_object()
                .unwrap()
                .clone(),
        })
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{}", e.chain_message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_by_label_name_status_and_paginate() {
    let t = DockerTest::new("dk").await;
    let a = t.spawn("a", GRACEFUL, &[("tier", "cache")]).await;
    let b = t.spawn("b", GRACEFUL, &[("tier", "web")]).await;
    let c = t.spawn("c", GRACEFUL, &[("tier", "web")]).await;
    t.adapter
        .stop_resource(&c.id, Duration::from_secs(5))
        .await
        .unwrap();

    let all = t.adapter.list_resources(&run_filter(&t)).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|r| r.kind == "container"));

    let cache = t
        .adapter
        .list_resources(&run_filter(&t).with_label("tier", "cache"))
        .await
        .unwrap();
    assert_eq!(ids(&cache), [a.id.as_str()]);

    let not_cache = t
        .adapter
        .list_resources(&run_filter(&t).with_expression(SelectorRequirement::new(
            "tier",
            Operator::NotIn,
            ["cache"],
        )))
        .await
        .unwrap();
    assert_eq!(not_cache.len(), 2);

    let by_name = t
        .adapter
        .list_resources(&run_filter(&t).with_name(format!("ire-t-{}-?", t.run_id)))
        .await
        .unwrap();
    assert_eq!(by_name.len(), 3);
    let by_name = t
        .adapter
        .list_resources(&run_filter(&t).with_name("*-b"))
        .await
        .unwrap();
    assert_eq!(ids(&by_name), [b.id.as_str()]);

    let stopped = t
        .adapter
        .list_resources(&run_filter(&t).with_status(phase::STOPPED))
        .await
        .unwrap();
    assert_eq!(ids(&stopped), [c.id.as_str()]);

    let none = t
        .adapter
        .list_resources(&run_filter(&t).with_kind("pod"))
        .await
        .unwrap();
    assert!(none.is_empty());

    // Pages are disjoint and together cover everything.
    let p1 = t
        .adapter
        .list_resources(&run_filter(&t).page(0, Some(2)))
        .await
        .unwrap();
    let p2 = t
        .adapter
        .list_resources(&run_filter(&t).page(2, Some(2)))
        .await
        .unwrap();
    assert_eq!((p1.len(), p2.len()), (2, 1));
    let mut ids: Vec<String> = p1.iter().chain(&p2).map(|r| r.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_and_id_name_the_same_container_and_missing_ones_are_not_found() {
    let t = DockerTest::new("dk").await;
    let r = t.spawn("k", GRACEFUL, &[]).await;
    assert_eq!(r.key.as_str(), format!("dk/{}", t.name("k")));
    let by_key = t.adapter.get_resource(r.key.as_str()).await.unwrap();
    let by_name = t.adapter.get_resource(&r.name).await.unwrap();
    assert_eq!(by_key.id, r.id);
    assert_eq!(by_name.id, r.id);
    assert!(r.is_running());

    let e = t
        .adapter
        .scaling()
        .unwrap()
        .replicas(&r.id)
        .await
        .unwrap_err();
    assert!(matches!(e.root(), Error::Unsupported { .. }), "{e}");

    for missing in [
        "dk/no-such-container-here",
        "0123456789abcdef0123",
        "dk/p/s/1",
    ] {
        let e = t.adapter.get_resource(missing).await.unwrap_err();
        assert!(matches!(e.root(), Error::NotFound { .. }), "{missing}: {e}");
        let e = t.adapter.start_resource(missing).await.unwrap_err();
        assert!(matches!(e.root(), Error::NotFound { .. }), "{missing}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_through_create_stop_start_restart_kill_and_delete() {
    let t = DockerTest::new("dk").await;
    let spec = ResourceSpec {
        image: docker_support::IMAGE.into(),
        args: GRACEFUL.iter().map(|s| (*s).to_owned()).collect(),
        environment: [("GREETING".to_owned(), "hello".to_owned())].into(),
        ..Default::default()
    };
    let r = t.adapter.create_resource(&spec).await.unwrap();
    assert!(r.is_running(), "{:?}", r.status);
    assert_eq!(r.labels[RUN_LABEL], t.run_id);
    assert_eq!(r.labels["ire.managed-by"], "dk");
    assert_eq!(r.spec.environment["GREETING"], "hello");
    let key = r.key.to_string();
    t.wait_ready(&key).await;

    t.adapter
        .stop_resource(&key, Duration::from_secs(10))
        .await
        .unwrap();
    let stopped = t.adapter.get_resource(&key).await.unwrap();
    assert_eq!(stopped.status.phase, phase::STOPPED);
    assert_eq!(
        stopped.status.reason, "ExitCode0",
        "SIGTERM handled gracefully"
    );
    // Stopping what is stopped is not an error.
    t.adapter
        .stop_resource(&key, Duration::from_secs(1))
        .await
        .unwrap();

    t.adapter.start_resource(&key).await.unwrap();
    assert!(t.adapter.get_resource(&key).await.unwrap().is_running());
    t.adapter.start_resource(&key).await.unwrap();

    t.adapter.restart_resource(&key).await.unwrap();
    let restarted = t.adapter.get_resource(&key).await.unwrap();
    assert!(restarted.is_running());
    t.wait_ready(&key).await;

    t.adapter
        .signals()
        .unwrap()
        .send_signal(&key, &Signal::kill())
        .await
        .unwrap();
    let killed = t
        .wait_for(&key, Duration::from_secs(10), "stopped", |r| {
            r.status.phase == phase::STOPPED
        })
        .await;
    assert_eq!(killed.status.reason, "ExitCode137");

    t.adapter
        .delete_resource(
            &key,
            &DeleteOptions {
                force: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let e = t.adapter.get_resource(&key).await.unwrap_err();
    assert!(matches!(e.root(), Error::NotFound { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_a_container_that_ignores_sigterm_after_the_grace_period() {
    let t = DockerTest::new("dk").await;
    let r = t.spawn("stubborn", STUBBORN, &[]).await;
    t.adapter
        .stop_resource(&r.id, Duration::from_millis(500))
        .await
        .unwrap();
    let r = t.adapter.get_resource(&r.id).await.unwrap();
    assert_eq!(r.status.phase, phase::STOPPED);
    assert_eq!(
        r.status.reason, "ExitCode137",
        "SIGKILLed after the grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_signal_reaches_the_main_process() {
    let t = DockerTest::new("dk").await;
    let r = t
        .spawn(
            "usr1",
            &[
                "sh",
                "-c",
                "trap 'exit 42' USR1; touch /tmp/ready; while :; do sleep 1 & wait $!; done",
            ],
            &[],
        )
        .await;
    t.adapter
        .signals()
        .unwrap()
        .send_signal(&r.id, &"SIGUSR1".parse().unwrap())
        .await
        .unwrap();
    let r = t
        .wait_for(&r.id, Duration::from_secs(10), "exit 42", |r| {
            r.status.reason == "ExitCode42"
        })
        .await;
    assert_eq!(r.status.phase, phase::STOPPED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_without_force_stops_gracefully_first() {
    let t = DockerTest::new("dk").await;
    let r = t.spawn("del", GRACEFUL, &[]).await;
    t.adapter
        .delete_resource(
            &r.id,
            &DeleteOptions {
                grace_period: Duration::from_secs(5),
                force: false,
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        t.adapter.get_resource(&r.id).await.unwrap_err().root(),
        Error::NotFound { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_freezes_and_resume_thaws() {
    let t = DockerTest::new("dk").await;
    let r = t.spawn("pause", GRACEFUL, &[]).await;
    let sig = t.adapter.pausing().unwrap();
    sig.pause(r.key.as_str()).await.unwrap();
    assert_eq!(
        t.adapter.get_resource(&r.id).await.unwrap().status.phase,
        phase::PAUSED
    );
    let e = t
        .adapter
        .exec_in_resource(&r.id, &["true".into()], &ExecOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e.root(), Error::Conflict { .. }), "{e}");
    sig.resume(&r.id).await.unwrap();
    assert!(t.adapter.get_resource(&r.id).await.unwrap().is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_output_is_binary_safe_and_capped() {
    let t = DockerTest::new("dk").await;
    let r = t.spawn("exec-bin", GRACEFUL, &[]).await;
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let out = t
        .adapter
        .exec_in_resource(
            &r.id,
            &["cat".to_owned()],
            &ExecOptions {
                stdin: Some(every_byte.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, every_byte);
    let sh = |s: &str| vec!["sh".to_owned(), "-c".to_owned(), s.to_owned()];
    let out = t
        .adapter
        .exec_in_resource(
            &r.id,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_returns_stdout_stderr_exit_code_and_uses_env_stdin_and_dir() {
    let t = DockerTest::new("dk").await;
    let r = t.spawn("exec", GRACEFUL, &[]).await;
    let sh = |s: &str| vec!["sh".to_owned(), "-c".to_owned(), s.to_owned()];
    let out = t
        .adapter
        .exec_in_resource(
            r.key.as_str(),
            &sh("echo out; echo err >&2; exit 3"),
            &ExecOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        (&*out.stdout_text(), &*out.stderr_text(), out.exit_code),
        ("out\n", "err\n", 3)
    );

    let out = t
        .adapter
        .exec_in_resource(
            &r.id,
            &sh("echo \"$FOO\"; pwd; cat"),
            &ExecOptions {
                env: [("FOO".to_owned(), "bar".to_owned())].into(),
                working_dir: Some("/tmp".into()),
                stdin: Some(b"from stdin".to_vec()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "bar\n/tmp\nfrom stdin");
    assert_eq!(out.exit_code, 0);

    let e = t
        .adapter
        .exec_in_resource(
            &r.id,
            &sh("sleep 30"),
            &ExecOptions {
                timeout: Some(Duration::from_millis(300)),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e.root(), Error::Timeout { .. }), "{e}");

    t.adapter
        .stop_resource(&r.id, Duration::from_secs(5))
        .await
        .unwrap();
    let e = t
        .adapter
        .exec_in_resource(&r.id, &sh("true"), &ExecOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e.root(), Error::Conflict { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_cpu_memory_limit_and_network_from_stats() {
    let t = DockerTest::new("dk").await;
    let limit: i64 = 64 * 1024 * 1024;
    let r = t
        .spawn_with(
            "busy",
            &["sh", "-c", "(while :; do :; done) & ping -c 2 -W 1 172.17.0.1 >/dev/null; touch /tmp/ready; wait"],
            &[],
            HostConfig {
                memory: Some(limit),
                ..Default::default()
            },
        )
        .await;
    let m = t.adapter.get_metrics(r.key.as_str()).await.unwrap();
    assert_eq!(m.resource_id, r.id);
    assert!(
        // Any measurable share: on a loaded CI machine the loop gets a fraction of a core.
        m.cpu.usage_percent > 1.0,
        "a busy loop uses CPU: {:?}",
        m.cpu
    );
    assert!((m.cpu.usage_cores * 100.0 - m.cpu.usage_percent).abs() < 1e-6);
    assert!(m.memory.usage_bytes > 0, "{:?}", m.memory);
    assert_eq!(m.memory.limit_bytes, limit as u64);
    assert!(m.memory.usage_percent > 0.0 && m.memory.usage_percent < 100.0);
    assert!(
        m.network.tx_packets > 0,
        "pinged the gateway: {:?}",
        m.network
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_death_restart_and_removal_from_the_event_stream() {
    let t = DockerTest::new("dk").await;
    let r = t.spawn("watched", GRACEFUL, &[("watch", "me")]).await;
    let other = t.spawn("unwatched", GRACEFUL, &[]).await;
    let mut events = t
        .adapter
        .watch_resources(&run_filter(&t).with_label("watch", "me"))
        .await
        .unwrap();
    let sig = t.adapter.signals().unwrap();
    sig.send_signal(&other.id, &Signal::kill()).await.unwrap();
    sig.send_signal(&r.id, &Signal::kill()).await.unwrap();

    // `kill` (still running), then `die`.
    let mut ev = next(&mut events).await;
    while ev.resource.status.phase != phase::STOPPED {
        assert_eq!(ev.resource.id, r.id, "only the watched container");
        ev = next(&mut events).await;
    }
    assert_eq!(ev.type_, ResourceEventType::Modified);
    assert_eq!(ev.resource.id, r.id);
    assert_eq!(ev.resource.key, r.key);
    assert_eq!(ev.resource.status.reason, "ExitCode137");

    t.adapter.start_resource(&r.id).await.unwrap();
    // The `kill` event, inspected after the death, may also read stopped: skip those.
    let mut ev = next(&mut events).await;
    while ev.resource.status.phase == phase::STOPPED {
        ev = next(&mut events).await;
    }
    assert_eq!(
        (ev.resource.id.as_str(), ev.resource.status.phase.as_str()),
        (r.id.as_str(), phase::RUNNING)
    );

    t.adapter
        .delete_resource(
            &r.id,
            &DeleteOptions {
                force: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    loop {
        let ev = next(&mut events).await;
        assert_eq!(ev.resource.id, r.id);
        if ev.type_ == ResourceEventType::Deleted {
            assert_eq!(
                ev.resource.key, r.key,
                "the key survives in the deletion event"
            );
            assert_eq!(ev.resource.status.phase, phase::DELETED);
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_when_the_adapter_closes() {
    let t = DockerTest::new("dk").await;
    let mut events = t.adapter.watch_resources(&run_filter(&t)).await.unwrap();
    t.adapter.close().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the stream ends");
    assert!(end.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_recreates_the_container_with_the_new_spec_under_the_same_key() {
    let t = DockerTest::new("dk").await;
    let r = t.spawn("upd", GRACEFUL, &[("tier", "cache")]).await;
    let updated = t
        .adapter
        .update_resource(
            r.key.as_str(),
            &ResourceSpec {
                environment: [("MODE".to_owned(), "updated".to_owned())].into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_ne!(updated.id, r.id, "a new container");
    assert_eq!(updated.key, r.key);
    assert_eq!(updated.name, r.name);
    assert_eq!(updated.labels["tier"], "cache");
    assert!(updated.is_running());
    let out = t
        .adapter
        .exec_in_resource(
            r.key.as_str(),
            &["sh".into(), "-c".into(), "echo $MODE".into()],
            &ExecOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "updated\n");
    // The old container is gone.
    let all = t.adapter.list_resources(&run_filter(&t)).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");

    // An update that changes nothing keeps the container.
    let same = t
        .adapter
        .update_resource(&updated.id, &ResourceSpec::default())
        .await
        .unwrap();
    assert_eq!(same.id, updated.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_rejects_a_missing_image_and_leaves_nothing_behind() {
    let t = DockerTest::new("dk").await;
    let e = t
        .adapter
        .create_resource(&ResourceSpec {
            image: "ire/no-such-image:never".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(e.root(), Error::NotFound { .. }), "{e}");
    let e = t
        .adapter
        .create_resource(&ResourceSpec::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("spec.image"), "{e}");
    assert!(t
        .adapter
        .list_resources(&run_filter(&t))
        .await
        .unwrap()
        .is_empty());
}

/// The next event, within 10 s.
async fn next(events: &mut ire_core::ResourceEventStream) -> ire_core::ResourceEvent {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within 10s")
        .expect("stream open")
        .expect("no stream error")
}
