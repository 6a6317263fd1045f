//! The raft type configuration and the replicated commands.
//!
//! Everything a node proposes to the cluster is a [`Request`]: one [`Command`] plus the time
//! the leader stamped on it. The state machine decides lease expiry from that stamp only,
//! never from its own clock, so every replica reaches the same answer. What applying a
//! command answers is a [`Response`].
//!
//! Every type here crosses the wire and lands on disk encoded with bincode (serde mode),
//! which is not self-describing. ire-core's records carry `serde_json::Value`s and
//! internally tagged enums, which need a self-describing format, so they travel inside
//! [`Json`], which encodes them as a JSON string inside the bincode frame.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ire_core::{AuditEntry, ExecutionRecord, FaultEntry, FencingToken, LeaseGrant, LockOutcome};
use ire_core::{ResourceKey, Result as CoreResult};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A raft node id: stable, taken from the node's configuration (never ractor_cluster's
/// per-session id).
pub type NodeId = u64;

/// What the cluster knows about a member: where to reach it and where it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// The node's ractor_cluster address (`host:port`).
    pub addr: String,
    /// The node's region, if configured (steps target nodes by region).
    #[serde(default)]
    pub region: Option<String>,
}

impl ClusterNode {
    /// A member reachable at `addr`, in `region`.
    pub fn new(addr: impl Into<String>, region: Option<String>) -> Self {
        ClusterNode {
            addr: addr.into(),
            region,
        }
    }
}

impl fmt::Display for ClusterNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.region {
            Some(r) => write!(f, "{} ({r})", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

openraft::declare_raft_types!(
    /// ire's raft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = ClusterNode,
        Entry = openraft::Entry<TypeConfig>,
        // Snapshots are files on disk, streamed in chunks: the ledger can be far larger than
        // what should be held in memory.
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A raft log entry of ire's type configuration.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id of ire's type configuration.
pub type LogId = openraft::LogId<NodeId>;
/// A vote of ire's type configuration.
pub type Vote = openraft::Vote<NodeId>;
/// Snapshot metadata of ire's type configuration.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, ClusterNode>;
/// The membership last applied, with the log id that carried it.
pub type StoredMembership = openraft::StoredMembership<NodeId, ClusterNode>;
/// openraft's storage error for ire's type configuration.
pub type StorageError = openraft::StorageError<NodeId>;

/// One proposal: a command and the time the leader stamped on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The leader's clock when it proposed the command. The state machine uses it (never its
    /// own clock) to decide lease expiry, so every replica agrees. The state machine's clock
    /// never runs backwards: a stamp older than one already applied counts as the latter.
    pub now: DateTime<Utc>,
    /// What to do.
    pub command: Command,
}

impl Request {
    /// A command stamped with `now` (the leader's clock, taken just before proposing).
    pub fn new(command: Command, now: DateTime<Utc>) -> Self {
        Request { now, command }
    }

    /// A command stamped with the local clock: call this on the leader only.
    pub fn stamped_now(command: Command) -> Self {
        Request::new(command, Utc::now())
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.command, self.now.to_rfc3339())
    }
}

/// A change to the replicated state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Takes the lease on `key` for `ttl` if it is free, expired, or already `holder`'s (then it
    /// is renewed and keeps its token). Answers [`Response::Lock`].
    Acquire {
        /// The resource.
        key: ResourceKey,
        /// Who asks (an execution id, qualified by node).
        holder: String,
        /// How long the lease lasts from the stamped time.
        ttl: Duration,
    },
    /// Extends the current, unexpired lease with token `token`. Answers [`Response::Lease`].
    Renew {
        /// The resource.
        key: ResourceKey,
        /// The lease's fencing token.
        token: FencingToken,
        /// How long the lease lasts from the stamped time.
        ttl: Duration,
    },
    /// Gives the lease with token `token` back. Answers [`Response::Done`].
    Release {
        /// The resource.
        key: ResourceKey,
        /// The lease's fencing token.
        token: FencingToken,
    },
    /// Protects `key` from every acquire until [`Command::Unhold`]. Answers [`Response::Done`].
    Hold {
        /// The resource.
        key: ResourceKey,
        /// The operator.
        by: String,
        /// Why.
        reason: String,
    },
    /// Removes the operator hold on `key`. Answers [`Response::Done`].
    Unhold {
        /// The resource.
        key: ResourceKey,
    },
    /// Records (or updates, by id) what an execution did. Answers [`Response::Done`].
    RecordExecution(Json<Box<ExecutionRecord>>),
    /// Records a fault before it is injected. Accepted only with the current, unexpired
    /// fencing token of the fault's resource. Answers [`Response::Done`].
    RecordFault(Json<Box<FaultEntry>>),
    /// Marks a fault reverted without a fencing token: what entries written before fenced
    /// settlements carry. Still applied as it was (replicas re-apply old entries), never
    /// proposed any more ([`Command::MarkReverted`] replaced it). Answers [`Response::Done`].
    LegacyMarkReverted {
        /// The fault.
        fault_id: String,
        /// The node that reverted it.
        by: String,
    },
    /// Marks a revert attempt failed without a fencing token: the counterpart of
    /// [`Command::LegacyMarkReverted`], replaced by [`Command::MarkRevertFailed`].
    LegacyMarkRevertFailed {
        /// The fault.
        fault_id: String,
        /// Why the revert failed.
        error: String,
    },
    /// Stores a new campaign. Answers [`Response::Done`].
    PutCampaign(NewCampaign),
    /// Moves a campaign step to a new state. Answers [`Response::Done`].
    UpdateStep {
        /// The campaign.
        campaign_id: String,
        /// The step's name.
        step: String,
        /// Its new state.
        state: StepState,
        /// What happened (may be empty).
        message: String,
    },
    /// Creates or updates one task (a resource assigned to a node) of a step.
    /// Answers [`Response::Done`].
    UpdateTask {
        /// The campaign.
        campaign_id: String,
        /// The step's name.
        step: String,
        /// The task.
        task: TaskUpdate,
    },
    /// Ends a campaign. Answers [`Response::Done`].
    FinishCampaign {
        /// The campaign.
        campaign_id: String,
        /// How it ended (must be terminal).
        state: CampaignState,
        /// Why (may be empty).
        message: String,
    },
    /// Appends to the audit log. Answers [`Response::Done`].
    AppendAudit(Json<Box<AuditEntry>>),
    /// Stores values under keys of a storage collection (ire-core's `StorageBackend`),
    /// replacing previous ones; a whole batch is one raft entry. Answers [`Response::Done`].
    StorePut {
        /// The collection (non-empty, no NUL).
        collection: String,
        /// `(key, value as JSON text)` pairs, applied in order.
        items: Vec<(String, String)>,
    },
    /// Removes a key of a storage collection (removing a missing key is harmless).
    /// Answers [`Response::Done`].
    StoreDelete {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
    },
    /// Several commands proposed together as one raft entry (the leader batches concurrent
    /// writes). Applied in order, each on its own: one refused command changes nothing and
    /// does not affect the others. A batch inside a batch is refused. Answers
    /// [`Response::Batch`].
    Batch(Vec<Command>),
    /// Like [`Command::Acquire`], but a caller that finds the key leased to someone else joins
    /// the key's queue of waiters for up to `wait`: a release (or the lapse of the lease, at the
    /// next command on the key) hands the lease to the first waiter still waiting, in the same
    /// entry. Answers [`Response::Lock`] (granted, or held by an operator hold or with the queue
    /// full) or [`Response::Queued`].
    AcquireOrWait {
        /// The resource.
        key: ResourceKey,
        /// Who asks.
        holder: String,
        /// How long the lease lasts once granted (from the granting entry's stamp).
        ttl: Duration,
        /// How long the caller waits in the queue, from the stamped time.
        wait: Duration,
    },
    /// Leaves the queue of `key`. Answers [`Response::Lock`] with the grant when the lease was
    /// handed to `holder` meanwhile (the caller then holds it), otherwise [`Response::Done`].
    CancelWait {
        /// The resource.
        key: ResourceKey,
        /// The waiter.
        holder: String,
    },
    // Appended after the others: bincode names variants by position, so older entries keep
    // their meaning.
    /// Marks a sustained fault reverted by node `by`. `token` must be the fault's resource's
    /// current lease (the injector's, or an orphan claimant's; expired is fine, superseded is
    /// not). Marking it again is accepted. Answers [`Response::Done`].
    MarkReverted {
        /// The fault.
        fault_id: String,
        /// The node that reverted it.
        by: String,
        /// The lease the revert was done under.
        token: FencingToken,
    },
    /// Marks a revert attempt of a sustained fault failed (it stays active); `token` as for
    /// [`Command::MarkReverted`]. Answers [`Response::Done`].
    MarkRevertFailed {
        /// The fault.
        fault_id: String,
        /// Why the revert failed.
        error: String,
        /// The lease the revert was tried under.
        token: FencingToken,
    },
    /// Closes an action's entry (nothing to revert); `token` as for
    /// [`Command::MarkReverted`]. Answers [`Response::Done`].
    EndAction {
        /// The fault.
        fault_id: String,
        /// The lease the action ran under.
        token: FencingToken,
    },
    /// Claims an orphan: refused unless the fault is an active sustained fault and no lease
    /// is in force on its resource at the stamped time (the leader's lease clock). Grants the
    /// resource's lease to `claimant` for `ttl`, with this command's sequence number as its
    /// token, ahead of any queued waiter. Answers [`Response::Lease`].
    ClaimOrphan {
        /// The fault.
        fault_id: String,
        /// The node that will revert it.
        claimant: String,
        /// How long the claim's lease lasts from the stamped time.
        ttl: Duration,
    },
}

impl Command {
    /// The command's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Acquire { .. } => "acquire",
            Command::Renew { .. } => "renew",
            Command::Release { .. } => "release",
            Command::Hold { .. } => "hold",
            Command::Unhold { .. } => "unhold",
            Command::RecordExecution(_) => "record-execution",
            Command::RecordFault(_) => "record-fault",
            Command::LegacyMarkReverted { .. } | Command::MarkReverted { .. } => "mark-reverted",
            Command::LegacyMarkRevertFailed { .. } | Command::MarkRevertFailed { .. } => {
                "mark-revert-failed"
            }
            Command::EndAction { .. } => "end-action",
            Command::ClaimOrphan { .. } => "claim-orphan",
            Command::PutCampaign(_) => "put-campaign",
            Command::UpdateStep { .. } => "update-step",
            Command::UpdateTask { .. } => "update-task",
            Command::FinishCampaign { .. } => "finish-campaign",
            Command::AppendAudit(_) => "append-audit",
            Command::StorePut { .. } => "store-put",
            Command::StoreDelete { .. } => "store-delete",
            Command::Batch(_) => "batch",
            Command::AcquireOrWait { .. } => "acquire-or-wait",
            Command::CancelWait { .. } => "cancel-wait",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Acquire { key, holder, .. } => write!(f, "acquire {key} for {holder}"),
            Command::Renew { key, token, .. } => write!(f, "renew {key} token {token}"),
            Command::Release { key, token } => write!(f, "release {key} token {token}"),
            Command::Hold { key, by, .. } => write!(f, "hold {key} by {by}"),
            Command::Unhold { key } => write!(f, "unhold {key}"),
            Command::RecordExecution(r) => write!(f, "record execution {}", r.0.id),
            Command::RecordFault(e) => write!(f, "record fault {}", e.0.id),
            Command::LegacyMarkReverted { fault_id, .. }
            | Command::MarkReverted { fault_id, .. } => {
                write!(f, "mark fault {fault_id} reverted")
            }
            Command::LegacyMarkRevertFailed { fault_id, .. }
            | Command::MarkRevertFailed { fault_id, .. } => {
                write!(f, "mark fault {fault_id} revert-failed")
            }
            Command::EndAction { fault_id, .. } => write!(f, "end action {fault_id}"),
            Command::ClaimOrphan {
                fault_id, claimant, ..
            } => write!(f, "claim orphan {fault_id} for {claimant}"),
            Command::PutCampaign(c) => write!(f, "put campaign {}", c.id),
            Command::UpdateStep {
                campaign_id, step, ..
            } => write!(f, "update step {campaign_id}/{step}"),
            Command::UpdateTask {
                campaign_id,
                step,
                task,
            } => write!(f, "update task {campaign_id}/{step}/{}", task.id),
            Command::FinishCampaign { campaign_id, .. } => {
                write!(f, "finish campaign {campaign_id}")
            }
            Command::AppendAudit(_) => write!(f, "append audit entry"),
            Command::StorePut { collection, items } => {
                write!(f, "store {} values in {collection}", items.len())
            }
            Command::StoreDelete { collection, key } => write!(f, "delete {collection}/{key}"),
            Command::Batch(commands) => write!(f, "batch of {} commands", commands.len()),
            Command::AcquireOrWait { key, holder, .. } => {
                write!(f, "acquire {key} for {holder} or wait")
            }
            Command::CancelWait { key, holder } => write!(f, "stop waiting for {key} ({holder})"),
        }
    }
}

/// What applying a command answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// The answer to [`Command::Acquire`]: granted (with the fencing token) or held.
    Lock(LockOutcome),
    /// The answer to [`Command::Renew`] (the extended lease) and [`Command::ClaimOrphan`]
    /// (the claimant's new lease).
    Lease(LeaseGrant),
    /// The command took effect (or had already taken effect: retries are harmless).
    Done,
    /// The state machine refused the command; the replicated state is unchanged.
    Rejected(Rejection),
    /// A raft-internal entry (blank, membership) was applied.
    Internal,
    /// The answers to a [`Command::Batch`], in order.
    Batch(Vec<Response>),
    /// The answer to [`Command::AcquireOrWait`] when the key is leased: the caller waits in
    /// the key's queue.
    Queued {
        /// The current holder.
        holder: String,
        /// When its lease lapses unless renewed.
        until: DateTime<Utc>,
        /// The caller's place in the queue (0: next).
        position: usize,
    },
}

impl Response {
    /// The response as a `Result`, with a refusal turned into an error.
    pub fn into_result(self) -> Result<Response, Rejection> {
        match self {
            Response::Rejected(r) => Err(r),
            other => Ok(other),
        }
    }
}

/// Why the state machine refused a command. A refused command changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// A field of the command is invalid.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// Which field (`acquire.ttl`, `fault.id`, ...).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The token is not the current lease's token for the key.
    #[error("lease on {key}: token {presented} is not the current one ({})", match (holder, current) {
        (Some(h), Some(t)) => format!("held by {h} with token {t}"),
        (None, Some(t)) => format!("the current token is {t}"),
        _ => "no lease is in force".into(),
    })]
    WrongToken {
        /// The resource.
        key: ResourceKey,
        /// The token presented.
        presented: FencingToken,
        /// The current lease's token, if there is a lease.
        current: Option<FencingToken>,
        /// The current lease's holder, if there is a lease in force.
        holder: Option<String>,
    },
    /// An operator hold is on the key: its holder may not renew or record faults.
    #[error("{key} is on operator hold by {by} ({reason}): the lease may not be used")]
    OnHold {
        /// The resource.
        key: ResourceKey,
        /// Who placed the hold.
        by: String,
        /// Why.
        reason: String,
    },
    /// A lease is in force on the key (an orphan claim needs it expired or released).
    #[error("{key} is leased to {holder} with token {token} until {}", until.to_rfc3339())]
    LeaseInForce {
        /// The resource.
        key: ResourceKey,
        /// Who holds it.
        holder: String,
        /// Its token.
        token: FencingToken,
        /// When it lapses unless renewed (on the leader's lease clock).
        until: DateTime<Utc>,
    },
    /// The lease with this token has expired.
    #[error("lease on {key} with token {token} expired at {}", expired_at.to_rfc3339())]
    Expired {
        /// The resource.
        key: ResourceKey,
        /// The token presented.
        token: FencingToken,
        /// When it expired.
        expired_at: DateTime<Utc>,
    },
    /// There is no operator hold to remove.
    #[error("{key} has no operator hold")]
    NotOnHold {
        /// The resource.
        key: ResourceKey,
    },
    /// The named thing does not exist.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// What kind (fault, campaign, step).
        kind: String,
        /// Its id.
        id: String,
    },
    /// A different record with this id already exists.
    #[error("{kind} {id:?} already exists with different content")]
    Duplicate {
        /// What kind (fault, campaign).
        kind: String,
        /// Its id.
        id: String,
    },
    /// The transition is not allowed from the current state.
    #[error("{what}: cannot go from {from} to {to}")]
    BadTransition {
        /// What was updated (`campaign c1`, `fault f1`, ...).
        what: String,
        /// Its current state.
        from: String,
        /// The state asked for.
        to: String,
    },
}

impl Rejection {
    /// An invalid-field refusal.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<Rejection> for ire_core::Error {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::Invalid { field, message } => ire_core::Error::Invalid { field, message },
            Rejection::NotFound { kind, id } => ire_core::Error::NotFound { kind, name: id },
            Rejection::NotOnHold { .. } => ire_core::Error::AlreadyDone {
                message: r.to_string(),
            },
            Rejection::WrongToken { .. }
            | Rejection::OnHold { .. }
            | Rejection::LeaseInForce { .. }
            | Rejection::Expired { .. }
            | Rejection::Duplicate { .. }
            | Rejection::BadTransition { .. } => ire_core::Error::Conflict {
                message: r.to_string(),
            },
        }
    }
}

/// A value carried as JSON text inside a bincode frame (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    /// The wrapped value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Json<T> {
    fn from(v: T) -> Self {
        Json(v)
    }
}

impl<T: Serialize> Serialize for Json<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(&self.0).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Json<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T: DeserializeOwned> serde::de::Visitor<'_> for V<T> {
            type Value = Json<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON document in a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                serde_json::from_str(v).map(Json).map_err(E::custom)
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

// ---------------------------------------------------------------------------------------
// Campaigns.
// ---------------------------------------------------------------------------------------

/// A campaign as submitted: stored with every step pending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCampaign {
    /// The campaign's id (unique in the cluster).
    pub id: String,
    /// Its name (from the campaign file).
    pub name: String,
    /// The campaign file as submitted (opaque here; the node parses it).
    pub spec: String,
    /// Who submitted it.
    pub submitted_by: String,
    /// Its steps' names, in file order.
    pub steps: Vec<String>,
}

/// Where a campaign is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CampaignState {
    /// Stored, not started.
    Pending,
    /// A coordinator is running it.
    Running,
    /// Every step ended as planned.
    Succeeded,
    /// A step failed and the campaign stopped.
    Failed,
    /// An abort condition stopped it; active faults were reverted.
    Aborted,
    /// An operator canceled it.
    Canceled,
}

impl CampaignState {
    /// True once the campaign has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, CampaignState::Pending | CampaignState::Running)
    }
}

/// Where a step is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StepState {
    /// Not started.
    Pending,
    /// Candidates are being resolved and tasks assigned.
    Planning,
    /// Its tasks run.
    Running,
    /// Ended as planned.
    Succeeded,
    /// Ended in failure.
    Failed,
    /// Not run (its condition was false).
    Skipped,
    /// Stopped by an abort.
    Aborted,
}

impl StepState {
    /// True once the step has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            StepState::Pending | StepState::Planning | StepState::Running
        )
    }
}

/// Where a task (one resource on one node) is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    /// Chosen by the coordinator, not yet picked up by its node.
    Assigned,
    /// Its node holds the lease and runs the plugin.
    Running,
    /// The fault was injected and its duration ended; it was reverted (or needs none).
    Succeeded,
    /// It failed.
    Failed,
    /// Stopped before it ended (abort, cancel).
    Canceled,
}

impl TaskState {
    /// True once the task has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, TaskState::Assigned | TaskState::Running)
    }
}

/// A task's new state, as a node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskUpdate {
    /// The task's id (unique within its step).
    pub id: String,
    /// The resource it acts on.
    pub resource: ResourceKey,
    /// The node that runs it.
    pub node: String,
    /// Its new state.
    pub state: TaskState,
    /// Its execution, once started.
    #[serde(default)]
    pub execution_id: Option<String>,
    /// The lease it runs under, once acquired.
    #[serde(default)]
    pub token: Option<FencingToken>,
    /// What happened (may be empty).
    #[serde(default)]
    pub message: String,
}

/// One task of a step, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task's id.
    pub id: String,
    /// The resource it acts on.
    pub resource: ResourceKey,
    /// The node that runs it.
    pub node: String,
    /// Its state.
    pub state: TaskState,
    /// Its execution, once started.
    pub execution_id: Option<String>,
    /// The lease it runs under, once acquired.
    pub token: Option<FencingToken>,
    /// The last message reported.
    pub message: String,
    /// When it was last updated (leader-stamped).
    pub updated_at: DateTime<Utc>,
}

/// One step of a campaign, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's name.
    pub name: String,
    /// Its state.
    pub state: StepState,
    /// When it started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// The last message reported.
    pub message: String,
    /// Its tasks, by id.
    pub tasks: BTreeMap<String, TaskRecord>,
}

/// A campaign and its progress, as replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignRecord {
    /// The campaign's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The campaign file as submitted.
    pub spec: String,
    /// Who submitted it.
    pub submitted_by: String,
    /// When it was stored (leader-stamped).
    pub submitted_at: DateTime<Utc>,
    /// When it last changed (leader-stamped).
    pub updated_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its state.
    pub state: CampaignState,
    /// Why it ended as it did (may be empty).
    pub message: String,
    /// Its steps, in file order.
    pub steps: Vec<StepRecord>,
}

impl CampaignRecord {
    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.name == name)
    }
}

// ---------------------------------------------------------------------------------------
// Queries.
// ---------------------------------------------------------------------------------------

/// Which audit entries to return, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuditQuery {
    /// By this principal.
    #[serde(default)]
    pub principal: Option<String>,
    /// Not before.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// Not after.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// At most this many.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Skip this many first.
    #[serde(default)]
    pub offset: usize,
}

impl AuditQuery {
    /// True when the entry meets every criterion (pagination aside).
    pub fn matches(&self, e: &AuditEntry) -> bool {
        self.principal.as_ref().is_none_or(|p| p == &e.principal)
            && self.since.is_none_or(|t| e.timestamp >= t)
            && self.until.is_none_or(|t| e.timestamp <= t)
    }
}

/// Validates a lease duration: positive and at most [`MAX_LEASE_TTL`].
pub fn check_ttl(field: &str, ttl: Duration) -> Result<(), Rejection> {
    if ttl.is_zero() {
        return Err(Rejection::invalid(
            field,
            "the lease duration must be positive",
        ));
    }
    if ttl > MAX_LEASE_TTL {
        return Err(Rejection::invalid(
            field,
            format!(
                "the lease duration {}s exceeds the maximum of {}s",
                ttl.as_secs(),
                MAX_LEASE_TTL.as_secs()
            ),
        ));
    }
    Ok(())
}

/// The longest lease a command may ask for: a holder that needs longer renews.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Converts a refusal into ire-core's error (for the client API).
pub fn rejection_to_core<T>(r: Result<T, Rejection>) -> CoreResult<T> {
    r.map_err(Into::into)
}

impl Command {
    /// Records (or updates) an execution.
    pub fn record_execution(record: ExecutionRecord) -> Self {
        Command::RecordExecution(Json(Box::new(record)))
    }

    /// Records a fault (before it is injected).
    pub fn record_fault(entry: FaultEntry) -> Self {
        Command::RecordFault(Json(Box::new(entry)))
    }

    /// Appends an audit entry.
    pub fn append_audit(entry: AuditEntry) -> Self {
        Command::AppendAudit(Json(Box::new(entry)))
    }
}
