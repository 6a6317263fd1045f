//! The FaultLedger suite (DESIGN.md: no orphaned faults).

use chrono::Utc;

use crate::error::Error;
use crate::ledger::{FaultEntry, FaultLedger, FaultQuery, FaultState};
use crate::lock::FencingToken;
use crate::plugin::Snapshot;

/// Runs every ledger check with faults on `resource`, recorded under `token` (the
/// replicated ledger refuses stale tokens, so callers pass the token of a live lease).
pub async fn ledger_conformance(
    ledger: &dyn FaultLedger,
    resource: &crate::ResourceKey,
    token: FencingToken,
) {
    let now = Utc::now();
    let entry = |id: &str, campaign: &str| FaultEntry {
        id: id.to_owned(),
        execution_id: format!("exec-{id}"),
        campaign: Some(campaign.to_owned()),
        step: Some("step".into()),
        resource: resource.clone(),
        plugin: "kill".into(),
        node: "node-1".into(),
        token,
        snapshot: Some(Snapshot {
            plugin: "kill".into(),
            resource: resource.clone(),
            resource_id: "rid".into(),
            taken_at: now,
            state: serde_json::json!({"phase": "running"}),
        }),
        injected_at: now,
        duration: Some(std::time::Duration::from_secs(30)),
        state: FaultState::Injected,
    };
    for (i, c) in ["c1", "c1", "c2"].iter().enumerate() {
        ledger
            .record_fault(entry(&format!("f{i}"), c))
            .await
            .expect("record_fault");
    }
    // A client whose write timed out retries it: the identical record is accepted once
    // more without change, while the same id with other content is refused.
    ledger
        .record_fault(entry("f0", "c1"))
        .await
        .expect("an identical retry of a recorded fault is accepted");
    assert!(
        ledger.record_fault(entry("f0", "c2")).await.is_err(),
        "a fault id was recorded twice with different content"
    );
    assert_eq!(
        ledger.fault("f0").await.unwrap().campaign.as_deref(),
        Some("c1"),
        "a refused re-record changed the fault"
    );
    let f0 = ledger.fault("f0").await.expect("fault");
    assert_eq!(
        f0.snapshot,
        entry("f0", "c1").snapshot,
        "the snapshot did not survive"
    );
    assert!(
        matches!(ledger.fault("nope").await, Err(e) if matches!(e.root(), Error::NotFound{..}))
    );

    ledger
        .mark_reverted("f0", "node-2")
        .await
        .expect("mark_reverted");
    ledger
        .mark_revert_failed("f1", "daemon unreachable")
        .await
        .expect("mark_revert_failed");
    assert!(
        matches!(ledger.fault("f0").await.unwrap().state, FaultState::Reverted { ref by, .. } if by == "node-2")
    );
    assert!(
        ledger.mark_reverted("nope", "n").await.is_err(),
        "an unknown fault was marked"
    );

    let active = ledger
        .query_faults(&FaultQuery {
            active_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = active.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["f1", "f2"], "active faults: {ids:?}");
    let c1 = ledger
        .query_faults(&FaultQuery {
            campaign: Some("c1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(c1.len(), 2, "campaign filter");
    let page = ledger
        .query_faults(&FaultQuery {
            offset: 1,
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
        ["f1"],
        "pagination"
    );
}
