//! Crash recovery in an in-process cluster: nodes are stopped (store closed) and started
//! again (store reopened from disk) while clients write; what was acknowledged survives, and
//! a node left far behind catches up from a snapshot once the log it missed is purged.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use ire_consensus::testing::{ClusterOptions, TestCluster};
use ire_consensus::types::{Command, Response};
use ire_core::{ExecutionQuery, ExecutionRecord, ExecutionStatus};
use openraft::storage::RaftLogStorage;

fn record(id: &str) -> ExecutionRecord {
    let now = Utc::now();
    ExecutionRecord {
        id: id.into(),
        plugin_name: "kill".into(),
        resource_id: "c0ffee".into(),
        resource_name: "redis".into(),
        resource_key: Some("docker/shop/redis/1".parse().unwrap()),
        start_time: now,
        end_time: now,
        duration: Duration::ZERO,
        status: ExecutionStatus::Success,
        error: String::new(),
        metadata: [("payload".to_owned(), serde_json::json!("x".repeat(200)))].into(),
        principal: "test".into(),
        campaign: Some("c1".into()),
        step: None,
        node: Some("n1".into()),
        fencing_token: None,
        time_to_detect: None,
        time_to_recover: None,
    }
}

fn ids_on(cluster: &TestCluster, node: u64) -> BTreeSet<String> {
    cluster
        .node(node)
        .unwrap()
        .sm
        .read(|v| v.executions(&ExecutionQuery::default()))
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
}

/// Writes records from `writers` tasks until `stop`, recording the acknowledged ids.
fn writers(
    cluster: &TestCluster,
    n: usize,
    acked: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|w| {
            let cluster = cluster.clone();
            let acked = acked.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let id = format!("w{w}-{i}");
                    match cluster
                        .write(
                            Command::record_execution(record(&id)),
                            Duration::from_millis(500),
                        )
                        .await
                    {
                        Ok((_, Response::Done)) => {
                            acked.lock().unwrap().insert(id);
                        }
                        Ok((_, other)) => panic!("record refused: {other:?}"),
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            })
        })
        .collect()
}

async fn wait_count(acked: &Mutex<BTreeSet<String>>, at_least: usize) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while acked.lock().unwrap().len() < at_least {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("writes are acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_restarts_of_a_follower_the_leader_and_the_whole_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(
        dir.path(),
        3,
        ClusterOptions {
            snapshot_every: 200,
            keep_logs: 50,
            ..Default::default()
        },
    )
    .await;
    cluster.wait_leader(Duration::from_secs(5)).await;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks = writers(&cluster, 4, acked.clone(), stop.clone());

    wait_count(&acked, 100).await;
    // A follower goes down and comes back mid-run.
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let follower = cluster
        .members()
        .into_iter()
        .find(|m| *m != leader)
        .unwrap();
    cluster.crash(follower).await;
    wait_count(&acked, 250).await;
    cluster.restart(follower).await;
    wait_count(&acked, 400).await;
    // Then the leader.
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    cluster.crash(leader).await;
    cluster.wait_leader(Duration::from_secs(5)).await;
    wait_count(&acked, 550).await;
    cluster.restart(leader).await;
    wait_count(&acked, 650).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    // The whole cluster goes down and comes back.
    cluster.shutdown().await;
    for id in cluster.members() {
        cluster.restart(id).await;
    }
    cluster.wait_leader(Duration::from_secs(5)).await;
    let (last, _) = cluster
        .write_ok(Command::record_execution(record("final")))
        .await;
    cluster
        .wait_applied(last.index, Duration::from_secs(10))
        .await;

    let acked = acked.lock().unwrap().clone();
    for id in cluster.members() {
        let have = ids_on(&cluster, id);
        let missing: Vec<_> = acked.difference(&have).take(5).collect();
        assert!(
            missing.is_empty(),
            "node {id} lost acknowledged records, e.g. {missing:?}"
        );
        assert!(have.contains("final"));
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_left_far_behind_catches_up_from_a_snapshot_and_logs_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(
        dir.path(),
        3,
        ClusterOptions {
            snapshot_every: 50,
            keep_logs: 10,
            ..Default::default()
        },
    )
    .await;
    cluster.wait_leader(Duration::from_secs(5)).await;
    let (first, _) = cluster
        .write_ok(Command::record_execution(record("before")))
        .await;
    cluster
        .wait_applied(first.index, Duration::from_secs(5))
        .await;

    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let behind = cluster
        .members()
        .into_iter()
        .find(|m| *m != leader)
        .unwrap();
    cluster.crash(behind).await;
    let mut last = first;
    for i in 0..300 {
        last = cluster
            .write_ok(Command::record_execution(record(&format!("r{i}"))))
            .await
            .0;
    }
    // The leader's log was purged past everything the stopped node has.
    let leader_node = cluster
        .node(cluster.wait_leader(Duration::from_secs(5)).await)
        .unwrap();
    let state = leader_node.log.clone().get_log_state().await.unwrap();
    let purged = state
        .last_purged_log_id
        .expect("the leader purged its log")
        .index;
    assert!(
        purged > first.index,
        "purged up to {purged}, the stopped node has {}",
        first.index
    );
    assert!(
        leader_node.log.len() <= 50 + 10 + 20,
        "the log stays bounded by the snapshot policy: {} entries",
        leader_node.log.len()
    );

    let node = cluster.restart(behind).await;
    cluster
        .wait_applied(last.index, Duration::from_secs(15))
        .await;
    let m = node.raft.metrics().borrow().clone();
    let snap = m.snapshot.expect("the node installed a snapshot");
    assert!(
        snap.index >= purged,
        "snapshot at {} covers the purged log {purged}",
        snap.index
    );
    let have = ids_on(&cluster, behind);
    assert_eq!(
        have.len(),
        301,
        "every record reached the node that was behind"
    );
    assert!(have.contains("before") && have.contains("r299"));
    // The snapshot it received is on its disk as its current snapshot.
    let files: Vec<_> = std::fs::read_dir(node.sm.snapshot_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.iter().any(|f| f.ends_with(".snap")), "{files:?}");
    cluster.shutdown().await;
}
