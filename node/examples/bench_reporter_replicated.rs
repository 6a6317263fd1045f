//! Reporter ingest into the replicated backend: the ire-actors reporter writing its batches
//! through a bootstrapped single-node consensus cluster (`ConsensusClient` as
//! `StorageBackend`: one raft entry, appended and applied on sled, per batch).
//!
//! `cargo run --release -p ire-node --example bench_reporter_replicated`
//!
//! The same records and batch size as `actors/examples/bench_reporter.rs`, so the row sits
//! next to the memory and sled rows of `docs/benchmarks.md`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::single_node;
use ire_actors::reporter::{ReporterConfig, ReporterHandle};
use ire_consensus::client::ConsensusClient;
use ire_core::testsuite::process_stats::peak_rss_kib;
use ire_core::testsuite::process_stats::{cpu_seconds, load_average};
use ire_core::testsuite::sample_execution_record;
use ire_core::{ExecutionQuery, ExecutionRecord, Reporter, StorageBackend};

const RECORDS: usize = 100_000;
const BATCH: usize = 512;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("load average before the run: {}", load_average());
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let node = single_node(dir.path()).await;
        let storage: Arc<dyn StorageBackend> = Arc::new(ConsensusClient::new(node.clone()));
        let (reporter, _join) = ReporterHandle::spawn(
            storage,
            ReporterConfig {
                batch_size: BATCH,
                flush_interval: Duration::from_millis(200),
                ..Default::default()
            },
        )
        .await
        .unwrap();

        let records: Vec<ExecutionRecord> = (0..RECORDS).map(sample_execution_record).collect();
        let cpu0 = cpu_seconds();
        let start = Instant::now();
        for r in records {
            reporter.record_execution(r).await.unwrap();
        }
        reporter.flush().await.unwrap();
        let elapsed = start.elapsed();
        let cpu = cpu_seconds() - cpu0;

        // Everything acknowledged is readable back through the replicated backend.
        let stored = reporter
            .query_executions(&ExecutionQuery {
                limit: Some(10),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(stored.len(), 10);
        let applied = node.read_local(|v, _| v.sizes().stored_values);
        assert!(applied >= RECORDS, "{applied} stored values of {RECORDS}");

        println!(
            "| backend | batch size | records | seconds | records/s | records per CPU-second |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        println!(
            "| replicated ledger (consensus crate, 1 node) | {BATCH} | {RECORDS} | {:.2} | {:.0} | {:.0} |",
            elapsed.as_secs_f64(),
            RECORDS as f64 / elapsed.as_secs_f64(),
            RECORDS as f64 / cpu.max(0.01)
        );
        println!();
        println!("peak RSS: {} MiB", peak_rss_kib() / 1024);
        node.shutdown().await;
    });
}
