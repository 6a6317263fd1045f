//! Lease locks: the pure rules, applied to one key's [`LockRow`].
//!
//! Every function takes the leader-stamped `now` and, for a grant, the log index of the
//! entry being applied (which becomes the fencing token). Nothing here reads a clock, so
//! every replica that applies the same entries reaches the same rows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ire_core::{FencingToken, LeaseGrant, LockInfo, LockOutcome, OperatorHold, ResourceKey};
use serde::{Deserialize, Serialize};

use crate::types::{check_ttl, Rejection};

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

    /// True when the row says nothing worth keeping (no lease ever, no hold).
    pub fn is_empty(&self) -> bool {
        self.lease.is_none() && self.hold.is_none()
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
pub fn acquire(
    row: &mut LockRow,
    key: &ResourceKey,
    holder: &str,
    ttl: Duration,
    now: DateTime<Utc>,
    index: u64,
) -> Result<LockOutcome, Rejection> {
    check_text("acquire.holder", holder)?;
    check_ttl("acquire.ttl", ttl)?;
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
        return Ok(LockOutcome::Granted(lease.grant(key)));
    }
    let lease = Lease {
        holder: holder.to_owned(),
        token: FencingToken(index),
        granted_at: now,
        expires_at: expiry(now, ttl),
    };
    let grant = lease.grant(key);
    row.lease = Some(lease);
    row.released = false;
    Ok(LockOutcome::Granted(grant))
}

/// Renew: extends the lease with `token` if it is the current one and has not expired.
pub fn renew(
    row: &mut LockRow,
    key: &ResourceKey,
    token: FencingToken,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<LeaseGrant, Rejection> {
    check_ttl("renew.ttl", ttl)?;
    let current = current_token(row);
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
            Ok(lease.grant(key))
        }
        _ => Err(Rejection::WrongToken {
            key: key.clone(),
            presented: token,
            current,
        }),
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
/// release) or releasing an expired lease that nobody took since is accepted; any other
/// token is refused.
pub fn release(row: &mut LockRow, key: &ResourceKey, token: FencingToken) -> Result<(), Rejection> {
    match &row.lease {
        Some(lease) if lease.token == token => {
            row.released = true;
            Ok(())
        }
        _ => Err(Rejection::WrongToken {
            key: key.clone(),
            presented: token,
            current: current_token(row),
        }),
    }
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

/// Unhold: removes the operator hold; refused when there is none.
pub fn unhold(row: &mut LockRow, key: &ResourceKey) -> Result<(), Rejection> {
    if row.hold.take().is_none() {
        return Err(Rejection::NotOnHold { key: key.clone() });
    }
    Ok(())
}

/// True when `token` is the current, unexpired lease of the row at `now` (what a fault
/// record must carry).
pub fn token_is_live(row: &LockRow, token: FencingToken, now: DateTime<Utc>) -> bool {
    row.live_lease(now).is_some_and(|l| l.token == token)
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
        let g = granted(acquire(&mut row, &key(), "a", TTL, t(0), 7).unwrap());
        assert_eq!(g.token, FencingToken(7));
        assert_eq!(g.expires_at, t(10));
        assert_eq!(g.holder, "a");
    }

    #[test]
    fn held_key_answers_holder_and_until() {
        let mut row = LockRow::default();
        acquire(&mut row, &key(), "a", TTL, t(0), 7).unwrap();
        let before = row.clone();
        let o = acquire(&mut row, &key(), "b", TTL, t(5), 8).unwrap();
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
        acquire(&mut row, &key(), "a", TTL, t(0), 7).unwrap();
        let g = granted(acquire(&mut row, &key(), "a", TTL, t(5), 9).unwrap());
        assert_eq!(g.token, FencingToken(7));
        assert_eq!(g.expires_at, t(15));
    }

    #[test]
    fn expired_lease_is_granted_to_another_with_a_larger_token() {
        let mut row = LockRow::default();
        acquire(&mut row, &key(), "a", TTL, t(0), 7).unwrap();
        // Exactly at expiry the lease is over.
        let g = granted(acquire(&mut row, &key(), "b", TTL, t(10), 12).unwrap());
        assert_eq!(g.token, FencingToken(12));
        assert_eq!(g.holder, "b");
    }

    #[test]
    fn renew_with_wrong_token_is_refused_and_changes_nothing() {
        let mut row = LockRow::default();
        acquire(&mut row, &key(), "a", TTL, t(0), 7).unwrap();
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
        acquire(&mut row, &key(), "a", TTL, t(0), 7).unwrap();
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
        acquire(&mut row, &key(), "a", TTL, t(0), 7).unwrap();
        let g = renew(&mut row, &key(), FencingToken(7), TTL, t(9)).unwrap();
        assert_eq!(g.expires_at, t(19));
        assert_eq!(g.token, FencingToken(7));
    }

    #[test]
    fn release_only_with_the_right_token() {
        let mut row = LockRow::default();
        acquire(&mut row, &key(), "a", TTL, t(0), 7).unwrap();
        let before = row.clone();
        assert!(release(&mut row, &key(), FencingToken(8)).is_err());
        assert_eq!(row, before);
        release(&mut row, &key(), FencingToken(7)).unwrap();
        assert!(row.live_lease(t(1)).is_none());
        // A retried release is harmless.
        release(&mut row, &key(), FencingToken(7)).unwrap();
        // The released lease cannot be renewed.
        assert!(renew(&mut row, &key(), FencingToken(7), TTL, t(2)).is_err());
        // And the key is free again.
        let g = granted(acquire(&mut row, &key(), "b", TTL, t(2), 9).unwrap());
        assert_eq!(g.token, FencingToken(9));
        // The old token no longer releases anything.
        assert!(release(&mut row, &key(), FencingToken(7)).is_err());
    }

    #[test]
    fn operator_hold_blocks_every_acquire_until_unhold() {
        let mut row = LockRow::default();
        hold(&mut row, "alice", "maintenance", t(0)).unwrap();
        for (i, h) in ["a", "b", "alice"].iter().enumerate() {
            let o = acquire(&mut row, &key(), h, TTL, t(100 + i as i64), 5 + i as u64).unwrap();
            assert!(matches!(o, LockOutcome::Held { until: None, .. }), "{o:?}");
        }
        unhold(&mut row, &key()).unwrap();
        granted(acquire(&mut row, &key(), "a", TTL, t(200), 20).unwrap());
        assert_eq!(
            unhold(&mut row, &key()).unwrap_err(),
            Rejection::NotOnHold { key: key() }
        );
    }

    #[test]
    fn bad_input_is_refused_with_the_field_named() {
        let mut row = LockRow::default();
        let e = acquire(&mut row, &key(), "", TTL, t(0), 1).unwrap_err();
        assert!(e.to_string().contains("acquire.holder"), "{e}");
        let e = acquire(&mut row, &key(), "a", Duration::ZERO, t(0), 1).unwrap_err();
        assert!(e.to_string().contains("acquire.ttl"), "{e}");
        let e = acquire(&mut row, &key(), "a", Duration::from_secs(90_000), t(0), 1).unwrap_err();
        assert!(e.to_string().contains("maximum"), "{e}");
        let e = hold(&mut row, "", "x", t(0)).unwrap_err();
        assert!(e.to_string().contains("hold.by"), "{e}");
        assert_eq!(row, LockRow::default());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire(u8, u8),
        Renew(u8, u8),
        Release(u8),
        Hold,
        Unhold,
        Tick(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..3, 1u8..20).prop_map(|(h, ttl)| Op::Acquire(h, ttl)),
            2 => (0u8..4, 1u8..20).prop_map(|(k, ttl)| Op::Renew(k, ttl)),
            2 => (0u8..4).prop_map(Op::Release),
            1 => Just(Op::Hold),
            1 => Just(Op::Unhold),
            3 => (0u8..15).prop_map(Op::Tick),
        ]
    }

    proptest! {
        /// Whatever the sequence of commands, at no time do two holders have a live lease,
        /// tokens of successive grants only grow, and a refused command changes nothing.
        #[test]
        fn at_most_one_live_holder_and_tokens_only_grow(ops in proptest::collection::vec(op(), 1..200)) {
            let mut row = LockRow::default();
            let mut now = t(0);
            let mut index = 0u64;
            let mut last_token = 0u64;
            // Holders whose grant is live, per our own model.
            let mut model: Option<(String, FencingToken, DateTime<Utc>)> = None;
            for o in ops {
                index += 1;
                let before = row.clone();
                match o {
                    Op::Tick(s) => now += chrono::Duration::seconds(s as i64),
                    Op::Acquire(h, ttl) => {
                        let holder = format!("h{h}");
                        let out = acquire(&mut row, &key(), &holder, Duration::from_secs(ttl as u64), now, index).unwrap();
                        if let LockOutcome::Granted(g) = out {
                            if let Some((mh, mt, mexp)) = &model {
                                if *mexp > now {
                                    // Only the same holder may be granted while a lease is live.
                                    prop_assert_eq!(mh, &holder);
                                    prop_assert_eq!(*mt, g.token);
                                }
                            }
                            prop_assert!(row.hold.is_none());
                            prop_assert!(g.token.0 >= last_token);
                            last_token = g.token.0;
                            model = Some((holder, g.token, g.expires_at));
                        }
                    }
                    Op::Renew(k, ttl) => {
                        let token = FencingToken(last_token.saturating_sub(k as u64));
                        match renew(&mut row, &key(), token, Duration::from_secs(ttl as u64), now) {
                            Ok(g) => {
                                let (_, mt, mexp) = model.as_mut().unwrap();
                                prop_assert_eq!(*mt, token);
                                prop_assert!(*mexp > now);
                                *mexp = g.expires_at;
                            }
                            Err(_) => prop_assert_eq!(&row, &before),
                        }
                    }
                    Op::Release(k) => {
                        let token = FencingToken(last_token.saturating_sub(k as u64));
                        match release(&mut row, &key(), token) {
                            Ok(()) => {
                                if model.as_ref().is_some_and(|m| m.1 == token) {
                                    model = None;
                                }
                            }
                            Err(_) => prop_assert_eq!(&row, &before),
                        }
                    }
                    Op::Hold => hold(&mut row, "op", "why", now).unwrap(),
                    Op::Unhold => {
                        if unhold(&mut row, &key()).is_err() {
                            prop_assert_eq!(&row, &before);
                        }
                    }
                }
                // The row's view agrees with the model.
                let live = row.live_lease(now).map(|l| (l.holder.clone(), l.token));
                let modelled = model.as_ref().filter(|m| m.2 > now).map(|m| (m.0.clone(), m.1));
                prop_assert_eq!(live, modelled);
            }
        }
    }
}
