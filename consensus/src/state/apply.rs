//! Applying raft entries: one sled transaction per batch runs every command through the
//! rules and moves `last_applied`, so a crash leaves either all of a batch or none of it.

use chrono::{DateTime, Utc};
use ire_core::{
    AuditEntry, ExecutionRecord, FaultEntry, FaultState, FencingToken, LeaseGrant, ResourceKey,
};
use openraft::EntryPayload;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;

use super::locks::{self, LockRow};
use super::meta_keys;
use super::{campaigns, kv, ledger, Tables};
use crate::error::{StoreError, StoreResult};
use crate::store::codec::{decode, encode, index_key, time_key};
use crate::store::export::{BeforeImages, TxTree};
use crate::types::{
    CampaignRecord, Command, Entry, Json, LogId, Rejection, Response, StoredMembership,
};

type Abort = ConflictableTransactionError<StoreError>;
type TxResult<T> = Result<T, Abort>;

fn abort(e: StoreError) -> Abort {
    ConflictableTransactionError::Abort(e)
}

/// The trees of one transaction, by role. Writes to the data trees record before-images
/// while a snapshot export runs (`store::export`).
struct Tx<'a> {
    meta: TxTree<'a>,
    locks: TxTree<'a>,
    executions: TxTree<'a>,
    exec_by_time: TxTree<'a>,
    exec_by_resource: TxTree<'a>,
    exec_by_campaign: TxTree<'a>,
    faults: TxTree<'a>,
    fault_by_time: TxTree<'a>,
    fault_by_resource: TxTree<'a>,
    fault_by_campaign: TxTree<'a>,
    faults_active: TxTree<'a>,
    campaigns: TxTree<'a>,
    audit: TxTree<'a>,
    kv: TxTree<'a>,
}

impl<'a> Tx<'a> {
    fn new(t: &'a [TransactionalTree], images: &'a BeforeImages) -> Self {
        // Same order as `Tables::all`: the meta tree, then the data trees in snapshot order.
        let data = |i: usize| TxTree::new(&t[i + 1], images, Some(i));
        Tx {
            meta: TxTree::new(&t[0], images, None),
            locks: data(0),
            executions: data(1),
            exec_by_time: data(2),
            exec_by_resource: data(3),
            exec_by_campaign: data(4),
            faults: data(5),
            fault_by_time: data(6),
            fault_by_resource: data(7),
            fault_by_campaign: data(8),
            faults_active: data(9),
            campaigns: data(10),
            audit: data(11),
            kv: data(12),
        }
    }

    fn get<T: serde::de::DeserializeOwned>(
        tree: TxTree<'_>,
        what: &'static str,
        key: &[u8],
    ) -> TxResult<Option<T>> {
        match tree.get(key)? {
            Some(v) => decode(what, &v).map(Some).map_err(abort),
            None => Ok(None),
        }
    }

    fn put<T: serde::Serialize>(
        tree: TxTree<'_>,
        what: &'static str,
        key: &[u8],
        value: &T,
    ) -> TxResult<()> {
        tree.insert(key, encode(what, value).map_err(abort)?)?;
        Ok(())
    }

    fn lock_row(&self, key: &ResourceKey) -> TxResult<LockRow> {
        match self.locks.get(key.as_str().as_bytes())? {
            Some(v) => LockRow::decode(&v).map_err(abort),
            None => Ok(LockRow::default()),
        }
    }

    fn put_lock(&self, key: &ResourceKey, row: &LockRow) -> TxResult<()> {
        self.locks
            .insert(key.as_str().as_bytes(), row.encode().map_err(abort)?)?;
        Ok(())
    }
}

/// What applying a batch changed in the meta tree.
pub struct Applied {
    /// One response per entry.
    pub responses: Vec<Response>,
    /// The last applied log id.
    pub last_applied: Option<LogId>,
    /// Leases handed to queued waiters by this batch, in order.
    pub handoffs: Vec<LeaseGrant>,
}

/// A command's answer, with a refusal logged and turned into [`Response::Rejected`].
fn answer_of(command: &Command, index: u64, answer: Result<Response, Rejection>) -> Response {
    answer.unwrap_or_else(|rejection| {
        tracing::debug!(
            component = "consensus",
            index,
            command = command.name(),
            %rejection,
            "command refused"
        );
        Response::Rejected(rejection)
    })
}

/// Applies `entries` in one transaction (all or nothing) and returns one response each.
pub fn apply_batch(tables: &Tables, entries: &[Entry]) -> StoreResult<Applied> {
    apply_batch_recording(tables, entries, &BeforeImages::default())
}

/// [`apply_batch`], recording before-images in `images` while a snapshot export runs.
pub fn apply_batch_recording(
    tables: &Tables,
    entries: &[Entry],
    images: &BeforeImages,
) -> StoreResult<Applied> {
    let trees = tables.all();
    let result = trees.as_slice().transaction(|t| {
        let tx = Tx::new(t, images);
        let mut clock: Option<DateTime<Utc>> = Tx::get(tx.meta, "clock", meta_keys::CLOCK)?;
        let mut responses = Vec::with_capacity(entries.len());
        let mut handoffs = Vec::new();
        let mut last = None;
        for entry in entries {
            let response = match &entry.payload {
                EntryPayload::Blank => Response::Internal,
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m.clone());
                    Tx::put(tx.meta, "membership", meta_keys::MEMBERSHIP, &stored)?;
                    Response::Internal
                }
                EntryPayload::Normal(req) => {
                    // The clock never runs backwards, whichever leader stamped the entry.
                    let now = clock.map_or(req.now, |c| c.max(req.now));
                    clock = Some(now);
                    let index = entry.log_id.index;
                    match &req.command {
                        Command::Batch(commands) => {
                            let mut answers = Vec::with_capacity(commands.len());
                            for (position, command) in commands.iter().enumerate() {
                                let answer = if matches!(command, Command::Batch(_)) {
                                    Err(Rejection::invalid("batch", "a batch cannot hold a batch"))
                                } else if position >= locks::MAX_COMMANDS_PER_ENTRY {
                                    Err(Rejection::invalid(
                                        "batch",
                                        "too many commands in one entry",
                                    ))
                                } else {
                                    let seq = locks::sequence(index, position);
                                    apply_command(&tx, command, now, seq, &mut handoffs)?
                                };
                                answers.push(answer_of(command, index, answer));
                            }
                            Response::Batch(answers)
                        }
                        command => {
                            let seq = locks::sequence(index, 0);
                            let answer = apply_command(&tx, command, now, seq, &mut handoffs)?;
                            answer_of(command, index, answer)
                        }
                    }
                }
            };
            responses.push(response);
            last = Some(entry.log_id);
        }
        if let Some(c) = clock {
            Tx::put(tx.meta, "clock", meta_keys::CLOCK, &c)?;
        }
        if let Some(l) = last {
            Tx::put(tx.meta, "last applied", meta_keys::LAST_APPLIED, &l)?;
        }
        Ok(Applied {
            responses,
            last_applied: last,
            handoffs,
        })
    });
    result.map_err(|e| match e {
        sled::transaction::TransactionError::Abort(e) => e,
        sled::transaction::TransactionError::Storage(source) => StoreError::Sled {
            op: "apply",
            source,
        },
    })
}

/// Runs one command with its sequence number `seq` (the token of any lease it grants). The
/// outer error aborts the transaction (storage failure); the inner one is a refusal, which
/// changes nothing: every rule checks before it writes. Leases handed to waiters are pushed
/// to `handoffs`.
fn apply_command(
    tx: &Tx<'_>,
    cmd: &Command,
    now: DateTime<Utc>,
    seq: u64,
    handoffs: &mut Vec<LeaseGrant>,
) -> TxResult<Result<Response, Rejection>> {
    Ok(match cmd {
        Command::Acquire { key, holder, ttl } => {
            let mut row = tx.lock_row(key)?;
            match locks::acquire(&mut row, key, holder, *ttl, now, seq) {
                Ok((outcome, handed)) => {
                    // A refused acquire that handed nothing over changed at most the lapsed
                    // waiters, which every replica drops again at the next command: no write.
                    if handed.is_some() || matches!(outcome, ire_core::LockOutcome::Granted(_)) {
                        tx.put_lock(key, &row)?;
                    }
                    handoffs.extend(handed);
                    Ok(Response::Lock(outcome))
                }
                Err(r) => Err(r),
            }
        }
        Command::AcquireOrWait {
            key,
            holder,
            ttl,
            wait,
        } => {
            let mut row = tx.lock_row(key)?;
            match locks::acquire_or_wait(&mut row, key, holder, *ttl, *wait, now, seq) {
                Ok((outcome, handed)) => {
                    handoffs.extend(handed);
                    tx.put_lock(key, &row)?;
                    Ok(match outcome {
                        locks::WaitOutcome::Lock(o) => Response::Lock(o),
                        locks::WaitOutcome::Queued {
                            holder,
                            until,
                            position,
                        } => Response::Queued {
                            holder,
                            until,
                            position,
                        },
                    })
                }
                Err(r) => Err(r),
            }
        }
        Command::CancelWait { key, holder } => {
            let mut row = tx.lock_row(key)?;
            let before = row.clone();
            let (mine, handed) = locks::cancel_wait(&mut row, key, holder, now, seq);
            handoffs.extend(handed);
            if row != before {
                tx.put_lock(key, &row)?;
            }
            Ok(match mine {
                Some(grant) => Response::Lock(ire_core::LockOutcome::Granted(grant)),
                None => Response::Done,
            })
        }
        Command::Batch(_) => Err(Rejection::invalid(
            "batch",
            "a batch is only applied as a whole entry",
        )),
        Command::Renew { key, token, ttl } => {
            let mut row = tx.lock_row(key)?;
            match locks::renew(&mut row, key, *token, *ttl, now) {
                Ok(grant) => {
                    tx.put_lock(key, &row)?;
                    Ok(Response::Lease(grant))
                }
                Err(r) => Err(r),
            }
        }
        Command::Release { key, token } => {
            let mut row = tx.lock_row(key)?;
            match locks::release(&mut row, key, *token, now, seq) {
                Ok(handed) => {
                    handoffs.extend(handed);
                    tx.put_lock(key, &row)?;
                    Ok(Response::Done)
                }
                Err(r) => Err(r),
            }
        }
        Command::Hold { key, by, reason } => {
            let mut row = tx.lock_row(key)?;
            match locks::hold(&mut row, by, reason, now) {
                Ok(()) => {
                    tx.put_lock(key, &row)?;
                    Ok(Response::Done)
                }
                Err(r) => Err(r),
            }
        }
        Command::Unhold { key } => {
            let mut row = tx.lock_row(key)?;
            match locks::unhold(&mut row, key, now, seq) {
                Ok(handed) => {
                    handoffs.extend(handed);
                    if row.is_empty() {
                        tx.locks.remove(key.as_str().as_bytes())?;
                    } else {
                        tx.put_lock(key, &row)?;
                    }
                    Ok(Response::Done)
                }
                Err(r) => Err(r),
            }
        }
        Command::RecordExecution(Json(record)) => record_execution(tx, record)?,
        Command::RecordFault(Json(entry)) => record_fault(tx, entry, now)?,
        Command::LegacyMarkReverted { fault_id, by } => settle(tx, fault_id, None, now, |f| {
            ledger::mark_reverted(f, by, now)
        })?,
        Command::LegacyMarkRevertFailed { fault_id, error } => {
            settle(tx, fault_id, None, now, |f| {
                ledger::mark_revert_failed(f, error, now).map(|()| true)
            })?
        }
        Command::MarkReverted {
            fault_id,
            by,
            token,
        } => settle(tx, fault_id, Some(*token), now, |f| {
            ledger::mark_reverted(f, by, now)
        })?,
        Command::MarkRevertFailed {
            fault_id,
            error,
            token,
        } => settle(tx, fault_id, Some(*token), now, |f| {
            ledger::mark_revert_failed(f, error, now).map(|()| true)
        })?,
        Command::EndAction { fault_id, token } => settle(tx, fault_id, Some(*token), now, |f| {
            ledger::end_action(f, now)
        })?,
        Command::ClaimOrphan {
            fault_id,
            claimant,
            ttl,
        } => {
            let Some(f) = get_fault(tx, fault_id)? else {
                return Ok(Err(not_found("fault", fault_id)));
            };
            if let Err(r) = ledger::check_claimable(&f) {
                return Ok(Err(r));
            }
            let mut row = tx.lock_row(&f.resource)?;
            match locks::claim(&mut row, &f.resource, claimant, *ttl, now, seq) {
                Ok(grant) => {
                    tx.put_lock(&f.resource, &row)?;
                    Ok(Response::Lease(grant))
                }
                Err(r) => Err(r),
            }
        }
        Command::PutCampaign(new) => {
            let existing: Option<CampaignRecord> =
                Tx::get(tx.campaigns, "campaign", new.id.as_bytes())?;
            match existing {
                Some(c) if campaigns::same_submission(&c, new) => Ok(Response::Done),
                Some(_) => Err(Rejection::Duplicate {
                    kind: "campaign".into(),
                    id: new.id.clone(),
                }),
                None => match campaigns::create(new, now) {
                    Ok(c) => {
                        Tx::put(tx.campaigns, "campaign", c.id.as_bytes(), &c)?;
                        Ok(Response::Done)
                    }
                    Err(r) => Err(r),
                },
            }
        }
        Command::UpdateStep {
            campaign_id,
            step,
            state,
            message,
        } => update_campaign(tx, campaign_id, |c| {
            campaigns::update_step(c, step, *state, message, now)
        })?,
        Command::UpdateTask {
            campaign_id,
            step,
            task,
        } => update_campaign(tx, campaign_id, |c| {
            campaigns::update_task(c, step, task, now)
        })?,
        Command::FinishCampaign {
            campaign_id,
            state,
            message,
        } => update_campaign(tx, campaign_id, |c| {
            campaigns::finish(c, *state, message, now)
        })?,
        Command::AppendAudit(Json(entry)) => append_audit(tx, entry, seq)?,
        Command::StorePut { collection, items } => store_put(tx, collection, items)?,
        Command::StoreDelete { collection, key } => {
            if let Err(r) = kv::check_collection(collection) {
                return Ok(Err(r));
            }
            tx.kv.remove(kv::row_key(collection, key))?;
            Ok(Response::Done)
        }
    })
}

fn not_found(kind: &str, id: &str) -> Rejection {
    Rejection::NotFound {
        kind: kind.into(),
        id: id.into(),
    }
}

/// Moves fault `fault_id` on with `change` (`Ok(false)`: already there, nothing to write).
/// A change is written only when `token` (if any; legacy commands carry none) is the current
/// lease of the fault's resource; the active set follows the fault's state.
fn settle(
    tx: &Tx<'_>,
    fault_id: &str,
    token: Option<FencingToken>,
    now: DateTime<Utc>,
    change: impl FnOnce(&mut FaultEntry) -> Result<bool, Rejection>,
) -> TxResult<Result<Response, Rejection>> {
    let Some(mut f) = get_fault(tx, fault_id)? else {
        return Ok(Err(not_found("fault", fault_id)));
    };
    match change(&mut f) {
        Err(r) => return Ok(Err(r)),
        Ok(false) => return Ok(Ok(Response::Done)),
        Ok(true) => {}
    }
    if let Some(token) = token {
        let row = tx.lock_row(&f.resource)?;
        if let Err(r) = ledger::check_settle_token(&f, token, &row, now) {
            return Ok(Err(r));
        }
    }
    Tx::put(tx.faults, "fault", f.id.as_bytes(), &Json(&f))?;
    if f.is_active() {
        tx.faults_active.insert(f.id.as_bytes(), &[])?;
    } else {
        tx.faults_active.remove(f.id.as_bytes())?;
    }
    Ok(Ok(Response::Done))
}

fn get_fault(tx: &Tx<'_>, id: &str) -> TxResult<Option<FaultEntry>> {
    let j: Option<Json<FaultEntry>> = Tx::get(tx.faults, "fault", id.as_bytes())?;
    Ok(j.map(Json::into_inner))
}

fn record_execution(
    tx: &Tx<'_>,
    record: &ExecutionRecord,
) -> TxResult<Result<Response, Rejection>> {
    if let Err(r) = ledger::check_execution(record) {
        return Ok(Err(r));
    }
    // An execution is recorded when it starts and again when it ends: replace the old
    // record and its index entries.
    let old: Option<Json<ExecutionRecord>> =
        Tx::get(tx.executions, "execution", record.id.as_bytes())?;
    if let Some(Json(old)) = old {
        let (t, rs, c) = ledger::execution_index_keys(&old);
        tx.exec_by_time.remove(t)?;
        for r in rs {
            tx.exec_by_resource.remove(r)?;
        }
        if let Some(c) = c {
            tx.exec_by_campaign.remove(c)?;
        }
    }
    let (t, rs, c) = ledger::execution_index_keys(record);
    tx.exec_by_time.insert(t, &[])?;
    for r in rs {
        tx.exec_by_resource.insert(r, &[])?;
    }
    if let Some(c) = c {
        tx.exec_by_campaign.insert(c, &[])?;
    }
    Tx::put(
        tx.executions,
        "execution",
        record.id.as_bytes(),
        &Json(record),
    )?;
    Ok(Ok(Response::Done))
}

fn record_fault(
    tx: &Tx<'_>,
    entry: &FaultEntry,
    now: DateTime<Utc>,
) -> TxResult<Result<Response, Rejection>> {
    if let Some(existing) = get_fault(tx, &entry.id)? {
        // A retried record of the same fault is harmless; anything else is a clash.
        return Ok(if &existing == entry {
            Ok(Response::Done)
        } else {
            Err(Rejection::Duplicate {
                kind: "fault".into(),
                id: entry.id.clone(),
            })
        });
    }
    let row = tx.lock_row(&entry.resource)?;
    if let Err(r) = ledger::check_fault(entry, &row, now) {
        return Ok(Err(r));
    }
    debug_assert_eq!(entry.state, FaultState::Injected);
    let (t, r, c) = ledger::fault_index_keys(entry);
    tx.fault_by_time.insert(t, &[])?;
    tx.fault_by_resource.insert(r, &[])?;
    if let Some(c) = c {
        tx.fault_by_campaign.insert(c, &[])?;
    }
    // Only a sustained fault is ever active (and so ever an orphan).
    if entry.is_active() {
        tx.faults_active.insert(entry.id.as_bytes(), &[])?;
    }
    Tx::put(tx.faults, "fault", entry.id.as_bytes(), &Json(entry))?;
    Ok(Ok(Response::Done))
}

fn update_campaign(
    tx: &Tx<'_>,
    id: &str,
    f: impl FnOnce(&mut CampaignRecord) -> Result<(), Rejection>,
) -> TxResult<Result<Response, Rejection>> {
    let Some(mut c) = Tx::get::<CampaignRecord>(tx.campaigns, "campaign", id.as_bytes())? else {
        return Ok(Err(not_found("campaign", id)));
    };
    Ok(match f(&mut c) {
        Ok(()) => {
            Tx::put(tx.campaigns, "campaign", id.as_bytes(), &c)?;
            Ok(Response::Done)
        }
        Err(r) => Err(r),
    })
}

fn append_audit(
    tx: &Tx<'_>,
    entry: &AuditEntry,
    seq: u64,
) -> TxResult<Result<Response, Rejection>> {
    if entry.principal.trim().is_empty() {
        return Ok(Err(Rejection::invalid(
            "audit.principal",
            "must not be empty",
        )));
    }
    // Ordered by the entry's time; the command's sequence number keeps entries of the same
    // instant apart (also within one batch entry).
    let mut key = Vec::with_capacity(16);
    key.extend_from_slice(&time_key(entry.timestamp));
    key.extend_from_slice(&index_key(seq));
    Tx::put(tx.audit, "audit entry", &key, &Json(entry))?;
    Ok(Ok(Response::Done))
}

fn store_put(
    tx: &Tx<'_>,
    collection: &str,
    items: &[(String, String)],
) -> TxResult<Result<Response, Rejection>> {
    // Check the whole batch before writing any of it: a refused batch changes nothing.
    if let Err(r) = kv::check_put(collection, items) {
        return Ok(Err(r));
    }
    for (key, value) in items {
        tx.kv
            .insert(kv::row_key(collection, key), value.as_bytes())?;
    }
    Ok(Ok(Response::Done))
}
