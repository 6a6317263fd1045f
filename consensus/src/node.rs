//! [`RaftNode`]: one member of the consensus cluster.
//!
//! It opens the sled store, starts the ractor_cluster transport (with its connection
//! manager) and openraft, and offers what the client API needs:
//! - writes ([`RaftNode::write`]): on the leader the command is stamped with the leader's
//!   clock right before it is proposed; on a follower it is forwarded to the leader over the
//!   transport (the leader stamps it). Retries follow leader changes until the request
//!   timeout, so a client sees a failover as latency, not as an error.
//! - linearizable reads ([`RaftNode::read`]): the leader confirms its leadership with a quorum
//!   (`ensure_linearizable`) and returns its read index; a follower asks the leader for that
//!   index, waits until it has applied it, and reads its own state machine.
//! - membership: bootstrap a single node, join a running cluster (added as a learner, caught
//!   up, then promoted to voter), remove a node.
//! - status figures: term, leader, last applied, log size.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, Raft, RaftMetrics, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::network::{serve_raft_rpc, Network, NodeAddress};
use crate::proposer::Proposer;
use crate::state::view::StateView;
use crate::store::{self, LogStore, StateMachineStore, StoreOptions};
use crate::transport::frame::{decode_payload, encode_payload};
use crate::transport::{
    same_secret, ClusterTransport, ClusterTransportConfig, NodeId, PeerStatus, RaftTransport,
    RemoteError, RemoteErrorKind, RpcHandler, RpcKind, TlsConfig, TransportError,
};
use crate::types::{
    check_ttl, ClusterNode, Command, Rejection, Response, TypeConfig, MAX_LEASE_TTL,
};
use ire_core::{LockOutcome, ResourceKey};

impl NodeAddress for ClusterNode {
    fn address(&self) -> &str {
        &self.addr
    }
}

/// Raft timings and log compaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftTimings {
    /// How often the leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// Shortest time without a heartbeat before a follower stands for election.
    pub election_timeout_min: Duration,
    /// Longest such time (each follower picks at random in between).
    pub election_timeout_max: Duration,
    /// A snapshot is built after this many entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind the last snapshot (for followers slightly behind).
    pub logs_to_keep: u64,
}

impl Default for RaftTimings {
    fn default() -> Self {
        Self {
            // A leader that dies is replaced in well under a second; raise these on hosts
            // whose CPUs are so overcommitted that heartbeats are late.
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(200),
            election_timeout_max: Duration::from_millis(400),
            snapshot_every: 20_000,
            logs_to_keep: 1_000,
        }
    }
}

/// How a [`RaftNode`] runs.
#[derive(Debug, Clone)]
pub struct RaftNodeConfig {
    /// The stable raft node id.
    pub id: NodeId,
    /// Where the transport listens.
    pub listen: SocketAddr,
    /// The address other nodes dial (defaults to `listen`).
    pub advertise: Option<String>,
    /// The node's region, if any.
    pub region: Option<String>,
    /// Where the sled store and snapshots live.
    pub data_dir: PathBuf,
    /// The cluster's shared secret.
    pub cookie: String,
    /// The cluster's admin token: a membership change forwarded to this node (when it
    /// leads) is accepted only with it, and this node sends it with its own (join,
    /// add-learner, promote, remove). `None`: forwarded membership changes are refused;
    /// the cookie alone never changes the membership.
    pub admin_token: Option<String>,
    /// TLS between nodes.
    pub tls: Option<TlsConfig>,
    /// sled options.
    pub store: StoreOptions,
    /// Raft timings.
    pub timings: RaftTimings,
    /// How long a write or read may take, retries across leader changes included.
    pub request_timeout: Duration,
    /// How long a membership change may take (a learner must catch up first).
    pub membership_timeout: Duration,
}

impl RaftNodeConfig {
    /// A config with default timings.
    pub fn new(
        id: NodeId,
        listen: SocketAddr,
        data_dir: impl Into<PathBuf>,
        cookie: impl Into<String>,
    ) -> Self {
        Self {
            id,
            listen,
            advertise: None,
            region: None,
            data_dir: data_dir.into(),
            cookie: cookie.into(),
            admin_token: None,
            tls: None,
            store: StoreOptions::default(),
            timings: RaftTimings::default(),
            request_timeout: Duration::from_secs(5),
            membership_timeout: Duration::from_secs(60),
        }
    }

    /// This node as a cluster member.
    pub fn member(&self) -> ClusterNode {
        ClusterNode::new(
            self.advertise
                .clone()
                .unwrap_or_else(|| self.listen.to_string()),
            self.region.clone(),
        )
    }
}

/// Why a consensus operation failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum ConsensusError {
    /// This node is not the leader; the leader is named when known.
    #[error("node {node} is not the leader (leader: {})", leader.map(|l| l.to_string()).unwrap_or_else(|| "unknown, election in progress".into()))]
    NotLeader {
        /// The node that answered.
        node: NodeId,
        /// The leader, if known.
        leader: Option<NodeId>,
        /// The leader's address, if known.
        leader_addr: Option<String>,
    },
    /// The cluster (or a peer) cannot be reached right now.
    #[error("consensus unavailable: {message}")]
    Unavailable {
        /// What is unavailable.
        message: String,
    },
    /// The state machine refused the command; nothing changed.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// A request is invalid (unknown node id, bad membership change).
    #[error("invalid {field}: {message}")]
    Invalid {
        /// Which input.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A storage or raft failure this node cannot recover from by itself.
    #[error("consensus failure: {message}")]
    Fatal {
        /// What failed.
        message: String,
    },
}

impl ConsensusError {
    fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
        }
    }

    fn fatal(message: impl Into<String>) -> Self {
        Self::Fatal {
            message: message.into(),
        }
    }

    /// True when the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::NotLeader { .. } | Self::Unavailable { .. })
    }
}

impl From<ConsensusError> for ire_core::Error {
    fn from(e: ConsensusError) -> Self {
        match e {
            ConsensusError::NotLeader { .. } | ConsensusError::Unavailable { .. } => {
                ire_core::Error::unavailable("raft cluster", e)
            }
            ConsensusError::Rejected(r) => r.into(),
            ConsensusError::Invalid { field, message } => ire_core::Error::invalid(field, message),
            ConsensusError::Fatal { .. } => {
                ire_core::Error::other(ire_core::ErrorClass::Fatal, "consensus", Some(Box::new(e)))
            }
        }
    }
}

/// A request a follower forwards to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum ForwardRequest {
    /// Propose a command (the leader stamps its clock on it).
    Write(Command),
    /// Confirm leadership and return the index a linearizable read must wait for.
    ReadIndex,
    /// Add a node as a learner and wait until it has caught up.
    AddLearner {
        id: NodeId,
        node: ClusterNode,
        /// The sender's admin token (see `RaftNodeConfig::admin_token`).
        admin: Option<String>,
    },
    /// Make a learner a voter.
    Promote { id: NodeId, admin: Option<String> },
    /// Remove a node from the cluster.
    Remove { id: NodeId, admin: Option<String> },
}

/// The leader's answer to a [`ForwardRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
enum ForwardReply {
    Written(Response),
    ReadIndex(Option<u64>),
    MembershipChanged,
}

/// The figures `status` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// This node.
    pub id: NodeId,
    /// Leader, follower, candidate or learner.
    pub state: String,
    /// The current term.
    pub term: u64,
    /// The leader, if known.
    pub leader: Option<NodeId>,
    /// The last log index.
    pub last_log_index: Option<u64>,
    /// The last applied index.
    pub last_applied: Option<u64>,
    /// The last snapshot's index.
    pub snapshot: Option<u64>,
    /// Entries in the log (after purges).
    pub log_entries: usize,
    /// Bytes the store occupies on disk.
    pub disk_bytes: u64,
    /// The voters.
    pub voters: Vec<NodeId>,
    /// The learners.
    pub learners: Vec<NodeId>,
    /// The transport's view of each peer.
    pub peers: Vec<PeerStatus>,
}

struct NodeInner {
    config: RaftNodeConfig,
    raft: Raft<TypeConfig>,
    log: LogStore,
    sm: StateMachineStore,
    transport: Arc<ClusterTransport>,
    watcher: tokio::task::JoinHandle<()>,
    proposer: Proposer,
}

/// One member of the consensus cluster (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct RaftNode {
    inner: Arc<NodeInner>,
}

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode")
            .field("id", &self.inner.config.id)
            .finish_non_exhaustive()
    }
}

/// How long to wait between attempts while a leader is being elected.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// How long after a lease's lapse a waiter asks for the key again.
const LAPSE_SLACK: Duration = Duration::from_millis(5);

/// The most entries one append-entries message carries (openraft's default is 300).
const MAX_PAYLOAD_ENTRIES: u64 = 32;

impl RaftNode {
    /// Opens the store, starts the transport and raft. The node serves RPCs at once; it takes
    /// part in a cluster once bootstrapped, joined, or added by the leader.
    pub async fn start(config: RaftNodeConfig) -> Result<Self, ConsensusError> {
        let dir = config.data_dir.clone();
        let opts = config.store.clone();
        let (log, sm) = tokio::task::spawn_blocking(move || store::open(&dir, opts))
            .await
            .map_err(|e| ConsensusError::fatal(format!("opening the store: {e}")))?
            .map_err(|e| ConsensusError::fatal(e.to_string()))?;
        let mut tc = ClusterTransportConfig::new(config.id, config.listen, config.cookie.clone());
        tc.tls = config.tls.clone();
        let transport = Arc::new(
            ClusterTransport::start(tc)
                .await
                .map_err(|e| ConsensusError::fatal(e.to_string()))?,
        );
        let t = &config.timings;
        let raft_config = openraft::Config {
            cluster_name: "ire".into(),
            heartbeat_interval: t.heartbeat_interval.as_millis() as u64,
            election_timeout_min: t.election_timeout_min.as_millis() as u64,
            election_timeout_max: t.election_timeout_max.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_every),
            max_in_snapshot_log_to_keep: t.logs_to_keep,
            // Entries may be batches of up to `proposer::MAX_BATCH` commands: keep one
            // append-entries message to a lagging follower bounded.
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ConsensusError::Invalid {
            field: "raft timings".into(),
            message: e.to_string(),
        })?;
        let dyn_transport: Arc<dyn RaftTransport> = transport.clone();
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config),
            Network::<TypeConfig>::new(dyn_transport.clone()),
            log.clone(),
            sm.clone(),
        )
        .await
        .map_err(|e| ConsensusError::fatal(format!("starting raft: {e}")))?;
        let watcher = tokio::spawn(watch_members(raft.clone(), dyn_transport));
        let proposer = Proposer::start(raft.clone(), write_error, config.id);
        let inner = Arc::new(NodeInner {
            config,
            raft,
            log,
            sm,
            transport,
            watcher,
            proposer,
        });
        inner.transport.serve(Arc::new(NodeRpcHandler {
            node: Arc::downgrade(&inner),
        }));
        tracing::info!(component = "consensus", node_id = inner.config.id, listen = %inner.config.listen, "raft node started");
        Ok(Self { inner })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.config.id
    }

    fn admin_token(&self) -> Option<String> {
        self.inner.config.admin_token.clone()
    }

    /// The raft instance (for metrics and tests).
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// The transport.
    pub fn transport(&self) -> &ClusterTransport {
        &self.inner.transport
    }

    /// Makes this node a one-member cluster. Does nothing on a node that is already part of
    /// a cluster (so a restarted node keeps its membership).
    pub async fn bootstrap(&self) -> Result<(), ConsensusError> {
        let members = BTreeMap::from([(self.id(), self.inner.config.member())]);
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ConsensusError::fatal(format!("bootstrap: {e}"))),
        }
    }

    /// Joins a running cluster through any of `seeds` (id, address): the leader adds this node
    /// as a learner, waits until it has caught up, then promotes it to voter.
    pub async fn join(&self, seeds: &[(NodeId, String)]) -> Result<(), ConsensusError> {
        if seeds.is_empty() {
            return Err(ConsensusError::Invalid {
                field: "seeds".into(),
                message: "joining needs at least one seed node".into(),
            });
        }
        for (id, addr) in seeds {
            self.inner.transport.set_peer(*id, addr.clone());
        }
        let seed_ids: Vec<NodeId> = seeds.iter().map(|(id, _)| *id).collect();
        let me = self.id();
        let node = self.inner.config.member();
        let timeout = self.inner.config.membership_timeout;
        self.leader_call(
            ForwardRequest::AddLearner {
                id: me,
                node,
                admin: self.admin_token(),
            },
            timeout,
            &seed_ids,
        )
        .await?;
        self.leader_call(
            ForwardRequest::Promote {
                id: me,
                admin: self.admin_token(),
            },
            timeout,
            &seed_ids,
        )
        .await?;
        tracing::info!(
            component = "consensus",
            node_id = me,
            "joined the cluster as a voter"
        );
        Ok(())
    }

    /// Adds a node as a learner (it replicates but does not vote) and waits until it caught up.
    pub async fn add_learner(
        &self,
        id: NodeId,
        addr: String,
        region: Option<String>,
    ) -> Result<(), ConsensusError> {
        let node = ClusterNode::new(addr, region);
        self.leader_call(
            ForwardRequest::AddLearner {
                id,
                node,
                admin: self.admin_token(),
            },
            self.inner.config.membership_timeout,
            &[],
        )
        .await
        .map(|_| ())
    }

    /// Makes a learner a voter.
    pub async fn promote(&self, id: NodeId) -> Result<(), ConsensusError> {
        self.leader_call(
            ForwardRequest::Promote {
                id,
                admin: self.admin_token(),
            },
            self.inner.config.membership_timeout,
            &[],
        )
        .await
        .map(|_| ())
    }

    /// Removes a node (voter or learner) from the cluster.
    pub async fn remove(&self, id: NodeId) -> Result<(), ConsensusError> {
        self.leader_call(
            ForwardRequest::Remove {
                id,
                admin: self.admin_token(),
            },
            self.inner.config.membership_timeout,
            &[],
        )
        .await
        .map(|_| ())
    }

    /// Proposes a command; the answer is the state machine's. A refusal is
    /// [`ConsensusError::Rejected`] and changed nothing.
    pub async fn write(&self, command: Command) -> Result<Response, ConsensusError> {
        // Refused here, before it is forwarded (the leader's proposer checks too).
        crate::proposer::check_size(&command)?;
        let reply = self
            .leader_call(
                ForwardRequest::Write(command),
                self.inner.config.request_timeout,
                &[],
            )
            .await?;
        match reply {
            ForwardReply::Written(Response::Rejected(r)) => Err(ConsensusError::Rejected(r)),
            ForwardReply::Written(r) => Ok(r),
            other => Err(ConsensusError::fatal(format!(
                "unexpected reply to a write: {other:?}"
            ))),
        }
    }

    /// Acquires `key` for `holder`, waiting up to `wait` in the key's queue when it is leased:
    /// the release of the lease (or its lapse) hands it to the first waiter in the same
    /// entry, and this node wakes the caller when it applies that entry. Answers `Held` when
    /// the wait ends (runs out, or `cancel` fires) without the lease, or at once under an
    /// operator hold or a full queue.
    pub async fn acquire_wait(
        &self,
        key: &ResourceKey,
        holder: &str,
        ttl: Duration,
        wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<LockOutcome, ConsensusError> {
        let deadline = Instant::now() + wait;
        // Registered before proposing, so that a hand-off applied at once is not missed.
        let mut handed = self.inner.sm.hand_offs().register(key, holder);
        // Who held the key at the last answer, for a `Held` after the wait.
        let mut last_holder;
        loop {
            // At least one attempt, however short the wait (a zero wait is refused as
            // invalid by the state machine).
            let left = match deadline.saturating_duration_since(Instant::now()) {
                d if d.is_zero() && !wait.is_zero() => Duration::from_millis(1),
                d => d,
            };
            let queued = self
                .write(Command::AcquireOrWait {
                    key: key.clone(),
                    holder: holder.to_owned(),
                    ttl,
                    // A queue entry lasts at most as long as a lease; the loop asks again
                    // at every lapse of the holder's lease, which comes sooner.
                    wait: left.min(MAX_LEASE_TTL),
                })
                .await?;
            let until = match queued {
                Response::Lock(outcome) => return Ok(outcome),
                Response::Queued { holder, until, .. } => {
                    last_holder = (holder, until);
                    until
                }
                other => {
                    return Err(ConsensusError::fatal(format!(
                        "unexpected answer to an acquire-or-wait: {other:?}"
                    )))
                }
            };
            // Nobody releases a lease that lapses: ask again just after it does, which hands
            // the key to the first waiter.
            let lapse = (until - Utc::now()).to_std().unwrap_or_default() + LAPSE_SLACK;
            let wake = deadline.min(Instant::now() + lapse);
            tokio::select! {
                // (None: replaced by another wait of the same holder; only the timer is left.)
                Some(g) = handed.granted() => return Ok(LockOutcome::Granted(g)),
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep_until(wake) => {}
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        // Out of time, or canceled: leave the queue. The lease may have been handed over just now, and
        // the answer says so.
        match self
            .write(Command::CancelWait {
                key: key.clone(),
                holder: holder.to_owned(),
            })
            .await?
        {
            Response::Lock(outcome) => Ok(outcome),
            _ => Ok(LockOutcome::Held {
                holder: last_holder.0,
                until: Some(last_holder.1),
            }),
        }
    }

    /// Runs `f` on state that reflects every write acknowledged before the call (a
    /// linearizable read). `now` is this node's clock, never earlier than the last stamped
    /// command, for deciding lease expiry.
    pub async fn read<T>(
        &self,
        f: impl FnOnce(&StateView, DateTime<Utc>) -> T,
    ) -> Result<T, ConsensusError> {
        let timeout = self.inner.config.request_timeout;
        let index = match self
            .leader_call(ForwardRequest::ReadIndex, timeout, &[])
            .await?
        {
            ForwardReply::ReadIndex(i) => i,
            other => {
                return Err(ConsensusError::fatal(format!(
                    "unexpected reply to a read: {other:?}"
                )))
            }
        };
        self.inner
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(index, "linearizable read")
            .await
            .map_err(|e| {
                ConsensusError::unavailable(format!("waiting to apply index {index:?}: {e}"))
            })?;
        Ok(self.read_local(f))
    }

    /// Runs `f` on this node's applied state without contacting the leader (may be stale on
    /// a follower).
    pub fn read_local<T>(&self, f: impl FnOnce(&StateView, DateTime<Utc>) -> T) -> T {
        self.inner.sm.read(|view| {
            let clock = view.clock().ok().flatten();
            let now = clock.map_or_else(Utc::now, |c| c.max(Utc::now()));
            f(view, now)
        })
    }

    /// The node's raft figures.
    pub async fn status(&self) -> NodeStatus {
        let m: RaftMetrics<NodeId, ClusterNode> = self.inner.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners = membership.learner_ids().collect();
        NodeStatus {
            id: self.id(),
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            log_entries: self.inner.log.len(),
            disk_bytes: self.inner.log.disk_size().unwrap_or(0)
                + self.inner.sm.disk_size().unwrap_or(0),
            voters: voters.into_iter().collect(),
            learners,
            peers: self.inner.transport.peers().await,
        }
    }

    /// Asks raft to build a snapshot of this node's state now (it is built in the
    /// background; [`RaftNode::status`] shows its index once done).
    pub async fn trigger_snapshot(&self) -> Result<(), ConsensusError> {
        self.inner
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| ConsensusError::fatal(format!("triggering a snapshot: {e}")))
    }

    /// The current leader, as this node knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow().current_leader
    }

    /// True when this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Stops raft and the transport and flushes the store.
    pub async fn shutdown(&self) {
        let _ = self.inner.raft.shutdown().await;
        self.inner.watcher.abort();
        self.inner.proposer.stop();
        self.inner.transport.shutdown().await;
        let _ = self.inner.sm.flush().await;
        let _ = self.inner.log.flush().await;
    }

    /// Sends a request to the leader (serving it locally when this node leads), following
    /// leader changes and retrying unreachable leaders until `timeout`.
    async fn leader_call(
        &self,
        req: ForwardRequest,
        timeout: Duration,
        seeds: &[NodeId],
    ) -> Result<ForwardReply, ConsensusError> {
        let deadline = Instant::now() + timeout;
        let me = self.id();
        let mut last_error: Option<ConsensusError> = None;
        // The leader named by the last NotLeader answer, tried before anything else.
        let mut hint: Option<NodeId> = None;
        let mut attempt_no = 0usize;
        loop {
            let seed = (!seeds.is_empty()).then(|| seeds[attempt_no % seeds.len()]);
            attempt_no += 1;
            let target = hint.take().or_else(|| self.leader()).or(seed);
            let attempt = match target {
                Some(t) if t != me => self.forward(t, &req, deadline).await,
                // The local node leads, or no leader is known: try locally, which answers
                // NotLeader with the leader's id when raft knows it.
                _ => self.inner.serve(req.clone()).await,
            };
            match attempt {
                Err(ConsensusError::NotLeader {
                    leader: Some(l),
                    leader_addr,
                    ..
                }) if l != target.unwrap_or(me) => {
                    if let Some(addr) = leader_addr {
                        self.inner.transport.set_peer(l, addr);
                    }
                    hint = Some(l);
                }
                Err(e) if e.is_retryable() => {
                    last_error = Some(e);
                    if Instant::now() + RETRY_PAUSE >= deadline {
                        break;
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => return other,
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Err(ConsensusError::unavailable(format!(
            "no leader answered within {timeout:?}{}",
            last_error
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        )))
    }

    async fn forward(
        &self,
        target: NodeId,
        req: &ForwardRequest,
        deadline: Instant,
    ) -> Result<ForwardReply, ConsensusError> {
        let payload = encode_payload("forward request", req)
            .map_err(|e| ConsensusError::fatal(e.to_string()))?;
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        let bytes = self
            .inner
            .transport
            .call(target, RpcKind::Forward, payload, remaining)
            .await
            .map_err(|e| match &e {
                TransportError::Unreachable { .. } | TransportError::Timeout { .. } => {
                    ConsensusError::unavailable(e.to_string())
                }
                TransportError::Remote { error, .. } if error.kind == RemoteErrorKind::NotReady => {
                    ConsensusError::unavailable(e.to_string())
                }
                _ => ConsensusError::fatal(e.to_string()),
            })?;
        decode_payload::<Result<ForwardReply, ConsensusError>>("forward reply", &bytes)
            .map_err(|e| ConsensusError::fatal(format!("reply from node {target}: {e}")))?
    }
}

impl NodeInner {
    fn not_leader(&self, leader: Option<NodeId>, node: Option<ClusterNode>) -> ConsensusError {
        ConsensusError::NotLeader {
            node: self.config.id,
            leader,
            leader_addr: node.map(|n| n.addr),
        }
    }

    /// A membership change that arrives from another node must carry this node's admin
    /// token: holding the cookie (being a peer) is not enough to add or remove members.
    fn check_admin(&self, from: NodeId, req: &ForwardRequest) -> Result<(), ConsensusError> {
        let presented = match req {
            ForwardRequest::AddLearner { admin, .. }
            | ForwardRequest::Promote { admin, .. }
            | ForwardRequest::Remove { admin, .. } => admin.as_deref(),
            ForwardRequest::Write(_) | ForwardRequest::ReadIndex => return Ok(()),
        };
        let refuse = |message: String| {
            tracing::warn!(component = "consensus", from, %message, "membership change refused");
            Err(ConsensusError::Invalid {
                field: "admin token".into(),
                message,
            })
        };
        match (&self.config.admin_token, presented) {
            (None, _) => refuse(format!(
                "node {} accepts no membership change from other nodes: it has no admin token \
                 configured",
                self.config.id
            )),
            (Some(_), None) => refuse(format!(
                "a membership change from node {from} without the cluster's admin token"
            )),
            (Some(mine), Some(theirs)) if !same_secret(mine, theirs) => refuse(format!(
                "a membership change from node {from} with a wrong admin token"
            )),
            _ => Ok(()),
        }
    }

    /// Serves a request on this node, which must be the leader.
    async fn serve(&self, req: ForwardRequest) -> Result<ForwardReply, ConsensusError> {
        match req {
            ForwardRequest::Write(command) => {
                if let Some(held) = self.refuse_held_acquire(&command) {
                    return Ok(ForwardReply::Written(Response::Lock(held)));
                }
                // Batched with concurrent writes and stamped with this node's clock.
                let deferrable = self.will_queue(&command);
                self.proposer
                    .propose(command, deferrable)
                    .await
                    .map(ForwardReply::Written)
            }
            ForwardRequest::ReadIndex => match self.raft.ensure_linearizable().await {
                Ok(log_id) => Ok(ForwardReply::ReadIndex(log_id.map(|l| l.index))),
                Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                    f,
                ))) => Err(self.not_leader(f.leader_id, f.leader_node)),
                Err(RaftError::APIError(e)) => Err(ConsensusError::unavailable(e.to_string())),
                Err(RaftError::Fatal(e)) => Err(ConsensusError::fatal(e.to_string())),
            },
            ForwardRequest::AddLearner { id, node, .. } => {
                if node.addr.trim().is_empty() {
                    return Err(ConsensusError::Invalid {
                        field: "node.addr".into(),
                        message: format!("node {id} has no address"),
                    });
                }
                self.raft
                    .add_learner(id, node, true)
                    .await
                    .map_err(|e| self.client_write_error(e))?;
                Ok(ForwardReply::MembershipChanged)
            }
            ForwardRequest::Promote { id, .. } => {
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(|e| self.client_write_error(e))?;
                Ok(ForwardReply::MembershipChanged)
            }
            ForwardRequest::Remove { id, .. } => {
                let membership = self
                    .raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .clone();
                let change = if membership.voter_ids().any(|v| v == id) {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else if membership.learner_ids().any(|l| l == id) {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                } else {
                    return Err(ConsensusError::Invalid {
                        field: "node id".into(),
                        message: format!("node {id} is not a member of the cluster"),
                    });
                };
                self.raft
                    .change_membership(change, false)
                    .await
                    .map_err(|e| self.client_write_error(e))?;
                Ok(ForwardReply::MembershipChanged)
            }
        }
    }

    /// Answers an acquire of a key leased to someone else from the leader's applied state,
    /// without a log entry: a refusal grants nothing, so it needs no replication, and under
    /// contention the log is left to grants and releases. The applied state may lag a release
    /// that is not acknowledged yet, which only delays the grant. Anything else (free or
    /// expired keys, the holder's own re-acquire, operator holds, invalid input) goes
    /// through the log.
    fn refuse_held_acquire(&self, command: &Command) -> Option<LockOutcome> {
        let Command::Acquire { key, holder, ttl } = command else {
            return None;
        };
        if check_ttl("acquire.ttl", *ttl).is_err() {
            return None;
        }
        self.leased_to_other(key, holder)
    }

    /// True for an acquire-or-wait that, by the leader's applied state, will join the key's
    /// queue: it needs no prompt commit of its own (see `proposer`).
    fn will_queue(&self, command: &Command) -> bool {
        match command {
            Command::AcquireOrWait { key, holder, .. } => {
                self.leased_to_other(key, holder).is_some()
            }
            _ => false,
        }
    }

    /// The live lease on `key` when this node leads and the lease (by its applied state) is
    /// someone else's and under no operator hold.
    fn leased_to_other(&self, key: &ResourceKey, holder: &str) -> Option<LockOutcome> {
        if self.raft.metrics().borrow().state != ServerState::Leader {
            return None;
        }
        let info = self.sm.read(|view| {
            let clock = view.clock().ok().flatten();
            let now = clock.map_or_else(Utc::now, |c| c.max(Utc::now()));
            view.lock_info(key, now).ok().map(|info| (info, now))
        });
        let (info, now) = info?;
        if info.hold.is_some() {
            return None;
        }
        let lease = info.lease?;
        if lease.holder == *holder || lease.expires_at <= now {
            return None;
        }
        Some(LockOutcome::Held {
            holder: lease.holder,
            until: Some(lease.expires_at),
        })
    }

    fn client_write_error(
        &self,
        e: RaftError<NodeId, ClientWriteError<NodeId, ClusterNode>>,
    ) -> ConsensusError {
        write_error(self.config.id, e)
    }
}

/// A raft write error of node `id` as a [`ConsensusError`].
fn write_error(
    id: NodeId,
    e: RaftError<NodeId, ClientWriteError<NodeId, ClusterNode>>,
) -> ConsensusError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ConsensusError::NotLeader {
            node: id,
            leader: f.leader_id,
            leader_addr: f.leader_node.map(|n| n.addr),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            ConsensusError::Invalid {
                field: "membership".into(),
                message: c.to_string(),
            }
        }
        RaftError::Fatal(f) => ConsensusError::fatal(f.to_string()),
    }
}

/// Keeps the transport's peer table in step with the membership: members' addresses come
/// from the replicated membership config, and departed members are dropped.
async fn watch_members(raft: Raft<TypeConfig>, transport: Arc<dyn RaftTransport>) {
    let mut rx = raft.metrics();
    let mut known: BTreeMap<NodeId, String> = BTreeMap::new();
    loop {
        let current: BTreeMap<NodeId, String> = rx
            .borrow()
            .membership_config
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        for (id, addr) in &current {
            if known.get(id) != Some(addr) {
                transport.set_peer(*id, addr.clone());
            }
        }
        for id in known.keys() {
            if !current.contains_key(id) {
                transport.remove_peer(*id);
            }
        }
        known = current;
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Serves RPCs that arrive for this node: raft's own, and requests forwarded by followers.
struct NodeRpcHandler {
    node: Weak<NodeInner>,
}

#[async_trait]
impl RpcHandler for NodeRpcHandler {
    async fn handle(
        &self,
        from: NodeId,
        kind: RpcKind,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, RemoteError> {
        let node = self.node.upgrade().ok_or_else(|| {
            RemoteError::new(RemoteErrorKind::NotReady, "the node is shutting down")
        })?;
        match kind {
            RpcKind::Forward => {
                let req: ForwardRequest = decode_payload("forward request", &payload)
                    .map_err(|e| RemoteError::new(RemoteErrorKind::Malformed, e.to_string()))?;
                tracing::trace!(component = "consensus", from, "forwarded request");
                let reply = match node.check_admin(from, &req) {
                    Ok(()) => node.serve(req).await,
                    Err(e) => Err(e),
                };
                encode_payload("forward reply", &reply)
                    .map_err(|e| RemoteError::new(RemoteErrorKind::Handler, e.to_string()))
            }
            _ => serve_raft_rpc(&node.raft, from, kind, &payload).await,
        }
    }
}
