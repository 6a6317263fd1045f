//! The network plugins: their contract (sustained, the network capability, schemas that name
//! a bad field), their hooks on the fake adapter (the revert from the snapshot alone), and
//! the same plugin through the engine on process and docker targets, measured from inside
//! the target.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ire_adapters::docker::{DockerAdapter, DockerConfig};
use ire_adapters::process::{
    NetworkConfig, ProcessAdapter, ProcessConfig, ProcessNetwork, ProcessSpec,
};
use ire_core::adapter::capability;
use ire_core::testsuite::{FakeAdapter, ResourceBuilder};
use ire_core::{
    EnvironmentAdapter, ExecOptions, ExecutionEngine, FaultKind, NetworkFaultHandle, Plugin,
    PluginConfig, PluginContext, Snapshot,
};
use ire_plugins::network;
use serde_json::json;
use support::docker::Containers;
use support::Rig;

fn plugin(name: &str) -> Arc<dyn Plugin> {
    network::plugins()
        .into_iter()
        .find(|p| p.metadata().name == name)
        .unwrap()
}

#[test]
fn every_network_plugin_is_a_sustained_fault_with_a_schema_that_names_a_bad_field() {
    let names: Vec<String> = network::plugins()
        .iter()
        .map(|p| p.metadata().name)
        .collect();
    assert_eq!(
        names,
        [
            network::DELAY,
            network::LOSS,
            network::CORRUPT,
            network::DUPLICATE,
            network::REORDER,
            network::BANDWIDTH,
            network::PARTITION
        ]
    );
    for p in network::plugins() {
        let md = p.metadata();
        assert_eq!(md.fault_kind, FaultKind::Sustained, "{}", md.name);
        assert_eq!(
            md.required_capabilities,
            [capability::NETWORK],
            "{}",
            md.name
        );
        assert!(md.config_schema.is_object(), "{}", md.name);
        assert!(p.supports_rollback());
    }
    let good = [
        (
            network::DELAY,
            json!({"latency": "100ms", "jitter": "10ms", "correlation": 25}),
        ),
        (
            network::LOSS,
            json!({"percent": 30, "peers": {"cidrs": ["10.0.0.0/8"], "ports": [5432, "8000-8100"]}}),
        ),
        (network::CORRUPT, json!({"percent": 1, "direction": "both"})),
        (
            network::DUPLICATE,
            json!({"percent": 5, "backend": "userspace"}),
        ),
        (network::REORDER, json!({"percent": 25, "gap": 5})),
        (network::BANDWIDTH, json!({"rate": "10mbit"})),
        (
            network::PARTITION,
            json!({"peers": {"resources": {"labels": {"app": "db"}}}, "direction": "both"}),
        ),
    ];
    for (name, config) in good {
        plugin(name)
            .validate_config(&PluginConfig(config.clone()))
            .unwrap_or_else(|e| panic!("{name} {config}: {e}"));
    }
    let bad = [
        (network::DELAY, json!({}), "latency"),
        (network::DELAY, json!({"latency": "fast"}), "latency"),
        (
            network::DELAY,
            json!({"latency": "10ms", "jitter": "20ms"}),
            "jitter",
        ),
        (network::LOSS, json!({"percent": 150}), "percent"),
        (
            network::LOSS,
            json!({"percent": 10, "peers": {"cidrs": ["nowhere"]}}),
            "cidrs",
        ),
        (
            network::LOSS,
            json!({"percent": 10, "peers": {"ports": ["90-80"]}}),
            "ports",
        ),
        (network::BANDWIDTH, json!({"rate": "10mbps"}), "rate"),
        (network::PARTITION, json!({"latency": "1s"}), "latency"),
        (
            network::PARTITION,
            json!({"direction": "sideways"}),
            "direction",
        ),
    ];
    for (name, config, field) in bad {
        let e = plugin(name)
            .validate_config(&PluginConfig(config.clone()))
            .unwrap_err()
            .chain_message();
        assert!(
            e.contains(field) && e.contains(name),
            "{name} {config}: {e}"
        );
    }
}

#[tokio::test]
async fn hooks_prepare_in_pre_execute_apply_in_execute_and_revert_from_the_snapshot_alone() {
    let fake = FakeAdapter::new("fake");
    let r = fake.insert(ResourceBuilder::new("web").build());
    let env: Arc<dyn EnvironmentAdapter> = Arc::new(fake.clone());
    let mut ctx = PluginContext::new("exec-1", env.clone());
    ctx.fault_id = "exec-1-1".into();
    ctx.config = PluginConfig(json!({"latency": "100ms"}));
    let p = plugin(network::DELAY);
    p.validate(&ctx, &r).await.unwrap();
    let snap = p.pre_execute(&ctx, &r).await.unwrap().unwrap();
    assert!(
        fake.active_network_faults().is_empty(),
        "prepare applies nothing"
    );
    let handle: NetworkFaultHandle = snap.state_as().unwrap();
    assert_eq!(handle.fault_id, "exec-1-1");
    p.execute(&ctx, &r).await.unwrap();
    assert!(fake.active_network_faults().contains_key("exec-1-1"));
    // Another node: a fresh plugin instance, the snapshot's bytes from the ledger.
    let snap = Snapshot::from_bytes(&snap.to_bytes().unwrap()).unwrap();
    let other = plugin(network::DELAY);
    let mut ctx2 = PluginContext::new("revert-1", env);
    ctx2.fault_id = "exec-1-1".into();
    other.rollback(&ctx2, &r, &snap).await.unwrap();
    assert!(fake.active_network_faults().is_empty());
    other.rollback(&ctx2, &r, &snap).await.unwrap();

    // Execute without a prepared fault, or without a fault id, says why.
    let e = p.execute(&ctx, &r).await.unwrap_err();
    assert!(e.to_string().contains("PreExecute"), "{e}");
    ctx.fault_id.clear();
    let e = p.pre_execute(&ctx, &r).await.unwrap_err();
    assert!(e.to_string().contains("fault id"), "{e}");
}

/// Average round trip (ms) and replies of `ping` from `from` to `ip`, inside the target.
async fn ping(env: &Arc<dyn EnvironmentAdapter>, from: &str, ip: &str, count: u32) -> (u32, f64) {
    let cmd: Vec<String> = format!("busybox ping -c {count} -i 0.05 -W 1 {ip}")
        .split_whitespace()
        .map(String::from)
        .collect();
    let out = env
        .exec_in_resource(from, &cmd, &ExecOptions::default())
        .await
        .unwrap();
    let text = out.stdout_text().into_owned();
    let replies = text
        .lines()
        .find_map(|l| {
            l.split_once("transmitted, ")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let avg = text
        .lines()
        .find_map(|l| {
            l.split_once("min/avg/max = ")?
                .1
                .split('/')
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(f64::NAN);
    (replies, avg)
}

/// network-delay through the engine for 4 s on `key`: the round trip to `peer` measured
/// inside the target grows by 100 ms while it lasts and is back after the revert.
async fn delay_through_the_engine(rig: &Rig, key: &str, peer: &str) {
    let (n, base) = ping(&rig.env, key, peer, 5).await;
    assert_eq!(n, 5, "{key} reaches {peer}");
    let req = rig
        .request(network::DELAY, key, json!({"latency": "100ms"}), Some("4s"))
        .await;
    let mut h = rig.engine.execute_async(req).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while ping(&rig.env, key, peer, 1).await.1 < base + 50.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key}: no delay within 3 s"
        );
    }
    let (n, slow) = ping(&rig.env, key, peer, 10).await;
    assert_eq!(n, 10);
    let added = slow - base;
    assert!(
        (90.0..=110.0).contains(&added),
        "{key}: added {added:.1} ms"
    );
    let r = h.wait().await.unwrap();
    assert!(r.is_success(), "{r:?}");
    let (_, after) = ping(&rig.env, key, peer, 5).await;
    assert!(
        after < base + 5.0,
        "{key}: back to the baseline: {after:.2} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_delay_is_one_plugin_on_process_and_docker_targets() {
    // Processes, each in its own network namespace.
    let instance = format!("pn{}", std::process::id());
    let subnet = format!("198.18.{}.0/24", 1 + std::process::id() % 250);
    let mut specs = Vec::new();
    for name in ["api", "db"] {
        let mut s = ProcessSpec::new(name, "busybox", &["sleep", "3600"]);
        s.network = Some(ProcessNetwork {
            namespace: true,
            address: None,
        });
        specs.push(s);
    }
    let procs = Arc::new(
        ProcessAdapter::start(
            &instance,
            &ProcessConfig {
                processes: specs,
                stop_grace: Duration::from_secs(2),
                network: NetworkConfig {
                    subnet: subnet.parse().unwrap(),
                },
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    let rig = Rig::new(&instance, procs.clone()).await;
    let db = rig
        .env
        .get_resource(&format!("{instance}/db"))
        .await
        .unwrap();
    let db_ip = db.annotations["network.address"].clone();
    delay_through_the_engine(&rig, &format!("{instance}/api"), &db_ip).await;
    procs.close().await.unwrap();

    // Docker containers.
    let c = Containers::new("netdelay");
    let a = c.run("a", &[], &["sleep", "3600"]);
    let b = c.run("b", &[], &["sleep", "3600"]);
    let docker = DockerAdapter::connect(
        "dk",
        &DockerConfig {
            labels: c.labels(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let rig = Rig::new("dk", Arc::new(docker)).await;
    let a_key = rig.env.get_resource(&a).await.unwrap().key.to_string();
    let b_ip = support::docker::docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &b,
    ]);
    delay_through_the_engine(&rig, &a_key, b_ip.trim()).await;
}
