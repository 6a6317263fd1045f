//! The replicated state machine: lease locks, the ledger (executions and faults),
//! campaigns and the audit log, kept in sled trees so that a large ledger is on disk,
//! not in memory.
//!
//! [`locks`], [`ledger`] and [`campaigns`] hold the pure rules; [`apply`] runs a batch of
//! raft entries through them inside one sled transaction (which also moves
//! `last_applied`); [`view`] answers queries from the trees.

pub mod apply;
pub mod campaigns;
pub mod kv;
pub mod ledger;
pub mod locks;
pub mod view;

pub use locks::{Lease, LockRow};
pub use view::StateView;

use crate::error::{StoreError, StoreResult};

/// The state machine's sled trees.
#[derive(Clone)]
pub struct Tables {
    /// `last_applied`, `membership`, `clock`, the current snapshot and the install marker.
    pub meta: sled::Tree,
    /// Resource key -> [`LockRow`].
    pub locks: sled::Tree,
    /// Execution id -> `Json<ExecutionRecord>`.
    pub executions: sled::Tree,
    /// `start time, id` -> ().
    pub exec_by_time: sled::Tree,
    /// `resource id or key, NUL, start time, id` -> ().
    pub exec_by_resource: sled::Tree,
    /// `campaign, NUL, start time, id` -> ().
    pub exec_by_campaign: sled::Tree,
    /// Fault id -> `Json<FaultEntry>`.
    pub faults: sled::Tree,
    /// `injected time, id` -> ().
    pub fault_by_time: sled::Tree,
    /// `resource key, NUL, injected time, id` -> ().
    pub fault_by_resource: sled::Tree,
    /// `campaign, NUL, injected time, id` -> ().
    pub fault_by_campaign: sled::Tree,
    /// Ids of faults still active (injected or revert failed) -> ().
    pub faults_active: sled::Tree,
    /// Campaign id -> [`crate::types::CampaignRecord`].
    pub campaigns: sled::Tree,
    /// `timestamp, log index` -> `Json<AuditEntry>`.
    pub audit: sled::Tree,
    /// ire-core's `StorageBackend`: `collection, NUL, key` -> the value's JSON text.
    pub kv: sled::Tree,
}

/// Keys of the meta tree.
pub mod meta_keys {
    /// The log id of the last applied entry.
    pub const LAST_APPLIED: &[u8] = b"last_applied";
    /// The last applied membership.
    pub const MEMBERSHIP: &[u8] = b"membership";
    /// The largest leader stamp applied (the state machine's clock).
    pub const CLOCK: &[u8] = b"clock";
    /// The current snapshot's metadata and file name.
    pub const SNAPSHOT: &[u8] = b"snapshot";
    /// Set while a snapshot is being installed; found at open, the install is redone.
    pub const INSTALLING: &[u8] = b"installing";
    /// A counter that makes snapshot ids unique.
    pub const SNAPSHOT_SEQ: &[u8] = b"snapshot_seq";
}

impl Tables {
    /// The names of the data trees (everything a snapshot carries), in [`Tables::data`] order.
    pub const DATA_NAMES: [&'static str; 13] = [
        "sm_locks",
        "sm_executions",
        "sm_exec_by_time",
        "sm_exec_by_resource",
        "sm_exec_by_campaign",
        "sm_faults",
        "sm_fault_by_time",
        "sm_fault_by_resource",
        "sm_fault_by_campaign",
        "sm_faults_active",
        "sm_campaigns",
        "sm_audit",
        // Appended last: a snapshot names its trees by index, so older snapshots still load.
        "sm_kv",
    ];

    /// Opens (or creates) the trees in `db`.
    pub fn open(db: &sled::Db) -> StoreResult<Self> {
        let t = |name: &str| db.open_tree(name).map_err(StoreError::sled("open tree"));
        let n = Self::DATA_NAMES;
        Ok(Tables {
            meta: t("sm_meta")?,
            locks: t(n[0])?,
            executions: t(n[1])?,
            exec_by_time: t(n[2])?,
            exec_by_resource: t(n[3])?,
            exec_by_campaign: t(n[4])?,
            faults: t(n[5])?,
            fault_by_time: t(n[6])?,
            fault_by_resource: t(n[7])?,
            fault_by_campaign: t(n[8])?,
            faults_active: t(n[9])?,
            campaigns: t(n[10])?,
            audit: t(n[11])?,
            kv: t(n[12])?,
        })
    }

    /// The data trees, in [`Tables::DATA_NAMES`] order.
    pub fn data(&self) -> [&sled::Tree; 13] {
        [
            &self.locks,
            &self.executions,
            &self.exec_by_time,
            &self.exec_by_resource,
            &self.exec_by_campaign,
            &self.faults,
            &self.fault_by_time,
            &self.fault_by_resource,
            &self.fault_by_campaign,
            &self.faults_active,
            &self.campaigns,
            &self.audit,
            &self.kv,
        ]
    }

    /// Every tree, meta first then the data trees: what one apply transaction spans.
    pub fn all(&self) -> Vec<sled::Tree> {
        let mut v = vec![self.meta.clone()];
        v.extend(self.data().into_iter().cloned());
        v
    }
}

#[cfg(test)]
mod tests;
