//! A raft node over the real transport, in one process: waiters queued on a key are handed
//! the lease in order by each release (one commit per hand-off, with growing tokens), a waiter
//! whose wait ends leaves the queue, a lapsed lease goes to the first waiter, and concurrent
//! writes are proposed together as batch entries.

use std::time::Duration;

use ire_consensus::client::ConsensusClient;
use ire_consensus::node::RaftNode;
use ire_consensus::state::locks;
use ire_core::testsuite::sample_audit_entry;
use ire_core::{AuditLogger, FencingToken, LockOutcome, LockService, ResourceKey};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod support;
use support::{config, wait_leader};

const TTL: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(20);

async fn single_node(id: u64, dir: &tempfile::TempDir) -> (RaftNode, ConsensusClient) {
    let node = RaftNode::start(config(id, dir)).await.unwrap();
    node.bootstrap().await.unwrap();
    assert_eq!(wait_leader(&node, Duration::from_secs(10)).await, id);
    (node.clone(), ConsensusClient::new(node))
}

/// A wait nobody cancels.
fn no_cancel() -> CancellationToken {
    CancellationToken::new()
}

fn granted(o: LockOutcome) -> FencingToken {
    match o {
        LockOutcome::Granted(g) => g.token,
        held => panic!("expected a grant: {held:?}"),
    }
}

/// Waits until `n` callers are queued on `key`.
async fn wait_queued(node: &RaftNode, key: &ResourceKey, n: usize) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let queued = node.read_local(|v, _| v.lock_row(key).map(|r| r.waiters.len()).unwrap_or(0));
        if queued == n {
            return;
        }
        assert!(
            Instant::now() < end,
            "{queued} waiters on {key}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_hand_the_lease_to_waiters_in_order_with_growing_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = single_node(31, &dir).await;
    let key: ResourceKey = "docker/queue/db/1".parse().unwrap();
    let first = granted(client.acquire(&key, "a", TTL).await.unwrap());
    let mut waiting = Vec::new();
    for (i, holder) in ["b", "c", "d"].into_iter().enumerate() {
        let (c, k) = (client.clone(), key.clone());
        waiting.push(tokio::spawn(async move {
            c.acquire_wait(&k, holder, TTL, WAIT, &no_cancel())
                .await
                .unwrap()
        }));
        // Queue them one by one, so that the order is known.
        wait_queued(&node, &key, i + 1).await;
    }
    let mut last = first;
    let mut holder_token = first;
    for (i, task) in waiting.into_iter().enumerate() {
        client.release(&key, holder_token).await.unwrap();
        let token = granted(task.await.unwrap());
        assert!(token > last, "token {token} after {last}");
        let info = client.lock_info(&key).await.unwrap();
        let lease = info.lease.expect("handed over");
        assert_eq!(lease.holder, ["b", "c", "d"][i]);
        assert_eq!(lease.token, token);
        last = token;
        holder_token = token;
    }
    client.release(&key, holder_token).await.unwrap();
    assert!(client.lock_info(&key).await.unwrap().lease.is_none());
    assert!(node.read_local(|v, _| v.lock_row(&key).unwrap().waiters.is_empty()));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_wait_ends_leaves_the_queue_and_a_lapsed_lease_is_handed_on() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = single_node(32, &dir).await;
    let key: ResourceKey = "docker/queue/cache/1".parse().unwrap();
    let token = granted(client.acquire(&key, "a", TTL).await.unwrap());

    // b waits 300 ms and gives up: held by a, and out of the queue.
    let started = Instant::now();
    let out = client
        .acquire_wait(&key, "b", TTL, Duration::from_millis(300), &no_cancel())
        .await
        .unwrap();
    assert!(
        matches!(out, LockOutcome::Held { ref holder, .. } if holder == "a"),
        "{out:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(node.read_local(|v, _| v.lock_row(&key).unwrap().waiters.is_empty()));
    client.release(&key, token).await.unwrap();
    assert!(client.lock_info(&key).await.unwrap().lease.is_none());

    // c takes a short lease and never releases it; d, waiting, gets the key when it lapses.
    let short = granted(
        client
            .acquire(&key, "c", Duration::from_millis(400))
            .await
            .unwrap(),
    );
    let started = Instant::now();
    let got = granted(
        client
            .acquire_wait(&key, "d", TTL, WAIT, &no_cancel())
            .await
            .unwrap(),
    );
    assert!(got > short);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        client
            .lock_info(&key)
            .await
            .unwrap()
            .lease
            .map(|l| l.holder),
        Some("d".to_string())
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_proposed_together_and_each_gets_its_own_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = single_node(33, &dir).await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let key: ResourceKey = format!("docker/batch/r/{i}").parse().unwrap();
            granted(c.acquire(&key, &format!("e{i}"), TTL).await.unwrap())
        }));
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap());
    }
    let mut distinct = tokens.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        tokens.len(),
        "tokens must be unique: {tokens:?}"
    );
    // Commands after the first of an entry have a non-zero position in their token.
    assert!(
        tokens
            .iter()
            .any(|t| t.0 != locks::sequence(locks::token_index(*t), 0)),
        "no two of 64 concurrent writes shared an entry: {tokens:?}"
    );
    // Audit entries of the same instant, proposed together, are all kept.
    let at = chrono::Utc::now();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.log_action(sample_audit_entry(&format!("p{i}"), at))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let audit = client.query_audit(&Default::default()).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.timestamp == at).count(), 16);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_wait_leaves_the_queue_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = single_node(35, &dir).await;
    let key: ResourceKey = "docker/queue/canceled/1".parse().unwrap();
    let token = granted(client.acquire(&key, "a", TTL).await.unwrap());
    let cancel = CancellationToken::new();
    let waiting = {
        let (c, k, cancel) = (client.clone(), key.clone(), cancel.clone());
        tokio::spawn(async move { c.acquire_wait(&k, "b", TTL, WAIT, &cancel).await.unwrap() })
    };
    wait_queued(&node, &key, 1).await;
    cancel.cancel();
    let out = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("a canceled wait went on")
        .unwrap();
    assert!(
        matches!(out, LockOutcome::Held { ref holder, .. } if holder == "a"),
        "{out:?}"
    );
    wait_queued(&node, &key, 0).await;
    // Nobody is waiting any more: the release leaves the key free.
    client.release(&key, token).await.unwrap();
    assert!(client.lock_info(&key).await.unwrap().lease.is_none());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_waits_of_one_holder_both_learn_of_its_grant() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = single_node(34, &dir).await;
    let key: ResourceKey = "docker/queue/twice/1".parse().unwrap();
    let token = granted(client.acquire(&key, "a", TTL).await.unwrap());
    // The second wait of "b" replaces the first one's wake-up: the first learns of its grant
    // when its wait ends (from the answer to leaving the queue).
    let wait = Duration::from_millis(800);
    let first = {
        let (c, k) = (client.clone(), key.clone());
        tokio::spawn(async move {
            c.acquire_wait(&k, "b", TTL, wait, &no_cancel())
                .await
                .unwrap()
        })
    };
    wait_queued(&node, &key, 1).await;
    let second = {
        let (c, k) = (client.clone(), key.clone());
        tokio::spawn(async move {
            c.acquire_wait(&k, "b", TTL, wait, &no_cancel())
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.release(&key, token).await.unwrap();
    let (a, b) = (
        granted(first.await.unwrap()),
        granted(second.await.unwrap()),
    );
    assert_eq!(a, b, "one lease, seen by both waits");
    assert!(a > token);
    node.shutdown().await;
}
