//! Raft nodes over the real ractor_cluster transport, in one process: a bootstrapped node
//! passes ire-core's lock and ledger conformance suites through the client API; a 3-node
//! cluster formed by joins forwards follower writes to the leader, serves linearizable reads
//! on followers, and removes a node.

use std::time::Duration;

use ire_consensus::client::ConsensusClient;
use ire_consensus::node::RaftNode;
use ire_core::testsuite::conformance::{ledger_conformance, lock_conformance};
use ire_core::{
    Error, FaultEntry, FaultKind, FaultLedger, FaultQuery, FaultState, FencingToken, LockOutcome,
    LockService, ResourceKey,
};

mod support;
use support::{config, wait_leader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrapped_node_passes_the_lock_conformance_suite_and_guards_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let node = RaftNode::start(config(11, &dir)).await.unwrap();
    node.bootstrap().await.unwrap();
    // Bootstrapping twice is harmless (a restarted node keeps its membership).
    node.bootstrap().await.unwrap();
    assert_eq!(wait_leader(&node, Duration::from_secs(10)).await, 11);
    let client = ConsensusClient::new(node.clone());

    lock_conformance(&client, "docker/conformance", Duration::from_millis(400)).await;

    let key: ResourceKey = "docker/ledger/cache/1".parse().unwrap();
    let token = match client
        .acquire(&key, "exec-ledger", Duration::from_secs(60))
        .await
        .unwrap()
    {
        LockOutcome::Granted(g) => g.token,
        held => panic!("expected a grant: {held:?}"),
    };
    // ire-core's ledger suite: fenced settlements, actions, orphan claims.
    ledger_conformance(
        &client,
        &client,
        "docker/ledger-suite",
        Duration::from_millis(400),
    )
    .await;

    // Stale tokens are refused through the client.
    let fault = |id: &str, token: FencingToken| FaultEntry {
        id: id.into(),
        execution_id: "exec-ledger".into(),
        campaign: Some("c-ledger".into()),
        step: Some("s1".into()),
        resource: key.clone(),
        plugin: "kill".into(),
        node: "node-11".into(),
        kind: FaultKind::Sustained,
        token,
        snapshot: None,
        injected_at: chrono::Utc::now(),
        duration: None,
        state: FaultState::Injected,
    };
    client.record_fault(fault("g1", token)).await.unwrap();
    let stale = client
        .record_fault(fault("g2", FencingToken(token.0 - 1)))
        .await
        .unwrap_err();
    assert!(matches!(stale.root(), Error::Conflict { .. }), "{stale}");
    assert!(matches!(
        client.fault("g2").await.unwrap_err().root(),
        Error::NotFound { .. }
    ));
    client.mark_reverted("g1", "node-11", token).await.unwrap();
    let all = client
        .query_faults(&FaultQuery {
            campaign: Some("c-ledger".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert!(!all[0].is_active());

    // Refusing a held key takes no log entry; the holder's re-acquire does.
    let before = client.status().await.last_log_index;
    match client
        .acquire(&key, "exec-other", Duration::from_secs(5))
        .await
        .unwrap()
    {
        LockOutcome::Held { holder, until } => {
            assert_eq!(holder, "exec-ledger");
            assert!(until.is_some());
        }
        granted => panic!("a held key was granted: {granted:?}"),
    }
    assert_eq!(
        client.status().await.last_log_index,
        before,
        "a refusal was logged"
    );
    assert!(matches!(
        client.acquire(&key, "exec-ledger", Duration::from_secs(60)).await.unwrap(),
        LockOutcome::Granted(g) if g.token == token
    ));

    // Bad input is refused with a clear, correctly classified error.
    let err = client
        .acquire(&key, "", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err.root(), Error::Invalid { .. }), "{err}");
    let err = client.acquire(&key, "x", Duration::ZERO).await.unwrap_err();
    assert!(matches!(err.root(), Error::Invalid { .. }), "{err}");
    let err = client.remove_node(99).await.unwrap_err();
    assert!(
        matches!(err.root(), Error::Invalid { .. }) && err.chain_message().contains("99"),
        "{}",
        err.chain_message()
    );

    let status = client.status().await;
    assert_eq!(status.leader, Some(11));
    assert_eq!(status.voters, vec![11]);
    assert!(status.last_applied.unwrap() > 0);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_followers_forward_writes_and_read_linearizably_and_a_node_can_be_removed() {
    let dir = tempfile::tempdir().unwrap();
    let c1 = config(21, &dir);
    let seed = (21, c1.listen.to_string());
    let n1 = RaftNode::start(c1).await.unwrap();
    n1.bootstrap().await.unwrap();
    wait_leader(&n1, Duration::from_secs(10)).await;
    let n2 = RaftNode::start(config(22, &dir)).await.unwrap();
    let n3 = RaftNode::start(config(23, &dir)).await.unwrap();
    n2.join(std::slice::from_ref(&seed)).await.unwrap();
    n3.join(std::slice::from_ref(&seed)).await.unwrap();
    let status = n1.status().await;
    assert_eq!(status.voters, vec![21, 22, 23], "{status:?}");

    // A follower's write is forwarded to the leader; its read sees the write at once.
    let follower = ConsensusClient::new(n3.clone());
    let key: ResourceKey = "docker/app/api/1".parse().unwrap();
    let grant = match follower
        .acquire(&key, "exec-f", Duration::from_secs(30))
        .await
        .unwrap()
    {
        LockOutcome::Granted(g) => g,
        held => panic!("expected a grant: {held:?}"),
    };
    let info = follower.lock_info(&key).await.unwrap();
    assert_eq!(info.lease.map(|l| l.token), Some(grant.token));
    let other = ConsensusClient::new(n2.clone());
    match other
        .acquire(&key, "exec-g", Duration::from_secs(30))
        .await
        .unwrap()
    {
        LockOutcome::Held { holder, .. } => assert_eq!(holder, "exec-f"),
        LockOutcome::Granted(_) => panic!("two holders for one key"),
    }
    // A wrong token is a conflict and changes nothing, wherever it is sent.
    let err = other
        .release(&key, ire_core::FencingToken(grant.token.0 + 7))
        .await
        .unwrap_err();
    assert!(matches!(err.root(), Error::Conflict { .. }), "{err}");
    assert!(other.lock_info(&key).await.unwrap().lease.is_some());

    // Remove a follower: the others keep serving.
    ConsensusClient::new(n1.clone())
        .remove_node(22)
        .await
        .unwrap();
    let status = n1.status().await;
    assert_eq!(status.voters, vec![21, 23]);
    follower.release(&key, grant.token).await.unwrap();
    assert!(follower.lock_info(&key).await.unwrap().lease.is_none());

    n2.shutdown().await;
    n3.shutdown().await;
    n1.shutdown().await;
}
