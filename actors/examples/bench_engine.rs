//! Engine benchmark: overhead of a no-op plugin's lifecycle (without, then with the lease
//! and the ledger record), and 1,000 / 10,000 concurrent executions of a plugin that
//! sleeps 200 ms (wall time beyond the 200 ms, peak RSS).
//!
//! Run: `cargo run --release -p ire-actors --example bench_engine [all|overhead|concurrent|tasks-N|batch-N]`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ire_actors::engine::{Engine, EngineConfig, EngineDeps};
use ire_actors::lock::{LockConfig, LockManager};
use ire_actors::registry::DefaultPluginRegistry;
use ire_core::testsuite::process_stats::cpu_seconds;
use ire_core::testsuite::process_stats::load_average;
use ire_core::testsuite::{FakeAdapter, MemoryLedger, MemoryLockService, ResourceBuilder};
use ire_core::{
    EnvironmentAdapter, ExecutionEngine, ExecutionRequest, Plugin, PluginContext, PluginMetadata,
    PluginRegistry, Resource, Result, Snapshot,
};

/// Does nothing; with `fault`, takes a snapshot and supports rollback, so that the engine
/// records it in the ledger like a real fault.
struct Noop {
    name: &'static str,
    fault: bool,
    sleep: Duration,
}

#[async_trait]
impl Plugin for Noop {
    fn metadata(&self) -> PluginMetadata {
        PluginMetadata::new(
            self.name,
            semver::Version::new(1, 0, 0),
            "benchmark plugin",
            ire_core::FaultKind::Action,
        )
    }
    async fn validate(&self, _: &PluginContext, _: &Resource) -> Result<()> {
        Ok(())
    }
    async fn pre_execute(&self, _: &PluginContext, r: &Resource) -> Result<Option<Snapshot>> {
        if self.fault {
            Snapshot::new(self.name, r, &()).map(Some)
        } else {
            Ok(None)
        }
    }
    async fn execute(&self, _: &PluginContext, _: &Resource) -> Result<()> {
        if !self.sleep.is_zero() {
            tokio::time::sleep(self.sleep).await;
        }
        Ok(())
    }
    fn supports_rollback(&self) -> bool {
        self.fault
    }
    async fn rollback(&self, _: &PluginContext, _: &Resource, _: &Snapshot) -> Result<()> {
        Ok(())
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct Node {
    engine: Engine,
    /// Shared, as a caller fanning out over discovered resources would hold them.
    resources: Vec<Arc<Resource>>,
}

async fn node(with_lock: bool, limit: usize, queue: usize, keys: usize) -> Node {
    let adapter = FakeAdapter::new("fake");
    let resources: Vec<Arc<Resource>> = (0..keys)
        .map(|i| Arc::new(adapter.insert(ResourceBuilder::new(&format!("r{i}")).build())))
        .collect();
    let mut adapters: BTreeMap<String, Arc<dyn EnvironmentAdapter>> = BTreeMap::new();
    adapters.insert("fake".into(), Arc::new(adapter));
    let registry = Arc::new(DefaultPluginRegistry::new());
    for (name, fault, sleep) in [
        ("noop", false, Duration::ZERO),
        ("noop-fault", true, Duration::ZERO),
        ("sleep-200ms", false, Duration::from_millis(200)),
    ] {
        registry
            .register(Arc::new(Noop { name, fault, sleep }))
            .await
            .unwrap();
    }
    let mut deps = EngineDeps::new(registry, adapters);
    if with_lock {
        let service = MemoryLockService::new();
        let ledger = MemoryLedger::new(&service);
        let locks = LockManager::new(Arc::new(service), LockConfig::default());
        locks.spawn().await.unwrap();
        deps.locks = Some(locks);
        deps.ledger = Some(Arc::new(ledger));
    }
    let engine = Engine::new(
        EngineConfig {
            concurrency_limit: limit,
            queue_capacity: queue,
            ..EngineConfig::default()
        },
        deps,
    );
    engine.spawn().await.unwrap();
    Node { engine, resources }
}

async fn overhead(label: &str, n: &Node, plugin: &str, count: usize) {
    // Warm up.
    for i in 0..200 {
        let r = &n.resources[i % n.resources.len()];
        n.engine
            .execute(ExecutionRequest::new(plugin, r.clone(), "bench"))
            .await
            .unwrap();
    }
    let mut lat = Vec::with_capacity(count);
    let start = Instant::now();
    for i in 0..count {
        let r = &n.resources[i % n.resources.len()];
        let t = Instant::now();
        let res = n
            .engine
            .execute(ExecutionRequest::new(plugin, r.clone(), "bench"))
            .await
            .unwrap();
        lat.push(t.elapsed());
        assert!(res.is_success(), "{res:?}");
    }
    let total = start.elapsed();
    lat.sort();
    println!(
        "| {label:<44} | {count:>6} | {:>9.1} | {:>9.1} | {:>9.0} | {:>8.1} |",
        percentile(&lat, 0.5).as_secs_f64() * 1e6,
        percentile(&lat, 0.99).as_secs_f64() * 1e6,
        count as f64 / total.as_secs_f64(),
        peak_rss_mib()
    );
}

/// 10,000 executions submitted as one batch (a campaign step fanned out over many resources).
async fn concurrent_batch(n: &Node, count: usize) {
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let requests = (0..count)
        .map(|i| {
            let r = n.resources[i % n.resources.len()].clone();
            ExecutionRequest::new("sleep-200ms", r, "bench")
        })
        .collect();
    let handles = n.engine.execute_many(requests).await;
    let admitted = start.elapsed();
    let mut tasks = tokio::task::JoinSet::new();
    for h in handles {
        let mut h = h.unwrap();
        tasks.spawn(async move { h.wait().await.unwrap().is_success() });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        ok += usize::from(r.unwrap());
    }
    let wall = start.elapsed();
    let cpu = cpu_seconds() - cpu0;
    assert_eq!(ok, count);
    println!(
        "| {count:>6} x sleep 200 ms, batch | {:>7.1} | {:>16.1} | {:>15.1} | {:>13.1} | {:>15.1} |",
        wall.as_secs_f64() * 1e3,
        (wall.as_secs_f64() - 0.2) * 1e3,
        admitted.as_secs_f64() * 1e3,
        cpu * 1e6 / count as f64,
        peak_rss_mib()
    );
}

async fn concurrent(n: &Node, count: usize) {
    // Requests arrive concurrently (API calls, a campaign's fan-out), each from its own task.
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let r = n.resources[i % n.resources.len()].clone();
        let engine = n.engine.clone();
        tasks.spawn(async move {
            let mut h = engine
                .execute_async(ExecutionRequest::new("sleep-200ms", r, "bench"))
                .await
                .unwrap();
            let admitted = start.elapsed();
            (h.wait().await.unwrap().is_success(), admitted)
        });
    }
    let mut ok = 0;
    let mut last_admitted = Duration::ZERO;
    while let Some(r) = tasks.join_next().await {
        let (success, admitted) = r.unwrap();
        ok += usize::from(success);
        last_admitted = last_admitted.max(admitted);
    }
    let wall = start.elapsed();
    let cpu = cpu_seconds() - cpu0;
    assert_eq!(ok, count);
    println!(
        "| {count:>6} x sleep 200 ms | {:>14.1} | {:>16.1} | {:>15.1} | {:>13.1} | {:>15.1} |",
        wall.as_secs_f64() * 1e3,
        (wall.as_secs_f64() - 0.2) * 1e3,
        last_admitted.as_secs_f64() * 1e3,
        cpu * 1e6 / count as f64,
        peak_rss_mib()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // `bench_engine [all|overhead|concurrent|tasks-N|batch-N]`: a single concurrent case in a fresh
    // process measures its own peak RSS, not the high-water mark of earlier phases.
    let only = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    rt.block_on(async {
        if only != "all" && only != "overhead" && only != "concurrent" {
            let wide = node(false, 10_000, 20_000, 1_000).await;
            println!(
                "Load average: {}, RSS before: {:.1} MiB",
                load_average(),
                peak_rss_mib()
            );
            // `tasks-N` / `batch-N`: N concurrent executions (smaller counts for profilers).
            let (mode, count) = only
                .split_once('-')
                .and_then(|(m, n)| Some((m, n.parse::<usize>().ok()?)))
                .unwrap_or_else(|| panic!("unknown case {only}: tasks-N or batch-N"));
            match mode {
                "tasks" => concurrent(&wide, count).await,
                "batch" => concurrent_batch(&wide, count).await,
                other => panic!("unknown case {other}: tasks-N or batch-N"),
            }
            return;
        }
        println!("Load average at start: {}", load_average());
        // `concurrent`: the four concurrent cases in one process, without the overhead cases.
        if only != "concurrent" {
            println!();
            println!("Engine overhead (sequential executions, in-process, 2 worker threads)");
            println!();
            println!(
                "| {:<44} | {:>6} | {:>9} | {:>9} | {:>9} | {:>8} |",
                "case", "n", "p50 us", "p99 us", "exec/s", "peak MiB"
            );
            println!(
                "|{}|{}|{}|{}|{}|{}|",
                "-".repeat(46),
                "-".repeat(8),
                "-".repeat(11),
                "-".repeat(11),
                "-".repeat(11),
                "-".repeat(10)
            );
            let plain = node(false, 64, 4096, 100).await;
            overhead("no-op plugin, no lock", &plain, "noop", 20_000).await;
            let locked = node(true, 64, 4096, 100).await;
            overhead(
                "no-op fault, in-memory lock + ledger record",
                &locked,
                "noop-fault",
                20_000,
            )
            .await;
        }
        println!();
        println!("Concurrent executions (concurrency limit 10,000, no lock)");
        println!();
        println!(
            "| {:<22} | {:>14} | {:>16} | {:>15} | {:>13} | {:>15} |",
            "case", "wall ms", "beyond 200 ms", "all admitted ms", "CPU us / exec", "peak RSS MiB"
        );
        println!(
            "|{}|{}|{}|{}|{}|{}|",
            "-".repeat(24),
            "-".repeat(16),
            "-".repeat(18),
            "-".repeat(17),
            "-".repeat(15),
            "-".repeat(17)
        );
        if only == "overhead" {
            return;
        }
        let wide = node(false, 10_000, 20_000, 1_000).await;
        concurrent(&wide, 1_000).await;
        concurrent(&wide, 10_000).await;
        concurrent_batch(&wide, 1_000).await;
        concurrent_batch(&wide, 10_000).await;
        println!();
        println!("Load average at end: {}", load_average());
    });
}
