//! The Rust client API of the consensus cluster, used by the node's actors and HTTP layer.
//!
//! [`ConsensusClient`] wraps a local [`RaftNode`] and implements ire-core's [`LockService`],
//! [`FaultLedger`] and [`AuditLogger`] (and, in `crate::storage`, `StorageBackend`), plus
//! execution records, campaigns, membership and
//! status. Writes go to the leader (forwarded when this node follows); lock, campaign and
//! ledger reads are linearizable.
//!
//! Errors are ire-core's, classified for the engine's retry logic:
//! - no leader, unreachable leader, timeouts: `Unavailable` (retryable);
//! - wrong fencing token, expired lease, duplicate record: `Conflict` (retryable: the caller
//!   re-acquires or backs off);
//! - bad input (zero TTL, empty holder, unknown node id): `Invalid` (fatal);
//! - unknown fault or campaign: `NotFound` (fatal);
//! - storage failures: `Other` with class fatal.

use std::time::Duration;

use async_trait::async_trait;
use ire_core::{
    AuditEntry, AuditLogger, Error, ExecutionQuery, ExecutionRecord, FaultEntry, FaultLedger,
    FaultQuery, FencingToken, LeaseGrant, LockInfo, LockOutcome, LockService, OrphanQuery,
    ResourceKey, Result,
};
use tokio_util::sync::CancellationToken;

use crate::error::StoreResult;
use crate::node::{ConsensusError, NodeStatus, RaftNode};
use crate::state::view::StateView;
use crate::transport::NodeId;
use crate::types::{
    AuditQuery, CampaignRecord, CampaignState, Command, Json, NewCampaign, Response, StepState,
    TaskUpdate,
};

/// The client API over a local raft node (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConsensusClient {
    node: RaftNode,
}

fn non_empty(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    Ok(())
}

impl ConsensusClient {
    /// A client of `node`.
    pub fn new(node: RaftNode) -> Self {
        Self { node }
    }

    /// The node this client talks through.
    pub fn node(&self) -> &RaftNode {
        &self.node
    }

    async fn write(&self, command: Command) -> Result<Response> {
        let what = command.name();
        self.node
            .write(command)
            .await
            .map_err(|e| Error::from(e).context(format!("consensus {what}")))
    }

    pub(crate) async fn write_done(&self, command: Command) -> Result<()> {
        match self.write(command).await? {
            Response::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) async fn read<T>(
        &self,
        f: impl FnOnce(&StateView, chrono::DateTime<chrono::Utc>) -> StoreResult<T>,
    ) -> Result<T> {
        self.node
            .read(f)
            .await
            .map_err(Error::from)?
            .map_err(Error::from)
    }

    // ----- Executions -----

    /// Records (or updates, by id) what an execution did.
    pub async fn record_execution(&self, record: ExecutionRecord) -> Result<()> {
        non_empty("execution.id", &record.id)?;
        self.write_done(Command::RecordExecution(Json(Box::new(record))))
            .await
    }

    /// One execution record.
    pub async fn execution(&self, id: &str) -> Result<ExecutionRecord> {
        self.read(|v, _| v.execution(id))
            .await?
            .ok_or_else(|| Error::not_found("execution", id))
    }

    /// Execution records that match, oldest first, paginated.
    pub async fn query_executions(&self, query: &ExecutionQuery) -> Result<Vec<ExecutionRecord>> {
        self.read(|v, _| v.executions(query)).await
    }

    // ----- Campaigns -----

    /// Stores a new campaign (every step pending).
    pub async fn put_campaign(&self, campaign: NewCampaign) -> Result<()> {
        non_empty("campaign.id", &campaign.id)?;
        self.write_done(Command::PutCampaign(campaign)).await
    }

    /// Moves a campaign step to a new state.
    pub async fn update_step(
        &self,
        campaign_id: &str,
        step: &str,
        state: StepState,
        message: &str,
    ) -> Result<()> {
        self.write_done(Command::UpdateStep {
            campaign_id: campaign_id.into(),
            step: step.into(),
            state,
            message: message.into(),
        })
        .await
    }

    /// Creates or updates a task of a step.
    pub async fn update_task(&self, campaign_id: &str, step: &str, task: TaskUpdate) -> Result<()> {
        self.write_done(Command::UpdateTask {
            campaign_id: campaign_id.into(),
            step: step.into(),
            task,
        })
        .await
    }

    /// Ends a campaign.
    pub async fn finish_campaign(
        &self,
        campaign_id: &str,
        state: CampaignState,
        message: &str,
    ) -> Result<()> {
        self.write_done(Command::FinishCampaign {
            campaign_id: campaign_id.into(),
            state,
            message: message.into(),
        })
        .await
    }

    /// One campaign and its progress (linearizable).
    pub async fn campaign(&self, id: &str) -> Result<CampaignRecord> {
        self.read(|v, _| v.campaign(id))
            .await?
            .ok_or_else(|| Error::not_found("campaign", id))
    }

    /// Every campaign, oldest first (linearizable).
    pub async fn campaigns(&self) -> Result<Vec<CampaignRecord>> {
        self.read(|v, _| v.campaigns()).await
    }

    // ----- Audit -----

    /// Audit entries that match, oldest first.
    pub async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        self.read(|v, _| v.audit(query)).await
    }

    // ----- Locks -----

    /// Every key with a live lease or an operator hold (linearizable).
    pub async fn locks(&self) -> Result<Vec<LockInfo>> {
        self.read(|v, now| v.locks(now)).await
    }

    // ----- Membership and status -----

    /// Adds a node as a learner and waits until it has caught up.
    pub async fn add_learner(&self, id: NodeId, addr: &str, region: Option<String>) -> Result<()> {
        non_empty("node.addr", addr)?;
        self.node
            .add_learner(id, addr.into(), region)
            .await
            .map_err(membership_error)
    }

    /// Promotes a learner to voter.
    pub async fn promote(&self, id: NodeId) -> Result<()> {
        self.node.promote(id).await.map_err(membership_error)
    }

    /// Removes a node from the cluster.
    pub async fn remove_node(&self, id: NodeId) -> Result<()> {
        self.node.remove(id).await.map_err(membership_error)
    }

    /// Term, leader, last applied, log size, members and peers, as this node sees them.
    pub async fn status(&self) -> NodeStatus {
        self.node.status().await
    }
}

fn membership_error(e: ConsensusError) -> Error {
    Error::from(e).context("changing the cluster membership")
}

fn unexpected(r: Response) -> Error {
    Error::other(
        ire_core::ErrorClass::Fatal,
        format!("the state machine answered {r:?}, which this request does not expect"),
        None,
    )
}

#[async_trait]
impl LockService for ConsensusClient {
    async fn acquire(&self, key: &ResourceKey, holder: &str, ttl: Duration) -> Result<LockOutcome> {
        non_empty("holder", holder)?;
        match self
            .write(Command::Acquire {
                key: key.clone(),
                holder: holder.into(),
                ttl,
            })
            .await?
        {
            Response::Lock(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    /// Waits in the key's replicated queue: the holder's release (or the lease's lapse) hands
    /// the lease to the first waiter in the same commit (see [`RaftNode::acquire_wait`]).
    async fn acquire_wait(
        &self,
        key: &ResourceKey,
        holder: &str,
        ttl: Duration,
        wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<LockOutcome> {
        non_empty("holder", holder)?;
        self.node
            .acquire_wait(key, holder, ttl, wait, cancel)
            .await
            .map_err(|e| Error::from(e).context("consensus acquire-or-wait"))
    }

    async fn renew(
        &self,
        key: &ResourceKey,
        token: FencingToken,
        ttl: Duration,
    ) -> Result<LeaseGrant> {
        match self
            .write(Command::Renew {
                key: key.clone(),
                token,
                ttl,
            })
            .await?
        {
            Response::Lease(grant) => Ok(grant),
            other => Err(unexpected(other)),
        }
    }

    async fn release(&self, key: &ResourceKey, token: FencingToken) -> Result<()> {
        self.write_done(Command::Release {
            key: key.clone(),
            token,
        })
        .await
    }

    async fn hold(&self, key: &ResourceKey, by: &str, reason: &str) -> Result<()> {
        non_empty("hold.by", by)?;
        self.write_done(Command::Hold {
            key: key.clone(),
            by: by.into(),
            reason: reason.into(),
        })
        .await
    }

    async fn unhold(&self, key: &ResourceKey) -> Result<()> {
        self.write_done(Command::Unhold { key: key.clone() }).await
    }

    async fn lock_info(&self, key: &ResourceKey) -> Result<LockInfo> {
        self.read(|v, now| v.lock_info(key, now)).await
    }
}

#[async_trait]
impl FaultLedger for ConsensusClient {
    async fn record_fault(&self, entry: FaultEntry) -> Result<()> {
        non_empty("fault.id", &entry.id)?;
        self.write_done(Command::RecordFault(Json(Box::new(entry))))
            .await
    }

    async fn end_action(&self, fault_id: &str, token: FencingToken) -> Result<()> {
        self.write_done(Command::EndAction {
            fault_id: fault_id.into(),
            token,
        })
        .await
    }

    async fn mark_reverted(&self, fault_id: &str, by: &str, token: FencingToken) -> Result<()> {
        non_empty("mark_reverted.by", by)?;
        self.write_done(Command::MarkReverted {
            fault_id: fault_id.into(),
            by: by.into(),
            token,
        })
        .await
    }

    async fn mark_revert_failed(
        &self,
        fault_id: &str,
        error: &str,
        token: FencingToken,
    ) -> Result<()> {
        self.write_done(Command::MarkRevertFailed {
            fault_id: fault_id.into(),
            error: error.into(),
            token,
        })
        .await
    }

    /// Proposes [`Command::ClaimOrphan`]: the leader stamps it with its lease clock, so the
    /// claim is judged on the leader's clock, never the caller's.
    async fn claim_orphan(
        &self,
        fault_id: &str,
        claimant: &str,
        ttl: Duration,
    ) -> Result<LeaseGrant> {
        non_empty("claim_orphan.claimant", claimant)?;
        match self
            .write(Command::ClaimOrphan {
                fault_id: fault_id.into(),
                claimant: claimant.into(),
                ttl,
            })
            .await?
        {
            Response::Lease(grant) => Ok(grant),
            other => Err(unexpected(other)),
        }
    }

    /// A linearizable read, judged at the leader's clock (see [`RaftNode::read`]).
    async fn claimable_orphans(&self, query: &OrphanQuery) -> Result<Vec<FaultEntry>> {
        self.read(|v, now| v.claimable_orphans(now, query)).await
    }

    async fn fault(&self, fault_id: &str) -> Result<FaultEntry> {
        self.read(|v, _| v.fault(fault_id))
            .await?
            .ok_or_else(|| Error::not_found("fault", fault_id))
    }

    async fn query_faults(&self, query: &FaultQuery) -> Result<Vec<FaultEntry>> {
        self.read(|v, _| v.faults(query)).await
    }
}

#[async_trait]
impl AuditLogger for ConsensusClient {
    async fn log_action(&self, entry: AuditEntry) -> Result<()> {
        self.write_done(Command::AppendAudit(Json(Box::new(entry))))
            .await
    }
}
