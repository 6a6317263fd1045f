//! Engine benchmark on a single-node consensus cluster: the overhead of a no-op fault's
//! lifecycle when its lease and its ledger record go through raft (openraft + sled), as on a
//! real node.
//!
//! One `RaftNode` in a temporary directory (default `StoreOptions`, as in production: sled
//! flushes every log append and vote before acknowledging it), bootstrapped; the engine is
//! built as in `actors/examples/bench_engine.rs`'s lock + ledger case, with the
//! `ConsensusClient` as both the `LockService` and the `FaultLedger`. Two series of
//! sequential executions: on distinct resources, then all on one resource (each execution
//! takes the lease the previous one released). Prints an fsync calibration (4 KiB write +
//! fdatasync) first: every raft commit waits for the disk.
//!
//! Run: `cargo run --release -p ire-node --example bench_engine_consensus [-- <executions>]`

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::single_node;
use ire_actors::engine::{Engine, EngineConfig, EngineDeps};
use ire_actors::lock::{LockConfig, LockManager};
use ire_actors::registry::DefaultPluginRegistry;
use ire_consensus::client::ConsensusClient;
use ire_core::testsuite::process_stats::load_average;
use ire_core::testsuite::{FakeAdapter, PluginMetadataBuilder, ResourceBuilder};
use ire_core::{
    EnvironmentAdapter, ExecutionEngine, ExecutionRequest, Plugin, PluginContext, PluginMetadata,
    PluginRegistry, Resource, Result, Snapshot,
};

/// A fault that does nothing: it takes a snapshot and supports rollback, so the engine takes
/// the resource's lease and records the fault in the ledger as for a real fault.
struct NoopFault;

#[async_trait]
impl Plugin for NoopFault {
    fn metadata(&self) -> PluginMetadata {
        PluginMetadataBuilder::new("noop-fault").build()
    }
    async fn validate(&self, _: &PluginContext, _: &Resource) -> Result<()> {
        Ok(())
    }
    async fn pre_execute(&self, _: &PluginContext, r: &Resource) -> Result<Option<Snapshot>> {
        Snapshot::new("noop-fault", r, &()).map(Some)
    }
    async fn execute(&self, _: &PluginContext, _: &Resource) -> Result<()> {
        Ok(())
    }
    fn supports_rollback(&self) -> bool {
        true
    }
    async fn rollback(&self, _: &PluginContext, _: &Resource, _: &Snapshot) -> Result<()> {
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// p50 and p99 of a 4 KiB write + `fdatasync` in `dir`: the floor under every raft commit.
fn fsync_calibration(dir: &Path) -> (Duration, Duration) {
    let path = dir.join("fsync-calibration");
    let mut f = std::fs::File::create(&path).expect("calibration file");
    let block = vec![0xa5u8; 4096];
    let mut samples = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        f.write_all(&block).expect("calibration write");
        f.sync_data().expect("calibration fdatasync");
        samples.push(t.elapsed());
    }
    drop(f);
    let _ = std::fs::remove_file(path);
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

async fn engine(client: ConsensusClient, adapter: FakeAdapter) -> Engine {
    let mut adapters: BTreeMap<String, Arc<dyn EnvironmentAdapter>> = BTreeMap::new();
    adapters.insert("fake".into(), Arc::new(adapter));
    let registry = Arc::new(DefaultPluginRegistry::new());
    registry
        .register(Arc::new(NoopFault))
        .await
        .expect("register the plugin");
    let mut deps = EngineDeps::new(registry, adapters);
    let client = Arc::new(client);
    let locks = LockManager::new(client.clone(), LockConfig::default());
    locks.spawn().await.expect("spawn the lock manager");
    deps.locks = Some(locks);
    deps.ledger = Some(client);
    let engine = Engine::new(
        EngineConfig {
            concurrency_limit: 64,
            queue_capacity: 4096,
            ..EngineConfig::default()
        },
        deps,
    );
    engine.spawn().await.expect("spawn the engine");
    engine
}

/// `count` sequential executions, the i-th on `resources[i % len]`; prints a table row.
async fn series(label: &str, engine: &Engine, resources: &[Resource], count: usize) {
    let run = |i: usize| {
        let r = resources[i % resources.len()].clone();
        engine.execute(ExecutionRequest::new("noop-fault", r, "bench"))
    };
    for i in 0..count / 10 {
        let res = run(i).await.expect("warm-up execution");
        assert!(res.is_success(), "{res:?}");
    }
    let mut lat = Vec::with_capacity(count);
    let start = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        let res = run(i).await.expect("execution");
        lat.push(t.elapsed());
        assert!(res.is_success(), "{res:?}");
    }
    let total = start.elapsed();
    let mean = total / count as u32;
    lat.sort();
    println!(
        "| {label:<40} | {count:>6} | {:>8.2} | {:>8.2} | {:>8.2} | {:>7.0} |",
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
        count as f64 / total.as_secs_f64(),
    );
}

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("the number of executions"))
        .unwrap_or(2_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (fsync_p50, fsync_p99) = fsync_calibration(dir.path());
        println!("Load average at start: {}", load_average());
        println!(
            "fsync calibration (4 KiB write + fdatasync): p50 {:.3} ms, p99 {:.3} ms",
            fsync_p50.as_secs_f64() * 1e3,
            fsync_p99.as_secs_f64() * 1e3
        );
        let node = single_node(dir.path()).await;
        let client = ConsensusClient::new(node.clone());
        let adapter = FakeAdapter::new("fake");
        let resources: Vec<Resource> = (0..count)
            .map(|i| adapter.insert(ResourceBuilder::new(&format!("r{i}")).build()))
            .collect();
        let engine = engine(client, adapter).await;
        println!();
        println!("No-op fault, single-node consensus lock + ledger record (sequential executions)");
        println!();
        println!(
            "| {:<40} | {:>6} | {:>8} | {:>8} | {:>8} | {:>7} |",
            "case", "n", "p50 ms", "p99 ms", "mean ms", "exec/s"
        );
        println!(
            "|{}|{}|{}|{}|{}|{}|",
            "-".repeat(42),
            "-".repeat(8),
            "-".repeat(10),
            "-".repeat(10),
            "-".repeat(10),
            "-".repeat(9)
        );
        series("distinct resources", &engine, &resources, count).await;
        series(
            "one resource (lease hand-off)",
            &engine,
            &resources[..1],
            count,
        )
        .await;
        println!();
        println!("Load average at end: {}", load_average());
        node.shutdown().await;
    });
}
