//! Lease locks: the pure rules, applied to one key's [`LockRow`].
//!
//! Every function takes the leader-stamped `now` and, for a grant, the sequence number of the
//! command being applied (see [`sequence`]), which becomes the fencing token. Nothing here
//! reads a clock, so every replica that applies the same entries reaches the same rows.
//!
//! A key also keeps a queue of waiters ([`Command::AcquireOrWait`](crate::types::Command)):
//! whenever the key is free (released, or the lease lapsed) and a command touches it, the lease
//! is handed to the first waiter still waiting, in that command's entry. A contended hand-off
//! is then one commit (the release), and waiters are told instead of polling.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ire_core::{FencingToken, LeaseGrant, LockInfo, LockOutcome, OperatorHold, ResourceKey};
use serde::{Deserialize, Serialize};

use crate::error::StoreResult;
use crate::store::codec::{decode, encode};
use crate::types::{check_ttl, Rejection};

/// Bits of a sequence number (and so of a fencing token) below the log index: the position of
/// the command in its entry (a batch entry carries several).
pub const POSITION_BITS: u32 = 16;

/// The most commands one entry may carry, so that every command has its own sequence number.
pub const MAX_COMMANDS_PER_ENTRY: usize = 1 << POSITION_BITS;

/// The sequence number of the command at `position` of the entry at log `index`: unique per
/// command and growing with the log, so fencing tokens drawn from it only grow.
pub fn sequence(index: u64, position: usize) -> u64 {
    debug_assert!(position < MAX_COMMANDS_PER_ENTRY);
    (index << POSITION_BITS) | position as u64
}

/// The log index of the entry that granted the lease with `token`.
pub fn token_index(token: FencingToken) -> u64 {
    token.0 >> POSITION_BITS
}

/// The most waiters one key queues; later callers are answered `Held` without queuing.
pub const MAX_WAITERS: usize = 1024;

/// A caller queued for a key's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    /// Who waits.
    pub holder: String,
    /// The lease's duration once handed over.
    pub ttl: Duration,
    /// When it stops waiting (leader-stamped); a lapsed waiter is skipped and dropped.
    pub until: DateTime<Utc>,
}

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Who holds it.
    pub holder: String,
    /// Its fencing token (the log index of the grant).
    pub token: FencingToken,
    /// When it was granted (leader-stamped).
    pub granted_at: DateTime<Utc>,
    /// When it lapses unless renewed (leader-stamped time + ttl).
    pub expires_at: DateTime<Utc>,
    /// The duration last asked for (by the grant or the last renewal): what a new leader
    /// extends the lease by.
    pub ttl: Duration,
}

impl Lease {
    /// True while the lease is in force at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at > now
    }

    /// The lease as ire-core's grant.
    pub fn grant(&self, key: &ResourceKey) -> LeaseGrant {
        LeaseGrant {
            key: key.clone(),
            holder: self.holder.clone(),
            token: self.token,
            expires_at: self.expires_at,
        }
    }
}

/// Everything stored about one key's lock.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LockRow {
    /// The last lease granted, possibly expired (kept so that a late release or a stale
    /// token is recognised, and so that tokens only grow).
    pub lease: Option<Lease>,
    /// True once the last lease was released by its holder.
    pub released: bool,
    /// An operator hold, if any.
    pub hold: Option<OperatorHold>,
    /// Callers waiting for the lease, first in line first.
    pub waiters: Vec<Waiter>,
    /// The token of the last lease its holder gave back, kept after the key is granted again
    /// so that a retried release (its first answer was lost) is told it took effect.
    pub last_released: Option<FencingToken>,
}

/// The first byte of a row in the current layout. Rows of earlier layouts start with the
/// bincode tag of an `Option` (0 or 1), so the byte tells the layouts apart.
const ROW_V3: u8 = 0xA3;

/// A lease as stored before leases kept their ttl.
#[derive(Deserialize)]
struct LeaseV2 {
    holder: String,
    token: FencingToken,
    granted_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl From<LeaseV2> for Lease {
    fn from(l: LeaseV2) -> Self {
        // The ttl of the grant or of the last renewal is not known: the span from the grant
        // to the expiry is at least the last one asked for.
        let ttl = (l.expires_at - l.granted_at)
            .to_std()
            .unwrap_or(Duration::from_secs(1));
        Lease {
            holder: l.holder,
            token: l.token,
            granted_at: l.granted_at,
            expires_at: l.expires_at,
            ttl,
        }
    }
}

/// A row as stored before the ttl and the last release were kept: still read, never written.
#[derive(Deserialize)]
struct LockRowV2 {
    lease: Option<LeaseV2>,
    released: bool,
    hold: Option<OperatorHold>,
    waiters: Vec<Waiter>,
}

/// A row as stored before keys had waiters: still read, never written.
#[derive(Deserialize)]
struct LockRowV1 {
    lease: Option<LeaseV2>,
    released: bool,
    hold: Option<OperatorHold>,
}

impl LockRow {
    /// The lease in force at `now`, if any.
    pub fn live_lease(&self, now: DateTime<Utc>) -> Option<&Lease> {
        self.lease
            .as_ref()
            .filter(|l| !self.released && l.is_live(now))
    }

    /// The row as ire-core's lock info, as of `now`.
    pub fn info(&self, key: &ResourceKey, now: DateTime<Utc>) -> LockInfo {
        LockInfo {
            key: key.clone(),
            lease: self.live_lease(now).map(|l| l.grant(key)),
            hold: self.hold.clone(),
        }
    }

    /// True when the row says nothing worth keeping (no lease ever, no hold, no waiter).
    pub fn is_empty(&self) -> bool {
        self.lease.is_none() && self.hold.is_none() && self.waiters.is_empty()
    }

    /// Encodes the row for the locks tree (a layout byte, then bincode).
    pub fn encode(&self) -> StoreResult<Vec<u8>> {
        let mut out = vec![ROW_V3];
        out.extend(encode("lock row", self)?);
        Ok(out)
    }

    /// Decodes a stored row, including rows of the earlier layouts (without waiters; without
    /// the lease's ttl and the last release).
    pub fn decode(bytes: &[u8]) -> StoreResult<Self> {
        if let Some((&ROW_V3, rest)) = bytes.split_first() {
            return decode("lock row", rest);
        }
        let v2 = decode::<LockRowV2>("lock row", bytes).or_else(|e| {
            decode::<LockRowV1>("lock row", bytes)
                .map(|v1| LockRowV2 {
                    lease: v1.lease,
                    released: v1.released,
                    hold: v1.hold,
                    waiters: Vec::new(),
                })
                .map_err(|_| e)
        })?;
        Ok(LockRow {
            lease: v2.lease.map(Lease::from),
            released: v2.released,
            hold: v2.hold,
            waiters: v2.waiters,
            last_released: None,
        })
    }

    /// A refusal of `presented`, naming the lease in force (holder and token) if any.
    pub fn wrong_token(
        &self,
        key: &ResourceKey,
        presented: FencingToken,
        now: DateTime<Utc>,
    ) -> Rejection {
        let live = self.live_lease(now);
        Rejection::WrongToken {
            key: key.clone(),
            presented,
            current: live.map(|l| l.token).or_else(|| current_token(self)),
            holder: live.map(|l| l.holder.clone()),
        }
    }

    /// The refusal of a lease's use under an operator hold, if one is on.
    pub fn on_hold(&self, key: &ResourceKey) -> Result<(), Rejection> {
        match &self.hold {
            Some(h) => Err(Rejection::OnHold {
                key: key.clone(),
                by: h.by.clone(),
                reason: h.reason.clone(),
            }),
            None => Ok(()),
        }
    }
}

fn expiry(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    // check_ttl bounds ttl to a day, so this cannot overflow.
    now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
}

fn check_text(field: &str, value: &str) -> Result<(), Rejection> {
    if value.trim().is_empty() {
        return Err(Rejection::invalid(field, "must not be empty"));
    }
    if value.contains('\0') {
        return Err(Rejection::invalid(field, "must not contain NUL"));
    }
    Ok(())
}

/// Acquire: granted when the key is free, expired or released; renewed (same token) when
/// `holder` already holds it; otherwise held by the current holder or the operator hold.
/// A free key with waiters goes to the first of them, not to a caller that did not queue:
/// that hand-off's grant is returned beside the caller's outcome, so the waiter can be told.
pub fn acquire(
    row: &mut LockRow,
    key: &ResourceKey,
    holder: &str,
    ttl: Duration,
    now: DateTime<Utc>,
    token: u64,
) -> Result<(LockOutcome, Option<LeaseGrant>), Rejection> {
    check_text("acquire.holder", holder)?;
    check_ttl("acquire.ttl", ttl)?;
    let handed = hand_off(row, key, now, token);
    Ok((grant_or_refuse(row, key, holder, ttl, now, token)?, handed))
}

/// The rules of acquire once any hand-off is done.
fn grant_or_refuse(
    row: &mut LockRow,
    key: &ResourceKey,
    holder: &str,
    ttl: Duration,
    now: DateTime<Utc>,
    token: u64,
) -> Result<LockOutcome, Rejection> {
    if let Some(hold) = &row.hold {
        return Ok(LockOutcome::Held {
            holder: format!("operator hold by {}: {}", hold.by, hold.reason),
            until: None,
        });
    }
    if let Some(live) = row.live_lease(now) {
        if live.holder != holder {
            return Ok(LockOutcome::Held {
                holder: live.holder.clone(),
                until: Some(live.expires_at),
            });
        }
        // The holder asks again: its lease is extended and keeps its token.
        let lease = row.lease.as_mut().expect("live lease exists");
        lease.expires_at = expiry(now, ttl);
        lease.ttl = ttl;
        return Ok(LockOutcome::Granted(lease.grant(key)));
    }
    Ok(LockOutcome::Granted(grant_to(
        row, key, holder, ttl, now, token,
    )))
}

fn grant_to(
    row: &mut LockRow,
    key: &ResourceKey,
    holder: &str,
    ttl: Duration,
    now: DateTime<Utc>,
    token: u64,
) -> LeaseGrant {
    let lease = Lease {
        holder: holder.to_owned(),
        token: FencingToken(token),
        granted_at: now,
        expires_at: expiry(now, ttl),
        ttl,
    };
    let grant = lease.grant(key);
    row.lease = Some(lease);
    row.released = false;
    row.waiters.retain(|w| w.holder != holder);
    grant
}

/// Hands a free key (no live lease, no operator hold) to the first waiter still waiting at
/// `now`, with `token`; lapsed waiters are dropped. Returns the grant, so that the waiter can
/// be told.
pub fn hand_off(
    row: &mut LockRow,
    key: &ResourceKey,
    now: DateTime<Utc>,
    token: u64,
) -> Option<LeaseGrant> {
    row.waiters.retain(|w| w.until > now);
    if row.hold.is_some() || row.live_lease(now).is_some() || row.waiters.is_empty() {
        return None;
    }
    let next = row.waiters.remove(0);
    Some(grant_to(row, key, &next.holder, next.ttl, now, token))
}

/// What [`acquire_or_wait`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Granted (or renewed, for the holder), or refused without queuing (operator hold, or
    /// the queue is full).
    Lock(LockOutcome),
    /// The caller waits at `position` (0: next) behind the lease of `holder`.
    Queued {
        /// The current holder.
        holder: String,
        /// When its lease lapses unless renewed.
        until: DateTime<Utc>,
        /// The caller's place in the queue.
        position: usize,
    },
}

/// Acquire-or-wait: like [`acquire`], but a caller that finds the key leased joins its queue
/// (or, already queued, keeps its place with the new `ttl` and `wait`). Also returns the
/// grant of a hand-off to another waiter that this command made.
pub fn acquire_or_wait(
    row: &mut LockRow,
    key: &ResourceKey,
    holder: &str,
    ttl: Duration,
    wait: Duration,
    now: DateTime<Utc>,
    token: u64,
) -> Result<(WaitOutcome, Option<LeaseGrant>), Rejection> {
    check_text("acquire.holder", holder)?;
    check_ttl("acquire.ttl", ttl)?;
    check_ttl("acquire.wait", wait)?;
    let handed = hand_off(row, key, now, token);
    let outcome = grant_or_refuse(row, key, holder, ttl, now, token)?;
    let LockOutcome::Held {
        holder: current,
        until: Some(until),
    } = outcome
    else {
        // Granted, or held by an operator hold (no queue behind a hold).
        return Ok((WaitOutcome::Lock(outcome), handed));
    };
    let until_wait = expiry(now, wait);
    let position = match row.waiters.iter().position(|w| w.holder == holder) {
        Some(i) => {
            row.waiters[i].ttl = ttl;
            row.waiters[i].until = until_wait;
            i
        }
        None if row.waiters.len() >= MAX_WAITERS => {
            return Ok((
                WaitOutcome::Lock(LockOutcome::Held {
                    holder: current,
                    until: Some(until),
                }),
                handed,
            ))
        }
        None => {
            row.waiters.push(Waiter {
                holder: holder.to_owned(),
                ttl,
                until: until_wait,
            });
            row.waiters.len() - 1
        }
    };
    Ok((
        WaitOutcome::Queued {
            holder: current,
            until,
            position,
        },
        handed,
    ))
}

/// Leaves the queue: returns the lease if it was handed to `holder` meanwhile (it is theirs
/// to use or release), plus the grant of a hand-off to the next waiter this command made.
pub fn cancel_wait(
    row: &mut LockRow,
    key: &ResourceKey,
    holder: &str,
    now: DateTime<Utc>,
    token: u64,
) -> (Option<LeaseGrant>, Option<LeaseGrant>) {
    row.waiters.retain(|w| w.holder != holder);
    let handed = hand_off(row, key, now, token);
    let mine = row
        .live_lease(now)
        .filter(|l| l.holder == holder)
        .map(|l| l.grant(key));
    (mine, handed)
}

/// Renew: extends the lease with `token` if it is the current one, has not expired, and no
/// operator hold is on the key (a hold stops the current holder).
pub fn renew(
    row: &mut LockRow,
    key: &ResourceKey,
    token: FencingToken,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<LeaseGrant, Rejection> {
    check_ttl("renew.ttl", ttl)?;
    let refusal = row.wrong_token(key, token, now);
    if current_token(row) == Some(token) {
        row.on_hold(key)?;
    }
    match row.lease.as_mut() {
        Some(lease) if lease.token == token && !row.released => {
            if !lease.is_live(now) {
                return Err(Rejection::Expired {
                    key: key.clone(),
                    token,
                    expired_at: lease.expires_at,
                });
            }
            lease.expires_at = expiry(now, ttl);
            lease.ttl = ttl;
            Ok(lease.grant(key))
        }
        _ => Err(refusal),
    }
}

/// The token of the lease that is not released (live or expired), if any.
fn current_token(row: &LockRow) -> Option<FencingToken> {
    row.lease
        .as_ref()
        .filter(|_| !row.released)
        .map(|l| l.token)
}

/// Release: gives back the lease with `token`. Releasing the last lease again (a retried
/// release, also after that release handed the key to a waiter or the key was granted
/// again) or releasing an expired lease that nobody took since is accepted; any other token
/// is refused. The first waiter, if any, gets the lease at once with `next_token`; its grant
/// is returned.
pub fn release(
    row: &mut LockRow,
    key: &ResourceKey,
    token: FencingToken,
    now: DateTime<Utc>,
    next_token: u64,
) -> Result<Option<LeaseGrant>, Rejection> {
    match &row.lease {
        Some(lease) if lease.token == token => {
            row.released = true;
            row.last_released = Some(token);
            Ok(hand_off(row, key, now, next_token))
        }
        // The retry of a release that took effect: nothing to do.
        _ if row.last_released == Some(token) => Ok(None),
        _ => Err(row.wrong_token(key, token, now)),
    }
}

/// Claim of an orphaned fault's resource: refused while a lease is in force on the key;
/// otherwise the key is granted to `claimant` with `token`, ahead of queued waiters (the
/// revert comes first; the claimant's release serves the queue). An operator hold does not
/// stop a claim: reverting a fault is what a hold is for.
pub fn claim(
    row: &mut LockRow,
    key: &ResourceKey,
    claimant: &str,
    ttl: Duration,
    now: DateTime<Utc>,
    token: u64,
) -> Result<LeaseGrant, Rejection> {
    check_text("claim_orphan.claimant", claimant)?;
    check_ttl("claim_orphan.ttl", ttl)?;
    if let Some(l) = row.live_lease(now) {
        return Err(Rejection::LeaseInForce {
            key: key.clone(),
            holder: l.holder.clone(),
            token: l.token,
            until: l.expires_at,
        });
    }
    Ok(grant_to(row, key, claimant, ttl, now, token))
}

/// Hold: protects the key from every acquire (placing it again replaces who and why).
/// A lease already granted runs to its end or its release.
pub fn hold(
    row: &mut LockRow,
    by: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    check_text("hold.by", by)?;
    check_text("hold.reason", reason)?;
    row.hold = Some(OperatorHold {
        by: by.to_owned(),
        reason: reason.to_owned(),
        since: row.hold.as_ref().map(|h| h.since).unwrap_or(now),
    });
    Ok(())
}

/// Unhold: removes the operator hold; refused when there is none. The first waiter, if
/// any, gets the free key with `token`; its grant is returned.
pub fn unhold(
    row: &mut LockRow,
    key: &ResourceKey,
    now: DateTime<Utc>,
    token: u64,
) -> Result<Option<LeaseGrant>, Rejection> {
    if row.hold.take().is_none() {
        return Err(Rejection::NotOnHold { key: key.clone() });
    }
    Ok(hand_off(row, key, now, token))
}

/// True when `token` is the current, unexpired lease of the row at `now` (what a fault
/// record must carry).
pub fn token_is_live(row: &LockRow, token: FencingToken, now: DateTime<Utc>) -> bool {
    row.live_lease(now).is_some_and(|l| l.token == token)
}

/// True when `token` is the last lease granted on the key, in force or not (what settling a
/// fault needs: the injector's lease or an orphan claimant's, never a superseded one).
pub fn token_is_current(row: &LockRow, token: FencingToken) -> bool {
    row.lease.as_ref().is_some_and(|l| l.token == token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn key() -> ResourceKey {
        "docker/shop/redis/1".parse().unwrap()
    }

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    /// [`acquire`] for the checks that do not look at hand-offs.
    fn acquire_only(
        row: &mut LockRow,
        key: &ResourceKey,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
        token: u64,
    ) -> Result<LockOutcome, Rejection> {
        acquire(row, key, holder, ttl, now, token).map(|(outcome, _)| outcome)
    }

    const TTL: Duration = Duration::from_secs(10);

    fn granted(o: LockOutcome) -> LeaseGrant {
        match o {
            LockOutcome::Granted(g) => g,
            other => panic!("expected a grant, got {other:?}"),
        }
    }

    #[test]
    fn free_key_is_granted_with_the_log_index_as_token() {
        let mut row = LockRow::default();
        let g = granted(acquire_only(&mut row, &key(), "a", TTL, t(0), 7).unwrap());
        assert_eq!(g.token, FencingToken(7));
        assert_eq!(g.expires_at, t(10));
        assert_eq!(g.holder, "a");
    }

    #[test]
    fn held_key_answers_holder_and_until() {
        let mut row = LockRow::default();
        acquire_only(&mut row, &key(), "a", TTL, t(0), 7).unwrap();
        let before = row.clone();
        let o = acquire_only(&mut row, &key(), "b", TTL, t(5), 8).unwrap();
        assert_eq!(
            o,
            LockOutcome::Held {
                holder: "a".into(),
                until: Some(t(10))
            }
        );
        assert_eq!(row, before, "a held answer changes nothing");
    }

    #[test]
    fn reacquire_by_the_holder_renews_and_keeps_the_token() {
        let mut row = LockRow::default();
        acquire_only(&mut row, &key(), "a", TTL, t(0), 7).unwrap();
        let g = granted(acquire_only(&mut row, &key(), "a", TTL, t(5), 9).unwrap());
        assert_eq!(g.token, FencingToken(7));
        assert_eq!(g.expires_at, t(15));
    }

    #[test]
    fn expired_lease_is_granted_to_another_with_a_larger_token() {
        let mut row = LockRow::default();
        acquire_only(&mut row, &key(), "a", TTL, t(0), 7).unwrap();
        // Exactly at expiry the lease is over.
        let g = granted(acquire_only(&mut row, &key(), "b", TTL, t(10), 12).unwrap());
        assert_eq!(g.token, FencingToken(12));
        assert_eq!(g.holder, "b");
    }

    #[test]
    fn renew_with_wrong_token_is_refused_and_changes_nothing() {
        let mut row = LockRow::default();
        acquire_only(&mut row, &key(), "a", TTL, t(0), 7).unwrap();
        let before = row.clone();
        let e = renew(&mut row, &key(), FencingToken(6), TTL, t(1)).unwrap_err();
        assert!(matches!(
            e,
            Rejection::WrongToken {
                current: Some(FencingToken(7)),
                ..
            }
        ));
        assert_eq!(row, before);
    }

    #[test]
    fn renew_after_expiry_is_refused() {
        let mut row = LockRow::default();
        acquire_only(&mut row, &key(), "a", TTL, t(0), 7).unwrap();
        let e = renew(&mut row, &key(), FencingToken(7), TTL, t(11)).unwrap_err();
        assert_eq!(
            e,
            Rejection::Expired {
                key: key(),
                token: FencingToken(7),
                expired_at: t(10)
            }
        );
    }

    #[test]
    fn renew_extends_from_the_stamped_time() {
        let mut row = LockRow::default();
        acquire_only(&mut row, &key(), "a", TTL, t(0), 7).unwrap();
        let g = renew(&mut row, &key(), FencingToken(7), TTL, t(9)).unwrap();
        assert_eq!(g.expires_at, t(19));
        assert_eq!(g.token, FencingToken(7));
    }

    #[test]
    fn release_only_with_the_right_token() {
        let mut row = LockRow::default();
        acquire_only(&mut row, &key(), "a", TTL, t(0), 7).unwrap();
        let before = row.clone();
        assert!(release(&mut row, &key(), FencingToken(8), t(1), 8).is_err());
        assert_eq!(row, before);
        assert_eq!(
            release(&mut row, &key(), FencingToken(7), t(1), 8),
            Ok(None)
        );
        assert!(row.live_lease(t(1)).is_none());
        // A retried release is harmless.
        release(&mut row, &key(), FencingToken(7), t(1), 9).unwrap();
        // The released lease cannot be renewed.
        assert!(renew(&mut row, &key(), FencingToken(7), TTL, t(2)).is_err());
        // And the key is free again.
        let g = granted(acquire_only(&mut row, &key(), "b", TTL, t(2), 9).unwrap());
        assert_eq!(g.token, FencingToken(9));
        // A late retry of the old release is told it took effect, and changes nothing.
        let before = row.clone();
        assert_eq!(
            release(&mut row, &key(), FencingToken(7), t(3), 10),
            Ok(None)
        );
        assert_eq!(row, before);
        // A token that was never released is refused, naming the holder.
        let e = release(&mut row, &key(), FencingToken(8), t(3), 10).unwrap_err();
        assert!(e.to_string().contains("held by b with token 9"), "{e}");
    }

    #[test]
    fn operator_hold_blocks_every_acquire_until_unhold() {
        let mut row = LockRow::default();
        hold(&mut row, "alice", "maintenance", t(0)).unwrap();
        for (i, h) in ["a", "b", "alice"].iter().enumerate() {
            let o =
                acquire_only(&mut row, &key(), h, TTL, t(100 + i as i64), 5 + i as u64).unwrap();
            assert!(matches!(o, LockOutcome::Held { until: None, .. }), "{o:?}");
        }
        assert_eq!(unhold(&mut row, &key(), t(150), 19), Ok(None));
        granted(acquire_only(&mut row, &key(), "a", TTL, t(200), 20).unwrap());
        assert_eq!(
            unhold(&mut row, &key(), t(201), 21).unwrap_err(),
            Rejection::NotOnHold { key: key() }
        );
    }

    #[test]
    fn bad_input_is_refused_with_the_field_named() {
        let mut row = LockRow::default();
        let e = acquire_only(&mut row, &key(), "", TTL, t(0), 1).unwrap_err();
        assert!(e.to_string().contains("acquire.holder"), "{e}");
        let e = acquire_only(&mut row, &key(), "a", Duration::ZERO, t(0), 1).unwrap_err();
        assert!(e.to_string().contains("acquire.ttl"), "{e}");
        let e =
            acquire_only(&mut row, &key(), "a", Duration::from_secs(90_000), t(0), 1).unwrap_err();
        assert!(e.to_string().contains("maximum"), "{e}");
        let e = hold(&mut row, "", "x", t(0)).unwrap_err();
        assert!(e.to_string().contains("hold.by"), "{e}");
        assert_eq!(row, LockRow::default());
    }

    const WAIT: Duration = Duration::from_secs(30);

    /// A row leased to "a" at t(0) (token 10), with `waiters` queued for [`WAIT`] at t(1),
    /// t(2), ... (tokens 11, 12, ...).
    fn leased_with_queue(waiters: &[&str]) -> (LockRow, LeaseGrant) {
        let mut row = LockRow::default();
        let a = granted(acquire_only(&mut row, &key(), "a", TTL, t(0), 10).unwrap());
        for (i, w) in waiters.iter().enumerate() {
            let i = i as u64;
            acquire_or_wait(&mut row, &key(), w, TTL, WAIT, t(1 + i as i64), 11 + i).unwrap();
        }
        (row, a)
    }

    fn queued(o: WaitOutcome) -> usize {
        match o {
            WaitOutcome::Queued { position, .. } => position,
            other => panic!("expected to queue, got {other:?}"),
        }
    }

    #[test]
    fn release_hands_the_lease_to_waiters_in_order_with_growing_tokens() {
        let mut row = LockRow::default();
        let a = granted(acquire_only(&mut row, &key(), "a", TTL, t(0), 10).unwrap());
        for (i, h) in ["b", "c", "d"].iter().enumerate() {
            let (o, handed) =
                acquire_or_wait(&mut row, &key(), h, TTL, WAIT, t(1), 11 + i as u64).unwrap();
            assert_eq!(queued(o), i);
            assert_eq!(handed, None);
        }
        // Asking again keeps the place in the queue.
        let (o, _) = acquire_or_wait(&mut row, &key(), "c", TTL, WAIT, t(2), 14).unwrap();
        assert_eq!(queued(o), 1);
        // A plain acquire does not jump the queue.
        let o = acquire_only(&mut row, &key(), "x", TTL, t(2), 15).unwrap();
        assert!(
            matches!(o, LockOutcome::Held { ref holder, .. } if holder == "a"),
            "{o:?}"
        );
        let b = release(&mut row, &key(), a.token, t(3), 20)
            .unwrap()
            .unwrap();
        assert_eq!((b.holder.as_str(), b.token), ("b", FencingToken(20)));
        assert_eq!(b.expires_at, t(13));
        assert!(b.token > a.token);
        let c = release(&mut row, &key(), b.token, t(4), 21)
            .unwrap()
            .unwrap();
        assert_eq!((c.holder.as_str(), c.token), ("c", FencingToken(21)));
        // d gives up: nothing is handed to it.
        assert_eq!(cancel_wait(&mut row, &key(), "d", t(5), 22), (None, None));
        assert_eq!(release(&mut row, &key(), c.token, t(6), 23), Ok(None));
        assert!(row.live_lease(t(6)).is_none());
        assert!(row.waiters.is_empty());
    }

    #[test]
    fn a_waiter_whose_wait_lapsed_is_skipped() {
        let mut row = LockRow::default();
        let a = granted(acquire_only(&mut row, &key(), "a", TTL, t(0), 10).unwrap());
        acquire_or_wait(&mut row, &key(), "b", TTL, Duration::from_secs(5), t(1), 11).unwrap();
        acquire_or_wait(&mut row, &key(), "c", TTL, WAIT, t(2), 12).unwrap();
        // b stopped waiting at t(6): c is next.
        let c = release(&mut row, &key(), a.token, t(7), 13)
            .unwrap()
            .unwrap();
        assert_eq!(c.holder, "c");
        assert!(row.waiters.is_empty());
        // With only lapsed waiters, a release leaves the key free.
        acquire_or_wait(&mut row, &key(), "d", TTL, Duration::from_secs(1), t(8), 14).unwrap();
        assert_eq!(release(&mut row, &key(), c.token, t(20), 15), Ok(None));
        assert!(row.live_lease(t(20)).is_none());
        assert!(row.waiters.is_empty());
    }

    #[test]
    fn a_lapsed_lease_goes_to_the_first_waiter_at_the_next_command() {
        let (mut row, _) = leased_with_queue(&["b", "c"]);
        // a's lease lapsed at t(10) without a release; c asks again at t(11).
        let (o, handed) = acquire_or_wait(&mut row, &key(), "c", TTL, WAIT, t(11), 13).unwrap();
        let b = handed.expect("b is handed the lease");
        assert_eq!((b.holder.as_str(), b.token), ("b", FencingToken(13)));
        assert_eq!(queued(o), 0);
        // b's holder asking again is a renewal, not a new grant.
        let (o, handed) = acquire_or_wait(&mut row, &key(), "b", TTL, WAIT, t(12), 14).unwrap();
        assert_eq!(handed, None);
        match o {
            WaitOutcome::Lock(LockOutcome::Granted(g)) => assert_eq!(g.token, b.token),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_plain_acquire_of_a_lapsed_key_hands_it_to_the_first_waiter_and_says_so() {
        let (mut row, _) = leased_with_queue(&["b"]);
        // a's lease lapsed at t(10); x did not queue.
        let (o, handed) = acquire(&mut row, &key(), "x", TTL, t(11), 12).unwrap();
        let b = handed.expect("b is handed the lease");
        assert_eq!((b.holder.as_str(), b.token), ("b", FencingToken(12)));
        assert!(
            matches!(o, LockOutcome::Held { ref holder, .. } if holder == "b"),
            "{o:?}"
        );
        // Nothing to hand over while the lease is live.
        let (_, handed) = acquire(&mut row, &key(), "y", TTL, t(12), 13).unwrap();
        assert_eq!(handed, None);
    }

    #[test]
    fn cancelling_after_the_hand_off_returns_the_lease() {
        let (mut row, a) = leased_with_queue(&["b"]);
        release(&mut row, &key(), a.token, t(2), 12).unwrap();
        let (mine, handed) = cancel_wait(&mut row, &key(), "b", t(3), 13);
        assert_eq!(mine.map(|g| g.token), Some(FencingToken(12)));
        assert_eq!(handed, None);
    }

    #[test]
    fn no_queue_behind_an_operator_hold_and_unhold_serves_the_queue() {
        let (mut row, a) = leased_with_queue(&["b"]);
        hold(&mut row, "op", "maintenance", t(2)).unwrap();
        let (o, _) = acquire_or_wait(&mut row, &key(), "c", TTL, WAIT, t(3), 12).unwrap();
        assert!(matches!(
            o,
            WaitOutcome::Lock(LockOutcome::Held { until: None, .. })
        ));
        // The release hands nothing over while the hold is on.
        assert_eq!(release(&mut row, &key(), a.token, t(4), 13), Ok(None));
        let b = unhold(&mut row, &key(), t(5), 14).unwrap().unwrap();
        assert_eq!((b.holder.as_str(), b.token), ("b", FencingToken(14)));
    }

    #[test]
    fn bad_wait_is_refused_and_the_queue_is_bounded() {
        let mut row = LockRow::default();
        granted(acquire_only(&mut row, &key(), "a", TTL, t(0), 10).unwrap());
        let e = acquire_or_wait(&mut row, &key(), "b", TTL, Duration::ZERO, t(1), 11).unwrap_err();
        assert!(e.to_string().contains("acquire.wait"), "{e}");
        for i in 0..MAX_WAITERS {
            let h = format!("w{i}");
            acquire_or_wait(&mut row, &key(), &h, TTL, WAIT, t(1), 12).unwrap();
        }
        let (o, _) = acquire_or_wait(&mut row, &key(), "late", TTL, WAIT, t(1), 13).unwrap();
        assert!(
            matches!(o, WaitOutcome::Lock(LockOutcome::Held { .. })),
            "{o:?}"
        );
        assert_eq!(row.waiters.len(), MAX_WAITERS);
    }

    #[test]
    fn rows_of_earlier_layouts_still_decode() {
        #[derive(Serialize)]
        struct OldLease {
            holder: String,
            token: FencingToken,
            granted_at: DateTime<Utc>,
            expires_at: DateTime<Utc>,
        }
        #[derive(Serialize)]
        struct V1 {
            lease: Option<OldLease>,
            released: bool,
            hold: Option<OperatorHold>,
        }
        #[derive(Serialize)]
        struct V2 {
            lease: Option<OldLease>,
            released: bool,
            hold: Option<OperatorHold>,
            waiters: Vec<Waiter>,
        }
        let (mut row, _) = leased_with_queue(&["b"]);
        let old_lease = || {
            let l = row.lease.clone().unwrap();
            Some(OldLease {
                holder: l.holder,
                token: l.token,
                granted_at: l.granted_at,
                expires_at: l.expires_at,
            })
        };
        let v1 = encode(
            "lock row",
            &V1 {
                lease: old_lease(),
                released: false,
                hold: None,
            },
        )
        .unwrap();
        let v2 = encode(
            "lock row",
            &V2 {
                lease: old_lease(),
                released: false,
                hold: None,
                waiters: row.waiters.clone(),
            },
        )
        .unwrap();
        // An old lease's ttl is taken from its grant to its expiry.
        let decoded = LockRow::decode(&v2).unwrap();
        assert_eq!(decoded, row);
        let decoded = LockRow::decode(&v1).unwrap();
        assert_eq!(decoded.lease, row.lease);
        assert!(decoded.waiters.is_empty());
        row.last_released = Some(FencingToken(3));
        assert_eq!(LockRow::decode(&row.encode().unwrap()).unwrap(), row);
        assert!(LockRow::decode(&[0xff, 0xff]).is_err());
        assert!(LockRow::decode(&[ROW_V3, 0xff]).is_err());
    }

    #[test]
    fn a_hold_stops_renewals_and_a_claim_needs_a_lapsed_lease() {
        let mut row = LockRow::default();
        let a = granted(acquire_only(&mut row, &key(), "a", TTL, t(0), 10).unwrap());
        hold(&mut row, "op", "incident", t(1)).unwrap();
        let before = row.clone();
        let e = renew(&mut row, &key(), a.token, TTL, t(2)).unwrap_err();
        assert!(
            matches!(e, Rejection::OnHold { ref by, .. } if by == "op"),
            "{e}"
        );
        assert_eq!(row, before);
        // A claim is refused while the lease is in force, naming it.
        let e = claim(&mut row, &key(), "n2", TTL, t(5), 11).unwrap_err();
        assert!(
            matches!(e, Rejection::LeaseInForce { ref holder, token, .. } if holder == "a" && token == a.token),
            "{e}"
        );
        assert_eq!(row, before);
        // Once it lapsed, the claimant gets the key (under the hold too) with a new token.
        let c = claim(&mut row, &key(), "n2", TTL, t(10), 12).unwrap();
        assert_eq!((c.holder.as_str(), c.token), ("n2", FencingToken(12)));
        assert!(token_is_current(&row, c.token) && !token_is_current(&row, a.token));
    }

    #[test]
    fn a_claim_goes_ahead_of_the_queue() {
        let (mut row, _) = leased_with_queue(&["b"]);
        let c = claim(&mut row, &key(), "n2", TTL, t(11), 13).unwrap();
        assert_eq!(c.holder, "n2");
        assert_eq!(row.waiters.len(), 1, "the waiter keeps its place");
        let b = release(&mut row, &key(), c.token, t(12), 14)
            .unwrap()
            .unwrap();
        assert_eq!(b.holder, "b");
    }

    #[test]
    fn sequence_numbers_order_by_index_then_position() {
        assert!(sequence(7, 0) > sequence(6, MAX_COMMANDS_PER_ENTRY - 1));
        assert!(sequence(7, 1) > sequence(7, 0));
        assert_eq!(token_index(FencingToken(sequence(7, 3))), 7);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire(u8, u8),
        AcquireOrWait(u8, u8, u8),
        CancelWait(u8),
        Renew(u8, u8),
        Release(u8),
        Hold,
        Unhold,
        Tick(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..4, 1u8..20).prop_map(|(h, ttl)| Op::Acquire(h, ttl)),
            3 => (0u8..4, 1u8..20, 1u8..30).prop_map(|(h, ttl, w)| Op::AcquireOrWait(h, ttl, w)),
            1 => (0u8..4).prop_map(Op::CancelWait),
            2 => (0u8..4, 1u8..20).prop_map(|(k, ttl)| Op::Renew(k, ttl)),
            3 => (0u8..4).prop_map(Op::Release),
            1 => Just(Op::Hold),
            1 => Just(Op::Unhold),
            3 => (0u8..15).prop_map(Op::Tick),
        ]
    }

    proptest! {
        /// Whatever the sequence of commands (waiters included): a new lease is only granted
        /// when the previous one is released or lapsed and no hold is on, with a larger token
        /// (the command's own sequence number); a hand-off goes to the first waiter still
        /// waiting; the holder is never queued; a refused command changes nothing.
        #[test]
        fn one_live_holder_tokens_grow_and_hand_offs_follow_the_queue(ops in proptest::collection::vec(op(), 1..200)) {
            let mut row = LockRow::default();
            let mut now = t(0);
            let mut index = 0u64;
            let mut last_token = 0u64;
            for o in ops {
                index += 1;
                let before = row.clone();
                let is_release = matches!(o, Op::Release(_));
                // A waiter that cancels leaves the queue before any hand-off.
                let leaving = match o {
                    Op::CancelWait(h) => Some(format!("h{h}")),
                    _ => None,
                };
                let refused = match o {
                    Op::Tick(s) => {
                        now += chrono::Duration::seconds(s as i64);
                        false
                    }
                    Op::Acquire(h, ttl) => {
                        acquire_only(&mut row, &key(), &format!("h{h}"), Duration::from_secs(ttl as u64), now, index).is_err()
                    }
                    Op::AcquireOrWait(h, ttl, w) => {
                        let wait = Duration::from_secs(w as u64);
                        acquire_or_wait(&mut row, &key(), &format!("h{h}"), Duration::from_secs(ttl as u64), wait, now, index).is_err()
                    }
                    Op::CancelWait(h) => {
                        cancel_wait(&mut row, &key(), &format!("h{h}"), now, index);
                        false
                    }
                    Op::Renew(k, ttl) => {
                        let token = FencingToken(last_token.saturating_sub(k as u64));
                        renew(&mut row, &key(), token, Duration::from_secs(ttl as u64), now).is_err()
                    }
                    Op::Release(k) => {
                        let token = FencingToken(last_token.saturating_sub(k as u64));
                        release(&mut row, &key(), token, now, index).is_err()
                    }
                    Op::Hold => {
                        hold(&mut row, "op", "why", now).unwrap();
                        false
                    }
                    Op::Unhold => unhold(&mut row, &key(), now, index).is_err(),
                };
                if refused {
                    prop_assert_eq!(&row, &before);
                }
                let old = before.lease.as_ref().map(|l| l.token);
                let new = row.lease.as_ref().map(|l| l.token);
                if new != old {
                    let lease = row.lease.as_ref().unwrap();
                    prop_assert_eq!(lease.token, FencingToken(index));
                    prop_assert!(lease.token.0 > last_token);
                    // Over a live lease only when this very command released it.
                    prop_assert!(
                        before.live_lease(now).is_none() || is_release,
                        "granted over a live lease"
                    );
                    prop_assert!(row.hold.is_none());
                    // A waiter that was handed the lease was the first one still waiting.
                    let first_live = before
                        .waiters
                        .iter()
                        .find(|w| w.until > now && Some(&w.holder) != leaving.as_ref())
                        .map(|w| w.holder.clone());
                    if before.waiters.iter().any(|w| w.holder == lease.holder && w.until > now) {
                        prop_assert_eq!(Some(lease.holder.clone()), first_live);
                    }
                    last_token = lease.token.0;
                }
                if let Some(l) = row.live_lease(now) {
                    prop_assert!(row.waiters.iter().all(|w| w.holder != l.holder));
                }
                let mut holders: Vec<&str> = row.waiters.iter().map(|w| w.holder.as_str()).collect();
                holders.sort_unstable();
                holders.dedup();
                prop_assert_eq!(holders.len(), row.waiters.len());
            }
        }
    }
}
