//! ire-core's `StorageBackend` on the replicated state machine: a bootstrapped node passes
//! the storage conformance suite; a value saved through one node of a 3-node cluster is read
//! through a follower; stored values travel in snapshots to a node that installs one.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use chrono::Utc;
use ire_consensus::client::ConsensusClient;
use ire_consensus::node::RaftNode;
use ire_consensus::store::{self, StoreOptions};
use ire_consensus::types::{ClusterNode, Command, Entry, LogId, Request, Response};
use ire_core::testsuite::conformance::storage_conformance;
use ire_core::{Error, Query, StorageBackend};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, Membership};
use serde_json::json;

mod support;
use support::{config, wait_leader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrapped_node_passes_the_storage_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let node = RaftNode::start(config(31, &dir)).await.unwrap();
    node.bootstrap().await.unwrap();
    wait_leader(&node, Duration::from_secs(10)).await;
    let client = ConsensusClient::new(node.clone());

    storage_conformance(&client, "replicated").await;

    // A batch is one raft entry: the log grows by one for twenty values.
    let applied = || node.read_local(|v, _| v.last_applied().unwrap().map(|l| l.index));
    let before = applied();
    client
        .save_batch(
            "batched",
            (0..20)
                .map(|i| (format!("k{i}"), json!({ "i": i })))
                .collect(),
        )
        .await
        .unwrap();
    let after = applied();
    assert_eq!(
        after,
        before.map(|i| i + 1),
        "a batch of 20 took more than one entry"
    );

    // Bad input is refused with the field named, and stores nothing.
    for bad in ["", "a\0b"] {
        let err = client.save(bad, "k", json!(1)).await.unwrap_err();
        assert!(
            matches!(err.root(), Error::Invalid { field, .. } if field == "storage.collection"),
            "{err}"
        );
    }
    // A collection is its own prefix: "batch" does not see "batched".
    let q = Query {
        collection: "batch".into(),
        ..Default::default()
    };
    assert!(client.query(&q).await.unwrap().is_empty());
    client.close().await.unwrap();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_saved_on_the_cluster_is_read_through_a_follower_and_deleted_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let c1 = config(41, &dir);
    let seed = (41, c1.listen.to_string());
    let n1 = RaftNode::start(c1).await.unwrap();
    n1.bootstrap().await.unwrap();
    wait_leader(&n1, Duration::from_secs(10)).await;
    let n2 = RaftNode::start(config(42, &dir)).await.unwrap();
    let n3 = RaftNode::start(config(43, &dir)).await.unwrap();
    n2.join(std::slice::from_ref(&seed)).await.unwrap();
    n3.join(std::slice::from_ref(&seed)).await.unwrap();
    assert_eq!(n1.status().await.voters, vec![41, 42, 43]);

    let leader = ConsensusClient::new(n1.clone());
    let follower = ConsensusClient::new(n3.clone());
    let record = json!({"id": "e1", "status": "success", "duration_ms": 12});
    leader
        .save("executions", "e1", record.clone())
        .await
        .unwrap();
    // Linearizable: the follower sees the acknowledged write at once, no polling.
    assert_eq!(follower.load("executions", "e1").await.unwrap(), record);

    // A follower's write is forwarded; every node's applied state holds it.
    follower
        .save("executions", "e2", json!({"id": "e2", "status": "failure"}))
        .await
        .unwrap();
    let failures = ConsensusClient::new(n2.clone())
        .query(&Query {
            collection: "executions".into(),
            filter: json!({"status": "failure"}).as_object().unwrap().clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failures, vec![json!({"id": "e2", "status": "failure"})]);

    follower.delete("executions", "e1").await.unwrap();
    let err = leader.load("executions", "e1").await.unwrap_err();
    assert!(matches!(err.root(), Error::NotFound { .. }), "{err}");

    n2.shutdown().await;
    n3.shutdown().await;
    n1.shutdown().await;
}

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn store_entries(n: u64) -> Vec<Entry> {
    let mut v = vec![Entry {
        log_id: log_id(1),
        payload: EntryPayload::Membership(Membership::new(
            vec![[1u64].into()],
            [(1u64, ClusterNode::new("127.0.0.1:7001", None))]
                .into_iter()
                .collect::<std::collections::BTreeMap<u64, ClusterNode>>(),
        )),
    }];
    for i in 2..=n {
        v.push(Entry {
            log_id: log_id(i),
            payload: EntryPayload::Normal(Request::new(
                Command::StorePut {
                    collection: "reports".into(),
                    items: vec![(format!("r{i:03}"), json!({ "i": i }).to_string())],
                },
                Utc::now(),
            )),
        });
    }
    v
}

#[tokio::test]
async fn stored_values_travel_in_snapshots_to_a_node_that_installs_one() {
    let leader_dir = tempfile::tempdir().unwrap();
    let (_log, mut leader) = store::open(leader_dir.path(), StoreOptions::default()).unwrap();
    let responses = leader.apply(store_entries(40)).await.unwrap();
    assert!(responses[1..].iter().all(|r| *r == Response::Done));
    // A refused put (a value that is not JSON) changes nothing.
    let bad = Entry {
        log_id: log_id(41),
        payload: EntryPayload::Normal(Request::new(
            Command::StorePut {
                collection: "reports".into(),
                items: vec![
                    ("ok".into(), "1".into()),
                    ("bad".into(), "{not json".into()),
                ],
            },
            Utc::now(),
        )),
    };
    let r = leader.apply(vec![bad]).await.unwrap();
    assert!(matches!(r[0], Response::Rejected(_)), "{r:?}");

    let snap = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut bytes = Vec::new();
    let mut f = snap.snapshot.into_std().await;
    f.read_to_end(&mut bytes).unwrap();

    let follower_dir = tempfile::tempdir().unwrap();
    let (_flog, mut follower) = store::open(follower_dir.path(), StoreOptions::default()).unwrap();
    let mut f = follower
        .begin_receiving_snapshot()
        .await
        .unwrap()
        .into_std()
        .await;
    f.write_all(&bytes).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    follower
        .install_snapshot(&snap.meta, Box::new(tokio::fs::File::from_std(f)))
        .await
        .unwrap();

    let values = follower.read(|v| v.stored_values("reports", |_| true).unwrap());
    assert_eq!(
        values.len(),
        39,
        "every stored value arrives, the refused batch none"
    );
    assert_eq!(values[0], json!({"i": 2}));
    assert_eq!(
        follower.read(|v| v.stored_value("reports", "r040").unwrap()),
        Some(json!({"i": 40}))
    );
    assert_eq!(
        follower.read(|v| v.stored_value("reports", "ok").unwrap()),
        None
    );
    assert_eq!(follower.read(|v| v.sizes().stored_values), 39);
}
