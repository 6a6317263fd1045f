//! The FaultLedger suite (DESIGN.md: no orphaned faults; actions and sustained faults; the
//! ledger's writes are fenced by the resource's lease).

use std::time::Duration;

use chrono::Utc;

use super::eventually;
use crate::error::Error;
use crate::ledger::{FaultEntry, FaultLedger, FaultQuery, FaultState, OrphanQuery};
use crate::lock::{FencingToken, LeaseGrant, LockOutcome, LockService};
use crate::plugin::{FaultKind, Snapshot};
use crate::resource::ResourceKey;

/// A fault entry on `resource` under `token`, of `kind`, in `campaign`.
fn entry(
    id: &str,
    campaign: &str,
    resource: &ResourceKey,
    token: FencingToken,
    kind: FaultKind,
) -> FaultEntry {
    // Entries are injected in the order of this list, one millisecond apart, from one base
    // instant: a re-built entry is identical, and "oldest first" is this order everywhere.
    const ORDER: [&str; 9] = ["f0", "f1", "f2", "fx", "a0", "f3", "o1", "o2", "p1"];
    static BASE: std::sync::OnceLock<chrono::DateTime<Utc>> = std::sync::OnceLock::new();
    let rank = ORDER
        .iter()
        .position(|o| *o == id)
        .expect("an id of the suite");
    let now = *BASE.get_or_init(Utc::now) + chrono::Duration::milliseconds(rank as i64);
    FaultEntry {
        id: id.to_owned(),
        execution_id: format!("exec-{id}"),
        campaign: Some(campaign.to_owned()),
        step: Some("step".into()),
        resource: resource.clone(),
        plugin: "pause".into(),
        node: "node-1".into(),
        kind,
        token,
        snapshot: Some(Snapshot {
            plugin: "pause".into(),
            resource: resource.clone(),
            resource_id: "rid".into(),
            taken_at: now,
            state: serde_json::json!({"phase": "running"}),
        }),
        injected_at: now,
        duration: Some(Duration::from_secs(30)),
        state: FaultState::Injected,
    }
}

async fn lease(
    locks: &dyn LockService,
    key: &ResourceKey,
    holder: &str,
    ttl: Duration,
) -> LeaseGrant {
    match locks.acquire(key, holder, ttl).await.expect("acquire") {
        LockOutcome::Granted(g) => g,
        LockOutcome::Held { holder, .. } => panic!("{key} is held by {holder}"),
    }
}

fn is_conflict(r: &crate::Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(e) if matches!(e.root(), Error::Conflict { .. }))
}

fn is_invalid(r: &crate::Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(e) if matches!(e.root(), Error::Invalid { .. }))
}

async fn ids(ledger: &dyn FaultLedger, q: FaultQuery) -> Vec<String> {
    let faults = ledger.query_faults(&q).await.expect("query_faults");
    faults.into_iter().map(|f| f.id).collect()
}

async fn orphan_ids(ledger: &dyn FaultLedger, key: &ResourceKey) -> Vec<String> {
    let all = ledger
        .claimable_orphans(&OrphanQuery::default())
        .await
        .expect("claimable_orphans");
    all.into_iter()
        .filter(|f| &f.resource == key)
        .map(|f| f.id)
        .collect()
}

/// Runs every ledger check on keys under `prefix` (`adapter/...`), taking leases from `locks`,
/// which must be the lock service whose tokens `ledger` checks. `short_ttl` must be long
/// enough for a few round trips and short enough to wait out (e.g. 300 ms).
pub async fn ledger_conformance(
    ledger: &dyn FaultLedger,
    locks: &dyn LockService,
    prefix: &str,
    short_ttl: Duration,
) {
    let key = |n: &str| -> ResourceKey { format!("{prefix}/{n}").parse().expect("valid key") };
    let long = Duration::from_secs(60);
    let sustained = FaultKind::Sustained;
    let r = key("ledger");
    let g = lease(locks, &r, "exec-ledger", long).await;
    let t = g.token;
    let f = |id: &str, c: &str| entry(id, c, &r, t, sustained);

    // Recorded under the current lease; an identical retry is accepted, other content under
    // the same id is refused and changes nothing.
    for (id, c) in [("f0", "c1"), ("f1", "c1"), ("f2", "c2")] {
        ledger.record_fault(f(id, c)).await.expect("record_fault");
    }
    ledger
        .record_fault(f("f0", "c1"))
        .await
        .expect("an identical retry of a recorded fault is accepted");
    assert!(
        ledger.record_fault(f("f0", "c2")).await.is_err(),
        "a fault id was recorded twice with different content"
    );
    assert_eq!(
        ledger.fault("f0").await.unwrap().campaign.as_deref(),
        Some("c1"),
        "a refused re-record changed the fault"
    );
    assert_eq!(
        ledger.fault("f0").await.unwrap().snapshot,
        f("f0", "c1").snapshot,
        "the snapshot did not survive"
    );
    assert!(
        matches!(ledger.fault("nope").await, Err(e) if matches!(e.root(), Error::NotFound{..}))
    );
    // A stale or foreign token records nothing.
    let stale = FencingToken(t.0 + 1000);
    assert!(
        is_conflict(
            &ledger
                .record_fault(entry("fx", "c1", &r, stale, sustained))
                .await
        ),
        "a fault was recorded under a token that is not the resource's lease"
    );
    assert!(
        ledger.fault("fx").await.is_err(),
        "a refused record was kept"
    );

    // An action is recorded like any fault, ended (not reverted), and never active.
    ledger
        .record_fault(entry("a0", "c1", &r, t, FaultKind::Action))
        .await
        .expect("record an action");
    assert!(
        is_conflict(&ledger.end_action("a0", stale).await),
        "an action was ended with a stale token"
    );
    ledger.end_action("a0", t).await.expect("end_action");
    ledger
        .end_action("a0", t)
        .await
        .expect("ending an action again is accepted");
    assert!(
        matches!(
            ledger.fault("a0").await.unwrap().state,
            FaultState::Ended { .. }
        ),
        "end_action did not close the action"
    );
    assert!(
        is_invalid(&ledger.end_action("f0", t).await),
        "a sustained fault was ended as an action"
    );
    assert!(
        is_invalid(&ledger.mark_reverted("a0", "node-2", t).await),
        "an action was marked reverted"
    );

    // Settling a sustained fault needs the resource's current lease.
    assert!(
        is_conflict(&ledger.mark_reverted("f0", "node-2", stale).await),
        "a fault was marked reverted with a stale token"
    );
    assert!(
        ledger.fault("f0").await.unwrap().state == FaultState::Injected,
        "a refused mark changed the fault"
    );
    ledger
        .mark_reverted("f0", "node-2", t)
        .await
        .expect("mark_reverted");
    ledger
        .mark_reverted("f0", "node-2", t)
        .await
        .expect("marking a fault reverted again is accepted");
    assert!(
        is_conflict(
            &ledger
                .mark_revert_failed("f1", "daemon unreachable", stale)
                .await
        ),
        "a revert failure was recorded with a stale token"
    );
    ledger
        .mark_revert_failed("f1", "daemon unreachable", t)
        .await
        .expect("mark_revert_failed");
    assert!(
        matches!(ledger.fault("f0").await.unwrap().state, FaultState::Reverted { ref by, .. } if by == "node-2")
    );
    assert!(
        ledger.mark_revert_failed("f0", "late", t).await.is_err(),
        "a reverted fault went back to revert-failed"
    );
    assert!(
        ledger.mark_reverted("nope", "n", t).await.is_err(),
        "an unknown fault was marked"
    );

    // Active: sustained faults injected or whose revert failed; actions never are.
    let on_r = |active_only| FaultQuery {
        resource: Some(r.clone()),
        active_only,
        ..Default::default()
    };
    assert_eq!(ids(ledger, on_r(true)).await, ["f1", "f2"], "active faults");
    assert!(ledger.fault("f1").await.unwrap().is_active());
    assert!(!ledger.fault("a0").await.unwrap().is_active());
    assert_eq!(
        ids(
            ledger,
            FaultQuery {
                campaign: Some("c1".into()),
                resource: Some(r.clone()),
                ..Default::default()
            }
        )
        .await,
        ["f0", "f1", "a0"],
        "campaign filter"
    );
    let page = FaultQuery {
        offset: 1,
        limit: Some(1),
        ..on_r(false)
    };
    assert_eq!(ids(ledger, page).await, ["f1"], "pagination");

    // While the lease is in force nothing on the resource is an orphan or can be claimed.
    assert!(
        orphan_ids(ledger, &r).await.is_empty(),
        "a leased fault was offered as an orphan"
    );
    assert!(
        is_conflict(&ledger.claim_orphan("f1", "node-b", long).await),
        "a fault whose lease is in force was claimed"
    );

    // An operator hold stops the holder: it may record nothing more.
    locks.hold(&r, "alice", "maintenance").await.expect("hold");
    assert!(
        is_conflict(&ledger.record_fault(f("f3", "c1")).await),
        "a fault was recorded under an operator hold"
    );
    locks.unhold(&r).await.expect("unhold");
    locks.release(&r, t).await.expect("release");

    // A lease that lapsed leaves its sustained faults orphaned, and only those: the action
    // recorded under it (not ended: its node died mid-kill) is nothing to revert.
    let o = key("orphan");
    let go = lease(locks, &o, "exec-dies", short_ttl).await;
    ledger
        .record_fault(entry("o1", "c3", &o, go.token, sustained))
        .await
        .expect("record o1");
    ledger
        .record_fault(entry("o2", "c3", &o, go.token, FaultKind::Action))
        .await
        .expect("record o2");
    let found = eventually(
        short_ttl * 20,
        "the lapsed lease's fault offered as an orphan",
        || async {
            let found = orphan_ids(ledger, &o).await;
            (!found.is_empty()).then_some(found)
        },
    )
    .await;
    assert_eq!(found, ["o1"], "claimable orphans");
    let other_adapter = OrphanQuery {
        adapters: Some(vec!["not-an-adapter".into()]),
        limit: None,
    };
    assert!(
        ledger
            .claimable_orphans(&other_adapter)
            .await
            .unwrap()
            .iter()
            .all(|f| f.resource.adapter() != o.adapter()),
        "the adapter filter let another adapter's orphan through"
    );
    let mine = OrphanQuery {
        adapters: Some(vec![o.adapter().to_owned()]),
        limit: None,
    };
    assert!(
        ledger
            .claimable_orphans(&mine)
            .await
            .unwrap()
            .iter()
            .any(|f| f.id == "o1"),
        "the adapter filter hid an orphan of its adapter"
    );
    assert!(
        is_conflict(&ledger.claim_orphan("o2", "node-b", long).await),
        "an action was claimed as an orphan"
    );

    // A claim grants the resource's lease with a new token; a second claimant is refused.
    let claim = ledger
        .claim_orphan("o1", "node-b", long)
        .await
        .expect("claim_orphan");
    assert_eq!(claim.holder, "node-b");
    assert!(claim.token > go.token, "the claim's token did not grow");
    let info = locks.lock_info(&o).await.expect("lock_info");
    assert_eq!(
        info.lease.map(|l| (l.holder, l.token)),
        Some(("node-b".to_owned(), claim.token)),
        "the claim did not take the resource's lease"
    );
    assert!(
        is_conflict(&ledger.claim_orphan("o1", "node-c", long).await),
        "a fault was claimed twice"
    );
    assert!(
        orphan_ids(ledger, &o).await.is_empty(),
        "a claimed fault is still offered"
    );
    match locks.acquire(&o, "exec-new", long).await.expect("acquire") {
        LockOutcome::Held { holder, .. } => assert_eq!(holder, "node-b"),
        LockOutcome::Granted(g) => panic!("a claimed resource was granted to {g:?}"),
    }
    // The dead injector's token no longer settles the fault; the claimant's does.
    assert!(
        is_conflict(&ledger.mark_reverted("o1", "node-a", go.token).await),
        "a superseded injector marked a claimed fault reverted"
    );
    ledger
        .mark_reverted("o1", "node-b", claim.token)
        .await
        .expect("the claimant marks the fault reverted");
    assert!(
        is_conflict(&ledger.claim_orphan("o1", "node-c", long).await),
        "a reverted fault was claimed"
    );
    locks
        .release(&o, claim.token)
        .await
        .expect("release the claim");
    assert!(orphan_ids(ledger, &o).await.is_empty());

    // A released lease leaves its still-active fault claimable at once (a revert that
    // failed before the holder let go).
    let p = key("released");
    let gp = lease(locks, &p, "exec-gives-up", long).await;
    ledger
        .record_fault(entry("p1", "c4", &p, gp.token, sustained))
        .await
        .unwrap();
    ledger
        .mark_revert_failed("p1", "daemon unreachable", gp.token)
        .await
        .unwrap();
    assert!(orphan_ids(ledger, &p).await.is_empty());
    locks.release(&p, gp.token).await.unwrap();
    assert_eq!(
        orphan_ids(ledger, &p).await,
        ["p1"],
        "a released lease's fault"
    );
    let claim = ledger.claim_orphan("p1", "node-b", long).await.unwrap();
    ledger
        .mark_reverted("p1", "node-b", claim.token)
        .await
        .unwrap();
    locks.release(&p, claim.token).await.unwrap();

    // Bad input.
    assert!(
        matches!(ledger.claim_orphan("nope", "node-b", long).await, Err(e) if matches!(e.root(), Error::NotFound { .. })),
        "an unknown fault was claimed"
    );
    assert!(
        is_invalid(&ledger.claim_orphan("p1", "", long).await),
        "an empty claimant was accepted"
    );
}
