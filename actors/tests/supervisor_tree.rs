//! The node's supervisor tree (seed properties 69-72): crashes are survived and in-flight
//! work is reported failed, stuck actors are replaced, the restart budget is enforced, and
//! a graceful shutdown ends every task within its deadline.

mod engine_common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use engine_common::{Probe, Rig, RigOptions};
use ire_actors::lock::LockConfig;
use ire_actors::supervisor::{
    ChildShutdown, ChildSpec, Heartbeat, NodeSupervisor, RestartKind, RestartPolicy, SpawnedChild,
    SupervisorHandle,
};
use ire_core::testsuite::{eventually, MemoryLockService};
use ire_core::{ExecutionEngine, ExecutionStatus, LockService};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

fn quick_policy() -> RestartPolicy {
    RestartPolicy {
        kind: RestartKind::Permanent,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        max_restarts: 5,
        window: Duration::from_secs(60),
    }
}

/// A node: lock and engine actors under one supervisor, over an in-memory lock service.
async fn node(
    policy: RestartPolicy,
    heartbeat: Option<Heartbeat>,
) -> (Rig, SupervisorHandle, Arc<MemoryLockService>) {
    let service = Arc::new(MemoryLockService::new());
    let rig = Rig::with(RigOptions {
        lock_service: Some(service.clone()),
        lock_config: LockConfig {
            ttl: Duration::from_secs(2),
            poll_initial: Duration::from_millis(5),
            poll_max: Duration::from_millis(20),
        },
        spawn: false,
        ..RigOptions::default()
    })
    .await;
    let mut lock = rig
        .locks
        .as_ref()
        .unwrap()
        .child_spec()
        .with_policy(policy.clone());
    let mut engine = rig.engine.child_spec().with_policy(policy);
    if let Some(hb) = heartbeat {
        lock = lock.with_heartbeat(hb);
        engine = engine.with_heartbeat(hb);
    }
    let sup = NodeSupervisor::start(None, vec![lock, engine])
        .await
        .unwrap();
    (rig, sup, service)
}

async fn restarts_of(sup: &SupervisorHandle, child: &str) -> u64 {
    sup.status()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == child)
        .unwrap()
        .restarts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_crash_is_survived_and_its_work_in_flight_reported_failed() {
    let (rig, sup, _) = node(quick_policy(), None).await;
    let p = Probe::new("probe", Duration::from_secs(3600));
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let mut h = rig
        .engine
        .execute_async(rig.request("probe", &r))
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "execution running", || async {
        (p.running.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    rig.engine.crash().unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), h.wait())
        .await
        .expect("in-flight execution was lost")
        .unwrap();
    assert_eq!(res.status, ExecutionStatus::Failed, "{res:?}");
    assert!(
        res.error.as_deref().unwrap().contains("engine stopped"),
        "{res:?}"
    );
    assert_eq!(
        p.rollbacks.load(Ordering::SeqCst),
        1,
        "the fault was not reverted"
    );
    // The failure is on record, not lost.
    assert!(rig
        .reporter
        .records()
        .iter()
        .any(|x| x.id == res.execution_id && x.status == ExecutionStatus::Failed));
    eventually(Duration::from_secs(5), "engine restarted", || async {
        (restarts_of(&sup, "engine").await == 1).then_some(())
    })
    .await;
    let quick = Probe::new("quick", Duration::from_millis(1));
    rig.register(Arc::new(quick)).await;
    let ok = eventually(
        Duration::from_secs(5),
        "engine accepts work again",
        || async { rig.engine.execute(rig.request("quick", &r)).await.ok() },
    )
    .await;
    assert!(ok.is_success(), "{ok:?}");
    sup.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_actor_crash_stops_and_reverts_the_executions_it_renewed() {
    let (rig, sup, service) = node(quick_policy(), None).await;
    let p = Probe::new("probe", Duration::from_secs(3600));
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let mut h = rig
        .engine
        .execute_async(rig.request("probe", &r))
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "execution running", || async {
        (p.running.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    rig.locks.as_ref().unwrap().crash().unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), h.wait())
        .await
        .expect("in-flight execution was lost")
        .unwrap();
    assert_eq!(res.status, ExecutionStatus::Failed, "{res:?}");
    assert!(res.error.as_deref().unwrap().contains("lease"), "{res:?}");
    assert_eq!(p.rollbacks.load(Ordering::SeqCst), 1);
    eventually(Duration::from_secs(5), "lock actor restarted", || async {
        (restarts_of(&sup, "resource-lock").await == 1).then_some(())
    })
    .await;
    // The lease was given back through the new incarnation; the resource is usable.
    eventually(Duration::from_secs(5), "lease released", || async {
        service
            .lock_info(&r.key)
            .await
            .unwrap()
            .lease
            .is_none()
            .then_some(())
    })
    .await;
    let quick = Probe::new("quick", Duration::from_millis(1));
    rig.register(Arc::new(quick.clone())).await;
    let ok = rig.engine.execute(rig.request("quick", &r)).await.unwrap();
    assert!(ok.is_success(), "{ok:?}");
    sup.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_actor_misses_its_heartbeat_and_is_replaced() {
    let hb = Heartbeat {
        interval: Duration::from_millis(50),
        // Generous: a healthy actor on a loaded machine must not be taken for a stuck one.
        timeout: Duration::from_secs(1),
    };
    let (rig, sup, _) = node(quick_policy(), Some(hb)).await;
    rig.engine.stall(Duration::from_secs(3600)).unwrap();
    let status = eventually(Duration::from_secs(10), "stuck engine replaced", || async {
        let s = sup.status().await.unwrap();
        let e = s.into_iter().find(|c| c.name == "engine").unwrap();
        (e.stuck == 1 && e.restarts == 1 && e.alive).then_some(e)
    })
    .await;
    assert_eq!(status.stuck, 1);
    let p = Probe::new("quick", Duration::from_millis(1));
    rig.register(Arc::new(p)).await;
    let r = rig.resource("db");
    let ok = eventually(Duration::from_secs(5), "engine answers again", || async {
        rig.engine.execute(rig.request("quick", &r)).await.ok()
    })
    .await;
    assert!(ok.is_success());
    // The healthy lock actor was never touched.
    assert_eq!(restarts_of(&sup, "resource-lock").await, 0);
    sup.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausting_the_restart_budget_stops_the_supervisor() {
    let policy = RestartPolicy {
        max_restarts: 2,
        ..quick_policy()
    };
    let (rig, sup, _) = node(policy, None).await;
    for n in 1..=2u64 {
        eventually(Duration::from_secs(5), "engine running", || async {
            rig.engine.crash().ok()
        })
        .await;
        eventually(Duration::from_secs(5), "engine restarted", || async {
            (restarts_of(&sup, "engine").await == n).then_some(())
        })
        .await;
    }
    eventually(Duration::from_secs(5), "engine running", || async {
        rig.engine.crash().ok()
    })
    .await;
    tokio::time::timeout(Duration::from_secs(10), sup.wait())
        .await
        .expect("supervisor kept restarting past its budget");
    assert!(!sup.is_running());
    // Its children went with it.
    assert!(rig.locks.as_ref().unwrap().slot().get().is_err());
}

/// A stand-in for a child from elsewhere (monitor, reporter) joining through a spawn function.
struct Dummy;

enum DummyMsg {
    Ping(oneshot::Sender<()>),
}

impl ractor::Message for DummyMsg {}

impl Actor for Dummy {
    type Msg = DummyMsg;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<DummyMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(
        &self,
        _: ActorRef<DummyMsg>,
        m: DummyMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match m {
            DummyMsg::Ping(tx) => {
                let _ = tx.send(());
            }
        }
        Ok(())
    }
}

fn dummy_spec(name: &str) -> ChildSpec {
    ChildSpec::new(
        name,
        Arc::new(|sup| {
            Box::pin(async move {
                let (a, _) = Actor::spawn_linked(None, Dummy, (), sup).await?;
                let cell = a.get_cell();
                let ping: ire_actors::supervisor::PingFn = Arc::new(move || {
                    let a = a.clone();
                    Box::pin(async move {
                        let (tx, rx) = oneshot::channel();
                        a.cast(DummyMsg::Ping(tx)).is_ok() && rx.await.is_ok()
                    })
                });
                Ok(SpawnedChild {
                    cell,
                    ping: Some(ping),
                })
            })
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_every_task_within_the_deadline() {
    let service = Arc::new(MemoryLockService::new());
    let rig = Rig::with(RigOptions {
        lock_service: Some(service.clone()),
        spawn: false,
        ..RigOptions::default()
    })
    .await;
    let children = vec![
        rig.locks.as_ref().unwrap().child_spec(),
        rig.engine.child_spec(),
        dummy_spec("monitor").with_heartbeat(Heartbeat {
            interval: Duration::from_millis(20),
            timeout: Duration::from_secs(1),
        }),
        dummy_spec("reporter"),
    ];
    let sup = NodeSupervisor::start(None, children).await.unwrap();
    let p = Probe::new("probe", Duration::from_secs(3600));
    rig.register(Arc::new(p.clone())).await;
    let mut hs = Vec::new();
    for i in 0..5 {
        let r = rig.resource(&format!("db{i}"));
        hs.push(
            rig.engine
                .execute_async(rig.request("probe", &r))
                .await
                .unwrap(),
        );
    }
    eventually(Duration::from_secs(5), "executions running", || async {
        (p.running.load(Ordering::SeqCst) == 5).then_some(())
    })
    .await;
    let started = tokio::time::Instant::now();
    let report = sup.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(report.clean, "{report:?}");
    let order: Vec<&str> = report.children.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(order, ["reporter", "monitor", "engine", "resource-lock"]);
    assert!(report
        .children
        .iter()
        .all(|(_, o)| *o == ChildShutdown::Stopped));
    // Every execution ended (reported failed, rolled back), every task is gone, every lease
    // was given back.
    for mut h in hs {
        let res = h.wait().await.unwrap();
        assert_eq!(res.status, ExecutionStatus::Failed);
    }
    assert_eq!(p.running.load(Ordering::SeqCst), 0);
    assert_eq!(p.rollbacks.load(Ordering::SeqCst), 5);
    rig.engine.wait_idle(Duration::from_secs(2)).await.unwrap();
    assert_eq!(rig.engine.task_count(), 0);
    for i in 0..5 {
        let key = format!("fake/db{i}").parse().unwrap();
        assert!(service.lock_info(&key).await.unwrap().lease.is_none());
    }
    assert!(!sup.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_children_are_not_restarted_and_transient_ones_only_on_failure() {
    let temp = dummy_spec("temp").with_policy(RestartPolicy {
        kind: RestartKind::Temporary,
        ..quick_policy()
    });
    let trans = dummy_spec("trans").with_policy(RestartPolicy {
        kind: RestartKind::Transient,
        ..quick_policy()
    });
    let sup = NodeSupervisor::start(None, vec![temp, trans])
        .await
        .unwrap();
    let cells = sup.actor().get_cell().get_children();
    assert_eq!(cells.len(), 2);
    for c in &cells {
        c.kill();
    }
    eventually(Duration::from_secs(5), "transient restarted", || async {
        let s = sup.status().await.unwrap();
        let t = s.iter().find(|c| c.name == "trans").unwrap();
        let tmp = s.iter().find(|c| c.name == "temp").unwrap();
        (t.restarts == 1 && t.alive && !tmp.alive && tmp.restarts == 0).then_some(())
    })
    .await;
    // A clean stop of a transient child is final.
    let trans_cell = sup
        .actor()
        .get_cell()
        .get_children()
        .into_iter()
        .next()
        .unwrap();
    trans_cell.stop(None);
    eventually(
        Duration::from_secs(5),
        "transient stopped for good",
        || async {
            let s = sup.status().await.unwrap();
            let t = s.iter().find(|c| c.name == "trans").unwrap().clone();
            (!t.alive).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(restarts_of(&sup, "trans").await, 1);
    sup.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[test]
fn restart_backoff_doubles_up_to_its_cap() {
    let p = RestartPolicy {
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        ..RestartPolicy::default()
    };
    let d: Vec<u64> = (1..=6).map(|n| p.backoff(n).as_millis() as u64).collect();
    assert_eq!(d, [100, 200, 400, 800, 1000, 1000]);
}
