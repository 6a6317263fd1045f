//! The kubernetes adapter's network faults: the API calls (ephemeral containers of the
//! helper image, execs into them) against the fake API server, whose kubelet plays the
//! helper's part as each test says; and, ignored without a cluster, the effect measured in
//! a real pod.
#![cfg(feature = "kube-fake")]

mod kube_support;

use std::sync::Arc;
use std::time::Duration;

use ire_adapters::kubernetes::fake_api::ephemeral::{Behavior, ExecOutcome, Fate};
use ire_adapters::kubernetes::{net_fault_container_names, KubernetesAdapter};
use ire_core::{
    AdapterConfig, Delay, Direction, EnvironmentAdapter, Error, ExecOptions, NetworkBackend,
    NetworkFault, Peers, Probability, ResourceFilter,
};
use kube_support::{harness, Harness, NS};
use serde_json::{json, Value};

const PROBE_ANSWER: &str = r#"{"netem":false,"netem-error":"Error: Specified qdisc kind is unknown.","interfaces":["eth0"]}"#;

/// The fake kubelet as the helper would behave: a probe answers, an emulator runs, other
/// applies and reverts finish; `status` says the fault is in place; `revert` exec'd into a
/// running emulator ends it.
fn helper_kubelet(apply_fate: Fate) -> Behavior {
    Behavior {
        fate: Some(Arc::new(move |c: &Value| {
            let args: Vec<&str> = c["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match args.first().copied() {
                Some("probe") => Fate::Terminated {
                    exit_code: 0,
                    message: PROBE_ANSWER.into(),
                },
                Some("apply") => {
                    let plan: Value = serde_json::from_str(args[4]).unwrap();
                    let emulator = plan["backend"] == "userspace"
                        && (plan["fault"]["delay"].is_object()
                            || plan["fault"]["loss"].is_object());
                    if emulator {
                        apply_fate.clone()
                    } else {
                        Fate::Terminated {
                            exit_code: 0,
                            message: String::new(),
                        }
                    }
                }
                _ => Fate::Terminated {
                    exit_code: 0,
                    message: String::new(),
                },
            }
        })),
        exec: Some(Arc::new(|_container: &str, cmd: &[String]| {
            match cmd.get(1).map(String::as_str) {
                Some("revert") => ExecOutcome {
                    exit_code: 137,
                    stdout: String::new(),
                    then: Some(Fate::Terminated {
                        exit_code: 0,
                        message: String::new(),
                    }),
                },
                _ => ExecOutcome::default(),
            }
        })),
    }
}

fn ephemeral(h: &Harness, pod: &str) -> Vec<Value> {
    h.server.cluster().pod(NS, pod).unwrap()["spec"]["ephemeralContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn state(h: &Harness, pod: &str, container: &str) -> Value {
    h.server.cluster().pod(NS, pod).unwrap()["status"]["ephemeralContainerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == container)
        .map(|s| s["state"].clone())
        .unwrap_or(Value::Null)
}

fn loss() -> NetworkFault {
    NetworkFault {
        loss: Some(Probability {
            percent: 30.0,
            correlation: 0.0,
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emulated_fault_runs_in_an_ephemeral_container_and_reverts_by_exec() {
    let h = harness().await;
    h.server.cluster().add_pod(NS, "web-0", &[("app", "web")]);
    h.server
        .cluster()
        .set_ephemeral_behavior(helper_kubelet(Fate::Running));
    let nf = h.adapter.network_faults().unwrap();

    let handle = nf.prepare("web-0", "exec-1-1", &loss()).await.unwrap();
    assert_eq!(
        handle.backend,
        NetworkBackend::Userspace,
        "the probe said: no netem"
    );
    let (probe, apply, revert) = net_fault_container_names("exec-1-1");
    let eph = ephemeral(&h, "web-0");
    assert_eq!(eph.len(), 1, "prepare only probes");
    assert_eq!(eph[0]["name"], probe.as_str());
    assert_eq!(eph[0]["image"], "ire/net-fault:latest");
    assert_eq!(eph[0]["command"], json!(["/usr/local/bin/ire-net-fault"]));
    assert_eq!(
        eph[0]["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    assert_eq!(handle.data["uid"], handle.resource_id.as_str());

    nf.apply(&handle).await.unwrap();
    let eph = ephemeral(&h, "web-0");
    assert_eq!(eph.len(), 2);
    assert_eq!(eph[1]["name"], apply.as_str());
    let args: Vec<String> = serde_json::from_value(eph[1]["args"].clone()).unwrap();
    assert_eq!(&args[..3], ["apply", "--fault-id", "exec-1-1"]);
    assert!(args.contains(&"--termination-log".to_owned()));
    assert!(!state(&h, "web-0", &apply)["running"].is_null());
    let execs: Vec<_> = h
        .server
        .cluster()
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/exec"))
        .collect();
    assert!(
        execs
            .iter()
            .any(|r| r.param("container") == Some(apply.as_str())
                && r.query.iter().any(|(k, v)| k == "command" && v == "status")),
        "apply waited for the helper's status: {execs:?}"
    );

    nf.revert(&handle).await.unwrap();
    assert!(
        !state(&h, "web-0", &apply)["terminated"].is_null(),
        "the emulator ended"
    );
    let eph = ephemeral(&h, "web-0");
    assert_eq!(
        eph.len(),
        2,
        "a clean emulator exit needs no revert container"
    );
    assert!(!eph
        .iter()
        .any(|c| c["name"].as_str().unwrap().starts_with(&revert)));
    // Again: the emulator is gone, so a short-lived helper makes sure, once.
    nf.revert(&handle).await.unwrap();
    nf.revert(&handle).await.unwrap();
    let reverts: Vec<_> = ephemeral(&h, "web-0")
        .into_iter()
        .filter(|c| c["name"].as_str().unwrap().starts_with(&revert))
        .collect();
    assert_eq!(
        reverts.len(),
        1,
        "an idempotent revert does not pile up containers"
    );
    assert_eq!(reverts[0]["args"][0], "revert");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_by_selector_applies_and_reverts_through_short_lived_helpers() {
    let h = harness().await;
    h.server.cluster().add_pod(NS, "web-0", &[("app", "web")]);
    h.server.cluster().add_pod(NS, "db-0", &[("app", "db")]);
    h.server
        .cluster()
        .set_ephemeral_behavior(helper_kubelet(Fate::Running));
    let nf = h.adapter.network_faults().unwrap();
    let fault = NetworkFault {
        partition: true,
        direction: Direction::Both,
        peers: Peers {
            resources: Some(ResourceFilter::everything().with_label("app", "db")),
            ..Default::default()
        },
        ..Default::default()
    };
    let handle = nf.prepare("web-0", "part-1", &fault).await.unwrap();
    assert_eq!(
        handle.data["plan"]["fault"]["peers"]["cidrs"],
        json!(["10.0.0.1/32"]),
        "the selector resolved to the db pod's IP"
    );
    nf.apply(&handle).await.unwrap();
    let (_, apply, revert) = net_fault_container_names("part-1");
    assert_eq!(state(&h, "web-0", &apply)["terminated"]["exitCode"], 0);
    nf.revert(&handle).await.unwrap();
    assert_eq!(
        state(&h, "web-0", &format!("{revert}-1"))["terminated"]["exitCode"],
        0
    );

    let nobody = NetworkFault {
        peers: Peers {
            resources: Some(ResourceFilter::everything().with_label("app", "none")),
            ..Default::default()
        },
        ..fault
    };
    let e = nf.prepare("web-0", "part-2", &nobody).await.unwrap_err();
    assert!(e.to_string().contains("matches no resource"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_helper_a_crashed_emulator_and_a_gone_pod_are_handled() {
    let h = harness().await;
    h.server.cluster().add_pod(NS, "web-0", &[]);
    h.server
        .cluster()
        .set_ephemeral_behavior(helper_kubelet(Fate::Terminated {
            exit_code: 1,
            message: "binding NFQUEUE 12345: Operation not permitted".into(),
        }));
    let nf = h.adapter.network_faults().unwrap();
    let handle = nf.prepare("web-0", "bad-1", &loss()).await.unwrap();
    let e = nf.apply(&handle).await.unwrap_err();
    assert!(e.to_string().contains("Operation not permitted"), "{e}");

    // An emulator that crashed after apply: the revert runs a short-lived helper.
    h.server
        .cluster()
        .set_ephemeral_behavior(helper_kubelet(Fate::Running));
    let handle = nf.prepare("web-0", "crash-1", &loss()).await.unwrap();
    nf.apply(&handle).await.unwrap();
    let (_, apply, revert) = net_fault_container_names("crash-1");
    h.server.cluster().set_ephemeral_state(
        NS,
        "web-0",
        &apply,
        Fate::Terminated {
            exit_code: 137,
            message: String::new(),
        },
    );
    nf.revert(&handle).await.unwrap();
    assert_eq!(
        state(&h, "web-0", &format!("{revert}-1"))["terminated"]["exitCode"],
        0
    );

    // A gone pod took the fault with it.
    h.server.cluster().remove_pod(NS, "web-0");
    nf.revert(&handle).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_and_bad_requests_are_refused_before_anything_is_added() {
    let h = harness().await;
    h.server
        .cluster()
        .add_deployment(NS, "api", 1, &[("app", "api")]);
    h.server.cluster().add_pod(NS, "web-0", &[]);
    let nf = h.adapter.network_faults().unwrap();
    let e = nf
        .prepare(&format!("{NS}/deployment/api"), "w-1", &loss())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("network faults act on pods"), "{e}");
    let e = nf
        .prepare("web-0", "no spaces!", &loss())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("fault id"), "{e}");
    let e = nf
        .prepare("web-0", "w-2", &NetworkFault::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    assert!(ephemeral(&h, "web-0").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_server_refuses_changes_real_servers_refuse() {
    let h = harness().await;
    h.server.cluster().add_pod(NS, "web-0", &[]);
    h.server
        .cluster()
        .set_ephemeral_behavior(helper_kubelet(Fate::Running));
    let nf = h.adapter.network_faults().unwrap();
    nf.prepare("web-0", "imm-1", &loss()).await.unwrap();
    // Removing or changing an existing ephemeral container is forbidden.
    let kc = kube::config::Kubeconfig::read_from(h.dir.path().join("kubeconfig")).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client, NS);
    let mut pod = api.get("web-0").await.unwrap();
    pod.spec.as_mut().unwrap().ephemeral_containers = Some(Vec::new());
    let e = api
        .replace_ephemeral_containers("web-0", &Default::default(), &pod)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("may not be removed"), "{e}");
}

/// A real cluster: delay on a pod, measured with ping from inside it. Needs the helper image
/// on the nodes (`ire/net-fault:latest`, or `IRE_NET_FAULT_IMAGE`), and two pods labelled
/// `ire-test=net` running busybox in `IRE_TEST_NAMESPACE`.
#[tokio::test]
#[ignore = "needs a Kubernetes cluster"]
async fn real_cluster_delay_is_measured_inside_the_pod() {
    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG names a cluster");
    let ns = std::env::var("IRE_TEST_NAMESPACE").unwrap_or_else(|_| "default".into());
    let image =
        std::env::var("IRE_NET_FAULT_IMAGE").unwrap_or_else(|_| "ire/net-fault:latest".into());
    let mut a = KubernetesAdapter::new();
    a.initialize(AdapterConfig {
        name: "cluster".into(),
        config: json!({"kubeconfig": kubeconfig, "namespace": ns, "net-fault-image": image})
            .as_object()
            .cloned()
            .unwrap(),
    })
    .await
    .unwrap();
    let pods = a
        .list_resources(
            &ResourceFilter::everything()
                .with_kind("pod")
                .with_label("ire-test", "net"),
        )
        .await
        .unwrap();
    assert!(pods.len() >= 2, "two pods labelled ire-test=net");
    let peer_ip = pods[1].metadata["podIP"].as_str().unwrap().to_owned();
    let ping = |id: String| {
        let a = &a;
        let ip = peer_ip.clone();
        async move {
            let out = a
                .exec_in_resource(
                    &id,
                    &["ping".into(), "-c".into(), "5".into(), ip],
                    &ExecOptions::default(),
                )
                .await
                .unwrap();
            let text = out.stdout_text().into_owned();
            text.lines()
                .find_map(|l| {
                    l.split_once("min/avg/max = ")?
                        .1
                        .split('/')
                        .nth(1)?
                        .parse::<f64>()
                        .ok()
                })
                .unwrap()
        }
    };
    let base = ping(pods[0].id.clone()).await;
    let nf = a.network_faults().unwrap();
    let id = format!("cluster-{}", std::process::id());
    let h = nf
        .prepare(
            &pods[0].id,
            &id,
            &NetworkFault {
                delay: Some(Delay {
                    latency: Duration::from_millis(100),
                    jitter: Duration::ZERO,
                    correlation: 0.0,
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    nf.apply(&h).await.unwrap();
    let added = ping(pods[0].id.clone()).await - base;
    nf.revert(&h).await.unwrap();
    assert!((90.0..=110.0).contains(&added), "added {added:.1} ms");
}
