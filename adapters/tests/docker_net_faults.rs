//! The docker adapter's network faults on this machine's Docker Engine, measured from inside
//! the target container (busybox `ping`), with the namespace compared before and after.
#![cfg(feature = "docker")]

mod docker_support;
mod ping_support;

use std::process::Command;
use std::time::Duration;

use docker_support::{DockerTest, GRACEFUL};
use ire_adapters::docker::{net_fault_emulator_name, DockerAdapter, DockerConfig};
use ire_core::{
    BackendChoice, Delay, Direction, EnvironmentAdapter, Error, ExecOptions, NetworkBackend,
    NetworkFault, NetworkFaultHandle, Peers, Probability, ResourceFilter,
};
use ping_support::{parse_ping, ping_command};

const NET_FAULT_IMAGE: &str = "ire/net-fault:latest";

/// What `ping -c count` from `from` to `ip` saw: replies, and the average round trip (ms).
async fn ping(t: &DockerTest, from: &str, ip: &str, count: u32) -> (u32, Option<f64>) {
    let out = t
        .adapter
        .exec_in_resource(from, &ping_command(ip, count), &ExecOptions::default())
        .await
        .unwrap();
    parse_ping(&out.stdout_text())
}

/// The container's network namespace as tc and nft see it, read by the helper image.
fn namespace_state(cid: &str) -> String {
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            &format!("container:{cid}"),
            "--cap-add",
            "NET_ADMIN",
            "--entrypoint",
            "/bin/sh",
            NET_FAULT_IMAGE,
            "-c",
            "tc qdisc show; nft list ruleset; ip -o link show | cut -d: -f2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn container_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["container", "inspect", name])
        .output()
        .unwrap()
        .status
        .success()
}

fn fault_id(t: &DockerTest, what: &str) -> String {
    format!("{what}-{}", t.run_id)
}

/// Whether this machine's kernel runs netem (the helper's probe on a fresh container).
async fn netem_here(t: &DockerTest, cid: &str) -> bool {
    let h = t
        .adapter
        .network_faults()
        .unwrap()
        .prepare(
            cid,
            &fault_id(t, "probe"),
            &NetworkFault {
                partition: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    h.backend == NetworkBackend::Netem
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_is_measured_inside_the_container_and_the_revert_leaves_its_namespace_as_found() {
    let t = DockerTest::new("dk").await;
    let a = t.spawn("nd-a", GRACEFUL, &[]).await;
    let b = t.spawn("nd-b", GRACEFUL, &[]).await;
    let ip_b = t.ip(&b.id).await;
    let before = namespace_state(&a.id);
    let (n, base) = ping(&t, &a.id, &ip_b, 10).await;
    assert_eq!(n, 10);
    let base = base.unwrap();

    let nf = t.adapter.network_faults().unwrap();
    let id = fault_id(&t, "delay");
    let handle = nf
        .prepare(
            a.key.as_str(),
            &id,
            &NetworkFault {
                delay: Some(Delay {
                    latency: Duration::from_millis(100),
                    jitter: Duration::ZERO,
                    correlation: 0.0,
                }),
                backend: BackendChoice::Userspace,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(handle.resource_id, a.id);
    assert_eq!(handle.backend, NetworkBackend::Userspace);
    assert_eq!(namespace_state(&a.id), before, "prepare changes nothing");
    nf.apply(&handle).await.unwrap();
    assert!(
        container_exists(&net_fault_emulator_name(&id)),
        "the emulator runs"
    );
    let (n, slow) = ping(&t, &a.id, &ip_b, 10).await;
    assert_eq!(n, 10, "delay loses nothing");
    let added = slow.unwrap() - base;
    assert!((90.0..=110.0).contains(&added), "added {added:.1} ms");

    nf.revert(&handle).await.unwrap();
    assert!(!container_exists(&net_fault_emulator_name(&id)));
    assert_eq!(
        namespace_state(&a.id),
        before,
        "the namespace is as it was found"
    );
    let (_, after) = ping(&t, &a.id, &ip_b, 5).await;
    assert!(after.unwrap() < base + 5.0, "baseline again");
    nf.revert(&handle).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_blocks_only_the_peers_its_selector_names() {
    let t = DockerTest::new("dk").await;
    let a = t.spawn("np-a", GRACEFUL, &[]).await;
    let b = t.spawn("np-b", GRACEFUL, &[("role", "db")]).await;
    let c = t.spawn("np-c", GRACEFUL, &[]).await;
    let (ip_a, ip_b, ip_c) = (t.ip(&a.id).await, t.ip(&b.id).await, t.ip(&c.id).await);
    let before = namespace_state(&a.id);
    let nf = t.adapter.network_faults().unwrap();
    let fault = NetworkFault {
        partition: true,
        direction: Direction::Both,
        peers: Peers {
            resources: Some(
                ResourceFilter::everything()
                    .with_label(docker_support::RUN_LABEL, &t.run_id)
                    .with_label("role", "db"),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    let handle = nf
        .prepare(&a.id, &fault_id(&t, "part"), &fault)
        .await
        .unwrap();
    assert_eq!(
        handle.data["plan"]["fault"]["peers"]["cidrs"],
        serde_json::json!([format!("{ip_b}/32")]),
        "the selector was resolved to b's address"
    );
    nf.apply(&handle).await.unwrap();
    assert_eq!(ping(&t, &a.id, &ip_b, 3).await.0, 0, "a cannot reach b");
    assert_eq!(ping(&t, &b.id, &ip_a, 3).await.0, 0, "b cannot reach a");
    assert_eq!(ping(&t, &a.id, &ip_c, 3).await.0, 3, "a reaches c");
    assert_eq!(ping(&t, &c.id, &ip_a, 3).await.0, 3, "c reaches a");
    nf.revert(&handle).await.unwrap();
    assert_eq!(ping(&t, &a.id, &ip_b, 3).await.0, 3, "reconnected");
    assert_eq!(namespace_state(&a.id), before);

    let nobody = NetworkFault {
        peers: Peers {
            resources: Some(ResourceFilter::everything().with_name("no-such-container-*")),
            ..Default::default()
        },
        ..fault
    };
    let e = nf
        .prepare(&a.id, &fault_id(&t, "none"), &nobody)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("matches no resource"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_adapter_reverts_from_the_recorded_handle_alone() {
    let t = DockerTest::new("dk").await;
    let a = t.spawn("nr-a", GRACEFUL, &[]).await;
    let b = t.spawn("nr-b", GRACEFUL, &[]).await;
    let ip_b = t.ip(&b.id).await;
    let before = namespace_state(&a.id);
    let nf = t.adapter.network_faults().unwrap();
    let id = fault_id(&t, "fresh");
    let handle = nf
        .prepare(
            &a.id,
            &id,
            &NetworkFault {
                loss: Some(Probability {
                    percent: 100.0,
                    correlation: 0.0,
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    nf.apply(&handle).await.unwrap();
    assert_eq!(ping(&t, &a.id, &ip_b, 3).await.0, 0, "every packet is lost");
    // What the ledger keeps, read back by another adapter instance (another node).
    let recorded: NetworkFaultHandle =
        serde_json::from_str(&serde_json::to_string(&handle).unwrap()).unwrap();
    let other = DockerAdapter::connect("dk", &DockerConfig::default())
        .await
        .unwrap();
    other
        .network_faults()
        .unwrap()
        .revert(&recorded)
        .await
        .unwrap();
    assert!(!container_exists(&net_fault_emulator_name(&id)));
    assert_eq!(ping(&t, &a.id, &ip_b, 3).await.0, 3);
    assert_eq!(namespace_state(&a.id), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_containers_are_refused_and_a_removed_ones_fault_reverts_as_a_no_op() {
    let t = DockerTest::new("dk").await;
    let a = t.spawn("ns-a", GRACEFUL, &[]).await;
    let nf = t.adapter.network_faults().unwrap();
    let fault = NetworkFault {
        loss: Some(Probability {
            percent: 50.0,
            correlation: 0.0,
        }),
        ..Default::default()
    };
    let handle = nf
        .prepare(&a.id, &fault_id(&t, "gone"), &fault)
        .await
        .unwrap();
    nf.apply(&handle).await.unwrap();
    t.adapter
        .delete_resource(
            &a.id,
            &ire_core::DeleteOptions {
                force: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    nf.revert(&handle).await.unwrap();
    assert!(!container_exists(&net_fault_emulator_name(
        &handle.fault_id
    )));

    let b = t.spawn("ns-b", GRACEFUL, &[]).await;
    t.adapter
        .stop_resource(&b.id, Duration::from_secs(5))
        .await
        .unwrap();
    let e = nf
        .prepare(&b.id, &fault_id(&t, "stopped"), &fault)
        .await
        .unwrap_err();
    assert!(matches!(e.root(), Error::Conflict { .. }), "{e}");
    let e = nf.prepare(&b.id, "bad id!", &fault).await.unwrap_err();
    assert!(e.to_string().contains("fault id"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_netem_backend_delays_where_the_kernel_has_it() {
    let t = DockerTest::new("dk").await;
    let a = t.spawn("nn-a", GRACEFUL, &[]).await;
    if !netem_here(&t, &a.id).await {
        eprintln!("SKIPPED the_netem_backend_delays_where_the_kernel_has_it: this kernel has no sch_netem");
        return;
    }
    let b = t.spawn("nn-b", GRACEFUL, &[]).await;
    let ip_b = t.ip(&b.id).await;
    let before = namespace_state(&a.id);
    let base = ping(&t, &a.id, &ip_b, 5).await.1.unwrap();
    let nf = t.adapter.network_faults().unwrap();
    let handle = nf
        .prepare(
            &a.id,
            &fault_id(&t, "netem"),
            &NetworkFault {
                delay: Some(Delay {
                    latency: Duration::from_millis(100),
                    jitter: Duration::ZERO,
                    correlation: 0.0,
                }),
                backend: BackendChoice::Netem,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    nf.apply(&handle).await.unwrap();
    let added = ping(&t, &a.id, &ip_b, 10).await.1.unwrap() - base;
    assert!((90.0..=110.0).contains(&added), "added {added:.1} ms");
    nf.revert(&handle).await.unwrap();
    assert_eq!(namespace_state(&a.id), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_netem_where_the_kernel_lacks_it_is_refused_before_anything_changes() {
    let t = DockerTest::new("dk").await;
    let a = t.spawn("nq-a", GRACEFUL, &[]).await;
    if netem_here(&t, &a.id).await {
        eprintln!("SKIPPED asking_for_netem_where_the_kernel_lacks_it: this kernel has sch_netem");
        return;
    }
    let before = namespace_state(&a.id);
    let e = t
        .adapter
        .network_faults()
        .unwrap()
        .prepare(
            &a.id,
            &fault_id(&t, "nonetem"),
            &NetworkFault {
                delay: Some(Delay {
                    latency: Duration::from_millis(100),
                    jitter: Duration::ZERO,
                    correlation: 0.0,
                }),
                backend: BackendChoice::Netem,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e.root(), Error::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("sch_netem"), "{e}");
    assert_eq!(namespace_state(&a.id), before);
}
