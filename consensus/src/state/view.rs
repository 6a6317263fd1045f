//! Read access to the applied state: every query the node and the HTTP layer need, answered
//! from the sled trees through the indexes, with pagination.

use chrono::{DateTime, Utc};
use ire_core::{
    AuditEntry, ExecutionQuery, ExecutionRecord, FaultEntry, FaultQuery, LockInfo, OrphanQuery,
    ResourceKey,
};

use super::locks::LockRow;
use super::{kv, meta_keys, Tables};
use crate::error::{StoreError, StoreResult};
use crate::store::codec::{decode, time_range, SEP};
use crate::types::{AuditQuery, CampaignRecord, Json, LogId, StoredMembership};

/// A read-only view of the applied state.
#[derive(Clone)]
pub struct StateView {
    pub(crate) tables: Tables,
}

/// Sizes of the state machine's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TableSizes {
    /// Keys with a lock row.
    pub locks: usize,
    /// Execution records.
    pub executions: usize,
    /// Fault entries.
    pub faults: usize,
    /// Faults still active.
    pub active_faults: usize,
    /// Campaigns.
    pub campaigns: usize,
    /// Audit entries.
    pub audit: usize,
    /// Values of ire-core's `StorageBackend`, every collection together.
    #[serde(default)]
    pub stored_values: usize,
}

fn sled_err(op: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
    StoreError::sled(op)
}

/// A stored value: JSON text, checked when it was applied.
fn parse_stored(bytes: &[u8]) -> StoreResult<serde_json::Value> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("a stored value is not JSON: {e}")))
}

/// Skips `offset` matches and takes at most `limit`.
fn paginate<T>(
    items: impl Iterator<Item = StoreResult<T>>,
    matches: impl Fn(&T) -> bool,
    offset: usize,
    limit: Option<usize>,
) -> StoreResult<Vec<T>> {
    let mut out = Vec::new();
    let mut skipped = 0;
    for item in items {
        let item = item?;
        if !matches(&item) {
            continue;
        }
        if skipped < offset {
            skipped += 1;
            continue;
        }
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        out.push(item);
    }
    Ok(out)
}

/// The id at the end of an index key: after `prefix NUL time` or after `time`.
fn id_of(key: &[u8], prefixed: bool) -> StoreResult<&str> {
    let start = if prefixed {
        key.iter()
            .position(|b| *b == SEP)
            .ok_or_else(|| StoreError::Corrupt("index key without separator".into()))?
            + 1
            + 8
    } else {
        8
    };
    key.get(start..)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(|| StoreError::Corrupt("index key with a bad id".into()))
}

impl StateView {
    /// A view of `tables`.
    pub fn new(tables: Tables) -> Self {
        StateView { tables }
    }

    /// The log id of the last applied entry.
    pub fn last_applied(&self) -> StoreResult<Option<LogId>> {
        self.meta("last applied", meta_keys::LAST_APPLIED)
    }

    /// The last applied membership.
    pub fn membership(&self) -> StoreResult<StoredMembership> {
        Ok(self
            .meta("membership", meta_keys::MEMBERSHIP)?
            .unwrap_or_default())
    }

    /// The state machine's clock: the largest leader stamp applied.
    pub fn clock(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.meta("clock", meta_keys::CLOCK)
    }

    fn meta<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        key: &[u8],
    ) -> StoreResult<Option<T>> {
        match self.tables.meta.get(key).map_err(sled_err("read meta"))? {
            Some(v) => decode(what, &v).map(Some),
            None => Ok(None),
        }
    }

    /// The stored lock row of `key` (the last lease, even expired, and any hold).
    pub fn lock_row(&self, key: &ResourceKey) -> StoreResult<LockRow> {
        match self
            .tables
            .locks
            .get(key.as_str().as_bytes())
            .map_err(sled_err("read lock"))?
        {
            Some(v) => LockRow::decode(&v),
            None => Ok(LockRow::default()),
        }
    }

    /// What is known about `key`'s lock as of `now` (the lease only if unexpired at `now`).
    pub fn lock_info(&self, key: &ResourceKey, now: DateTime<Utc>) -> StoreResult<LockInfo> {
        Ok(self.lock_row(key)?.info(key, now))
    }

    /// Every key with a lease unexpired at `now` or an operator hold, by key.
    pub fn locks(&self, now: DateTime<Utc>) -> StoreResult<Vec<LockInfo>> {
        let mut out = Vec::new();
        for kv in self.tables.locks.iter() {
            let (k, v) = kv.map_err(sled_err("scan locks"))?;
            let key: ResourceKey = std::str::from_utf8(&k)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| StoreError::Corrupt("lock key is not a resource key".into()))?;
            let row = LockRow::decode(&v)?;
            let info = row.info(&key, now);
            if info.lease.is_some() || info.hold.is_some() {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// One execution record.
    pub fn execution(&self, id: &str) -> StoreResult<Option<ExecutionRecord>> {
        match self
            .tables
            .executions
            .get(id.as_bytes())
            .map_err(sled_err("read execution"))?
        {
            Some(v) => Ok(Some(decode::<Json<ExecutionRecord>>("execution", &v)?.0)),
            None => Ok(None),
        }
    }

    /// Execution records that match, oldest start first, paginated. Uses the resource index
    /// when one resource is asked for, else the campaign index, else the time index.
    pub fn executions(&self, q: &ExecutionQuery) -> StoreResult<Vec<ExecutionRecord>> {
        let (tree, prefix) = match (q.resource_ids.as_slice(), &q.campaign) {
            ([one], _) => (&self.tables.exec_by_resource, Some(one.as_str())),
            (_, Some(c)) => (&self.tables.exec_by_campaign, Some(c.as_str())),
            _ => (&self.tables.exec_by_time, None),
        };
        let (from, to) = time_range(prefix, q.start_time, q.end_time);
        let records = tree.range(from..=to).map(|kv| {
            let (k, _) = kv.map_err(sled_err("scan execution index"))?;
            let id = id_of(&k, prefix.is_some())?;
            self.execution(id)?
                .ok_or_else(|| StoreError::Corrupt(format!("index names missing execution {id}")))
        });
        paginate(records, |r| q.matches(r), q.offset, q.limit)
    }

    /// One fault.
    pub fn fault(&self, id: &str) -> StoreResult<Option<FaultEntry>> {
        match self
            .tables
            .faults
            .get(id.as_bytes())
            .map_err(sled_err("read fault"))?
        {
            Some(v) => Ok(Some(decode::<Json<FaultEntry>>("fault", &v)?.0)),
            None => Ok(None),
        }
    }

    /// Faults that match, oldest first, paginated.
    pub fn faults(&self, q: &FaultQuery) -> StoreResult<Vec<FaultEntry>> {
        if q.active_only && q.resource.is_none() && q.campaign.is_none() {
            // The active set is small: read it whole and order it by time.
            let mut all = self.active_faults()?;
            all.sort_by(|a, b| (a.injected_at, &a.id).cmp(&(b.injected_at, &b.id)));
            return paginate(all.into_iter().map(Ok), |f| q.matches(f), q.offset, q.limit);
        }
        let (tree, prefix) = match (&q.resource, &q.campaign) {
            (Some(r), _) => (&self.tables.fault_by_resource, Some(r.as_str())),
            (None, Some(c)) => (&self.tables.fault_by_campaign, Some(c.as_str())),
            (None, None) => (&self.tables.fault_by_time, None),
        };
        let (from, to) = time_range(prefix, q.since, q.until);
        let faults = tree.range(from..=to).map(|kv| {
            let (k, _) = kv.map_err(sled_err("scan fault index"))?;
            let id = id_of(&k, prefix.is_some())?;
            self.fault(id)?
                .ok_or_else(|| StoreError::Corrupt(format!("index names missing fault {id}")))
        });
        paginate(faults, |f| q.matches(f), q.offset, q.limit)
    }

    /// Every fault still active (sustained faults injected, or whose revert failed).
    pub fn active_faults(&self) -> StoreResult<Vec<FaultEntry>> {
        let mut out = Vec::new();
        for kv in self.tables.faults_active.iter() {
            let (k, _) = kv.map_err(sled_err("scan active faults"))?;
            let id = std::str::from_utf8(&k)
                .map_err(|_| StoreError::Corrupt("active fault id is not UTF-8".into()))?;
            out.push(
                self.fault(id)?
                    .ok_or_else(|| StoreError::Corrupt(format!("active fault {id} missing")))?,
            );
        }
        Ok(out)
    }

    /// Active faults that an orphan claim would be granted at `now` (no lease in force on
    /// their resource: it expired or was released), oldest first: what a node's scanner
    /// claims and reverts. `now` must be the leader's lease clock (see `RaftNode::read`).
    pub fn claimable_orphans(
        &self,
        now: DateTime<Utc>,
        q: &OrphanQuery,
    ) -> StoreResult<Vec<FaultEntry>> {
        let mut out = Vec::new();
        for f in self.active_faults()? {
            if q.matches(&f) && self.lock_row(&f.resource)?.live_lease(now).is_none() {
                out.push(f);
            }
        }
        out.sort_by(|a, b| (a.injected_at, &a.id).cmp(&(b.injected_at, &b.id)));
        out.truncate(q.limit.unwrap_or(usize::MAX));
        Ok(out)
    }

    /// One campaign.
    pub fn campaign(&self, id: &str) -> StoreResult<Option<CampaignRecord>> {
        match self
            .tables
            .campaigns
            .get(id.as_bytes())
            .map_err(sled_err("read campaign"))?
        {
            Some(v) => decode("campaign", &v).map(Some),
            None => Ok(None),
        }
    }

    /// Every campaign, oldest submission first.
    pub fn campaigns(&self) -> StoreResult<Vec<CampaignRecord>> {
        let mut out = Vec::new();
        for kv in self.tables.campaigns.iter() {
            let (_, v) = kv.map_err(sled_err("scan campaigns"))?;
            out.push(decode::<CampaignRecord>("campaign", &v)?);
        }
        out.sort_by(|a, b| (a.submitted_at, &a.id).cmp(&(b.submitted_at, &b.id)));
        Ok(out)
    }

    /// Audit entries that match, oldest first, paginated.
    pub fn audit(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let (from, to) = time_range(None, q.since, q.until);
        let entries = self.tables.audit.range(from..=to).map(|kv| {
            let (_, v) = kv.map_err(sled_err("scan audit"))?;
            Ok(decode::<Json<AuditEntry>>("audit entry", &v)?.0)
        });
        paginate(entries, |e| q.matches(e), q.offset, q.limit)
    }

    /// The stored value of `key` in a storage `collection`.
    pub fn stored_value(
        &self,
        collection: &str,
        key: &str,
    ) -> StoreResult<Option<serde_json::Value>> {
        match self
            .tables
            .kv
            .get(kv::row_key(collection, key))
            .map_err(sled_err("read stored value"))?
        {
            Some(v) => parse_stored(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Every value of a storage `collection` that `keep` accepts, in key order.
    pub fn stored_values(
        &self,
        collection: &str,
        keep: impl Fn(&serde_json::Value) -> bool,
    ) -> StoreResult<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        for kv in self
            .tables
            .kv
            .scan_prefix(kv::collection_prefix(collection))
        {
            let (_, v) = kv.map_err(sled_err("scan stored values"))?;
            let value = parse_stored(&v)?;
            if keep(&value) {
                out.push(value);
            }
        }
        Ok(out)
    }

    /// How many rows each table holds.
    pub fn sizes(&self) -> TableSizes {
        TableSizes {
            locks: self.tables.locks.len(),
            executions: self.tables.executions.len(),
            faults: self.tables.faults.len(),
            active_faults: self.tables.faults_active.len(),
            campaigns: self.tables.campaigns.len(),
            audit: self.tables.audit.len(),
            stored_values: self.tables.kv.len(),
        }
    }
}
