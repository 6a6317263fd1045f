//! A snapshot build of a large state on a node with 2 tokio workers (the deployment shape
//! of the 2-core hosts ire runs on): lease renewals keep committing and the runtime keeps
//! scheduling while the state is exported.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ire_consensus::client::ConsensusClient;
use ire_consensus::node::RaftNode;
use ire_consensus::types::Command;
use ire_core::{LockOutcome, LockService as _};
use tokio::time::Instant;

/// Stored values of `bytes` each, `per_command` to a command, `commands` commands.
async fn fill(node: &RaftNode, commands: usize, per_command: usize, bytes: usize) {
    let value = format!("\"{}\"", "v".repeat(bytes));
    for c in 0..commands {
        let items = (0..per_command)
            .map(|i| (format!("row-{c}-{i}"), value.clone()))
            .collect();
        node.write(Command::StorePut {
            collection: "bulk".into(),
            items,
        })
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_build_of_a_large_state_stalls_neither_renewals_nor_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(1, &dir);
    // Snapshots only when asked.
    config.timings.snapshot_every = 1_000_000;
    let node = RaftNode::start(config).await.unwrap();
    node.bootstrap().await.unwrap();
    support::wait_leader(&node, Duration::from_secs(10)).await;
    // About 150 MB of state in 7,500 rows: building its snapshot takes seconds.
    let filled = Instant::now();
    fill(&node, 150, 50, 20_000).await;
    eprintln!("filled in {:?}", filled.elapsed());

    let client = ConsensusClient::new(node.clone());
    let key = "docker/app/renewed/1".parse().unwrap();
    let ttl = Duration::from_secs(30);
    let LockOutcome::Granted(grant) = client.acquire(&key, "holder", ttl).await.unwrap() else {
        panic!("the key is free");
    };

    // A task that should wake every 10 ms: its worst lateness is how long the runtime's
    // workers were blocked.
    let worst_lag = Arc::new(AtomicU64::new(0));
    let ticker = {
        let worst = worst_lag.clone();
        tokio::spawn(async move {
            loop {
                let t = Instant::now();
                tokio::time::sleep(Duration::from_millis(10)).await;
                let late = t.elapsed().saturating_sub(Duration::from_millis(10));
                worst.fetch_max(late.as_millis() as u64, Ordering::Relaxed);
            }
        })
    };

    let before = node.status().await.snapshot;
    let started = Instant::now();
    node.trigger_snapshot().await.unwrap();
    let mut renewals = 0u32;
    let mut slowest = Duration::ZERO;
    while node.status().await.snapshot == before {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the snapshot was never built"
        );
        let t = Instant::now();
        client.renew(&key, grant.token, ttl).await.unwrap();
        slowest = slowest.max(t.elapsed());
        renewals += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let build = started.elapsed();
    ticker.abort();
    let lag = Duration::from_millis(worst_lag.load(Ordering::Relaxed));
    eprintln!(
        "snapshot build took {build:?}; {renewals} renewals meanwhile, the slowest {slowest:?}; \
         worst runtime lag {lag:?}"
    );
    // The build must take long enough to tell a stall (its duration varies with the disk).
    assert!(
        build > Duration::from_millis(300),
        "the build took only {build:?}: too small a state to tell a stall"
    );
    // Renewals went on during the build: several of them, none waiting for most of it (a
    // build that holds applies out makes one renewal wait for all of it).
    assert!(
        renewals >= 3 && slowest < build / 2,
        "{renewals} renewals during the {build:?} build, the slowest {slowest:?}"
    );
    assert!(
        lag < Duration::from_millis(500),
        "the runtime stalled for {lag:?} during the build ({build:?})"
    );
    node.shutdown().await;
}
