//! Reporter benchmark: ingest with batching into the in-memory and the sled backend, and
//! statistics over 100,000 records.
//!
//! `cargo run --release -p ire-actors --example bench_reporter`

use std::sync::Arc;
use std::time::{Duration, Instant};

use ire_actors::reporter::{stats, MemoryStorage, ReporterConfig, ReporterHandle, SledStorage};
use ire_core::testsuite::process_stats::peak_rss_kib;
use ire_core::testsuite::process_stats::{cpu_seconds, load_average};
use ire_core::testsuite::sample_execution_record;
use ire_core::{ExecutionQuery, ExecutionRecord, Reporter, StorageBackend};

const RECORDS: usize = 100_000;

async fn ingest(name: &str, storage: Arc<dyn StorageBackend>, batch: usize) -> ReporterHandle {
    let (reporter, _join) = ReporterHandle::spawn(
        storage,
        ReporterConfig {
            batch_size: batch,
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
    println!(
        "| {name} | {batch} | {RECORDS} | {:.2} | {:.0} | {:.0} |",
        elapsed.as_secs_f64(),
        RECORDS as f64 / elapsed.as_secs_f64(),
        RECORDS as f64 / cpu.max(0.01)
    );
    reporter
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("load average before the run: {}", load_average());
    rt.block_on(async {
        println!(
            "| backend | batch size | records | seconds | records/s | records per CPU-second |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        let memory = ingest("memory", Arc::new(MemoryStorage::new()), 512).await;
        let dir = tempfile::tempdir().unwrap();
        let sled = SledStorage::open_with_cache(dir.path(), 16 << 20).unwrap();
        let sled_reporter = ingest("sled (flushed per batch)", Arc::new(sled), 512).await;
        let dir1 = tempfile::tempdir().unwrap();
        let sled1 = SledStorage::open_with_cache(dir1.path(), 16 << 20).unwrap();
        // Unbatched, for comparison: every record is its own flushed write.
        let (r1, _j) = ReporterHandle::spawn(
            Arc::new(sled1),
            ReporterConfig {
                batch_size: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let n = 2_000;
        let start = Instant::now();
        for i in 0..n {
            r1.record_execution(sample_execution_record(i))
                .await
                .unwrap();
        }
        r1.flush().await.unwrap();
        let el = start.elapsed();
        println!(
            "| sled, batch size 1 (no batching) | 1 | {n} | {:.2} | {:.0} | - |",
            el.as_secs_f64(),
            n as f64 / el.as_secs_f64()
        );
        // ire-actors does not depend on the consensus crate: the replicated backend's row
        // comes from `cargo run --release -p ire-node --example bench_reporter_replicated`.
        println!();

        println!("| statistics over {RECORDS} records | seconds | CPU seconds |");
        println!("|---|---:|---:|");
        let records = memory
            .query_executions(&ExecutionQuery::default())
            .await
            .unwrap();
        assert_eq!(records.len(), RECORDS);
        let (start, cpu0) = (Instant::now(), cpu_seconds());
        let s = stats::compute(&records);
        println!(
            "| aggregation only (stats::compute) | {:.4} | {:.2} |",
            start.elapsed().as_secs_f64(),
            cpu_seconds() - cpu0
        );
        assert_eq!(s.total_executions, RECORDS);
        for (name, r) in [("memory", &memory), ("sled", &sled_reporter)] {
            let (start, cpu0) = (Instant::now(), cpu_seconds());
            let s = r.compute_statistics(&Default::default()).await.unwrap();
            assert_eq!(s.total_executions, RECORDS);
            println!(
                "| compute_statistics from {name} (load + decode + aggregate) | {:.3} | {:.2} |",
                start.elapsed().as_secs_f64(),
                cpu_seconds() - cpu0
            );
        }
        println!();
        println!("peak RSS: {} MiB", peak_rss_kib() / 1024);
    });
}
