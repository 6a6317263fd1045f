//! An in-process cluster of real raft nodes on real sled stores, connected by the
//! fault-injecting [`Router`]: nodes can be crashed (store closed) and restarted (store
//! reopened from disk) while clients write.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{Config, Raft, ServerState, SnapshotPolicy};

use super::network::Router;
use crate::store::{self, LogStore, StateMachineStore, StoreOptions};
use crate::types::{ClusterNode, Command, LogId, NodeId, Request, Response, TypeConfig};

/// How a test cluster is set up.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Seeds the random faults.
    pub seed: u64,
    /// A snapshot is taken every this many applied entries.
    pub snapshot_every: u64,
    /// Entries kept in the log below the last snapshot.
    pub keep_logs: u64,
    /// Heartbeat interval, in milliseconds.
    pub heartbeat_ms: u64,
    /// Election timeout range, in milliseconds.
    pub election_ms: (u64, u64),
    /// How far each node's clock is off (added to the stamps it puts on commands), by node.
    pub clock_skew_ms: BTreeMap<NodeId, i64>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            seed: 1,
            snapshot_every: 1_000_000,
            keep_logs: 1_000_000,
            heartbeat_ms: 50,
            election_ms: (150, 300),
            clock_skew_ms: BTreeMap::new(),
        }
    }
}

/// One running node.
#[derive(Clone)]
pub struct TestNode {
    /// Its raft.
    pub raft: Raft<TypeConfig>,
    /// Its log store.
    pub log: LogStore,
    /// Its state machine (for reads).
    pub sm: StateMachineStore,
}

/// Why a test write was not acknowledged. Its effect is unknown: it may or may not have
/// been committed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No node believes it leads.
    #[error("no leader")]
    NoLeader,
    /// The leader did not answer in time.
    #[error("timed out")]
    Timeout,
    /// raft refused or failed the write.
    #[error("raft: {0}")]
    Raft(String),
}

struct Inner {
    base: PathBuf,
    opts: ClusterOptions,
    config: Arc<Config>,
    router: Router,
    nodes: Mutex<BTreeMap<NodeId, TestNode>>,
    members: BTreeSet<NodeId>,
}

/// An in-process cluster (cheap to clone; clones share it).
#[derive(Clone)]
pub struct TestCluster {
    inner: Arc<Inner>,
}

fn node_info(id: NodeId) -> ClusterNode {
    ClusterNode::new(format!("in-process:{id}"), Some(format!("zone-{}", id % 2)))
}

impl TestCluster {
    /// Starts `n` nodes (ids 1..=n) with stores under `base`, and initializes them as one
    /// cluster.
    pub async fn start(base: &Path, n: u64, opts: ClusterOptions) -> Self {
        let config = Config {
            cluster_name: "ire-test".into(),
            heartbeat_interval: opts.heartbeat_ms,
            election_timeout_min: opts.election_ms.0,
            election_timeout_max: opts.election_ms.1,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_every),
            max_in_snapshot_log_to_keep: opts.keep_logs,
            purge_batch_size: 1,
            install_snapshot_timeout: 1000,
            ..Default::default()
        }
        .validate()
        .expect("valid raft config");
        let cluster = TestCluster {
            inner: Arc::new(Inner {
                base: base.to_owned(),
                router: Router::new(opts.seed),
                opts,
                config: Arc::new(config),
                nodes: Mutex::new(BTreeMap::new()),
                members: (1..=n).collect(),
            }),
        };
        for id in 1..=n {
            cluster.boot(id).await;
        }
        let members: BTreeMap<NodeId, ClusterNode> = (1..=n).map(|i| (i, node_info(i))).collect();
        cluster
            .node(1)
            .expect("node 1 runs")
            .raft
            .initialize(members)
            .await
            .expect("initialize");
        cluster
    }

    /// The router (to inject faults).
    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// The member ids.
    pub fn members(&self) -> Vec<NodeId> {
        self.inner.members.iter().copied().collect()
    }

    /// The data directory of node `id`.
    pub fn dir_of(&self, id: NodeId) -> PathBuf {
        self.inner.base.join(format!("node-{id}"))
    }

    /// Opens node `id`'s store (retrying while a previous incarnation still closes it) and
    /// starts its raft.
    async fn boot(&self, id: NodeId) -> TestNode {
        let dir = self.dir_of(id);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let (log, sm) = loop {
            // Relaxed durability: these nodes "crash" by closing their stores (a process
            // crash at most), and fdatasyncs on a shared disk only slow elections down.
            let opts = StoreOptions::default()
                .cache_capacity(8 << 20)
                .durability(crate::store::Durability::Relaxed);
            match store::open(&dir, opts.clone()) {
                Ok(s) => break s,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(%e, "store still held, retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot reopen the store of node {id}: {e}"),
            }
        };
        let raft = Raft::new(
            id,
            self.inner.config.clone(),
            self.inner.router.network_for(id),
            log.clone(),
            sm.clone(),
        )
        .await
        .expect("raft starts");
        let node = TestNode { raft, log, sm };
        self.inner.router.register(id, node.raft.clone());
        self.inner.nodes.lock().unwrap().insert(id, node.clone());
        node
    }

    /// Node `id`, if it runs.
    pub fn node(&self, id: NodeId) -> Option<TestNode> {
        self.inner.nodes.lock().unwrap().get(&id).cloned()
    }

    /// Stops node `id` as a crash would: it drops off the network, its raft stops and its
    /// store is closed. What it acknowledged is on its disk.
    pub async fn crash(&self, id: NodeId) {
        self.inner.router.unregister(id);
        let node = self.inner.nodes.lock().unwrap().remove(&id);
        if let Some(node) = node {
            let _ = node.raft.shutdown().await;
        }
    }

    /// Starts node `id` again from its store.
    pub async fn restart(&self, id: NodeId) -> TestNode {
        self.boot(id).await
    }

    /// The node that believes it leads (with the highest term, if several do).
    pub fn leader(&self) -> Option<NodeId> {
        let nodes = self.inner.nodes.lock().unwrap();
        nodes
            .iter()
            .filter_map(|(id, n)| {
                let m = n.raft.metrics().borrow().clone();
                (m.state == ServerState::Leader && m.current_leader == Some(*id))
                    .then_some((m.current_term, *id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// Waits until some node leads.
    pub async fn wait_leader(&self, within: Duration) -> NodeId {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(l) = self.leader() {
                return l;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Proposes `command` on `leader`, stamped with that node's (skewed) clock.
    pub async fn write_on(
        &self,
        leader: NodeId,
        command: Command,
        within: Duration,
    ) -> Result<(LogId, Response), WriteError> {
        let raft = self.node(leader).ok_or(WriteError::NoLeader)?.raft;
        let skew = self
            .inner
            .opts
            .clock_skew_ms
            .get(&leader)
            .copied()
            .unwrap_or(0);
        let req = Request::new(command, Utc::now() + chrono::Duration::milliseconds(skew));
        match tokio::time::timeout(within, raft.client_write(req)).await {
            Err(_) => Err(WriteError::Timeout),
            Ok(Ok(r)) => Ok((r.log_id, r.data)),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => Err(
                WriteError::Raft(format!("not the leader (leader: {:?})", f.leader_id)),
            ),
            Ok(Err(e)) => Err(WriteError::Raft(e.to_string())),
        }
    }

    /// Proposes `command` on the current leader.
    pub async fn write(
        &self,
        command: Command,
        within: Duration,
    ) -> Result<(LogId, Response), WriteError> {
        let leader = self.leader().ok_or(WriteError::NoLeader)?;
        self.write_on(leader, command, within).await
    }

    /// Writes until acknowledged (for setup steps, outside fault injection).
    pub async fn write_ok(&self, command: Command) -> (LogId, Response) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.write(command.clone(), Duration::from_secs(2)).await {
                Ok(r) => return r,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "write never acknowledged: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Waits until every running node has applied `index`.
    pub async fn wait_applied(&self, index: u64, within: Duration) {
        let nodes: Vec<(NodeId, TestNode)> = self
            .inner
            .nodes
            .lock()
            .unwrap()
            .iter()
            .map(|(i, n)| (*i, n.clone()))
            .collect();
        for (id, n) in nodes {
            n.raft
                .wait(Some(within))
                .applied_index_at_least(Some(index), "catch up")
                .await
                .unwrap_or_else(|e| panic!("node {id} did not apply {index}: {e}"));
        }
    }

    /// Stops every node.
    pub async fn shutdown(&self) {
        for id in self.members() {
            self.crash(id).await;
        }
    }
}
