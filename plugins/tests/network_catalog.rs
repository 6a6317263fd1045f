//! The network plugins: their contract (sustained, the network capability, schemas that name
//! a bad field), their hooks on the fake adapter (the revert from the snapshot alone), and
//! the same plugin through the engine on process and docker targets, measured from inside
//! the target.

// The adapters' tests read busybox `ping` the same way.
#[path = "../../adapters/tests/ping_support/mod.rs"]
mod ping_support;
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
use ping_support::{parse_ping, ping_command};
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

/// Replies and average round trip (ms) of `ping` from `from` to `ip`, inside the target.
async fn ping(env: &Arc<dyn EnvironmentAdapter>, from: &str, ip: &str, count: u32) -> (u32, f64) {
    let out = env
        .exec_in_resource(from, &ping_command(ip, count), &ExecOptions::default())
        .await
        .unwrap();
    let (replies, avg) = parse_ping(&out.stdout_text());
    (replies, avg.unwrap_or(f64::NAN))
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
    let backend = r.metadata["networkBackend"].as_str().unwrap_or_default();
    assert!(["netem", "userspace"].contains(&backend), "{r:?}");
    let (_, after) = ping(&rig.env, key, peer, 5).await;
    assert!(
        after < base + 5.0,
        "{key}: back to the baseline: {after:.2} ms"
    );
}

/// Busybox processes `names`, each in its own network namespace, under a unique adapter
/// name and subnet.
async fn process_fleet(tag: &str, names: &[&str]) -> (Arc<ProcessAdapter>, String) {
    let instance = format!("{tag}{}", std::process::id());
    // The host's end of each switch is on the host: concurrent fleets need their own subnet.
    let h = instance
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let subnet = format!("198.18.{}.0/24", 1 + h % 250);
    let specs = names
        .iter()
        .map(|name| {
            let mut s = ProcessSpec::new(name, "busybox", &["sleep", "3600"]);
            s.network = Some(ProcessNetwork {
                namespace: true,
                address: None,
            });
            s
        })
        .collect();
    let procs = ProcessAdapter::start(
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
    .unwrap();
    (Arc::new(procs), instance)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_delay_is_one_plugin_on_process_and_docker_targets() {
    // Processes, each in its own network namespace.
    let (procs, instance) = process_fleet("pn", &["api", "db"]).await;
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

/// The namespace's qdiscs and nftables rules, as a revert must leave them.
fn namespace_state(netns: &str) -> String {
    let out = std::process::Command::new("ip")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_partition_through_the_engine_cuts_only_the_peers_its_selector_names() {
    let (procs, instance) = process_fleet("pp", &["api", "db", "cache"]).await;
    let rig = Rig::new(&instance, procs.clone()).await;
    let key = |name: &str| format!("{instance}/{name}");
    let mut ip = std::collections::HashMap::new();
    for name in ["api", "db", "cache"] {
        let r = rig.env.get_resource(&key(name)).await.unwrap();
        ip.insert(name, r.annotations["network.address"].clone());
    }
    let api_ns = format!("ire-{instance}-api");
    let before = namespace_state(&api_ns);

    // A selector that matches nothing fails the step, saying so, and changes nothing.
    let r = rig
        .run(
            network::PARTITION,
            &key("api"),
            json!({"peers": {"resources": {"names": ["no-such-*"]}}}),
            Some("3s"),
        )
        .await;
    let e = match r {
        Ok(r) => {
            assert!(!r.is_success(), "{r:?}");
            r.error.unwrap_or_default()
        }
        Err(e) => e.chain_message(),
    };
    assert!(e.contains("matches no resource"), "{e}");
    assert_eq!(
        namespace_state(&api_ns),
        before,
        "a failed prepare changes nothing"
    );

    // db, both ways, for 4 s: only db is cut off, then everything is back.
    let req = rig
        .request(
            network::PARTITION,
            &key("api"),
            json!({"peers": {"resources": {"names": ["db"]}}, "direction": "both"}),
            Some("4s"),
        )
        .await;
    let mut h = rig.engine.execute_async(req).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while ping(&rig.env, &key("api"), &ip["db"], 1).await.0 > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "api still reaches db after 3 s"
        );
    }
    assert_eq!(
        ping(&rig.env, &key("db"), &ip["api"], 3).await.0,
        0,
        "db reaches api"
    );
    assert_eq!(
        ping(&rig.env, &key("api"), &ip["cache"], 3).await.0,
        3,
        "api to cache"
    );
    assert_eq!(
        ping(&rig.env, &key("cache"), &ip["api"], 3).await.0,
        3,
        "cache to api"
    );
    let r = h.wait().await.unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(
        ping(&rig.env, &key("api"), &ip["db"], 3).await.0,
        3,
        "reconnected"
    );
    assert_eq!(
        namespace_state(&api_ns),
        before,
        "the namespace as it was found"
    );
    procs.close().await.unwrap();
}
