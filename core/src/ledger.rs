//! The fault ledger: every fault is recorded, with what is needed to revert it, before it
//! is injected; so a fault whose injecting node died can be reverted by another.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::lock::{FencingToken, LeaseGrant};
use crate::plugin::{FaultKind, Snapshot};
use crate::resource::ResourceKey;

/// Where a fault is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum FaultState {
    /// Recorded, about to be injected or injected, and not reverted (or, for an action,
    /// not ended).
    Injected,
    /// Reverted (a sustained fault).
    Reverted {
        /// When.
        at: DateTime<Utc>,
        /// Who reverted it (node).
        by: String,
    },
    /// A revert was tried and failed; a sustained fault is still active.
    RevertFailed {
        /// When the last attempt failed.
        at: DateTime<Utc>,
        /// Why.
        error: String,
    },
    /// The action is over (an action's entry; nothing to revert).
    Ended {
        /// When.
        at: DateTime<Utc>,
    },
}

impl FaultState {
    /// True while the entry is open: injected, or its revert failed. Only an open sustained
    /// fault is active (see [`FaultEntry::is_active`]).
    pub fn is_open(&self) -> bool {
        matches!(self, FaultState::Injected | FaultState::RevertFailed { .. })
    }

    /// The state's name, for queries.
    pub fn name(&self) -> &'static str {
        match self {
            FaultState::Injected => "injected",
            FaultState::Reverted { .. } => "reverted",
            FaultState::RevertFailed { .. } => "revert-failed",
            FaultState::Ended { .. } => "ended",
        }
    }
}

/// One fault, as the ledger knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultEntry {
    /// Fault id.
    pub id: String,
    /// The execution that injected it.
    pub execution_id: String,
    /// Its campaign.
    #[serde(default)]
    pub campaign: Option<String>,
    /// Its step.
    #[serde(default)]
    pub step: Option<String>,
    /// The faulted resource.
    pub resource: ResourceKey,
    /// The plugin that injected it (and will revert it).
    pub plugin: String,
    /// The node that injected it.
    pub node: String,
    /// Action or sustained fault, as its plugin declares (entries recorded before kinds
    /// existed are sustained). An action (kill, restart, delete) is closed with
    /// [`FaultLedger::end_action`] and is never active or orphaned; a sustained fault (pause,
    /// network fault, stress, scale) is active until reverted, and an orphan once its lease
    /// has expired.
    #[serde(default)]
    pub kind: FaultKind,
    /// The lease it was injected under.
    pub token: FencingToken,
    /// What the plugin needs to revert it.
    #[serde(default)]
    pub snapshot: Option<Snapshot>,
    /// When it was recorded.
    pub injected_at: DateTime<Utc>,
    /// How long it is meant to last (None: until the step reverts it).
    #[serde(default, with = "humantime_serde")]
    pub duration: Option<Duration>,
    /// Where it is in its life.
    pub state: FaultState,
}

impl FaultEntry {
    /// True while the fault is in force: a sustained fault, injected or whose revert failed.
    /// An action is never active.
    pub fn is_active(&self) -> bool {
        self.kind == FaultKind::Sustained && self.state.is_open()
    }
}

/// Which faults to return.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FaultQuery {
    /// On this resource.
    #[serde(default)]
    pub resource: Option<ResourceKey>,
    /// In this campaign.
    #[serde(default)]
    pub campaign: Option<String>,
    /// Only active faults (sustained faults injected or whose revert failed).
    #[serde(default)]
    pub active_only: bool,
    /// Injected by this node.
    #[serde(default)]
    pub node: Option<String>,
    /// Injected not before.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// Injected not after.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// At most this many.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Skip this many first.
    #[serde(default)]
    pub offset: usize,
}

impl FaultQuery {
    /// True when the entry meets every criterion (pagination aside).
    pub fn matches(&self, f: &FaultEntry) -> bool {
        self.resource.as_ref().is_none_or(|r| r == &f.resource)
            && self
                .campaign
                .as_ref()
                .is_none_or(|c| f.campaign.as_ref() == Some(c))
            && (!self.active_only || f.is_active())
            && self.node.as_ref().is_none_or(|n| n == &f.node)
            && self.since.is_none_or(|t| f.injected_at >= t)
            && self.until.is_none_or(|t| f.injected_at <= t)
    }
}

/// Which orphans [`FaultLedger::claimable_orphans`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OrphanQuery {
    /// Only faults on resources of these adapter instances (the first segment of the
    /// resource key); `None`: every adapter.
    #[serde(default)]
    pub adapters: Option<Vec<String>>,
    /// At most this many, oldest first.
    #[serde(default)]
    pub limit: Option<usize>,
}

impl OrphanQuery {
    /// True when the fault's resource is one the query asks about.
    pub fn matches(&self, f: &FaultEntry) -> bool {
        self.adapters
            .as_ref()
            .is_none_or(|a| a.iter().any(|a| a == f.resource.adapter()))
    }
}

/// The record of injected faults.
///
/// Every write that settles a fault carries a fencing token, which must be the current lease
/// of the fault's resource: the lease the fault was injected under, or the lease a node took
/// by claiming the fault as an orphan. So a node whose lease was taken over can no longer
/// settle the fault, and two nodes never both revert it.
#[async_trait]
pub trait FaultLedger: Send + Sync + 'static {
    /// Records a fault (an action or a sustained fault) before it is injected. Refused
    /// (`Conflict`) unless `entry.token` is the current, unexpired lease of the resource and
    /// no operator hold is on it; recording the identical entry again is accepted.
    async fn record_fault(&self, entry: FaultEntry) -> Result<()>;
    /// Closes an action's entry once the action is over. `token` must be the resource's
    /// current lease; ending it again is accepted; a sustained fault is refused (`Invalid`:
    /// it is reverted, not ended).
    async fn end_action(&self, fault_id: &str, token: FencingToken) -> Result<()>;
    /// Marks a sustained fault reverted by node `by`. `token` must be the resource's current
    /// lease (the injector's, or an orphan claimant's: expired is fine, superseded is not);
    /// marking it again is accepted.
    async fn mark_reverted(&self, fault_id: &str, by: &str, token: FencingToken) -> Result<()>;
    /// Marks a revert attempt of a sustained fault failed (it stays active). `token` as for
    /// [`FaultLedger::mark_reverted`]; refused once the fault is reverted.
    async fn mark_revert_failed(
        &self,
        fault_id: &str,
        error: &str,
        token: FencingToken,
    ) -> Result<()>;
    /// Claims an orphan: refused (`Conflict`) unless the fault is active and no lease is in
    /// force on its resource (expired or released, judged on the lease service's clock: the
    /// raft leader's). Grants the resource's lease to `claimant` for `ttl` with a new fencing
    /// token, in the same step; the claimant reverts the fault under that token.
    async fn claim_orphan(
        &self,
        fault_id: &str,
        claimant: &str,
        ttl: Duration,
    ) -> Result<LeaseGrant>;
    /// The active faults that [`FaultLedger::claim_orphan`] would grant now, oldest first:
    /// what a node's orphan scanner asks for (it then keeps those its adapters reach).
    async fn claimable_orphans(&self, query: &OrphanQuery) -> Result<Vec<FaultEntry>>;
    /// One fault.
    async fn fault(&self, fault_id: &str) -> Result<FaultEntry>;
    /// Faults that match, oldest first.
    async fn query_faults(&self, query: &FaultQuery) -> Result<Vec<FaultEntry>>;
}
