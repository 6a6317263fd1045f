//! The kubernetes adapter against the fake API server: selectors sent to the server,
//! paged lists, keys and ids, delete with a grace period, watch, exec, metrics, scaling,
//! lifecycle and signals.

mod kube_support;

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use ire_core::{
    DeleteOptions, EnvironmentAdapter, Error, ExecOptions, Operator, ResourceEventType,
    ResourceFilter, ResourceSpec, SelectorRequirement, Signal,
};
use kube_support::{harness, harness_with, ADAPTER, NS};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `check` until it returns `Some`, or panics after [`DEADLINE`].
async fn eventually<T, Fut: Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> Fut,
) -> T {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pods() -> ResourceFilter {
    ResourceFilter::everything().with_kind("pod")
}

fn key(pod: &str) -> String {
    format!("{ADAPTER}/{NS}/{pod}")
}

#[tokio::test]
async fn label_and_field_selectors_are_sent_to_the_api_server() {
    let h = harness().await;
    let c = h.server.cluster();
    c.add_pod(NS, "api-0", &[("app", "api"), ("tier", "web")]);
    c.add_pod(
        NS,
        "api-1",
        &[("app", "api"), ("tier", "web"), ("canary", "yes")],
    );
    c.add_pod(NS, "db-0", &[("app", "db"), ("tier", "data")]);
    c.set_pod_phase(NS, "api-0", "Failed");

    let filter = pods()
        .with_expression(SelectorRequirement::new(
            "tier",
            Operator::In,
            ["web", "edge"],
        ))
        .with_expression(SelectorRequirement::new(
            "canary",
            Operator::DoesNotExist,
            Vec::<String>::new(),
        ))
        .with_status("failed");
    let found = h.adapter.list_resources(&filter).await.unwrap();
    assert_eq!(
        found.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["api-0"]
    );

    let list = c
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.method == "GET" && r.path == format!("/api/v1/namespaces/{NS}/pods"))
        .expect("a pod list request");
    assert_eq!(
        list.param("labelSelector"),
        Some("tier in (web,edge),!canary")
    );
    assert_eq!(list.param("fieldSelector"), Some("status.phase=Failed"));
    assert_eq!(list.param("limit"), Some("500"));

    let by_name = h
        .adapter
        .list_resources(&pods().with_name("db-0"))
        .await
        .unwrap();
    assert_eq!(by_name.len(), 1);
    let req = c.requests().pop().unwrap();
    assert_eq!(req.param("fieldSelector"), Some("metadata.name=db-0"));
}

#[tokio::test]
async fn client_side_parts_of_a_filter_still_apply() {
    let h = harness().await;
    let c = h.server.cluster();
    c.add_pods(NS, "web", 5, &[("app", "web")]);
    c.add_pods(NS, "job", 3, &[("app", "job")]);
    // `any` and wildcards are not server-side selectors: the adapter checks them.
    let filter = ResourceFilter {
        any: vec![
            ResourceFilter::everything().with_label("app", "job"),
            ResourceFilter::everything().with_name("web-00001"),
        ],
        ..pods()
    };
    let names: Vec<String> = h
        .adapter
        .list_resources(&filter)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["job-00000", "job-00001", "job-00002", "web-00001"]);
    let none = h
        .adapter
        .list_resources(&pods().with_name("nope-*"))
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn pages_never_exceed_the_page_size_and_cover_every_pod_once() {
    let h = harness_with(json!({"page-size": 100})).await;
    let c = h.server.cluster();
    c.add_pods(NS, "p", 1_050, &[("app", "fleet")]);
    let mut pages = h.adapter.list_pages(&pods()).unwrap();
    let mut seen = HashSet::new();
    let mut count = 0;
    while let Some(page) = pages.next().await {
        let page = page.unwrap();
        assert!(page.len() <= 100, "a page of {} items", page.len());
        count += 1;
        for r in page {
            assert!(seen.insert(r.key.clone()), "{} listed twice", r.key);
        }
    }
    assert_eq!(seen.len(), 1_050);
    assert!(count >= 11, "{count} pages for 1050 pods at 100 per page");
    let lists: Vec<_> = c
        .requests()
        .into_iter()
        .filter(|r| r.path == format!("/api/v1/namespaces/{NS}/pods") && r.param("watch").is_none())
        .collect();
    assert!(lists.iter().all(|r| r.param("limit") == Some("100")));
    assert_eq!(
        lists
            .iter()
            .filter(|r| r.param("continue").is_some())
            .count(),
        lists.len() - 1
    );
}

#[tokio::test]
async fn page_tokens_resume_a_listing_across_calls() {
    let h = harness_with(json!({"page-size": 7})).await;
    h.server.cluster().add_pods(NS, "p", 20, &[]);
    let mut token = None;
    let mut names = Vec::new();
    loop {
        let page = h.adapter.list_page(&pods(), token.as_ref()).await.unwrap();
        names.extend(page.resources.into_iter().map(|r| r.name));
        match page.next {
            // The token survives being printed and parsed (as an HTTP API would pass it).
            Some(t) => token = Some(t.to_string().parse().unwrap()),
            None => break,
        }
    }
    assert_eq!(
        names,
        (0..20).map(|i| format!("p-{i:05}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn offset_and_limit_stop_listing_once_the_page_is_full() {
    let h = harness_with(json!({"page-size": 10})).await;
    let c = h.server.cluster();
    c.add_pods(NS, "p", 200, &[]);
    let before = c.requests().len();
    let page = h
        .adapter
        .list_resources(&pods().page(12, Some(5)))
        .await
        .unwrap();
    let names: Vec<_> = page.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["p-00012", "p-00013", "p-00014", "p-00015", "p-00016"]
    );
    assert_eq!(
        c.requests().len() - before,
        2,
        "only the pages needed are requested"
    );
}

#[tokio::test]
async fn resources_are_found_by_key_name_and_uid() {
    let h = harness().await;
    let pod = h.server.cluster().add_pod(NS, "web-0", &[("app", "web")]);
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_owned();
    let by_key = h.adapter.get_resource(&key("web-0")).await.unwrap();
    assert_eq!(by_key.key.as_str(), key("web-0"));
    assert_eq!(by_key.id, uid);
    assert_eq!(by_key.kind, "pod");
    assert_eq!(by_key.labels["app"], "web");
    assert_eq!(h.adapter.get_resource("web-0").await.unwrap().id, uid);
    assert_eq!(h.adapter.get_resource(&uid).await.unwrap().key, by_key.key);
    let e = h
        .adapter
        .get_resource(&format!("{ADAPTER}/other/web-0"))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("outside this adapter's namespace"),
        "{e}"
    );
    let e = h.adapter.get_resource(&key("nope")).await.unwrap_err();
    assert!(matches!(e.root(), Error::NotFound { .. }), "{e:?}");
}

#[tokio::test]
async fn delete_with_a_grace_period_terminates_then_removes_the_pod() {
    let h = harness().await;
    let c = h.server.cluster();
    c.add_pod(NS, "slow", &[]);
    h.adapter
        .delete_resource(
            &key("slow"),
            &DeleteOptions {
                grace_period: Duration::from_secs(1),
                force: false,
            },
        )
        .await
        .unwrap();
    let r = h.adapter.get_resource(&key("slow")).await.unwrap();
    assert_eq!(
        r.status.reason, "Terminating",
        "the pod terminates during its grace period"
    );
    eventually("the pod to be gone after its grace period", || async {
        matches!(h.adapter.get_resource(&key("slow")).await, Err(e) if matches!(e.root(), Error::NotFound { .. })).then_some(())
    })
    .await;
    let delete = c
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE")
        .unwrap();
    assert_eq!(delete.path, format!("/api/v1/namespaces/{NS}/pods/slow"));

    c.add_pod(NS, "now", &[]);
    h.adapter
        .delete_resource(
            &key("now"),
            &DeleteOptions {
                grace_period: Duration::from_secs(30),
                force: true,
            },
        )
        .await
        .unwrap();
    assert!(
        c.pod(NS, "now").is_none(),
        "force deletes with grace period 0"
    );
    let e = h
        .adapter
        .delete_resource(&key("now"), &DeleteOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e.root(), Error::NotFound { .. }));
}

#[tokio::test]
async fn watch_streams_changes_from_the_api_server_watch() {
    let h = harness().await;
    let c = h.server.cluster();
    c.add_pod(NS, "before", &[("app", "web")]);
    let mut watch = h
        .adapter
        .watch_resources(&pods().with_label("app", "web"))
        .await
        .unwrap();
    c.add_pod(NS, "web-1", &[("app", "web")]);
    c.add_pod(NS, "other", &[("app", "db")]);
    c.set_pod_phase(NS, "web-1", "Failed");
    c.set_pod_labels(NS, "before", &[("app", "retired")]);
    c.remove_pod(NS, "web-1");
    let mut got = Vec::new();
    while got.len() < 4 {
        let ev = tokio::time::timeout(DEADLINE, watch.next())
            .await
            .expect("a watch event")
            .unwrap()
            .unwrap();
        got.push((
            ev.type_,
            ev.resource.name.clone(),
            ev.resource.status.phase.clone(),
        ));
    }
    assert_eq!(
        got,
        [
            (ResourceEventType::Added, "web-1".into(), "running".into()),
            (ResourceEventType::Modified, "web-1".into(), "failed".into()),
            // It no longer matches the selector: it left the watched set.
            (
                ResourceEventType::Deleted,
                "before".into(),
                "running".into()
            ),
            (ResourceEventType::Deleted, "web-1".into(), "failed".into()),
        ]
    );
    let watches = c
        .requests()
        .into_iter()
        .filter(|r| r.param("watch") == Some("true"))
        .count();
    let lists = c
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/pods") && r.param("watch").is_none())
        .count();
    assert_eq!(
        (watches, lists),
        (1, 1),
        "one list, then one watch: no polling"
    );
}

#[tokio::test]
async fn watch_relists_and_reports_the_gap_after_its_version_expired() {
    let h = harness().await;
    let c = h.server.cluster();
    c.add_pod(NS, "stays", &[]);
    c.add_pod(NS, "goes", &[]);
    let mut watch = h.adapter.watch_resources(&pods()).await.unwrap();
    // The API server forgets its history and drops open watches; changes happen meanwhile.
    c.compact();
    c.remove_pod(NS, "goes");
    c.add_pod(NS, "new", &[]);
    let mut got = HashSet::new();
    while got.len() < 2 {
        let ev = tokio::time::timeout(DEADLINE, watch.next())
            .await
            .expect("an event after the gap")
            .unwrap()
            .unwrap();
        got.insert((ev.type_, ev.resource.name));
    }
    assert_eq!(
        got,
        HashSet::from([
            (ResourceEventType::Deleted, "goes".to_owned()),
            (ResourceEventType::Added, "new".to_owned())
        ])
    );
}

#[tokio::test]
async fn watch_ends_when_the_adapter_closes() {
    let h = harness().await;
    let mut watch = h.adapter.watch_resources(&pods()).await.unwrap();
    h.adapter.close().await.unwrap();
    let end = tokio::time::timeout(DEADLINE, watch.next())
        .await
        .expect("the stream ends");
    assert!(end.is_none());
}

#[tokio::test]
async fn exec_output_is_binary_safe_and_capped() {
    let h = harness().await;
    h.server.cluster().add_pod(NS, "bin", &[]);
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let r = h
        .adapter
        .exec_in_resource(
            &key("bin"),
            &["cat".to_owned()],
            &ExecOptions {
                stdin: Some(every_byte.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.stdout, every_byte);
    let sh = |s: &str| vec!["sh".to_owned(), "-c".to_owned(), s.to_owned()];
    let r = h
        .adapter
        .exec_in_resource(
            &key("bin"),
            &sh("head -c 300000 /dev/zero; echo done >&2"),
            &ExecOptions {
                output_limit: Some(1000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((r.stdout.len(), r.stdout_dropped), (1000, 299_000));
    assert_eq!((&*r.stderr_text(), r.exit_code), ("done\n", 0));
}

#[tokio::test]
async fn exec_returns_stdout_stderr_and_exit_code() {
    let h = harness().await;
    h.server.cluster().add_pod(NS, "box", &[]);
    let sh = |s: &str| vec!["sh".to_owned(), "-c".to_owned(), s.to_owned()];
    let r = h
        .adapter
        .exec_in_resource(
            &key("box"),
            &sh("echo out; echo err >&2; exit 3"),
            &ExecOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        (&*r.stdout_text(), &*r.stderr_text(), r.exit_code),
        ("out\n", "err\n", 3)
    );

    let opts = ExecOptions {
        stdin: Some(b"from stdin".to_vec()),
        ..ExecOptions::default()
    };
    let r = h
        .adapter
        .exec_in_resource(&key("box"), &["cat".to_owned()], &opts)
        .await
        .unwrap();
    assert_eq!((&*r.stdout_text(), r.exit_code), ("from stdin", 0));

    let opts = ExecOptions {
        env: [("GREETING".to_owned(), "hi".to_owned())].into(),
        working_dir: Some("/tmp".into()),
        ..ExecOptions::default()
    };
    let r = h
        .adapter
        .exec_in_resource(&key("box"), &sh("echo $GREETING; pwd"), &opts)
        .await
        .unwrap();
    assert_eq!(r.stdout_text(), "hi\n/tmp\n");

    let e = h
        .adapter
        .exec_in_resource(
            &key("box"),
            &["no-such-binary-ire".to_owned()],
            &ExecOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("could not run"), "{e}");

    let opts = ExecOptions {
        timeout: Some(Duration::from_millis(300)),
        ..ExecOptions::default()
    };
    let e = h
        .adapter
        .exec_in_resource(&key("box"), &sh("sleep 5"), &opts)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
}

#[tokio::test]
async fn metrics_come_from_metrics_k8s_io_and_name_metrics_server_when_absent() {
    let h = harness().await;
    let c = h.server.cluster();
    let pod = c.add_pod(NS, "busy", &[]);
    c.set_pod_metrics(NS, "busy", "250m", "64Mi");
    let m = h.adapter.get_metrics(&key("busy")).await.unwrap();
    assert_eq!(m.resource_id, pod["metadata"]["uid"].as_str().unwrap());
    assert!((m.cpu.usage_cores - 0.25).abs() < 1e-9 && (m.cpu.usage_percent - 25.0).abs() < 1e-9);
    assert_eq!(m.memory.usage_bytes, 64 * 1024 * 1024);

    c.add_statefulset(NS, "db", 2, &[("app", "db")]);
    c.set_pod_metrics(NS, "db-0", "100m", "10Mi");
    c.set_pod_metrics(NS, "db-1", "300m", "30Mi");
    let m = h
        .adapter
        .get_metrics(&format!("{ADAPTER}/{NS}/statefulset/db"))
        .await
        .unwrap();
    assert!(
        (m.cpu.usage_cores - 0.4).abs() < 1e-9,
        "{}",
        m.cpu.usage_cores
    );
    assert_eq!(m.memory.usage_bytes, 40 * 1024 * 1024);

    c.set_metrics_served(false);
    let e = h.adapter.get_metrics(&key("busy")).await.unwrap_err();
    assert!(
        matches!(e, Error::Unsupported { .. }) && e.to_string().contains("metrics-server"),
        "{e}"
    );
}

#[tokio::test]
async fn scaling_a_statefulset_changes_its_replicas_and_pods() {
    let h = harness().await;
    let c = h.server.cluster();
    c.add_statefulset(NS, "web", 2, &[("app", "web")]);
    let sts = format!("{ADAPTER}/{NS}/statefulset/web");
    let scaling = h.adapter.scaling().expect("scaling capability");
    assert_eq!(scaling.replicas(&sts).await.unwrap(), 2);
    let keys = |rs: Vec<ire_core::Resource>| {
        rs.into_iter()
            .map(|r| r.key.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(h.adapter.list_resources(&pods()).await.unwrap()),
        [key("web-0"), key("web-1")]
    );

    scaling.scale(&sts, 3).await.unwrap();
    assert_eq!(scaling.replicas(&sts).await.unwrap(), 3);
    assert_eq!(
        keys(h.adapter.list_resources(&pods()).await.unwrap()),
        [key("web-0"), key("web-1"), key("web-2")]
    );
    let patch = c
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .unwrap();
    assert_eq!(
        patch.path,
        format!("/apis/apps/v1/namespaces/{NS}/statefulsets/web/scale")
    );

    let e = scaling.scale(&sts, -1).await.unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }));
    let e = scaling.replicas(&key("web-0")).await.unwrap_err();
    assert!(e.to_string().contains("not scalable"), "{e}");
}

#[tokio::test]
async fn stopping_a_deployment_scales_to_zero_and_starting_restores_its_replicas() {
    let h = harness().await;
    let c = h.server.cluster();
    c.add_deployment(NS, "api", 3, &[("app", "api")]);
    let d = format!("{ADAPTER}/{NS}/deployment/api");
    h.adapter
        .stop_resource(&d, Duration::from_secs(1))
        .await
        .unwrap();
    let r = h.adapter.get_resource(&d).await.unwrap();
    assert_eq!(
        (r.spec.replicas, r.status.phase.as_str()),
        (Some(0), "stopped")
    );
    assert!(h.adapter.list_resources(&pods()).await.unwrap().is_empty());
    let again = h
        .adapter
        .stop_resource(&d, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(again.is_ignorable(), "{again:?}");
    h.adapter.start_resource(&d).await.unwrap();
    let r = h.adapter.get_resource(&d).await.unwrap();
    assert_eq!(
        (r.spec.replicas, r.status.phase.as_str()),
        (Some(3), "running")
    );
    assert_eq!(h.adapter.list_resources(&pods()).await.unwrap().len(), 3);
}

#[tokio::test]
async fn restart_keeps_the_key_of_statefulset_and_bare_pods() {
    let h = harness().await;
    let c = h.server.cluster();
    c.add_statefulset(NS, "db", 1, &[("app", "db")]);
    c.set_pod_grace(NS, "db-0", 1);
    let before = h.adapter.get_resource(&key("db-0")).await.unwrap();
    h.adapter.restart_resource(&key("db-0")).await.unwrap();
    // The statefulset controller recreates db-0 once the old one has terminated.
    let after = eventually("db-0 to come back with a new uid", || async {
        h.adapter
            .get_resource(&key("db-0"))
            .await
            .ok()
            .filter(|r| r.id != before.id && r.is_running())
    })
    .await;
    assert_eq!(after.key, before.key);

    // A grace period of 1 s keeps the test short; the adapter waits for it before recreating.
    let bare = c.add_pod(NS, "solo", &[("app", "solo")]);
    c.set_pod_grace(NS, "solo", 1);
    let uid = bare["metadata"]["uid"].clone();
    h.adapter.restart_resource(&key("solo")).await.unwrap();
    let r = h.adapter.get_resource(&key("solo")).await.unwrap();
    assert_ne!(serde_json::Value::String(r.id.clone()), uid);
    assert_eq!(r.labels["app"], "solo");
    assert!(r.is_running());
}

#[tokio::test]
async fn signals_run_kill_in_the_pod_and_sigkill_deletes_it_at_once() {
    let h = harness().await;
    let c = h.server.cluster();
    c.add_statefulset(NS, "web", 1, &[("app", "web")]);
    let signals = h.adapter.signals().expect("signal capability");
    let before = h.adapter.get_resource(&key("web-0")).await.unwrap();
    signals
        .send_signal(&key("web-0"), &Signal::term())
        .await
        .unwrap();
    assert_eq!(c.signals(NS, "web-0"), [15]);
    let r = h.adapter.get_resource(&key("web-0")).await.unwrap();
    assert_eq!(
        r.metadata["restartCount"],
        json!(1),
        "SIGTERM restarted the container"
    );

    signals
        .send_signal(&key("web-0"), &Signal::kill())
        .await
        .unwrap();
    let delete = c
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE")
        .expect("SIGKILL deletes the pod");
    assert_eq!(delete.path, format!("/api/v1/namespaces/{NS}/pods/web-0"));
    let after = h.adapter.get_resource(&key("web-0")).await.unwrap();
    assert_ne!(
        after.id, before.id,
        "the controller replaced the killed pod"
    );

    // Kubernetes has no pause: the adapter neither lists the capability nor offers it.
    assert!(h.adapter.pausing().is_none());
    assert!(!h
        .adapter
        .adapter_info()
        .has_capability(ire_core::adapter::capability::PAUSE));
}

#[tokio::test]
async fn create_and_update_pods_and_deployments() {
    let h = harness().await;
    let spec = ResourceSpec {
        image: "busybox:1".into(),
        command: vec!["sleep".into(), "3600".into()],
        ..Default::default()
    };
    let pod = h.adapter.create_resource(&spec).await.unwrap();
    assert_eq!(
        (pod.kind.as_str(), pod.spec.image.as_str()),
        ("pod", "busybox:1")
    );
    assert!(pod.name.starts_with("ire-"));
    assert_eq!(pod.labels["app.kubernetes.io/managed-by"], "ire");

    let updated = h
        .adapter
        .update_resource(
            pod.key.as_str(),
            &ResourceSpec {
                image: "busybox:2".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.spec.image, "busybox:2");
    let e = h
        .adapter
        .update_resource(
            pod.key.as_str(),
            &ResourceSpec {
                args: vec!["x".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Invalid { .. }) && e.to_string().contains("only change its image"),
        "{e}"
    );

    let d = h
        .adapter
        .create_resource(&ResourceSpec {
            replicas: Some(2),
            ..spec.clone()
        })
        .await
        .unwrap();
    assert_eq!((d.kind.as_str(), d.spec.replicas), ("deployment", Some(2)));
    let owned = h
        .adapter
        .list_resources(&pods().with_name(format!("{}-*", d.name)))
        .await
        .unwrap();
    assert_eq!(owned.len(), 2, "the deployment's pods run");
    let d2 = h
        .adapter
        .update_resource(
            d.key.as_str(),
            &ResourceSpec {
                replicas: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(d2.spec.replicas, Some(1));

    let e = h
        .adapter
        .create_resource(&ResourceSpec::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("spec.image"), "{e}");
}

#[tokio::test]
async fn bad_configuration_and_unreachable_servers_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = kube_adapter();
    let e = a
        .initialize(ire_core::AdapterConfig {
            name: "k8s".into(),
            config: json!({"kubeconfig": dir.path().join("missing")})
                .as_object()
                .cloned()
                .unwrap(),
        })
        .await
        .unwrap_err();
    assert!(
        e.chain_message().contains("kubeconfig") && e.chain_message().contains("missing"),
        "{}",
        e.chain_message()
    );

    // A kubeconfig pointing at a port nobody listens on.
    let server = ire_adapters::kubernetes::fake_api::FakeApiServer::start()
        .await
        .unwrap();
    let path = dir.path().join("kc");
    server.write_kubeconfig(&path, NS).unwrap();
    server.shutdown().await;
    let e = kube_adapter()
        .initialize(ire_core::AdapterConfig {
            name: "k8s".into(),
            config: json!({"kubeconfig": path}).as_object().cloned().unwrap(),
        })
        .await
        .unwrap_err();
    assert!(
        e.is_retryable() && e.chain_message().contains("API server"),
        "{}",
        e.chain_message()
    );

    let e = kube_adapter().list_resources(&pods()).await.unwrap_err();
    assert!(e.to_string().contains("before initialize"));
}

fn kube_adapter() -> ire_adapters::kubernetes::KubernetesAdapter {
    ire_adapters::kubernetes::KubernetesAdapter::new()
}
