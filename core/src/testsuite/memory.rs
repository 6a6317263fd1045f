//! In-memory implementations of the storage-like traits: locks, ledger, storage, secrets,
//! audit, config and authorization.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigChangeStream, ConfigMap, ConfigProvider};
use crate::error::{Error, Result};
use crate::ledger::{FaultEntry, FaultLedger, FaultQuery, FaultState, OrphanQuery};
use crate::lock::{FencingToken, LeaseGrant, LockInfo, LockOutcome, LockService, OperatorHold};
use crate::page::paginate;
use crate::plugin::FaultKind;
use crate::report::{Query, StorageBackend};
use crate::resource::{Resource, ResourceKey};
use crate::security::{
    Action, AuditEntry, AuditLogger, AuthorizationProvider, Secret, SecretProvider,
};

/// A clock the in-memory services read; tests can move it.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The last lease granted on a key, kept after it lapses or is released (so that a retried
/// release is recognised and a ledger write can be checked against the key's current token).
#[derive(Clone)]
struct KeyLease {
    grant: LeaseGrant,
    released: bool,
}

#[derive(Default)]
struct LockTable {
    leases: BTreeMap<ResourceKey, KeyLease>,
    /// The token of the last lease given back on a key, kept across a later grant so that a
    /// retried release still answers success.
    last_released: BTreeMap<ResourceKey, FencingToken>,
    holds: BTreeMap<ResourceKey, OperatorHold>,
    last_token: u64,
}

impl LockTable {
    /// The lease in force on `key` at `now`.
    fn live(&self, key: &ResourceKey, now: DateTime<Utc>) -> Option<&LeaseGrant> {
        self.leases
            .get(key)
            .filter(|l| !l.released && l.grant.expires_at > now)
            .map(|l| &l.grant)
    }

    /// Grants `key` to `holder` with a new token.
    fn grant(
        &mut self,
        key: &ResourceKey,
        holder: &str,
        ttl: chrono::Duration,
        now: DateTime<Utc>,
    ) -> LeaseGrant {
        self.last_token += 1;
        let grant = LeaseGrant {
            key: key.clone(),
            holder: holder.to_owned(),
            token: FencingToken(self.last_token),
            expires_at: now + ttl,
        };
        self.leases.insert(
            key.clone(),
            KeyLease {
                grant: grant.clone(),
                released: false,
            },
        );
        grant
    }

    /// Who holds `key` and with which token, for a refusal's message.
    fn current(&self, key: &ResourceKey, now: DateTime<Utc>) -> String {
        match (self.live(key, now), self.holds.get(key)) {
            (_, Some(h)) => format!("{key} is on operator hold by {}: {}", h.by, h.reason),
            (Some(l), None) => format!("{key} is leased to {} with token {}", l.holder, l.token),
            (None, None) => format!("{key} has no lease in force"),
        }
    }

    /// Checks that `token` is the current, unexpired lease on `key` and that no operator
    /// hold is on it: what a renewal and a fault record need.
    fn check_live(&self, key: &ResourceKey, token: FencingToken, now: DateTime<Utc>) -> Result<()> {
        if self.holds.contains_key(key) {
            return Err(Error::Conflict {
                message: format!("token {token} may not act: {}", self.current(key, now)),
            });
        }
        match self.leases.get(key) {
            Some(l) if l.grant.token == token && !l.released && l.grant.expires_at > now => Ok(()),
            Some(l) if l.grant.token == token && !l.released => Err(Error::Conflict {
                message: format!(
                    "lease on {key} with token {token} expired at {}",
                    l.grant.expires_at
                ),
            }),
            _ => Err(Error::Conflict {
                message: format!(
                    "token {token} is not the current lease: {}",
                    self.current(key, now)
                ),
            }),
        }
    }

    /// Checks that `token` is the last lease granted on `key`, in force or not: what settling
    /// a fault needs (the injector's lease, or an orphan claimant's; never a superseded one).
    fn check_current(
        &self,
        key: &ResourceKey,
        token: FencingToken,
        now: DateTime<Utc>,
    ) -> Result<()> {
        match self.leases.get(key) {
            Some(l) if l.grant.token == token => Ok(()),
            _ => Err(Error::Conflict {
                message: format!(
                    "token {token} is not the current lease: {}",
                    self.current(key, now)
                ),
            }),
        }
    }
}

/// A single-process [`LockService`] with the replicated one's semantics. A [`MemoryLedger`]
/// made from it ([`MemoryLedger::new`]) checks fencing tokens against its leases.
#[derive(Clone)]
pub struct MemoryLockService {
    table: Arc<Mutex<LockTable>>,
    clock: Clock,
    /// Woken by every release, so that waiting acquires try again at once.
    released: Arc<tokio::sync::Notify>,
    /// How many `acquire_wait` calls are under way.
    waiting: Arc<AtomicUsize>,
}

/// Counts one `acquire_wait` in [`MemoryLockService::waiting`] while it runs.
struct WaitingGuard(Arc<AtomicUsize>);

impl WaitingGuard {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        WaitingGuard(count.clone())
    }
}

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How often a waiting acquire looks again without a release (a lease that lapses on the
/// service's clock wakes nobody).
const LAPSE_POLL: Duration = Duration::from_millis(20);

impl Default for MemoryLockService {
    fn default() -> Self {
        Self::new()
    }
}

fn check_ttl(ttl: Duration) -> Result<chrono::Duration> {
    if ttl.is_zero() {
        return Err(Error::invalid("ttl", "must be positive"));
    }
    chrono::Duration::from_std(ttl).map_err(|_| Error::invalid("ttl", "too large"))
}

impl MemoryLockService {
    /// A lock service on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(Utc::now))
    }

    /// A lock service on the given clock.
    pub fn with_clock(clock: Clock) -> Self {
        MemoryLockService {
            table: Arc::default(),
            clock,
            released: Arc::default(),
            waiting: Arc::default(),
        }
    }

    /// How many callers are waiting in [`LockService::acquire_wait`] right now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// How many leases it has granted so far (tokens are this count, in order).
    pub fn grants(&self) -> u64 {
        self.table.lock().unwrap().last_token
    }
}

#[async_trait]
impl LockService for MemoryLockService {
    async fn acquire(&self, key: &ResourceKey, holder: &str, ttl: Duration) -> Result<LockOutcome> {
        let ttl = check_ttl(ttl)?;
        if holder.is_empty() {
            return Err(Error::invalid("holder", "must not be empty"));
        }
        let now = (self.clock)();
        let mut t = self.table.lock().unwrap();
        if let Some(h) = t.holds.get(key) {
            return Ok(LockOutcome::Held {
                holder: format!("operator hold by {}: {}", h.by, h.reason),
                until: None,
            });
        }
        if let Some(l) = t.live(key, now) {
            if l.holder != holder {
                return Ok(LockOutcome::Held {
                    holder: l.holder.clone(),
                    until: Some(l.expires_at),
                });
            }
            // The holder asks again: its lease is extended and keeps its token.
            let l = t.leases.get_mut(key).expect("a live lease");
            l.grant.expires_at = now + ttl;
            return Ok(LockOutcome::Granted(l.grant.clone()));
        }
        Ok(LockOutcome::Granted(t.grant(key, holder, ttl, now)))
    }

    async fn acquire_wait(
        &self,
        key: &ResourceKey,
        holder: &str,
        ttl: Duration,
        wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<LockOutcome> {
        let deadline = tokio::time::Instant::now() + wait;
        let _waiting = WaitingGuard::enter(&self.waiting);
        loop {
            // Registered before trying, so that a release in between is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let outcome = self.acquire(key, holder, ttl).await?;
            let now = tokio::time::Instant::now();
            if !matches!(outcome, LockOutcome::Held { until: Some(_), .. })
                || now >= deadline
                || cancel.is_cancelled()
            {
                return Ok(outcome);
            }
            tokio::select! {
                _ = released => {}
                // Given up: answered as the wait stands, without trying again.
                _ = cancel.cancelled() => return Ok(outcome),
                _ = tokio::time::sleep_until(deadline.min(now + LAPSE_POLL)) => {}
            }
        }
    }

    async fn renew(
        &self,
        key: &ResourceKey,
        token: FencingToken,
        ttl: Duration,
    ) -> Result<LeaseGrant> {
        let ttl = check_ttl(ttl)?;
        let now = (self.clock)();
        let mut t = self.table.lock().unwrap();
        t.check_live(key, token, now)?;
        let l = t.leases.get_mut(key).expect("checked");
        l.grant.expires_at = now + ttl;
        Ok(l.grant.clone())
    }

    async fn release(&self, key: &ResourceKey, token: FencingToken) -> Result<()> {
        let now = (self.clock)();
        let mut t = self.table.lock().unwrap();
        let t = &mut *t;
        match t.leases.get_mut(key) {
            Some(l) if l.grant.token == token => {
                l.released = true;
                t.last_released.insert(key.clone(), token);
                self.released.notify_waiters();
                Ok(())
            }
            // A retry of a release that took effect (the key may have been taken since).
            _ if t.last_released.get(key) == Some(&token) => Ok(()),
            _ => Err(Error::Conflict {
                message: format!(
                    "token {token} is not the current lease: {}",
                    t.current(key, now)
                ),
            }),
        }
    }

    async fn hold(&self, key: &ResourceKey, by: &str, reason: &str) -> Result<()> {
        let now = (self.clock)();
        self.table.lock().unwrap().holds.insert(
            key.clone(),
            OperatorHold {
                by: by.to_owned(),
                reason: reason.to_owned(),
                since: now,
            },
        );
        Ok(())
    }

    async fn unhold(&self, key: &ResourceKey) -> Result<()> {
        self.table.lock().unwrap().holds.remove(key);
        self.released.notify_waiters();
        Ok(())
    }

    async fn lock_info(&self, key: &ResourceKey) -> Result<LockInfo> {
        let now = (self.clock)();
        let t = self.table.lock().unwrap();
        Ok(LockInfo {
            key: key.clone(),
            lease: t.live(key, now).cloned(),
            hold: t.holds.get(key).cloned(),
        })
    }
}

/// A single-process [`FaultLedger`] over a [`MemoryLockService`]'s leases: it checks fencing
/// tokens and grants orphan claims as the replicated ledger does.
#[derive(Clone)]
pub struct MemoryLedger {
    faults: Arc<Mutex<Vec<FaultEntry>>>,
    locks: MemoryLockService,
}

impl MemoryLedger {
    /// An empty ledger whose tokens are `locks`' leases.
    pub fn new(locks: &MemoryLockService) -> Self {
        MemoryLedger {
            faults: Arc::default(),
            locks: locks.clone(),
        }
    }

    /// Settles fault `id` with `token`: `change` checks the entry and moves its state
    /// (`Ok(false)`: already there, nothing to do).
    fn settle(
        &self,
        id: &str,
        token: FencingToken,
        change: impl FnOnce(&mut FaultEntry, DateTime<Utc>) -> Result<bool>,
    ) -> Result<()> {
        let now = (self.locks.clock)();
        let table = self.locks.table.lock().unwrap();
        let mut faults = self.faults.lock().unwrap();
        let e = faults
            .iter_mut()
            .find(|e| e.id == id)
            .ok_or_else(|| Error::not_found("fault", id))?;
        let mut changed = e.clone();
        if change(&mut changed, now)? {
            table.check_current(&e.resource, token, now)?;
            *e = changed;
        }
        Ok(())
    }
}

/// Refuses a write meant for the other kind of fault.
fn expect_kind(e: &FaultEntry, kind: FaultKind, what: &str) -> Result<()> {
    if e.kind == kind {
        return Ok(());
    }
    Err(Error::invalid(
        "fault.kind",
        format!(
            "fault {} is {} fault: it cannot be {what}",
            e.id,
            match e.kind {
                FaultKind::Action => "an action, not a sustained",
                FaultKind::Sustained => "a sustained fault, not an action",
            }
        ),
    ))
}

#[async_trait]
impl FaultLedger for MemoryLedger {
    async fn record_fault(&self, entry: FaultEntry) -> Result<()> {
        let now = (self.locks.clock)();
        let table = self.locks.table.lock().unwrap();
        let mut f = self.faults.lock().unwrap();
        if let Some(existing) = f.iter().find(|e| e.id == entry.id) {
            if *existing == entry {
                return Ok(()); // An identical retry.
            }
            return Err(Error::Conflict {
                message: format!("fault {} is already recorded", entry.id),
            });
        }
        if entry.state != FaultState::Injected {
            return Err(Error::invalid(
                "fault.state",
                format!(
                    "a fault is recorded as injected, not {}",
                    entry.state.name()
                ),
            ));
        }
        table.check_live(&entry.resource, entry.token, now)?;
        f.push(entry);
        Ok(())
    }

    async fn end_action(&self, fault_id: &str, token: FencingToken) -> Result<()> {
        self.settle(fault_id, token, |e, at| {
            expect_kind(e, FaultKind::Action, "ended")?;
            if matches!(e.state, FaultState::Ended { .. }) {
                return Ok(false);
            }
            e.state = FaultState::Ended { at };
            Ok(true)
        })
    }

    async fn mark_reverted(&self, fault_id: &str, by: &str, token: FencingToken) -> Result<()> {
        if by.trim().is_empty() {
            return Err(Error::invalid("mark_reverted.by", "must not be empty"));
        }
        self.settle(fault_id, token, |e, at| {
            expect_kind(e, FaultKind::Sustained, "reverted")?;
            if matches!(e.state, FaultState::Reverted { .. }) {
                return Ok(false);
            }
            e.state = FaultState::Reverted {
                at,
                by: by.to_owned(),
            };
            Ok(true)
        })
    }

    async fn mark_revert_failed(
        &self,
        fault_id: &str,
        error: &str,
        token: FencingToken,
    ) -> Result<()> {
        if error.trim().is_empty() {
            return Err(Error::invalid(
                "mark_revert_failed.error",
                "must say why the revert failed",
            ));
        }
        self.settle(fault_id, token, |e, at| {
            expect_kind(e, FaultKind::Sustained, "reverted")?;
            if matches!(e.state, FaultState::Reverted { .. }) {
                return Err(Error::Conflict {
                    message: format!("fault {}: cannot go from reverted to revert-failed", e.id),
                });
            }
            e.state = FaultState::RevertFailed {
                at,
                error: error.to_owned(),
            };
            Ok(true)
        })
    }

    async fn claim_orphan(
        &self,
        fault_id: &str,
        claimant: &str,
        ttl: Duration,
    ) -> Result<LeaseGrant> {
        let ttl = check_ttl(ttl)?;
        if claimant.trim().is_empty() {
            return Err(Error::invalid("claim_orphan.claimant", "must not be empty"));
        }
        let now = (self.locks.clock)();
        let mut table = self.locks.table.lock().unwrap();
        let faults = self.faults.lock().unwrap();
        let e = faults
            .iter()
            .find(|e| e.id == fault_id)
            .ok_or_else(|| Error::not_found("fault", fault_id))?;
        if !e.is_active() {
            return Err(Error::Conflict {
                message: format!(
                    "fault {fault_id} is not an active sustained fault ({} {}): nothing to claim",
                    e.kind.as_str(),
                    e.state.name()
                ),
            });
        }
        if let Some(l) = table.live(&e.resource, now) {
            return Err(Error::Conflict {
                message: format!(
                    "fault {fault_id} is not orphaned: {} is leased to {} with token {} until {}",
                    e.resource, l.holder, l.token, l.expires_at
                ),
            });
        }
        Ok(table.grant(&e.resource, claimant, ttl, now))
    }

    async fn claimable_orphans(&self, query: &OrphanQuery) -> Result<Vec<FaultEntry>> {
        let now = (self.locks.clock)();
        let table = self.locks.table.lock().unwrap();
        let faults = self.faults.lock().unwrap();
        let mut out: Vec<FaultEntry> = faults
            .iter()
            .filter(|e| e.is_active() && query.matches(e) && table.live(&e.resource, now).is_none())
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.injected_at, &a.id).cmp(&(b.injected_at, &b.id)));
        Ok(paginate(out, 0, query.limit))
    }

    async fn fault(&self, fault_id: &str) -> Result<FaultEntry> {
        self.faults
            .lock()
            .unwrap()
            .iter()
            .find(|e| e.id == fault_id)
            .cloned()
            .ok_or_else(|| Error::not_found("fault", fault_id))
    }

    async fn query_faults(&self, query: &FaultQuery) -> Result<Vec<FaultEntry>> {
        let f = self.faults.lock().unwrap();
        let it = f.iter().filter(|e| query.matches(e)).cloned();
        Ok(paginate(it, query.offset, query.limit))
    }
}

/// A single-process [`StorageBackend`] that counts its write calls.
#[derive(Clone, Default)]
pub struct MemoryStorage {
    data: Arc<Mutex<BTreeMap<String, BTreeMap<String, serde_json::Value>>>>,
    writes: Arc<Mutex<usize>>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many write calls (`save` or `save_batch`) were made.
    pub fn write_calls(&self) -> usize {
        *self.writes.lock().unwrap()
    }

    /// How many values a collection holds.
    pub fn len(&self, collection: &str) -> usize {
        self.data
            .lock()
            .unwrap()
            .get(collection)
            .map_or(0, BTreeMap::len)
    }
}

#[async_trait]
impl StorageBackend for MemoryStorage {
    async fn save(&self, collection: &str, key: &str, value: serde_json::Value) -> Result<()> {
        *self.writes.lock().unwrap() += 1;
        self.data
            .lock()
            .unwrap()
            .entry(collection.to_owned())
            .or_default()
            .insert(key.to_owned(), value);
        Ok(())
    }

    async fn save_batch(
        &self,
        collection: &str,
        items: Vec<(String, serde_json::Value)>,
    ) -> Result<()> {
        *self.writes.lock().unwrap() += 1;
        let mut d = self.data.lock().unwrap();
        let c = d.entry(collection.to_owned()).or_default();
        c.extend(items);
        Ok(())
    }

    async fn load(&self, collection: &str, key: &str) -> Result<serde_json::Value> {
        self.data
            .lock()
            .unwrap()
            .get(collection)
            .and_then(|c| c.get(key))
            .cloned()
            .ok_or_else(|| Error::not_found(format!("{collection} entry"), key))
    }

    async fn query(&self, query: &Query) -> Result<Vec<serde_json::Value>> {
        let d = self.data.lock().unwrap();
        let mut values: Vec<serde_json::Value> = d
            .get(&query.collection)
            .map(|c| c.values().filter(|v| query.matches(v)).cloned().collect())
            .unwrap_or_default();
        // A stable sort keeps key order among equal sort keys.
        values.sort_by(|a, b| query.compare(a, b));
        Ok(paginate(values, query.offset, query.limit))
    }

    async fn delete(&self, collection: &str, key: &str) -> Result<()> {
        *self.writes.lock().unwrap() += 1;
        if let Some(c) = self.data.lock().unwrap().get_mut(collection) {
            c.remove(key);
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// A single-process [`SecretProvider`].
#[derive(Clone, Default)]
pub struct MemorySecrets {
    secrets: Arc<Mutex<BTreeMap<String, Secret>>>,
}

#[async_trait]
impl SecretProvider for MemorySecrets {
    async fn get_secret(&self, key: &str) -> Result<Secret> {
        self.secrets
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .ok_or_else(|| Error::not_found("secret", key))
    }

    async fn set_secret(&self, key: &str, value: Secret) -> Result<()> {
        self.secrets.lock().unwrap().insert(key.to_owned(), value);
        Ok(())
    }

    async fn delete_secret(&self, key: &str) -> Result<()> {
        self.secrets.lock().unwrap().remove(key);
        Ok(())
    }
}

/// An [`AuditLogger`] that keeps entries in memory.
#[derive(Clone, Default)]
pub struct MemoryAuditLog {
    entries: Arc<Mutex<Vec<AuditEntry>>>,
}

impl MemoryAuditLog {
    /// Every entry so far.
    pub fn entries(&self) -> Vec<AuditEntry> {
        self.entries.lock().unwrap().clone()
    }
}

#[async_trait]
impl AuditLogger for MemoryAuditLog {
    async fn log_action(&self, entry: AuditEntry) -> Result<()> {
        self.entries.lock().unwrap().push(entry);
        Ok(())
    }
}

/// An [`AuthorizationProvider`] that allows listed principals everything and denies the
/// rest, recording every question it was asked.
#[derive(Clone, Default)]
pub struct StaticAuthorizer {
    allowed: Arc<Vec<String>>,
    asked: Arc<Mutex<Vec<(String, Action)>>>,
}

impl StaticAuthorizer {
    /// Allows exactly these principals.
    pub fn allowing<I: IntoIterator<Item = S>, S: Into<String>>(principals: I) -> Self {
        StaticAuthorizer {
            allowed: Arc::new(principals.into_iter().map(Into::into).collect()),
            asked: Arc::default(),
        }
    }

    /// The questions asked so far.
    pub fn asked(&self) -> Vec<(String, Action)> {
        self.asked.lock().unwrap().clone()
    }
}

#[async_trait]
impl AuthorizationProvider for StaticAuthorizer {
    async fn authorize(
        &self,
        principal: &str,
        action: &Action,
        _resource: Option<&Resource>,
    ) -> Result<()> {
        self.asked
            .lock()
            .unwrap()
            .push((principal.to_owned(), action.clone()));
        if self.allowed.iter().any(|p| p == principal) {
            Ok(())
        } else {
            Err(Error::Unauthorized {
                principal: principal.to_owned(),
                action: action.to_string(),
            })
        }
    }
}

/// A [`ConfigProvider`] serving a fixed map; [`StaticConfigProvider::set`] pushes changes
/// to its watchers.
#[derive(Clone)]
pub struct StaticConfigProvider {
    name: String,
    values: Arc<Mutex<ConfigMap>>,
    changes: tokio::sync::broadcast::Sender<crate::config::ConfigChange>,
}

impl StaticConfigProvider {
    /// A provider named `name` with these values.
    pub fn new(name: &str, values: ConfigMap) -> Self {
        StaticConfigProvider {
            name: name.to_owned(),
            values: Arc::new(Mutex::new(values)),
            changes: tokio::sync::broadcast::channel(64).0,
        }
    }

    /// Changes a value and notifies watchers.
    pub fn set(&self, key: &str, value: serde_json::Value) {
        let old = self
            .values
            .lock()
            .unwrap()
            .insert(key.to_owned(), value.clone());
        let _ = self.changes.send(crate::config::ConfigChange {
            key: key.to_owned(),
            old_value: old,
            new_value: Some(value),
        });
    }
}

#[async_trait]
impl ConfigProvider for StaticConfigProvider {
    async fn load(&self) -> Result<ConfigMap> {
        Ok(self.values.lock().unwrap().clone())
    }

    async fn watch(&self) -> Result<ConfigChangeStream> {
        use futures::StreamExt;
        let rx = self.changes.subscribe();
        Ok(futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(c) => return Some((c, rx)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return None,
                }
            }
        })
        .boxed())
    }

    fn name(&self) -> &str {
        &self.name
    }
}
