//! Lease locks: each resource is faulted by at most one execution at a time.
//!
//! The consensus crate implements [`LockService`] on the replicated state machine; the
//! `testsuite` feature has an in-memory one. A lease carries a [`FencingToken`] that only
//! grows for a key, and every action taken under the lease carries it.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::resource::ResourceKey;

/// A monotonically increasing token issued with each lease grant (the raft log index of the
/// grant in the replicated implementation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A granted lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// The locked resource.
    pub key: ResourceKey,
    /// Who holds it (an execution id, qualified by node).
    pub holder: String,
    /// The lease's token.
    pub token: FencingToken,
    /// When the lease lapses unless renewed.
    pub expires_at: DateTime<Utc>,
}

/// The answer to an acquire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOutcome {
    /// The caller now holds the lease.
    Granted(LeaseGrant),
    /// Someone else holds it.
    Held {
        /// Who holds it.
        holder: String,
        /// Until when (None for an operator hold, which never expires).
        until: Option<DateTime<Utc>>,
    },
}

/// What is known about a key's lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The key.
    pub key: ResourceKey,
    /// The current lease, if unexpired.
    pub lease: Option<LeaseGrant>,
    /// An operator hold, if any: (who, why).
    pub hold: Option<OperatorHold>,
}

/// An operator's protection of a resource from every campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorHold {
    /// Who placed it.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When.
    pub since: DateTime<Utc>,
}

/// Cluster-wide lease locks on resources.
#[async_trait]
pub trait LockService: Send + Sync + 'static {
    /// Takes the lease for `ttl` if it is free, expired, or already the holder's.
    async fn acquire(&self, key: &ResourceKey, holder: &str, ttl: Duration) -> Result<LockOutcome>;
    /// Takes the lease like [`LockService::acquire`], but while another holder has it, waits
    /// up to `wait` for it to be released or to lapse, then answers `Held`. Under an operator
    /// hold it answers `Held` at once (a hold has no end to wait for). The replicated service
    /// queues the caller, and the holder's release hands the lease over in the same commit.
    ///
    /// `cancel` ends the wait early, as if it had run out: the caller leaves the queue and is
    /// answered `Held`, or `Granted` when the lease was handed to it just then (it is the
    /// caller's to use or release).
    async fn acquire_wait(
        &self,
        key: &ResourceKey,
        holder: &str,
        ttl: Duration,
        wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<LockOutcome>;
    /// Extends a lease; fails with `Conflict` if the token is not the current one, the lease
    /// expired, or an operator hold was placed on the key (a hold stops the current holder:
    /// it stops acting when its safe window closes).
    async fn renew(
        &self,
        key: &ResourceKey,
        token: FencingToken,
        ttl: Duration,
    ) -> Result<LeaseGrant>;
    /// Gives a lease back; fails with `Conflict` if the token is not the current one. Giving
    /// back a lease that was already given back is accepted, also after the release handed
    /// the key to a waiter.
    async fn release(&self, key: &ResourceKey, token: FencingToken) -> Result<()>;
    /// Protects a resource from every campaign until [`LockService::unhold`]: acquires are
    /// answered `Held`, and the current holder's renewals and fault records are refused.
    async fn hold(&self, key: &ResourceKey, by: &str, reason: &str) -> Result<()>;
    /// Removes an operator hold.
    async fn unhold(&self, key: &ResourceKey) -> Result<()>;
    /// What is known about a key, read linearizably.
    async fn lock_info(&self, key: &ResourceKey) -> Result<LockInfo>;
}
