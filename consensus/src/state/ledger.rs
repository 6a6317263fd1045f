//! The ledger's rules: what a valid execution record or fault entry is, and the index keys
//! under which each is found by resource, campaign and time.

use chrono::{DateTime, Utc};
use ire_core::{ExecutionRecord, FaultEntry, FaultState, FencingToken, ResourceKey};

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
/// current unexpired lease token of its resource at `now`.
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

/// Checks that `token` is the current, unexpired lease on `key`.
pub fn check_token(
    key: &ResourceKey,
    token: FencingToken,
    lock: &LockRow,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    match lock.lease.as_ref().filter(|_| !lock.released) {
        Some(l) if l.token == token && l.is_live(now) => Ok(()),
        Some(l) if l.token == token => Err(Rejection::Expired {
            key: key.clone(),
            token,
            expired_at: l.expires_at,
        }),
        live => Err(Rejection::WrongToken {
            key: key.clone(),
            presented: token,
            current: live.filter(|l| l.is_live(now)).map(|l| l.token),
        }),
    }
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

/// Marks a fault reverted by `by` at `now`; already reverted is accepted (a retry).
pub fn mark_reverted(f: &mut FaultEntry, by: &str, now: DateTime<Utc>) -> Result<bool, Rejection> {
    check_id("mark_reverted.by", by)?;
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
