//! The campaign executor on an embedded node (single-node raft: the replicated lease,
//! ledger and campaign store), with scriptable plugins on a fake adapter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ire_consensus::types::{CampaignState, StepState, TaskState};
use ire_core::testsuite::{FakeAdapter, FakePlugin, Hook, ResourceBuilder};
use ire_core::{EnvironmentAdapter, ErrorClass, ExecutionEngine, FaultLedger, FaultQuery, Plugin};
use ire_node::campaign::{Executor, RunOptions, Source};
use ire_node::config::NodeConfig;
use ire_node::wiring::Node;

struct Rig {
    node: Arc<Node>,
    adapter: FakeAdapter,
    executor: Executor,
}

async fn rig(resources: &[(&str, &str)]) -> Rig {
    let adapter = FakeAdapter::new("fake");
    for (name, tier) in resources {
        adapter.insert(
            ResourceBuilder::new(name)
                .key(&format!("fake/{name}"))
                .label("tier", tier)
                .phase("running")
                .build(),
        );
    }
    let mut config = NodeConfig::defaults();
    config.adapters.clear();
    config.lease.ttl = std::time::Duration::from_secs(3);
    let node = Node::start_with(
        config,
        vec![(
            "fake".into(),
            Arc::new(adapter.clone()) as Arc<dyn EnvironmentAdapter>,
        )],
    )
    .await
    .expect("node starts");
    let node = Arc::new(node);
    Rig {
        executor: Executor::new(node.clone()),
        node,
        adapter,
    }
}

impl Rig {
    /// Registers a scriptable plugin in place of the catalog's plugin of that name.
    async fn plugin(&self, p: FakePlugin) -> FakePlugin {
        let _ = self.node.engine.unregister_plugin(&p.metadata().name).await;
        self.node
            .engine
            .register_plugin(Arc::new(p.clone()) as Arc<dyn Plugin>)
            .await
            .unwrap();
        p
    }

    async fn active_faults(&self, campaign: &str) -> Vec<ire_core::FaultEntry> {
        self.node
            .store
            .query_faults(&FaultQuery {
                campaign: Some(campaign.into()),
                active_only: true,
                ..FaultQuery::default()
            })
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.node.shutdown().await.unwrap();
    }
}

fn source(text: &str) -> Source {
    Source::new("test.yaml", text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_steady_state_before_the_first_step_injects_nothing() {
    let r = rig(&[("web-1", "web")]).await;
    let pause = r.plugin(FakePlugin::new("pause")).await;
    // A port that refuses connections: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = r
        .executor
        .prepare(source(&format!(
            "name: guarded\ntargets:\n  web: {{adapter: fake, selector: {{labels: {{tier: web}}}}}}\nsteady-state:\n  - name: api\n    tcp: {{address: \"127.0.0.1:{port}\", timeout: 500ms}}\nsteps:\n  - {{name: p, plugin: pause, target: web, duration: 1s}}\n"
        )))
        .unwrap();
    let report = r
        .executor
        .start(p, RunOptions::default())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(report.state, CampaignState::Aborted, "{}", report.message);
    assert!(
        report
            .message
            .contains("steady state failed before the first step"),
        "{}",
        report.message
    );
    assert!(
        pause.hooks().is_empty(),
        "the plugin was called: {:?}",
        pause.hooks()
    );
    let faults = r
        .node
        .store
        .query_faults(&FaultQuery::default())
        .await
        .unwrap();
    assert!(faults.is_empty(), "faults recorded: {faults:?}");
    let stored = r.node.store.campaign(&report.id).await.unwrap();
    assert_eq!(stored.state, CampaignState::Aborted);
    assert!(stored.steps.iter().all(|s| s.state == StepState::Skipped));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_reverts_every_active_fault_at_once() {
    let r = rig(&[
        ("web-1", "web"),
        ("web-2", "web"),
        ("web-3", "web"),
        ("db-1", "db"),
        ("db-2", "db"),
    ])
    .await;
    // Untimed sustained faults on every web resource (active until the campaign reverts
    // them), and timed faults on the databases, held while the abort comes.
    let pause = r.plugin(FakePlugin::new("pause")).await;
    let slow = r.plugin(FakePlugin::new("network-delay")).await;
    let wait = r
        .plugin(FakePlugin::new("wait-healthy").execute_time(Duration::from_secs(60)))
        .await;
    let p = r
        .executor
        .prepare(source(
            "name: abort-me\ntargets:\n  web: {adapter: fake, selector: {labels: {tier: web}}, mode: all}\n  db: {adapter: fake, selector: {labels: {tier: db}}, mode: all}\nsteps:\n  - {name: freeze-web, plugin: pause, target: web}\n  - {name: slow-db, plugin: network-delay, target: db, duration: 60s, depends-on: []}\n  - {name: hold, plugin: wait-healthy, target: web, depends-on: [freeze-web]}\n",
        ))
        .unwrap();
    let run = r.executor.start(p, RunOptions::default()).await.unwrap();
    let id = run.id.clone();
    // Wait until all five faults are in the ledger and the long step runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let faults = r.active_faults(&id).await;
        let injected = faults.iter().filter(|f| f.plugin != "wait-healthy").count();
        if injected == 5 && wait.count(Hook::Execute) == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "faults never injected: {:?}, wait executed {}",
            r.active_faults(&id).await,
            wait.count(Hook::Execute)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t0 = Instant::now();
    run.control.abort("test abort");
    let report = run.wait().await.unwrap();
    let took = t0.elapsed();
    assert_eq!(report.state, CampaignState::Canceled);
    assert!(r.active_faults(&id).await.is_empty(), "faults left active");
    // Every fault was reverted by its plugin: 3 pauses, 2 delays.
    assert_eq!(pause.restored().len(), 3, "{:?}", pause.hooks());
    assert_eq!(slow.restored().len(), 2, "{:?}", slow.hooks());
    let all = r
        .node
        .store
        .query_faults(&FaultQuery {
            campaign: Some(id.clone()),
            ..FaultQuery::default()
        })
        .await
        .unwrap();
    // Five faults, and the three canceled wait-healthy executions' snapshots.
    assert_eq!(all.len(), 8);
    assert!(all
        .iter()
        .all(|f| matches!(f.state, ire_core::FaultState::Reverted { .. })));
    // At once: not one after the other behind the 60 s faults.
    assert!(took < Duration::from_secs(15), "the abort took {took:?}");
    let steps: Vec<(String, StepState)> = report
        .steps
        .iter()
        .map(|s| (s.name.clone(), s.state))
        .collect();
    assert!(
        steps.contains(&("hold".into(), StepState::Aborted)),
        "{steps:?}"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_fault_is_held_for_its_duration_then_reverted() {
    let r = rig(&[("web-1", "web")]).await;
    let pause = r.plugin(FakePlugin::new("pause")).await;
    let p = r
        .executor
        .prepare(source(
            "name: timed\ntargets:\n  web: {adapter: fake}\nsteps:\n  - {name: p, plugin: pause, target: web, duration: 1500ms}\n",
        ))
        .unwrap();
    let t0 = Instant::now();
    let run = r.executor.start(p, RunOptions::default()).await.unwrap();
    let id = run.id.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pause.count(Hook::Execute) == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Held: active in the ledger and not restored while its duration runs.
    assert_eq!(r.active_faults(&id).await.len(), 1);
    assert!(pause.restored().is_empty());
    let report = run.wait().await.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(1500));
    assert_eq!(report.state, CampaignState::Succeeded, "{}", report.message);
    assert_eq!(pause.restored().len(), 1);
    assert!(r.active_faults(&id).await.is_empty());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_and_on_error_decide_what_runs_next() {
    let r = rig(&[("web-1", "web")]).await;
    let boom = r.plugin(FakePlugin::new("kill")).await;
    boom.fail(Hook::Execute, ErrorClass::Fatal, 100);
    let after = r.plugin(FakePlugin::new("restart")).await;
    let p = r
        .executor
        .prepare(source(
            "name: branches\ntargets:\n  web: {adapter: fake}\nsteps:\n  - {name: break, plugin: kill, target: web, on-error: continue}\n  - {name: on-ok, plugin: restart, target: web, depends-on: [break]}\n  - {name: on-fail, plugin: restart, target: web, depends-on: [break], when: on-failure}\n  - {name: always, plugin: restart, target: web, depends-on: [on-ok], when: always}\n",
        ))
        .unwrap();
    let report = r
        .executor
        .start(p, RunOptions::default())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    let state = |n: &str| report.steps.iter().find(|s| s.name == n).unwrap().state;
    assert_eq!(state("break"), StepState::Failed);
    assert_eq!(state("on-ok"), StepState::Skipped);
    assert_eq!(state("on-fail"), StepState::Succeeded);
    assert_eq!(state("always"), StepState::Succeeded);
    assert_eq!(after.count(Hook::Execute), 2);
    // on-error: continue lets the campaign go on, and it ends failed.
    assert_eq!(report.state, CampaignState::Failed);
    let stored = r.node.store.campaign(&report.id).await.unwrap();
    assert_eq!(stored.state, CampaignState::Failed);
    assert_eq!(stored.step("on-ok").unwrap().state, StepState::Skipped);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_abort_stops_and_retry_tries_again() {
    let r = rig(&[("web-1", "web")]).await;
    let flaky = r.plugin(FakePlugin::new("restart")).await;
    flaky.fail(Hook::Execute, ErrorClass::Retryable, 1);
    let kill = r.plugin(FakePlugin::new("kill")).await;
    kill.fail(Hook::Execute, ErrorClass::Fatal, 100);
    let never = r.plugin(FakePlugin::new("stop")).await;
    let p = r
        .executor
        .prepare(source(
            "name: errors\ntargets:\n  web: {adapter: fake}\nsteps:\n  - {name: flaky, plugin: restart, target: web, on-error: retry, retries: 2}\n  - {name: fatal, plugin: kill, target: web}\n  - {name: never, plugin: stop, target: web, when: always}\n",
        ))
        .unwrap();
    let report = r
        .executor
        .start(p, RunOptions::default())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    let step = |n: &str| report.steps.iter().find(|s| s.name == n).unwrap().clone();
    assert_eq!(step("flaky").state, StepState::Succeeded);
    assert_eq!(step("flaky").tasks[0].attempts, 2);
    assert_eq!(step("fatal").state, StepState::Failed);
    assert_eq!(step("never").state, StepState::Skipped);
    assert_eq!(never.count(Hook::Execute), 0);
    assert_eq!(report.state, CampaignState::Failed);
    assert!(
        report.message.contains("step fatal failed"),
        "{}",
        report.message
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_that_matches_nothing_fails_its_step_with_the_reason() {
    let r = rig(&[("web-1", "web")]).await;
    r.plugin(FakePlugin::new("kill")).await;
    let p = r
        .executor
        .prepare(source(
            "name: empty\ntargets:\n  ghosts: {adapter: fake, selector: {labels: {tier: ghost}}}\nsteps:\n  - {name: k, plugin: kill, target: ghosts}\n",
        ))
        .unwrap();
    let report = r
        .executor
        .start(p, RunOptions::default())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(report.steps[0].state, StepState::Failed);
    assert!(
        report.steps[0]
            .message
            .contains("target ghosts's selector (tier=ghost) matches no resource of adapter fake"),
        "{}",
        report.steps[0].message
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_new_tasks_and_resume_lets_them_go() {
    let r = rig(&[("web-1", "web"), ("web-2", "web")]).await;
    let k = r.plugin(FakePlugin::new("restart")).await;
    let p = r
        .executor
        .prepare(source(
            "name: paused\ntargets:\n  web: {adapter: fake, mode: all}\nsteps:\n  - {name: a, plugin: restart, target: web}\n  - {name: b, plugin: restart, target: web}\n",
        ))
        .unwrap();
    let run = r.executor.start(p, RunOptions::default()).await.unwrap();
    run.control.pause();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let during = k.count(Hook::Execute);
    assert!(
        during <= 2,
        "step b started while paused ({during} executions)"
    );
    assert!(run.control.is_paused());
    run.control.resume();
    let report = run.wait().await.unwrap();
    assert_eq!(report.state, CampaignState::Succeeded, "{}", report.message);
    assert_eq!(k.count(Hook::Execute), 4);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_resumes_from_the_store_after_its_coordinator_dies() {
    let r = rig(&[("web-1", "web"), ("db-1", "db")]).await;
    let first = r.plugin(FakePlugin::new("restart")).await;
    let held = r.plugin(FakePlugin::new("pause")).await;
    let p = r
        .executor
        .prepare(source(
            "name: resumable\ntargets:\n  web: {adapter: fake}\n  db: {adapter: fake, selector: {labels: {tier: db}}}\nsteps:\n  - {name: one, plugin: restart, target: web}\n  - {name: two, plugin: pause, target: db, duration: 1s}\n",
        ))
        .unwrap();
    let run = r.executor.start(p, RunOptions::default()).await.unwrap();
    let id = run.id.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while held.count(Hook::Execute) == 0 {
        assert!(Instant::now() < deadline, "step two never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The coordinator dies mid-step, reverting nothing; the engine's execution ends too.
    run.crash();
    r.node.engine.stop().await;
    r.node.engine.spawn().await.unwrap();
    assert_eq!(first.count(Hook::Execute), 1);
    let stored = r.node.store.campaign(&id).await.unwrap();
    assert_eq!(stored.step("one").unwrap().state, StepState::Succeeded);
    assert!(!stored.step("two").unwrap().state.is_terminal());

    // A fault the dead coordinator's node left active: its lease lapsed, nobody reverted it.
    let db = r.adapter.resource("fake/db-1").unwrap();
    let lease = match ire_core::LockService::acquire(
        &r.node.store,
        &db.key,
        "dead-node/exec-x",
        Duration::from_millis(300),
    )
    .await
    .unwrap()
    {
        ire_core::LockOutcome::Granted(g) => g,
        other => panic!("{other:?}"),
    };
    let snapshot = ire_core::Snapshot::new("pause", &db, &"left-by-the-dead").unwrap();
    r.node
        .store
        .record_fault(ire_core::FaultEntry {
            id: "exec-x-1".into(),
            execution_id: "exec-x".into(),
            campaign: Some(id.clone()),
            step: Some("two".into()),
            resource: db.key.clone(),
            plugin: "pause".into(),
            node: "dead-node".into(),
            kind: ire_core::FaultKind::Sustained,
            token: lease.token,
            snapshot: Some(snapshot.clone()),
            injected_at: chrono::Utc::now(),
            duration: None,
            state: ire_core::FaultState::Injected,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;

    let resumed = r.executor.resume(&id, "tester").await.unwrap();
    let report = resumed.wait().await.unwrap();
    assert_eq!(report.state, CampaignState::Succeeded, "{}", report.message);
    // Step one had ended: not run again. Step two ran again on its resource.
    assert_eq!(first.count(Hook::Execute), 1);
    assert_eq!(held.count(Hook::Execute), 2);
    // The dead node's fault was reverted from its ledger entry, and nothing is active.
    assert!(held.restored().contains(&snapshot), "{:?}", held.restored());
    assert!(report.reverted_at_end.contains(&"exec-x-1".to_owned()));
    assert!(r.active_faults(&id).await.is_empty());
    let stored = r.node.store.campaign(&id).await.unwrap();
    assert_eq!(stored.state, CampaignState::Succeeded);
    let task = stored.step("two").unwrap().tasks.values().next().unwrap();
    assert_eq!(task.state, TaskState::Succeeded);
    r.stop().await;
}
