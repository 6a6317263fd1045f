//! Network faults on local processes in their own network namespaces, measured from inside
//! them (busybox `ping` through exec), with the namespace compared before and after, and a
//! revert by a fresh adapter after the injecting process was SIGKILLed.
#![cfg(feature = "process")]

mod ping_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use ire_adapters::process::{
    NetworkConfig, ProcessAdapter, ProcessConfig, ProcessNetwork, ProcessSpec,
};
use ire_core::{
    Delay, Direction, EnvironmentAdapter, Error, ExecOptions, NetworkFault, NetworkFaultHandle,
    Peers, Probability, ResourceFilter,
};
use ping_support::{parse_ping, ping_command};

/// A unique adapter name and subnet per test (the switch and its host address are the
/// host's, shared by concurrent tests).
fn instance(tag: &str) -> (String, NetworkConfig) {
    // The SIGKILL test's child uses its parent's name.
    let name = std::env::var("IRE_NF_CHILD_NAME")
        .unwrap_or_else(|_| format!("nf{}{tag}", std::process::id()));
    let h = name
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let subnet = format!("198.18.{}.0/24", 1 + h % 250).parse().unwrap();
    (name, NetworkConfig { subnet })
}

fn in_namespace(name: &str) -> ProcessSpec {
    let mut s = ProcessSpec::new(name, "busybox", &["sleep", "3600"]);
    s.network = Some(ProcessNetwork {
        namespace: true,
        address: None,
    });
    s
}

async fn fleet(tag: &str, specs: Vec<ProcessSpec>, autostart: bool) -> (ProcessAdapter, String) {
    let (name, network) = instance(tag);
    let a = ProcessAdapter::start(
        &name,
        &ProcessConfig {
            processes: specs,
            stop_grace: Duration::from_secs(2),
            autostart,
            network,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    (a, name)
}

async fn address(a: &ProcessAdapter, process: &str) -> String {
    a.get_resource(process).await.unwrap().annotations["network.address"].clone()
}

/// Replies and average round trip (ms) of `ping -c count` from `from`'s namespace.
async fn ping(a: &ProcessAdapter, from: &str, ip: &str, count: u32) -> (u32, Option<f64>) {
    let out = a
        .exec_in_resource(from, &ping_command(ip, count), &ExecOptions::default())
        .await
        .unwrap();
    parse_ping(&out.stdout_text())
}

/// The namespace's qdiscs and nftables rules.
fn state(netns: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "sh",
            "-c",
            "tc qdisc show; nft list ruleset",
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

fn netns_of(adapter: &str, process: &str) -> String {
    format!("ire-{adapter}-{process}")
}

fn delay(ms: u64) -> Option<Delay> {
    Some(Delay {
        latency: Duration::from_millis(ms),
        jitter: Duration::ZERO,
        correlation: 0.0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_on_a_process_is_measured_from_inside_its_namespace_and_reverted() {
    let (a, name) = fleet("d", vec![in_namespace("api"), in_namespace("db")], true).await;
    let db = address(&a, "db").await;
    let ns = netns_of(&name, "api");
    let before = state(&ns);
    let (n, base) = ping(&a, "api", &db, 10).await;
    assert_eq!(n, 10, "the processes reach each other through the switch");
    let nf = a.network_faults().unwrap();
    let handle = nf
        .prepare(
            "api",
            &format!("{name}-delay"),
            &NetworkFault {
                delay: delay(100),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(state(&ns), before, "prepare changes nothing");
    nf.apply(&handle).await.unwrap();
    let (n, slow) = ping(&a, "api", &db, 10).await;
    assert_eq!(n, 10);
    let added = slow.unwrap() - base.unwrap();
    assert!((90.0..=110.0).contains(&added), "added {added:.1} ms");
    nf.revert(&handle).await.unwrap();
    assert_eq!(state(&ns), before, "the namespace is as it was found");
    assert!(ire_net_fault::ops::emulator_pids(&handle.fault_id).is_empty());
    assert!(ping(&a, "api", &db, 5).await.1.unwrap() < base.unwrap() + 5.0);
    nf.revert(&handle).await.unwrap();
    a.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_between_two_local_services_leaves_the_others_connected() {
    let (a, name) = fleet(
        "p",
        vec![
            in_namespace("api"),
            in_namespace("db"),
            in_namespace("cache"),
        ],
        true,
    )
    .await;
    let (api, db, cache) = (
        address(&a, "api").await,
        address(&a, "db").await,
        address(&a, "cache").await,
    );
    let nf = a.network_faults().unwrap();
    let handle = nf
        .prepare(
            "api",
            &format!("{name}-part"),
            &NetworkFault {
                partition: true,
                direction: Direction::Both,
                peers: Peers {
                    resources: Some(ResourceFilter::everything().with_name("db")),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    nf.apply(&handle).await.unwrap();
    assert_eq!(ping(&a, "api", &db, 3).await.0, 0, "api cannot reach db");
    assert_eq!(ping(&a, "db", &api, 3).await.0, 0, "db cannot reach api");
    assert_eq!(ping(&a, "api", &cache, 3).await.0, 3, "api reaches cache");
    assert_eq!(ping(&a, "db", &cache, 3).await.0, 3, "db reaches cache");
    nf.revert(&handle).await.unwrap();
    assert_eq!(ping(&a, "api", &db, 3).await.0, 3, "reconnected");
    a.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_on_the_host_network_is_refused_with_the_fix() {
    let (a, name) = fleet(
        "h",
        vec![ProcessSpec::new("host", "busybox", &["sleep", "3600"])],
        false,
    )
    .await;
    let e = a
        .network_faults()
        .unwrap()
        .prepare(
            "host",
            &format!("{name}-h"),
            &NetworkFault {
                partition: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e.root(), Error::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("namespace: true"), "{e}");
    a.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subnet_in_use_is_refused_and_closing_removes_the_namespaces_and_switch() {
    let (a, name) = fleet("c", vec![in_namespace("one")], false).await;
    let ns = format!("/run/netns/ire-{name}-one");
    let sw = format!("/run/netns/ire-sw-{name}");
    assert!(std::path::Path::new(&ns).exists() && std::path::Path::new(&sw).exists());
    // Another adapter on the same subnet would take the host's route from this one.
    let (_, network) = instance("c");
    let other = format!("{name}x");
    let e = ProcessAdapter::start(
        &other,
        &ProcessConfig {
            processes: vec![in_namespace("two")],
            autostart: false,
            network: network.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err()
    .chain_message();
    assert!(
        e.contains("network.subnet") && e.contains(&format!("{} overlaps", network.subnet)),
        "{e}"
    );
    assert!(
        !std::path::Path::new(&format!("/run/netns/ire-sw-{other}")).exists(),
        "nothing of the refused adapter is left"
    );
    a.close().await.unwrap();
    assert!(!std::path::Path::new(&ns).exists());
    assert!(!std::path::Path::new(&sw).exists());
}

/// The injector for the SIGKILL test: applies a fault, prints what the ledger would hold,
/// and waits to be killed. Runs only as the child of that test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of a_revert_after_the_injector_was_sigkilled_leaves_nothing"]
async fn injector_child() {
    if std::env::var("IRE_NF_CHILD_NAME").is_err() {
        return;
    }
    let (a, name) = fleet("", vec![in_namespace("api")], false).await;
    let ns = netns_of(&name, "api");
    println!("STATE {}", serde_json::to_string(&state(&ns)).unwrap());
    let nf = a.network_faults().unwrap();
    let handle = nf
        .prepare(
            "api",
            &format!("{name}-killed"),
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
    println!("HANDLE {}", serde_json::to_string(&handle).unwrap());
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revert_after_the_injector_was_sigkilled_leaves_nothing() {
    let tag = "k";
    let (instance_name, _) = instance(tag);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["injector_child", "--exact", "--ignored", "--nocapture"])
        .env("IRE_NF_CHILD_NAME", &instance_name)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (mut before, mut handle) = (None, None);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(s) = line.strip_prefix("STATE ") {
            before = Some(serde_json::from_str::<String>(s).unwrap());
        }
        if let Some(h) = line.strip_prefix("HANDLE ") {
            handle = Some(serde_json::from_str::<NetworkFaultHandle>(h).unwrap());
            break;
        }
    }
    let (before, handle) = (
        before.unwrap(),
        handle.expect("the child applied the fault"),
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // The fault outlived its injector: the emulator still drops every packet.
    let (a, name) = fleet(tag, vec![in_namespace("api")], false).await;
    let ns = netns_of(&name, "api");
    assert_eq!(handle.data["namespace"], ns.as_str());
    assert!(!ire_net_fault::ops::emulator_pids(&handle.fault_id).is_empty());
    assert_ne!(state(&ns), before, "the fault's table is there");
    // A fresh adapter (another node) reverts from the handle alone.
    a.network_faults().unwrap().revert(&handle).await.unwrap();
    assert!(
        ire_net_fault::ops::emulator_pids(&handle.fault_id).is_empty(),
        "no emulator left"
    );
    assert_eq!(state(&ns), before, "nothing left in the namespace");
    a.close().await.unwrap();
}
