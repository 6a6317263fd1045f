//! The state machine over real sled trees: commands go through `apply_batch` exactly as
//! raft entries do, and queries read the result.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use ire_core::testsuite::sample_audit_entry;
use ire_core::{
    ExecutionQuery, ExecutionRecord, ExecutionStatus, FaultEntry, FaultKind, FaultQuery,
    FaultState, FencingToken, LockOutcome, OrphanQuery, ResourceKey, Snapshot,
};
use openraft::{CommittedLeaderId, EntryPayload};

use super::apply::apply_batch;
use super::locks;
use super::{StateView, Tables};
use crate::store::codec::{decode, encode};
use crate::types::{
    AuditQuery, CampaignState, Command, Entry, LogId, NewCampaign, Rejection, Request, Response,
    StepState, TaskState, TaskUpdate,
};

struct Sm {
    _db: sled::Db,
    tables: Tables,
    index: u64,
}

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

fn key(s: &str) -> ResourceKey {
    s.parse().unwrap()
}

impl Sm {
    fn new() -> Self {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tables = Tables::open(&db).unwrap();
        Sm {
            _db: db,
            tables,
            index: 0,
        }
    }

    fn entry(&mut self, cmd: Command, now: DateTime<Utc>) -> Entry {
        self.index += 1;
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index),
            payload: EntryPayload::Normal(Request::new(cmd, now)),
        }
    }

    fn apply(&mut self, cmd: Command, now: DateTime<Utc>) -> Response {
        let e = self.entry(cmd, now);
        // Every entry goes through the log's encoding, as it does in a cluster.
        let e: Entry = decode("entry", &encode("entry", &e).unwrap()).unwrap();
        apply_batch(&self.tables, &[e]).unwrap().responses.remove(0)
    }

    fn view(&self) -> StateView {
        StateView::new(self.tables.clone())
    }

    fn grant(&mut self, k: &str, holder: &str, now: DateTime<Utc>) -> FencingToken {
        match self.apply(
            Command::Acquire {
                key: key(k),
                holder: holder.into(),
                ttl: Duration::from_secs(10),
            },
            now,
        ) {
            Response::Lock(LockOutcome::Granted(g)) => g.token,
            other => panic!("expected a grant, got {other:?}"),
        }
    }

    /// Every data tree's content, to check that a refused command changed nothing.
    fn dump(&self) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        self.tables
            .data()
            .iter()
            .map(|t| {
                t.iter()
                    .map(|kv| {
                        let (k, v) = kv.unwrap();
                        (k.to_vec(), v.to_vec())
                    })
                    .collect()
            })
            .collect()
    }
}

fn fault(id: &str, resource: &str, token: FencingToken, at: DateTime<Utc>) -> FaultEntry {
    FaultEntry {
        id: id.into(),
        execution_id: format!("exec-{id}"),
        campaign: Some("c1".into()),
        step: Some("slow-api".into()),
        resource: key(resource),
        plugin: "network-delay".into(),
        node: "n1".into(),
        kind: FaultKind::Sustained,
        token,
        snapshot: Some(Snapshot {
            plugin: "network-delay".into(),
            resource: key(resource),
            resource_id: "abc123".into(),
            taken_at: at,
            state: serde_json::json!({"qdisc": null, "nested": {"list": [1, "two", 3.5]}}),
        }),
        injected_at: at,
        duration: Some(Duration::from_secs(30)),
        state: FaultState::Injected,
    }
}

fn execution(
    id: &str,
    resource: &str,
    campaign: Option<&str>,
    start: DateTime<Utc>,
) -> ExecutionRecord {
    ExecutionRecord {
        id: id.into(),
        plugin_name: "kill".into(),
        resource_id: format!("rid-{resource}"),
        resource_name: resource.into(),
        resource_key: Some(key(&format!("docker/{resource}"))),
        start_time: start,
        end_time: start + chrono::Duration::seconds(1),
        duration: Duration::from_secs(1),
        status: ExecutionStatus::Success,
        error: String::new(),
        metadata: [("k".to_owned(), serde_json::json!({"any": [1, 2]}))].into(),
        principal: "alice".into(),
        campaign: campaign.map(Into::into),
        step: Some("s".into()),
        node: Some("n1".into()),
        fencing_token: Some(FencingToken(3)),
        time_to_detect: Some(Duration::from_millis(1500)),
        time_to_recover: None,
    }
}

#[test]
fn fault_with_the_current_token_is_recorded_and_round_trips() {
    let mut sm = Sm::new();
    let token = sm.grant("docker/api", "e1", t(0));
    let f = fault("f1", "docker/api", token, t(1));
    assert_eq!(
        sm.apply(Command::record_fault(f.clone()), t(1)),
        Response::Done
    );
    assert_eq!(sm.view().fault("f1").unwrap(), Some(f.clone()));
    assert_eq!(sm.view().active_faults().unwrap(), vec![f.clone()]);
    // Recording the same fault again (a retry) is harmless.
    assert_eq!(sm.apply(Command::record_fault(f), t(2)), Response::Done);
}

#[test]
fn fault_with_a_stale_or_expired_token_is_refused_and_changes_nothing() {
    let mut sm = Sm::new();
    let old = sm.grant("docker/api", "e1", t(0));
    // e1's lease expires; e2 takes the key.
    let new = sm.grant("docker/api", "e2", t(20));
    assert!(new > old);
    let before = sm.dump();
    let r = sm.apply(
        Command::record_fault(fault("f1", "docker/api", old, t(21))),
        t(21),
    );
    assert!(
        matches!(r, Response::Rejected(Rejection::WrongToken { current: Some(c), .. }) if c == new),
        "{r:?}"
    );
    // The current token, after its lease expired.
    let r = sm.apply(
        Command::record_fault(fault("f2", "docker/api", new, t(40))),
        t(40),
    );
    assert!(
        matches!(r, Response::Rejected(Rejection::Expired { .. })),
        "{r:?}"
    );
    // No lease at all on another key.
    let r = sm.apply(
        Command::record_fault(fault("f3", "docker/db", new, t(40))),
        t(40),
    );
    assert!(
        matches!(
            r,
            Response::Rejected(Rejection::WrongToken { current: None, .. })
        ),
        "{r:?}"
    );
    assert_eq!(sm.dump(), before);
}

#[test]
fn fault_with_bad_fields_is_refused_with_the_field_named() {
    let mut sm = Sm::new();
    let token = sm.grant("docker/api", "e1", t(0));
    let before = sm.dump();
    let mut f = fault("", "docker/api", token, t(1));
    let r = sm.apply(Command::record_fault(f.clone()), t(1));
    assert!(format!("{r:?}").contains("fault.id"), "{r:?}");
    f.id = "f\0".into();
    let r = sm.apply(Command::record_fault(f.clone()), t(1));
    assert!(format!("{r:?}").contains("NUL"), "{r:?}");
    f.id = "f1".into();
    f.state = FaultState::Reverted {
        at: t(1),
        by: "n".into(),
    };
    let r = sm.apply(Command::record_fault(f), t(1));
    assert!(format!("{r:?}").contains("fault.state"), "{r:?}");
    assert_eq!(sm.dump(), before);
}

#[test]
fn revert_marks_need_the_current_token_and_move_a_fault_out_of_the_active_set() {
    let mut sm = Sm::new();
    let token = sm.grant("docker/api", "e1", t(0));
    sm.apply(
        Command::record_fault(fault("f1", "docker/api", token, t(1))),
        t(1),
    );
    let failed = |token| Command::MarkRevertFailed {
        fault_id: "f1".into(),
        error: "docker down".into(),
        token,
    };
    let reverted = |by: &str, token| Command::MarkReverted {
        fault_id: "f1".into(),
        by: by.into(),
        token,
    };
    // A token that is not the resource's lease settles nothing.
    let before = sm.dump();
    let stale = FencingToken(token.0 + 1);
    let r = sm.apply(failed(stale), t(2));
    assert!(
        matches!(r, Response::Rejected(Rejection::WrongToken { ref holder, .. }) if holder.as_deref() == Some("e1")),
        "{r:?}"
    );
    let r = sm.apply(reverted("n2", stale), t(2));
    assert!(
        matches!(r, Response::Rejected(Rejection::WrongToken { .. })),
        "{r:?}"
    );
    assert_eq!(sm.dump(), before);

    // The injector's token, even after its lease lapsed (t(10)).
    assert_eq!(sm.apply(failed(token), t(15)), Response::Done);
    let f = sm.view().fault("f1").unwrap().unwrap();
    assert_eq!(
        f.state,
        FaultState::RevertFailed {
            at: t(15),
            error: "docker down".into()
        }
    );
    assert_eq!(sm.view().active_faults().unwrap().len(), 1);
    assert_eq!(sm.apply(reverted("n2", token), t(16)), Response::Done);
    assert!(sm.view().active_faults().unwrap().is_empty());
    // Idempotent; and a revert failure after the revert is refused.
    assert_eq!(sm.apply(reverted("n3", token), t(17)), Response::Done);
    let f = sm.view().fault("f1").unwrap().unwrap();
    assert_eq!(
        f.state,
        FaultState::Reverted {
            at: t(16),
            by: "n2".into()
        }
    );
    let r = sm.apply(failed(token), t(18));
    assert!(
        matches!(r, Response::Rejected(Rejection::BadTransition { .. })),
        "{r:?}"
    );
    let r = sm.apply(
        Command::MarkReverted {
            fault_id: "nope".into(),
            by: "n".into(),
            token,
        },
        t(18),
    );
    assert!(
        matches!(r, Response::Rejected(Rejection::NotFound { .. })),
        "{r:?}"
    );
}

#[test]
fn legacy_marks_without_a_token_still_apply_as_they_did() {
    let mut sm = Sm::new();
    let token = sm.grant("docker/api", "e1", t(0));
    sm.apply(
        Command::record_fault(fault("f1", "docker/api", token, t(1))),
        t(1),
    );
    let r = sm.apply(
        Command::LegacyMarkRevertFailed {
            fault_id: "f1".into(),
            error: "down".into(),
        },
        t(2),
    );
    assert_eq!(r, Response::Done);
    let r = sm.apply(
        Command::LegacyMarkReverted {
            fault_id: "f1".into(),
            by: "n9".into(),
        },
        t(3),
    );
    assert_eq!(r, Response::Done);
    assert!(sm.view().active_faults().unwrap().is_empty());
}

#[test]
fn an_action_is_ended_never_active_and_never_an_orphan() {
    let mut sm = Sm::new();
    let token = sm.grant("docker/api", "e1", t(0));
    let mut kill = fault("k1", "docker/api", token, t(1));
    kill.kind = FaultKind::Action;
    assert_eq!(sm.apply(Command::record_fault(kill), t(1)), Response::Done);
    assert!(sm.view().active_faults().unwrap().is_empty());
    // Its lease lapses without the action being ended: still nothing to claim.
    let claimable = sm
        .view()
        .claimable_orphans(t(30), &OrphanQuery::default())
        .unwrap();
    assert!(claimable.is_empty(), "{claimable:?}");
    let r = sm.apply(
        Command::ClaimOrphan {
            fault_id: "k1".into(),
            claimant: "n2".into(),
            ttl: Duration::from_secs(10),
        },
        t(30),
    );
    assert!(
        matches!(r, Response::Rejected(Rejection::BadTransition { .. })),
        "{r:?}"
    );
    let r = sm.apply(
        Command::MarkReverted {
            fault_id: "k1".into(),
            by: "n".into(),
            token,
        },
        t(31),
    );
    assert!(format!("{r:?}").contains("fault.kind"), "{r:?}");
    let end = Command::EndAction {
        fault_id: "k1".into(),
        token,
    };
    assert_eq!(sm.apply(end.clone(), t(31)), Response::Done);
    assert_eq!(sm.apply(end, t(32)), Response::Done);
    assert_eq!(
        sm.view().fault("k1").unwrap().unwrap().state,
        FaultState::Ended { at: t(31) }
    );
}

#[test]
fn orphans_are_active_faults_without_a_lease_in_force_and_a_claim_fences_the_injector() {
    let mut sm = Sm::new();
    let a = sm.grant("docker/a", "e1", t(0));
    let b = sm.grant("docker/b", "e2", t(0));
    let c = sm.grant("other/c", "e3", t(0));
    for (id, k, token) in [
        ("fa", "docker/a", a),
        ("fb", "docker/b", b),
        ("fc", "other/c", c),
    ] {
        sm.apply(Command::record_fault(fault(id, k, token, t(1))), t(1));
    }
    // e2 renews; e1 and e3 do not.
    sm.apply(
        Command::Renew {
            key: key("docker/b"),
            token: b,
            ttl: Duration::from_secs(60),
        },
        t(9),
    );
    let view = sm.view();
    let orphans = |q: &OrphanQuery, at| -> Vec<String> {
        view.claimable_orphans(at, q)
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect()
    };
    assert!(orphans(&OrphanQuery::default(), t(9)).is_empty());
    assert_eq!(orphans(&OrphanQuery::default(), t(15)), ["fa", "fc"]);
    let docker = OrphanQuery {
        adapters: Some(vec!["docker".into()]),
        limit: None,
    };
    assert_eq!(orphans(&docker, t(15)), ["fa"]);

    let claim = |sm: &mut Sm, id: &str, who: &str, at| {
        sm.apply(
            Command::ClaimOrphan {
                fault_id: id.into(),
                claimant: who.into(),
                ttl: Duration::from_secs(10),
            },
            at,
        )
    };
    // Not before the lease lapsed on the stamped clock.
    let before = sm.dump();
    let r = claim(&mut sm, "fa", "n2", t(5));
    assert!(
        matches!(r, Response::Rejected(Rejection::LeaseInForce { ref holder, .. }) if holder == "e1"),
        "{r:?}"
    );
    assert_eq!(sm.dump(), before);
    let grant = match claim(&mut sm, "fa", "n2", t(15)) {
        Response::Lease(g) => g,
        other => panic!("claim refused: {other:?}"),
    };
    assert_eq!(grant.holder, "n2");
    assert!(grant.token > a);
    assert_eq!(grant.expires_at, t(25));
    // A second claimant is refused while the claim is in force; the injector is fenced.
    assert!(matches!(
        claim(&mut sm, "fa", "n3", t(16)),
        Response::Rejected(Rejection::LeaseInForce { .. })
    ));
    let r = sm.apply(
        Command::MarkReverted {
            fault_id: "fa".into(),
            by: "n1".into(),
            token: a,
        },
        t(17),
    );
    assert!(
        matches!(r, Response::Rejected(Rejection::WrongToken { .. })),
        "{r:?}"
    );
    let r = sm.apply(
        Command::MarkReverted {
            fault_id: "fa".into(),
            by: "n2".into(),
            token: grant.token,
        },
        t(17),
    );
    assert_eq!(r, Response::Done);
    // Reverted: nothing left to claim.
    assert!(matches!(
        claim(&mut sm, "fa", "n3", t(40)),
        Response::Rejected(Rejection::BadTransition { .. })
    ));
    assert_eq!(orphans(&OrphanQuery::default(), t(40)), ["fc"]);
}

#[test]
fn faults_are_queried_by_resource_campaign_time_and_state_with_pagination() {
    let mut sm = Sm::new();
    let mut ids = Vec::new();
    for i in 0..20 {
        let res = if i % 2 == 0 {
            "docker/even"
        } else {
            "docker/odd"
        };
        let token = sm.grant(res, &format!("e{i}"), t(i * 100));
        let mut f = fault(&format!("f{i:02}"), res, token, t(i * 100 + 1));
        if i >= 10 {
            f.campaign = Some("c2".into());
        }
        sm.apply(Command::record_fault(f), t(i * 100 + 1));
        ids.push(format!("f{i:02}"));
        if i % 3 == 0 {
            sm.apply(
                Command::MarkReverted {
                    fault_id: format!("f{i:02}"),
                    by: "n".into(),
                    token,
                },
                t(i * 100 + 2),
            );
        }
    }
    let q = |q: FaultQuery| -> Vec<String> {
        sm.view()
            .faults(&q)
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect()
    };
    assert_eq!(q(FaultQuery::default()), ids);
    let even: Vec<String> = ids.iter().step_by(2).cloned().collect();
    assert_eq!(
        q(FaultQuery {
            resource: Some(key("docker/even")),
            ..Default::default()
        }),
        even
    );
    assert_eq!(
        q(FaultQuery {
            campaign: Some("c2".into()),
            ..Default::default()
        }),
        ids[10..].to_vec()
    );
    assert_eq!(
        q(FaultQuery {
            since: Some(t(501)),
            until: Some(t(901)),
            ..Default::default()
        }),
        ids[5..=9].to_vec()
    );
    let active: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, s)| s.clone())
        .collect();
    assert_eq!(
        q(FaultQuery {
            active_only: true,
            ..Default::default()
        }),
        active
    );
    assert_eq!(
        q(FaultQuery {
            active_only: true,
            offset: 2,
            limit: Some(3),
            ..Default::default()
        }),
        active[2..5].to_vec()
    );
    assert_eq!(
        q(FaultQuery {
            resource: Some(key("docker/odd")),
            campaign: Some("c2".into()),
            active_only: true,
            ..Default::default()
        }),
        vec!["f11", "f13", "f17", "f19"]
    );
    assert_eq!(
        q(FaultQuery {
            node: Some("other".into()),
            ..Default::default()
        }),
        Vec::<String>::new()
    );
}

#[test]
fn executions_are_upserted_and_queried_through_their_indexes() {
    let mut sm = Sm::new();
    for i in 0..12 {
        let res = ["api", "db", "cache"][i % 3];
        let c = if i < 6 { Some("c1") } else { None };
        let r = sm.apply(
            Command::record_execution(execution(&format!("x{i:02}"), res, c, t(i as i64 * 10))),
            t(0),
        );
        assert_eq!(r, Response::Done);
    }
    // Re-recording x00 (it ended) replaces it, in place in every index.
    let mut x0 = execution("x00", "api", Some("c1"), t(0));
    x0.status = ExecutionStatus::Failed;
    x0.error = "boom".into();
    sm.apply(Command::record_execution(x0.clone()), t(0));
    assert_eq!(sm.view().execution("x00").unwrap(), Some(x0));
    let q = |q: ExecutionQuery| -> Vec<String> {
        sm.view()
            .executions(&q)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    assert_eq!(q(ExecutionQuery::default()).len(), 12);
    assert_eq!(
        q(ExecutionQuery {
            resource_ids: vec!["docker/api".into()],
            ..Default::default()
        }),
        vec!["x00", "x03", "x06", "x09"]
    );
    assert_eq!(
        q(ExecutionQuery {
            resource_ids: vec!["rid-db".into()],
            ..Default::default()
        }),
        vec!["x01", "x04", "x07", "x10"]
    );
    assert_eq!(
        q(ExecutionQuery {
            campaign: Some("c1".into()),
            offset: 1,
            limit: Some(2),
            ..Default::default()
        }),
        vec!["x01", "x02"]
    );
    assert_eq!(
        q(ExecutionQuery {
            statuses: vec![ExecutionStatus::Failed],
            ..Default::default()
        }),
        vec!["x00"]
    );
    assert_eq!(
        q(ExecutionQuery {
            start_time: Some(t(30)),
            end_time: Some(t(50)),
            ..Default::default()
        }),
        vec!["x03", "x04", "x05"]
    );
    // A record that ends before it starts is refused.
    let mut bad = execution("bad", "api", None, t(10));
    bad.end_time = t(5);
    let r = sm.apply(Command::record_execution(bad), t(0));
    assert!(format!("{r:?}").contains("execution.end_time"), "{r:?}");
    assert_eq!(sm.view().execution("bad").unwrap(), None);
}

#[test]
fn campaigns_are_stored_and_driven_through_steps_and_tasks() {
    let mut sm = Sm::new();
    let new = NewCampaign {
        id: "c1".into(),
        name: "cache".into(),
        spec: "name: cache\nsteps: []".into(),
        submitted_by: "alice".into(),
        steps: vec!["kill".into(), "wait".into()],
    };
    assert_eq!(
        sm.apply(Command::PutCampaign(new.clone()), t(0)),
        Response::Done
    );
    assert_eq!(
        sm.apply(Command::PutCampaign(new.clone()), t(1)),
        Response::Done
    );
    let mut other = new.clone();
    other.spec = "different".into();
    assert!(matches!(
        sm.apply(Command::PutCampaign(other), t(1)),
        Response::Rejected(Rejection::Duplicate { .. })
    ));
    sm.apply(
        Command::UpdateStep {
            campaign_id: "c1".into(),
            step: "kill".into(),
            state: StepState::Running,
            message: String::new(),
        },
        t(2),
    );
    let task = TaskUpdate {
        id: "t1".into(),
        resource: key("docker/redis"),
        node: "n2".into(),
        state: TaskState::Running,
        execution_id: Some("x1".into()),
        token: Some(FencingToken(4)),
        message: String::new(),
    };
    assert_eq!(
        sm.apply(
            Command::UpdateTask {
                campaign_id: "c1".into(),
                step: "kill".into(),
                task
            },
            t(3)
        ),
        Response::Done
    );
    sm.apply(
        Command::FinishCampaign {
            campaign_id: "c1".into(),
            state: CampaignState::Succeeded,
            message: "ok".into(),
        },
        t(4),
    );
    let c = sm.view().campaign("c1").unwrap().unwrap();
    assert_eq!(c.state, CampaignState::Succeeded);
    assert_eq!(c.submitted_at, t(0));
    assert_eq!(c.finished_at, Some(t(4)));
    assert_eq!(
        c.step("kill").unwrap().tasks["t1"].token,
        Some(FencingToken(4))
    );
    assert_eq!(sm.view().campaigns().unwrap().len(), 1);
    let r = sm.apply(
        Command::UpdateStep {
            campaign_id: "zz".into(),
            step: "kill".into(),
            state: StepState::Running,
            message: String::new(),
        },
        t(5),
    );
    assert!(
        matches!(r, Response::Rejected(Rejection::NotFound { .. })),
        "{r:?}"
    );
}

#[test]
fn audit_entries_are_kept_in_time_order_and_filtered() {
    let mut sm = Sm::new();
    for (i, who) in ["alice", "bob", "alice", "carol"].iter().enumerate() {
        let e = sample_audit_entry(who, t(100 - i as i64 * 10));
        assert_eq!(sm.apply(Command::append_audit(e), t(0)), Response::Done);
    }
    let all = sm.view().audit(&AuditQuery::default()).unwrap();
    let times: Vec<_> = all.iter().map(|e| e.timestamp).collect();
    assert_eq!(times, vec![t(70), t(80), t(90), t(100)]);
    let alice = sm
        .view()
        .audit(&AuditQuery {
            principal: Some("alice".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(alice.len(), 2);
    let page = sm
        .view()
        .audit(&AuditQuery {
            since: Some(t(80)),
            limit: Some(2),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        page.iter().map(|e| e.timestamp).collect::<Vec<_>>(),
        vec![t(80), t(90)]
    );
}

#[test]
fn the_clock_never_runs_backwards_across_leaders() {
    let mut sm = Sm::new();
    let token = sm.grant("docker/api", "e1", t(100));
    // A new leader whose clock is behind stamps t(50): the lease is still judged at t(100).
    let r = sm.apply(
        Command::Renew {
            key: key("docker/api"),
            token,
            ttl: Duration::from_secs(10),
        },
        t(50),
    );
    match r {
        Response::Lease(g) => assert_eq!(g.expires_at, t(110)),
        other => panic!("{other:?}"),
    }
    assert_eq!(sm.view().clock().unwrap(), Some(t(100)));
}

#[test]
fn a_batch_applies_atomically_with_last_applied() {
    let mut sm = Sm::new();
    let entries: Vec<Entry> = (0..5)
        .map(|i| {
            sm.entry(
                Command::Hold {
                    key: key(&format!("docker/r{i}")),
                    by: "op".into(),
                    reason: "x".into(),
                },
                t(i),
            )
        })
        .collect();
    let applied = apply_batch(&sm.tables, &entries).unwrap();
    assert_eq!(applied.responses, vec![Response::Done; 5]);
    assert_eq!(sm.view().last_applied().unwrap(), Some(entries[4].log_id));
    assert_eq!(sm.view().locks(t(10)).unwrap().len(), 5);
}

#[test]
fn a_batch_entry_answers_each_command_with_its_own_token_and_audit_key() {
    let mut sm = Sm::new();
    let a = sm.grant("docker/a", "e1", t(0));
    let audit = |who: &str| Command::append_audit(sample_audit_entry(who, t(5)));
    let acquire = |k: &str, h: &str| Command::Acquire {
        key: key(k),
        holder: h.into(),
        ttl: Duration::from_secs(10),
    };
    let r = sm.apply(
        Command::Batch(vec![
            acquire("docker/b", "e2"),
            acquire("docker/b", "e3"),
            Command::Release {
                key: key("docker/a"),
                token: FencingToken(a.0 + 1),
            },
            acquire("docker/c", "e4"),
            audit("alice"),
            audit("bob"),
            Command::Batch(vec![]),
        ]),
        t(5),
    );
    let Response::Batch(answers) = r else {
        panic!("{r:?}")
    };
    let index = sm.index;
    let token = |r: &Response| match r {
        Response::Lock(LockOutcome::Granted(g)) => g.token,
        other => panic!("expected a grant, got {other:?}"),
    };
    assert_eq!(token(&answers[0]), FencingToken(locks::sequence(index, 0)));
    assert!(
        matches!(&answers[1], Response::Lock(LockOutcome::Held { holder, .. }) if holder == "e2")
    );
    assert!(matches!(
        answers[2],
        Response::Rejected(Rejection::WrongToken { .. })
    ));
    assert_eq!(token(&answers[3]), FencingToken(locks::sequence(index, 3)));
    assert_eq!(answers[4], Response::Done);
    assert_eq!(answers[5], Response::Done);
    assert!(matches!(
        answers[6],
        Response::Rejected(Rejection::Invalid { .. })
    ));
    assert!(token(&answers[0]) > a);
    assert_eq!(locks::token_index(token(&answers[3])), index);
    // Two audit entries of the same instant in one entry are both kept.
    assert_eq!(sm.view().audit(&AuditQuery::default()).unwrap().len(), 2);
    // The refused release changed nothing: e1 still holds docker/a.
    assert_eq!(
        sm.view()
            .lock_info(&key("docker/a"), t(6))
            .unwrap()
            .lease
            .map(|l| l.token),
        Some(a)
    );
}

#[test]
fn a_release_hands_the_lease_to_the_queued_waiter_and_reports_it() {
    let mut sm = Sm::new();
    let a = sm.grant("docker/q", "e1", t(0));
    let r = sm.apply(
        Command::AcquireOrWait {
            key: key("docker/q"),
            holder: "e2".into(),
            ttl: Duration::from_secs(10),
            wait: Duration::from_secs(30),
        },
        t(1),
    );
    assert!(
        matches!(r, Response::Queued { position: 0, ref holder, .. } if holder == "e1"),
        "{r:?}"
    );
    let release = sm.entry(
        Command::Release {
            key: key("docker/q"),
            token: a,
        },
        t(2),
    );
    let applied = apply_batch(&sm.tables, &[release]).unwrap();
    assert_eq!(applied.responses, vec![Response::Done]);
    let handed: Vec<_> = applied
        .handoffs
        .iter()
        .map(|g| (g.holder.as_str(), g.token))
        .collect();
    assert_eq!(
        handed,
        vec![("e2", FencingToken(locks::sequence(sm.index, 0)))]
    );
    let info = sm.view().lock_info(&key("docker/q"), t(3)).unwrap();
    assert_eq!(info.lease.map(|l| l.holder), Some("e2".to_string()));
}

mod replicas {
    use super::*;
    use crate::store::snapshot;
    use proptest::prelude::*;

    fn command(kind: u8, k: u8, n: u8, token: u64) -> Command {
        let key = key(&format!("docker/k{}", k % 3));
        match kind % 10 {
            0 | 1 => Command::Acquire {
                key,
                holder: format!("h{}", n % 3),
                ttl: Duration::from_secs(1 + (n % 5) as u64),
            },
            2 => Command::Renew {
                key,
                token: FencingToken(token),
                ttl: Duration::from_secs(3),
            },
            3 => Command::Release {
                key,
                token: FencingToken(token),
            },
            4 => Command::Hold {
                key,
                by: "op".into(),
                reason: "r".into(),
            },
            5 => Command::Unhold { key },
            6 => Command::record_fault(fault(
                &format!("f{n}"),
                key.as_str(),
                FencingToken(token),
                t(n as i64),
            )),
            7 => Command::MarkReverted {
                fault_id: format!("f{}", n % 4),
                by: "n".into(),
                token: FencingToken(token),
            },
            8 => Command::ClaimOrphan {
                fault_id: format!("f{}", n % 4),
                claimant: format!("c{}", n % 2),
                ttl: Duration::from_secs(2),
            },
            _ => Command::MarkRevertFailed {
                fault_id: format!("f{}", n % 4),
                error: "e".into(),
                token: FencingToken(token),
            },
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Two replicas applying the same entries (in different batchings) end with the same
        /// bytes in every tree, and a snapshot of one installed on a third reproduces them.
        #[test]
        fn replicas_agree_and_snapshots_reproduce_the_state(
            ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), 0u64..40, 0i64..3), 1..60),
            split in 1usize..7,
        ) {
            let mut a = Sm::new();
            let b = Sm::new();
            let mut entries = Vec::new();
            let mut now = 0;
            for (kind, k, n, token, dt) in ops {
                now += dt;
                entries.push(a.entry(command(kind, k, n, token), t(now)));
            }
            let ra = apply_batch(&a.tables, &entries).unwrap().responses;
            let mut rb = Vec::new();
            for chunk in entries.chunks(split) {
                rb.extend(apply_batch(&b.tables, chunk).unwrap().responses);
            }
            prop_assert_eq!(&ra, &rb);
            prop_assert_eq!(a.dump(), b.dump());

            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.snap");
            let view = a.view();
            let meta = crate::types::SnapshotMeta {
                last_log_id: view.last_applied().unwrap(),
                last_membership: view.membership().unwrap(),
                snapshot_id: "p".into(),
            };
            snapshot::export(&a.tables, &Default::default(), &meta, view.clock().unwrap(), &path).unwrap();
            let c = Sm::new();
            // Something already there is replaced.
            c.tables.locks.insert("junk", &[1u8][..]).unwrap();
            let (m, clock) = snapshot::import(&c.tables, &path).unwrap();
            prop_assert_eq!(m, meta);
            prop_assert_eq!(clock, view.clock().unwrap());
            prop_assert_eq!(a.dump(), c.dump());
        }
    }
}
