//! The fault ledger: every fault is recorded, with what is needed to revert it, before it
//! is injected; so a fault whose injecting node died can be reverted by another.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::lock::FencingToken;
use crate::plugin::Snapshot;
use crate::resource::ResourceKey;

/// Where a fault is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum FaultState {
    /// Recorded, about to be injected or injected, and not reverted.
    Injected,
    /// Reverted.
    Reverted {
        /// When.
        at: DateTime<Utc>,
        /// Who reverted it (node).
        by: String,
    },
    /// A revert was tried and failed; it is still active.
    RevertFailed {
        /// When the last attempt failed.
        at: DateTime<Utc>,
        /// Why.
        error: String,
    },
}

impl FaultState {
    /// True while the fault may still be active (injected, or its revert failed).
    pub fn is_active(&self) -> bool {
        !matches!(self, FaultState::Reverted { .. })
    }

    /// The state's name, for queries.
    pub fn name(&self) -> &'static str {
        match self {
            FaultState::Injected => "injected",
            FaultState::Reverted { .. } => "reverted",
            FaultState::RevertFailed { .. } => "revert-failed",
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

/// Which faults to return.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FaultQuery {
    /// On this resource.
    #[serde(default)]
    pub resource: Option<ResourceKey>,
    /// In this campaign.
    #[serde(default)]
    pub campaign: Option<String>,
    /// Only active faults (injected or revert failed).
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
            && (!self.active_only || f.state.is_active())
            && self.node.as_ref().is_none_or(|n| n == &f.node)
            && self.since.is_none_or(|t| f.injected_at >= t)
            && self.until.is_none_or(|t| f.injected_at <= t)
    }
}

/// The record of injected faults.
#[async_trait]
pub trait FaultLedger: Send + Sync + 'static {
    /// Records a fault before it is injected; fails if the token is stale.
    async fn record_fault(&self, entry: FaultEntry) -> Result<()>;
    /// Marks a fault reverted.
    async fn mark_reverted(&self, fault_id: &str, by: &str) -> Result<()>;
    /// Marks a revert attempt failed.
    async fn mark_revert_failed(&self, fault_id: &str, error: &str) -> Result<()>;
    /// One fault.
    async fn fault(&self, fault_id: &str) -> Result<FaultEntry>;
    /// Faults that match, oldest first.
    async fn query_faults(&self, query: &FaultQuery) -> Result<Vec<FaultEntry>>;
}
