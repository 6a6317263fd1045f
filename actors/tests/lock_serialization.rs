//! The resource-lock actor: executions on one resource are serialized cluster-wide (seed
//! properties 73 and 98), the fencing token reaches the plugin, the lease is renewed while
//! the execution lasts, and a lost lease stops the execution and reverts its fault.

mod engine_common;

use std::sync::Arc;
use std::time::Duration;

use engine_common::{Probe, Rig, RigOptions};
use ire_actors::lock::LockConfig;
use ire_core::testsuite::{eventually, MemoryLockService};
use ire_core::{
    ExecutionEngine, ExecutionStatus, FaultLedger, FaultQuery, FaultState, FencingToken,
    LockOutcome, LockService,
};

fn opts(service: &Arc<MemoryLockService>, ttl: Duration) -> RigOptions {
    RigOptions {
        lock_service: Some(service.clone()),
        lock_config: LockConfig {
            ttl,
            poll_initial: Duration::from_millis(5),
            poll_max: Duration::from_millis(20),
        },
        ..RigOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_on_one_resource_never_overlap() {
    let service = Arc::new(MemoryLockService::new());
    let rig = Rig::with(opts(&service, Duration::from_secs(5))).await;
    let p = Probe::new("probe", Duration::from_millis(30));
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let mut hs = Vec::new();
    for _ in 0..8 {
        hs.push(
            rig.engine
                .execute_async(rig.request("probe", &r))
                .await
                .unwrap(),
        );
    }
    for mut h in hs {
        let res = h.wait().await.unwrap();
        assert!(res.is_success(), "{res:?}");
    }
    assert_eq!(p.max(), 1, "two executions ran on one resource at once");
    let tokens = p.tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), 8);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens not increasing: {tokens:?}"
    );
    // Every lease was given back.
    let info = service.lock_info(&r.key).await.unwrap();
    assert!(info.lease.is_none(), "{info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_resources_run_in_parallel() {
    let service = Arc::new(MemoryLockService::new());
    let rig = Rig::with(opts(&service, Duration::from_secs(5))).await;
    let p = Probe::new("probe", Duration::from_millis(200));
    rig.register(Arc::new(p.clone())).await;
    let mut hs = Vec::new();
    for i in 0..4 {
        let r = rig.resource(&format!("db{i}"));
        hs.push(
            rig.engine
                .execute_async(rig.request("probe", &r))
                .await
                .unwrap(),
        );
    }
    for mut h in hs {
        assert!(h.wait().await.unwrap().is_success());
    }
    assert!(p.max() >= 2, "resources were serialized: {}", p.max());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sharing_a_lock_service_never_overlap_on_a_resource() {
    let service = Arc::new(MemoryLockService::new());
    let mut o1 = opts(&service, Duration::from_secs(5));
    o1.config.node = "node-1".into();
    let mut o2 = opts(&service, Duration::from_secs(5));
    o2.config.node = "node-2".into();
    let n1 = Rig::with(o1).await;
    let n2 = Rig::with(o2).await;
    // One probe shared by both nodes counts overlaps across them.
    let p = Probe::new("probe", Duration::from_millis(25));
    n1.register(Arc::new(p.clone())).await;
    n2.register(Arc::new(p.clone())).await;
    let r = n1.resource("db");
    n2.resource("db");
    let mut hs = Vec::new();
    for i in 0..10 {
        let node = if i % 2 == 0 { &n1 } else { &n2 };
        hs.push(
            node.engine
                .execute_async(node.request("probe", &r))
                .await
                .unwrap(),
        );
    }
    for mut h in hs {
        assert!(h.wait().await.unwrap().is_success());
    }
    assert_eq!(p.max(), 1, "two nodes faulted one resource at once");
    let recs: Vec<_> = n1
        .reporter
        .records()
        .into_iter()
        .chain(n2.reporter.records())
        .collect();
    assert_eq!(recs.len(), 10);
    assert!(recs.iter().all(|r| r.fencing_token.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_is_on_the_ledger_with_its_token_before_it_is_injected() {
    let service = Arc::new(MemoryLockService::new());
    let rig = Rig::with(opts(&service, Duration::from_secs(5))).await;
    let p = ire_core::testsuite::FakePlugin::new("fake");
    p.fail(
        ire_core::testsuite::Hook::Execute,
        ire_core::ErrorClass::Fatal,
        1,
    );
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let failed = rig.engine.execute(rig.request("fake", &r)).await.unwrap();
    assert_eq!(failed.status, ExecutionStatus::Failed);
    let faults = rig
        .ledger
        .query_faults(&FaultQuery::default())
        .await
        .unwrap();
    assert_eq!(faults.len(), 1);
    let f = &faults[0];
    assert_eq!(f.execution_id, failed.execution_id);
    assert_eq!(f.resource, r.key);
    assert!(f.snapshot.is_some());
    assert!(f.token > FencingToken(0));
    // The failed execute was rolled back, and the ledger says so.
    assert!(
        matches!(f.state, FaultState::Reverted { .. }),
        "{:?}",
        f.state
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_is_renewed_while_a_long_execution_runs() {
    let service = Arc::new(MemoryLockService::new());
    let rig = Rig::with(opts(&service, Duration::from_millis(900))).await;
    let p = Probe::new("probe", Duration::from_millis(3000));
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let mut h = rig
        .engine
        .execute_async(rig.request("probe", &r))
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "execution running", || async {
        (!p.tokens.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    // Well past the ttl, the lease is still ours: nobody else can take it.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let other = service
        .acquire(&r.key, "intruder", Duration::from_secs(1))
        .await
        .unwrap();
    assert!(matches!(other, LockOutcome::Held { .. }), "{other:?}");
    let res = h.wait().await.unwrap();
    assert!(res.is_success(), "{res:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_lease_cancels_the_execution_and_reverts_its_fault() {
    let service = Arc::new(MemoryLockService::new());
    let rig = Rig::with(opts(&service, Duration::from_millis(300))).await;
    let p = Probe::new("probe", Duration::from_secs(30));
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let mut h = rig
        .engine
        .execute_async(rig.request("probe", &r))
        .await
        .unwrap();
    let token = eventually(Duration::from_secs(5), "execution running", || async {
        p.tokens.lock().unwrap().first().copied()
    })
    .await;
    // Someone (an operator, a partition healing with a newer leader) takes the lease away.
    service.release(&r.key, FencingToken(token)).await.unwrap();
    let res = tokio::time::timeout(Duration::from_secs(5), h.wait())
        .await
        .expect("execution did not stop after losing its lease")
        .unwrap();
    assert_eq!(res.status, ExecutionStatus::Failed, "{res:?}");
    assert!(res.error.as_deref().unwrap().contains("lease"), "{res:?}");
    assert_eq!(p.rollbacks.load(std::sync::atomic::Ordering::SeqCst), 1);
    let faults = rig
        .ledger
        .query_faults(&FaultQuery::default())
        .await
        .unwrap();
    assert!(matches!(faults[0].state, FaultState::Reverted { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_hold_is_a_clear_conflict() {
    let service = Arc::new(MemoryLockService::new());
    let rig = Rig::with(opts(&service, Duration::from_secs(5))).await;
    let p = Probe::new("probe", Duration::from_millis(5));
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    service.hold(&r.key, "ops", "maintenance").await.unwrap();
    let res = rig.engine.execute(rig.request("probe", &r)).await.unwrap();
    assert_eq!(res.status, ExecutionStatus::Failed);
    assert!(
        res.error
            .as_deref()
            .unwrap()
            .contains("on hold by operator"),
        "{res:?}"
    );
    assert!(p.tokens.lock().unwrap().is_empty());
}

/// A manager whose own polling would take far longer than the test's deadlines: whatever
/// is granted in time was handed over by the lock service's wait.
fn slow_polling_manager(service: &Arc<MemoryLockService>) -> ire_actors::lock::LockManager {
    ire_actors::lock::LockManager::new(
        service.clone(),
        LockConfig {
            ttl: Duration::from_secs(30),
            poll_initial: Duration::from_secs(60),
            poll_max: Duration::from_secs(60),
        },
    )
}

/// Waits until `n` callers wait in the service's `acquire_wait`.
async fn waiting_in_service(service: &MemoryLockService, n: usize) {
    eventually(
        Duration::from_secs(10),
        "callers waiting in the service",
        || async { (service.waiting() == n).then_some(()) },
    )
    .await;
}

/// Takes the free `key` for `holder` straight from the service.
async fn lease_for(
    service: &MemoryLockService,
    key: &ire_core::ResourceKey,
    holder: &str,
) -> ire_core::LeaseGrant {
    match service
        .acquire(key, holder, Duration::from_secs(30))
        .await
        .unwrap()
    {
        LockOutcome::Granted(g) => g,
        held => panic!("{held:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_acquire_is_handed_the_lease_by_the_release_not_by_polling() {
    let service = Arc::new(MemoryLockService::new());
    let manager = slow_polling_manager(&service);
    manager.spawn().await.unwrap();
    let key: ire_core::ResourceKey = "docker/shop/db/1".parse().unwrap();
    let first = lease_for(&service, &key, "someone-else").await;
    let waiter = {
        let (manager, key) = (manager.clone(), key.clone());
        tokio::spawn(async move {
            manager
                .acquire(
                    &key,
                    "exec-2",
                    Duration::from_secs(120),
                    &tokio_util::sync::CancellationToken::new(),
                )
                .await
        })
    };
    // The waiter found the key held and waits in the service.
    waiting_in_service(&service, 1).await;
    assert!(!waiter.is_finished(), "the waiter did not wait");
    service.release(&key, first.token).await.unwrap();
    let guard = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the release did not reach the waiter (it would have polled after 60 s)")
        .unwrap()
        .expect("acquire");
    assert!(guard.token() > first.token);
    let info = service.lock_info(&key).await.unwrap();
    assert_eq!(info.lease.map(|l| l.holder).as_deref(), Some("exec-2"));
    manager.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_waiter_returns_at_once_and_its_wait_in_the_service_ends() {
    let service = Arc::new(MemoryLockService::new());
    let manager = slow_polling_manager(&service);
    manager.spawn().await.unwrap();
    let key: ire_core::ResourceKey = "docker/shop/db/1".parse().unwrap();
    let first = lease_for(&service, &key, "someone-else").await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let waiter = {
        let (manager, key, cancel) = (manager.clone(), key.clone(), cancel.clone());
        tokio::spawn(async move {
            manager
                .acquire(&key, "exec-2", Duration::from_secs(120), &cancel)
                .await
        })
    };
    waiting_in_service(&service, 1).await;
    cancel.cancel();
    let err = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("a canceled waiter kept waiting")
        .unwrap()
        .expect_err("a canceled waiter got the lease");
    assert!(
        matches!(err.root(), ire_core::Error::Canceled { .. }),
        "{err}"
    );
    // The cancel reached the actor's wait in the service (which had 120 s left) ...
    waiting_in_service(&service, 0).await;
    // ... so the release hands the key to nobody.
    service.release(&key, first.token).await.unwrap();
    assert!(service.lock_info(&key).await.unwrap().lease.is_none());
    assert_eq!(
        service.grants(),
        1,
        "the canceled waiter was granted the lease"
    );
    assert!(manager.held().await.unwrap_or_default().is_empty());
    manager.stop().await;
}
