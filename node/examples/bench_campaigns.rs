//! Campaign benchmarks on an embedded node (single-node raft in a temporary directory):
//!
//! - `plan [N]`: `ire plan`'s dry run over a **simulated fleet** of N resources (default
//!   10,000; an in-memory adapter, labelled as such): list the selector, check each
//!   resource's health, read each lease through raft, choose. p50/p99 over 10 runs, peak RSS.
//! - `faults [N]`: faults injected and reverted per second on one node: a campaign whose one
//!   step pauses N **local processes** (default 1,000 `sleep` processes through the process
//!   adapter: SIGSTOP, held 1 s, SIGCONT), every fault recorded in the ledger and reverted;
//!   and the same over a simulated fleet with a no-op sustained fault.
//! - `demo [RUNS]`: `ire demo`'s wall time (the release binary, run RUNS times).
//!
//! Every run prints the machine's load (other builds share it).
//!
//! Run: `cargo run --release -p ire-node --example bench_campaigns -- plan 10000`

use std::sync::Arc;
use std::time::{Duration, Instant};

use ire_core::testsuite::process_stats::{load_average, peak_rss_kib};
use ire_core::testsuite::{FakeAdapter, FakePlugin, ResourceBuilder};
use ire_core::{EnvironmentAdapter, ExecutionEngine, Plugin};
use ire_node::campaign::{preview, Executor, RunOptions, Source};
use ire_node::config::NodeConfig;
use ire_node::wiring::Node;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// A simulated fleet: `n` resources labelled tier web/db (9:1), zone a/b.
fn simulated(n: usize) -> FakeAdapter {
    let a = FakeAdapter::new("sim");
    for i in 0..n {
        a.insert(
            ResourceBuilder::new(&format!("svc-{i}"))
                .key(&format!("sim/svc-{i}"))
                .label("tier", if i % 10 == 0 { "db" } else { "web" })
                .label("zone", if i % 2 == 0 { "a" } else { "b" })
                .phase("running")
                .build(),
        );
    }
    a
}

async fn node_with(
    extra: Vec<(String, Arc<dyn EnvironmentAdapter>)>,
    config: NodeConfig,
) -> Arc<Node> {
    Arc::new(Node::start_with(config, extra).await.expect("node starts"))
}

async fn plan(n: usize) {
    let adapter = simulated(n);
    let mut config = NodeConfig::defaults();
    config.adapters.clear();
    let node = node_with(vec![("sim".into(), Arc::new(adapter) as _)], config).await;
    node.engine
        .register_plugin(Arc::new(FakePlugin::new("pause")) as Arc<dyn Plugin>)
        .await
        .unwrap();
    let text = "name: plan-bench\ntargets:\n  web:\n    adapter: sim\n    selector: {labels: {tier: web}}\n    mode: {fixed-percent: 10}\n    guard: {min-available: \"50%\"}\n  db-a:\n    adapter: sim\n    selector:\n      labels: {tier: db}\n      expressions: [{key: zone, operator: In, values: [a]}]\n    mode: {random-max-percent: 30}\nsteps:\n  - {name: freeze-web, plugin: pause, target: web, duration: 30s}\n  - {name: freeze-db, plugin: pause, target: db-a, duration: 30s}\n";
    let exec = Executor::new(node.clone());
    let prepared = exec.prepare(Source::new("plan-bench.yaml", text)).unwrap();
    let mut times = Vec::new();
    let mut chosen = 0;
    for run in 0..11 {
        let t = Instant::now();
        let p = preview::dry_run(&node, &prepared.campaign, Some(run)).await;
        let took = t.elapsed();
        if run > 0 {
            times.push(took);
        }
        chosen = p.steps.iter().map(|s| s.chosen.len()).sum::<usize>();
        assert!(p.steps.iter().all(|s| s.error.is_none()));
    }
    times.sort();
    println!("## ire plan over a simulated fleet (in-memory adapter)\n");
    println!("| resources | steps | chosen | p50 ms | p99 ms | peak RSS MiB | load |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {n} | 2 | {chosen} | {} | {} | {} | {} |",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        peak_rss_kib() / 1024,
        load_average()
    );
    node.shutdown().await.unwrap();
}

async fn faults_on(node: Arc<Node>, label: &str, n: usize, text: &str) {
    let exec = Executor::new(node.clone());
    let prepared = exec
        .prepare(Source::new("faults-bench.yaml", text))
        .unwrap();
    let t = Instant::now();
    let report = exec
        .start(prepared, RunOptions::default())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    let took = t.elapsed();
    let ok = report
        .tasks()
        .filter(|(_, t)| t.state == ire_consensus::types::TaskState::Succeeded)
        .count();
    let step = &report.steps[0];
    let span = match (step.started_at, step.ended_at) {
        (Some(a), Some(b)) => (b - a).to_std().unwrap_or_default(),
        _ => took,
    };
    // Each fault is held 1 s; the rate counts the rest of the step's time.
    let work = span.saturating_sub(Duration::from_secs(1));
    println!(
        "| {label} | {n} | {ok} | {} | {:.1} | {:.0} | {} | {} |",
        ms(span),
        took.as_secs_f64(),
        ok as f64 / work.as_secs_f64().max(1e-3),
        peak_rss_kib() / 1024,
        load_average()
    );
    assert_eq!(ok, n, "{}", report.table());
    node.shutdown().await.unwrap();
}

async fn faults(n: usize) {
    println!("## Faults injected and reverted per second, one node\n");
    println!("| fleet | faults | succeeded | step ms | campaign s | faults/s (step minus the 1 s hold) | peak RSS MiB | load |");
    println!("|---|---|---|---|---|---|---|---|");
    // Local processes: `sleep` through the process adapter, paused and unpaused for real.
    let processes: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "name": format!("sleeper-{i}"),
                "command": "sleep",
                "args": ["3600"],
                "labels": {"bench": "faults"},
            })
        })
        .collect();
    let mut config = NodeConfig::defaults();
    config
        .adapters
        .get_mut("local")
        .unwrap()
        .config
        .insert("processes".into(), processes.into());
    config
        .adapters
        .get_mut("local")
        .unwrap()
        .config
        .insert("stop-grace".into(), "1s".into());
    config.engine.concurrency = 256;
    let node = node_with(Vec::new(), config).await;
    let text = "name: faults-bench\ntargets:\n  all: {adapter: local, selector: {labels: {bench: faults}}, mode: all}\nsteps:\n  - {name: freeze, plugin: pause, target: all, duration: 1s}\nsettings:\n  recovery-timeout: 1s\n";
    faults_on(node, "local processes (pause/unpause)", n, text).await;

    // The same over a simulated fleet with a no-op sustained fault.
    let adapter = simulated(n);
    let mut config = NodeConfig::defaults();
    config.adapters.clear();
    config.engine.concurrency = 256;
    let node = node_with(vec![("sim".into(), Arc::new(adapter) as _)], config).await;
    node.engine
        .register_plugin(Arc::new(FakePlugin::new("noop-sustained")) as Arc<dyn Plugin>)
        .await
        .unwrap();
    let text = "name: faults-bench\ntargets:\n  all: {adapter: sim, mode: all}\nsteps:\n  - {name: freeze, plugin: noop-sustained, target: all, duration: 1s}\nsettings:\n  recovery-timeout: 1s\n";
    faults_on(node, "simulated fleet (no-op sustained fault)", n, text).await;
}

fn demo(runs: usize) {
    let exe = std::env::current_exe().unwrap();
    let ire = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("ire"))
        .expect("target dir");
    assert!(
        ire.exists(),
        "build the binary first: cargo build --release -p ire-node"
    );
    println!("## ire demo wall time\n");
    println!("| run | wall s | exit | load |");
    println!("|---|---|---|---|");
    let mut times = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        let out = std::process::Command::new(&ire)
            .args(["demo", "--no-progress", "-o", "json"])
            .output()
            .expect("run ire demo");
        let took = t.elapsed();
        times.push(took);
        println!(
            "| {} | {:.1} | {} | {} |",
            i + 1,
            took.as_secs_f64(),
            out.status.code().unwrap_or(-1),
            load_average()
        );
    }
    times.sort();
    println!(
        "\np50 {:.1} s, max {:.1} s",
        percentile(&times, 0.5).as_secs_f64(),
        times.last().unwrap().as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = |d: usize| args.get(1).and_then(|a| a.parse().ok()).unwrap_or(d);
    match args.first().map(String::as_str) {
        Some("plan") => plan(n(10_000)).await,
        Some("faults") => faults(n(1_000)).await,
        Some("demo") => demo(n(5)),
        _ => eprintln!("usage: bench_campaigns plan [N] | faults [N] | demo [RUNS]"),
    }
}
