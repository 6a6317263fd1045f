//! The ledger's rules: what a valid execution record or fault entry is, and the index keys
//! under which each is found by resource, campaign and time.

use chrono::{DateTime, Utc};
use ire_core::{ExecutionRecord, FaultEntry, FaultKind, FaultState, FencingToken, ResourceKey};

use super::locks::LockRow;
use crate::store::codec::{plain_time_key, prefixed_time_key};
use crate::types::Rejection;

fn check_id(field: &str, value: &str) -> Result<(), Rejection> {
    if value.trim().is_empty() {
        return Err(Rejection::invalid(field, "must not be empty"));
    }
    if value.contains('\0') {
        return Err(Rejection::invalid(field, "must not contain NUL"));
    }
    Ok(())
}

fn check_opt(field: &str, value: Option<&String>) -> Result<(), Rejection> {
    value.map_or(Ok(()), |v| check_id(field, v))
}

/// Checks an execution record before it is stored.
pub fn check_execution(r: &ExecutionRecord) -> Result<(), Rejection> {
    check_id("execution.id", &r.id)?;
    check_id("execution.plugin_name", &r.plugin_name)?;
    if r.resource_id.contains('\0') {
        return Err(Rejection::invalid(
            "execution.resource_id",
            "must not contain NUL",
        ));
    }
    check_opt("execution.campaign", r.campaign.as_ref())?;
    check_opt("execution.step", r.step.as_ref())?;
    check_opt("execution.node", r.node.as_ref())?;
    if r.end_time < r.start_time {
        return Err(Rejection::invalid(
            "execution.end_time",
            format!(
                "ends ({}) before it starts ({})",
                r.end_time.to_rfc3339(),
                r.start_time.to_rfc3339()
            ),
        ));
    }
    Ok(())
}

/// The index keys of an execution record: (by time, by resource, by campaign).
pub fn execution_index_keys(r: &ExecutionRecord) -> (Vec<u8>, Vec<Vec<u8>>, Option<Vec<u8>>) {
    let mut by_resource = Vec::new();
    if !r.resource_id.is_empty() {
        by_resource.push(prefixed_time_key(&r.resource_id, r.start_time, &r.id));
    }
    if let Some(k) = &r.resource_key {
        if k.as_str() != r.resource_id {
            by_resource.push(prefixed_time_key(k.as_str(), r.start_time, &r.id));
        }
    }
    (
        plain_time_key(r.start_time, &r.id),
        by_resource,
        r.campaign
            .as_ref()
            .map(|c| prefixed_time_key(c, r.start_time, &r.id)),
    )
}

/// Checks a fault entry before it is recorded: well formed, injected, and carrying the
/// current unexpired lease token of its resource at `now`, with no operator hold on it.
pub fn check_fault(f: &FaultEntry, lock: &LockRow, now: DateTime<Utc>) -> Result<(), Rejection> {
    check_id("fault.id", &f.id)?;
    check_id("fault.execution_id", &f.execution_id)?;
    check_id("fault.plugin", &f.plugin)?;
    check_id("fault.node", &f.node)?;
    check_opt("fault.campaign", f.campaign.as_ref())?;
    check_opt("fault.step", f.step.as_ref())?;
    if f.state != FaultState::Injected {
        return Err(Rejection::invalid(
            "fault.state",
            format!("a fault is recorded as injected, not {}", f.state.name()),
        ));
    }
    check_token(&f.resource, f.token, lock, now)
}

/// Checks that `token` is the current, unexpired lease on `key` and that no operator hold
/// stops its holder.
pub fn check_token(
    key: &ResourceKey,
    token: FencingToken,
    lock: &LockRow,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    match lock.lease.as_ref().filter(|_| !lock.released) {
        Some(l) if l.token == token && l.is_live(now) => lock.on_hold(key),
        Some(l) if l.token == token => Err(Rejection::Expired {
            key: key.clone(),
            token,
            expired_at: l.expires_at,
        }),
        _ => Err(lock.wrong_token(key, token, now)),
    }
}

/// Checks that `token` may settle fault `f` (mark it reverted or failed, end an action): it
/// is the last lease granted on the fault's resource, in force or not.
pub fn check_settle_token(
    f: &FaultEntry,
    token: FencingToken,
    lock: &LockRow,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    if super::locks::token_is_current(lock, token) {
        Ok(())
    } else {
        Err(lock.wrong_token(&f.resource, token, now))
    }
}

/// Refuses a settlement meant for the other kind of fault (`what` it would do).
fn check_kind(f: &FaultEntry, kind: FaultKind, what: &str) -> Result<(), Rejection> {
    if f.kind == kind {
        return Ok(());
    }
    Err(Rejection::invalid(
        "fault.kind",
        format!(
            "fault {} is {}, which cannot be {what}",
            f.id,
            match f.kind {
                FaultKind::Action => "an action",
                FaultKind::Sustained => "a sustained fault",
            }
        ),
    ))
}

/// Checks that fault `f` may be claimed as an orphan: an active sustained fault (the lease
/// is checked by [`super::locks::claim`]).
pub fn check_claimable(f: &FaultEntry) -> Result<(), Rejection> {
    if !f.is_active() {
        return Err(Rejection::BadTransition {
            what: format!("fault {}", f.id),
            from: format!("{} {}", f.kind.as_str(), f.state.name()),
            to: "claimed as an orphan".into(),
        });
    }
    Ok(())
}

/// Ends action `f` at `now`; ending it again is accepted (`Ok(false)`: nothing changed).
pub fn end_action(f: &mut FaultEntry, now: DateTime<Utc>) -> Result<bool, Rejection> {
    check_kind(f, FaultKind::Action, "ended (it is reverted)")?;
    if matches!(f.state, FaultState::Ended { .. }) {
        return Ok(false);
    }
    f.state = FaultState::Ended { at: now };
    Ok(true)
}

/// The index keys of a fault: (by time, by resource, by campaign).
pub fn fault_index_keys(f: &FaultEntry) -> (Vec<u8>, Vec<u8>, Option<Vec<u8>>) {
    (
        plain_time_key(f.injected_at, &f.id),
        prefixed_time_key(f.resource.as_str(), f.injected_at, &f.id),
        f.campaign
            .as_ref()
            .map(|c| prefixed_time_key(c, f.injected_at, &f.id)),
    )
}

/// Marks a sustained fault reverted by `by` at `now`; already reverted is accepted (a retry:
/// `Ok(false)`, nothing changed).
pub fn mark_reverted(f: &mut FaultEntry, by: &str, now: DateTime<Utc>) -> Result<bool, Rejection> {
    check_id("mark_reverted.by", by)?;
    check_kind(f, FaultKind::Sustained, "reverted (it is ended)")?;
    if matches!(f.state, FaultState::Reverted { .. }) {
        return Ok(false);
    }
    f.state = FaultState::Reverted {
        at: now,
        by: by.to_owned(),
    };
    Ok(true)
}

/// Marks a revert attempt of a fault failed; refused once the fault is reverted.
pub fn mark_revert_failed(
    f: &mut FaultEntry,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    if error.trim().is_empty() {
        return Err(Rejection::invalid(
            "mark_revert_failed.error",
            "must say why the revert failed",
        ));
    }
    check_kind(f, FaultKind::Sustained, "reverted (it is ended)")?;
    if matches!(f.state, FaultState::Reverted { .. }) {
        return Err(Rejection::BadTransition {
            what: format!("fault {}", f.id),
            from: "reverted".into(),
            to: "revert-failed".into(),
        });
    }
    f.state = FaultState::RevertFailed {
        at: now,
        error: error.to_owned(),
    };
    Ok(())
}
