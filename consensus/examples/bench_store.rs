//! Benchmark of the sled store alone (no network, no raft): log appends with their flush,
//! applies, queries, and snapshots of a 100,000-record ledger. Prints a table.
//!
//! cargo run -p ire-consensus --release --example bench_store [-- RECORDS]

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use ire_consensus::store::{self, Durability, StoreOptions};
use ire_consensus::types::{Command, Entry, LogId, Request};
use ire_core::{ExecutionQuery, ExecutionRecord, ExecutionStatus};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, RaftSnapshotBuilder};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .map(|kb| kb.parse::<f64>().unwrap_or(0.0) / 1024.0)
            })
        })
        .unwrap_or(0.0)
}

fn dir_mib(p: &Path) -> f64 {
    fn walk(p: &Path) -> u64 {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        let m = e.metadata().unwrap();
                        if m.is_dir() {
                            walk(&e.path())
                        } else {
                            m.len()
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(p) as f64 / (1 << 20) as f64
}

fn record(i: u64) -> ExecutionRecord {
    let now = Utc::now();
    ExecutionRecord {
        id: format!("exec-{i:08}"),
        plugin_name: "network-delay".into(),
        resource_id: format!("c{:04}", i % 500),
        resource_name: "api".into(),
        resource_key: Some(format!("docker/shop/api-{}/1", i % 500).parse().unwrap()),
        start_time: now,
        end_time: now,
        duration: Duration::from_millis(5),
        status: ExecutionStatus::Success,
        error: String::new(),
        // Brings the record to about 2 KiB.
        metadata: [("output".to_owned(), serde_json::json!("x".repeat(1700)))].into(),
        principal: "bench".into(),
        campaign: Some(format!("campaign-{}", i % 20)),
        step: Some("slow-api".into()),
        node: Some("n1".into()),
        fencing_token: Some(ire_core::FencingToken(i)),
        time_to_detect: None,
        time_to_recover: None,
    }
}

fn entry(index: u64, command: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request::new(command, Utc::now())),
    }
}

fn row(name: &str, value: String) {
    println!("| {name:<52} | {value:>22} |");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let records: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    println!("| {:<52} | {:>22} |", "measure", "value");
    println!("|{}|{}|", "-".repeat(54), "-".repeat(24));

    // fsync calibration.
    let mut cal = Vec::new();
    {
        let mut f = std::fs::File::create(tmp.path().join("calibration")).unwrap();
        let block = vec![7u8; 4096];
        for _ in 0..200 {
            let t = Instant::now();
            f.write_all(&block).unwrap();
            f.sync_data().unwrap();
            cal.push(t.elapsed());
        }
    }
    row(
        "fsync calibration: 4 KiB write + fdatasync, p50",
        format!("{:.3} ms", pct(&mut cal, 0.5).as_secs_f64() * 1e3),
    );

    let (mut log, mut sm) = store::open(&dir, StoreOptions::default()).unwrap();
    row("RSS, store open and empty", format!("{:.1} MiB", rss_mib()));

    // Single-entry appends, each durable (default: sled flush + fdatasync) before acknowledged.
    let mut lat = Vec::new();
    let mut index = 0;
    for i in 0..500 {
        index += 1;
        let e = entry(
            index,
            Command::Release {
                key: "docker/a/b/1".parse().unwrap(),
                token: ire_core::FencingToken(i),
            },
        );
        let t = Instant::now();
        log.blocking_append([e]).await.unwrap();
        lat.push(t.elapsed());
    }
    row(
        "log append 1 entry, durable (flush + fdatasync), p50",
        format!("{:.3} ms", pct(&mut lat, 0.5).as_secs_f64() * 1e3),
    );
    row(
        "log append 1 entry, durable (flush + fdatasync), p99",
        format!("{:.3} ms", pct(&mut lat, 0.99).as_secs_f64() * 1e3),
    );
    {
        // The same in the relaxed mode (sled's flush only: survives a process crash).
        let (mut log2, _sm2) = store::open(
            &tmp.path().join("relaxed"),
            StoreOptions::default().durability(Durability::Relaxed),
        )
        .unwrap();
        let mut lat = Vec::new();
        for i in 0..300 {
            let key = "docker/a/b/1".parse().unwrap();
            let e = entry(
                i + 1,
                Command::Release {
                    key,
                    token: ire_core::FencingToken(i),
                },
            );
            let t = Instant::now();
            log2.blocking_append([e]).await.unwrap();
            lat.push(t.elapsed());
        }
        row(
            "log append 1 entry, relaxed (sled flush only), p50",
            format!("{:.3} ms", pct(&mut lat, 0.5).as_secs_f64() * 1e3),
        );
        row(
            "log append 1 entry, relaxed (sled flush only), p99",
            format!("{:.3} ms", pct(&mut lat, 0.99).as_secs_f64() * 1e3),
        );
    }
    sm.apply(log_range(&mut log, 1, index).await).await.unwrap();

    // Lock commands through apply (acquire + release pairs, batches of 64).
    let t = Instant::now();
    let pairs = 20_000u64;
    let mut batch = Vec::new();
    for i in 0..pairs {
        let key: ire_core::ResourceKey = format!("docker/shop/svc-{}/1", i % 1000).parse().unwrap();
        index += 1;
        batch.push(entry(
            index,
            Command::Acquire {
                key: key.clone(),
                holder: format!("h{i}"),
                ttl: Duration::from_secs(30),
            },
        ));
        index += 1;
        batch.push(entry(
            index,
            Command::Release {
                key,
                token: ire_core::FencingToken(index - 1),
            },
        ));
        if batch.len() >= 64 {
            sm.apply(std::mem::take(&mut batch)).await.unwrap();
        }
    }
    sm.apply(batch).await.unwrap();
    row(
        "apply acquire/release, batches of 64",
        format!(
            "{:.0} cmds/s",
            (pairs * 2) as f64 / t.elapsed().as_secs_f64()
        ),
    );

    // The ledger: append (flushed) and apply 2 KiB records in batches of 64.
    let t = Instant::now();
    let mut i = 0;
    while i < records {
        let n = 64.min(records - i);
        let es: Vec<Entry> = (0..n)
            .map(|k| {
                index += 1;
                entry(index, Command::record_execution(record(i + k)))
            })
            .collect();
        log.blocking_append(es.clone()).await.unwrap();
        sm.apply(es).await.unwrap();
        i += n;
    }
    let secs = t.elapsed().as_secs_f64();
    row(
        &format!("ledger: {records} records of 2 KiB, append+flush+apply"),
        format!("{:.0} records/s", records as f64 / secs),
    );
    sm.flush().await.unwrap();
    row(
        &format!("RSS after {records} records"),
        format!("{:.1} MiB", rss_mib()),
    );
    row(
        &format!("data dir after {records} records (log not purged)"),
        format!("{:.1} MiB", dir_mib(&dir)),
    );

    // Queries.
    let mut lat = Vec::new();
    for k in 0..200 {
        let q = ExecutionQuery {
            resource_ids: vec![format!("docker/shop/api-{}/1", k % 500)],
            limit: Some(50),
            ..Default::default()
        };
        let t = Instant::now();
        let page = sm.read(|v| v.executions(&q)).unwrap();
        lat.push(t.elapsed());
        assert!(!page.is_empty());
    }
    row(
        "query: executions of one resource, page of 50, p50",
        format!("{:.3} ms", pct(&mut lat, 0.5).as_secs_f64() * 1e3),
    );

    // Snapshot and purge.
    let t = Instant::now();
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    row(
        "snapshot build",
        format!("{:.2} s", t.elapsed().as_secs_f64()),
    );
    row(
        "RSS after the snapshot build",
        format!("{:.1} MiB", rss_mib()),
    );
    let size = snap.snapshot.metadata().await.unwrap().len();
    row(
        "snapshot file",
        format!("{:.1} MiB", size as f64 / (1 << 20) as f64),
    );
    let t = Instant::now();
    log.purge(snap.meta.last_log_id.unwrap()).await.unwrap();
    row(
        "log purge after snapshot: raft's wait",
        format!("{:.3} ms", t.elapsed().as_secs_f64() * 1e3),
    );
    // The removal itself runs on a blocking thread: wait until the log is empty.
    while !log.is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    log.blocking_append([entry(
        index + 1,
        Command::Unhold {
            key: "docker/x/y/1".parse().unwrap(),
        },
    )])
    .await
    .unwrap();
    row(
        "log purge after snapshot: removal done",
        format!("{:.2} s", t.elapsed().as_secs_f64()),
    );

    row("RSS after the purge", format!("{:.1} MiB", rss_mib()));
    let dir2 = tmp.path().join("follower");
    let (_log2, mut sm2) = store::open(&dir2, StoreOptions::default()).unwrap();
    let mut recv = sm2.begin_receiving_snapshot().await.unwrap();
    let mut src = tokio::fs::File::open(
        sm.snapshot_dir()
            .join(format!("{}.snap", snap.meta.snapshot_id)),
    )
    .await
    .unwrap();
    tokio::io::copy(&mut src, &mut *recv).await.unwrap();
    let t = Instant::now();
    sm2.install_snapshot(&snap.meta, recv).await.unwrap();
    row(
        "snapshot install on a fresh store",
        format!("{:.2} s", t.elapsed().as_secs_f64()),
    );
    let n = sm2.read(|v| v.sizes().executions);
    assert_eq!(n as u64, records);
    row(
        "RSS at the end (both stores open)",
        format!("{:.1} MiB", rss_mib()),
    );
}

async fn log_range(log: &mut ire_consensus::store::LogStore, from: u64, to: u64) -> Vec<Entry> {
    use openraft::RaftLogReader;
    log.try_get_log_entries(from..=to).await.unwrap()
}
