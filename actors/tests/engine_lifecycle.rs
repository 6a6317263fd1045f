//! The plugin lifecycle as the engine runs it (seed properties 12-16, 24, 65, 66, 79, 81, 82).

mod engine_common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engine_common::Rig;
use ire_actors::engine::meta;
use ire_core::testsuite::{FakePlugin, Hook};
use ire_core::{
    Error, ErrorClass, EventFilter, ExecutionEngine, ExecutionStatus, Plugin, PluginContext,
    PluginMetadata, Resource, Result, Snapshot,
};

use Hook::*;

#[tokio::test]
async fn hooks_run_in_the_seed_order_on_success() {
    let rig = Rig::new().await;
    let p = FakePlugin::new("fake-ok");
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("web");
    let res = rig
        .engine
        .execute(rig.request("fake-ok", &r))
        .await
        .unwrap();
    assert_eq!(res.status, ExecutionStatus::Success, "{res:?}");
    assert_eq!(
        p.hooks_of(&res.execution_id),
        [Validate, PreExecute, Execute, PostExecute, Cleanup]
    );
    // The snapshot PreExecute took is kept with the result (property 79, 81).
    let snap: Snapshot = serde_json::from_value(res.metadata[meta::SNAPSHOT].clone()).unwrap();
    assert_eq!(snap.resource, r.key);
}

#[tokio::test]
async fn failed_execute_rolls_back_with_the_snapshot_then_cleans_up() {
    let rig = Rig::new().await;
    let p = FakePlugin::new("fake-fail");
    p.fail(Execute, ErrorClass::Fatal, 1);
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let res = rig
        .engine
        .execute(rig.request("fake-fail", &r))
        .await
        .unwrap();
    assert_eq!(res.status, ExecutionStatus::Failed);
    assert_eq!(
        p.hooks_of(&res.execution_id),
        [Validate, PreExecute, Execute, Rollback, Cleanup]
    );
    let restored = p.restored();
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0].resource, r.key);
    assert_eq!(res.metadata[meta::REVERTED], serde_json::json!(true));
    // The error keeps its context chain (property 67) and class (property 68).
    let e = res.error.unwrap();
    assert!(
        e.contains("plugin fake-fail execute on fake/db") && e.contains("failed on purpose"),
        "{e}"
    );
    assert_eq!(res.error_class, Some(ErrorClass::Fatal));
}

#[tokio::test]
async fn failed_rollback_still_lets_cleanup_run() {
    let rig = Rig::new().await;
    let p = FakePlugin::new("fake-rb");
    p.fail(Execute, ErrorClass::Fatal, 1);
    p.fail(Rollback, ErrorClass::Fatal, 1);
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let res = rig
        .engine
        .execute(rig.request("fake-rb", &r))
        .await
        .unwrap();
    assert_eq!(res.status, ExecutionStatus::Failed);
    assert_eq!(
        p.hooks_of(&res.execution_id),
        [Validate, PreExecute, Execute, Rollback, Cleanup]
    );
    assert!(
        res.metadata.contains_key(meta::ROLLBACK_ERROR),
        "{:?}",
        res.metadata
    );
    assert!(res.error.unwrap().contains("rollback failed too"));
}

#[tokio::test]
async fn failed_pre_execute_cleans_up_and_never_executes() {
    let rig = Rig::new().await;
    let p = FakePlugin::new("fake-pre");
    p.fail(PreExecute, ErrorClass::Fatal, 1);
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let res = rig
        .engine
        .execute(rig.request("fake-pre", &r))
        .await
        .unwrap();
    assert_eq!(res.status, ExecutionStatus::Failed);
    assert_eq!(
        p.hooks_of(&res.execution_id),
        [Validate, PreExecute, Cleanup]
    );
}

#[tokio::test]
async fn failed_validate_returns_the_error_and_touches_nothing() {
    let rig = Rig::new().await;
    let p = FakePlugin::new("fake-val");
    p.fail(Validate, ErrorClass::Fatal, 1);
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let res = rig
        .engine
        .execute(rig.request("fake-val", &r))
        .await
        .unwrap();
    assert_eq!(res.status, ExecutionStatus::Failed);
    assert_eq!(p.hooks_of(&res.execution_id), [Validate]);
}

#[tokio::test]
async fn failed_post_execute_is_logged_not_fatal() {
    let rig = Rig::new().await;
    let p = FakePlugin::new("fake-post");
    p.fail(PostExecute, ErrorClass::Fatal, 1);
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let res = rig
        .engine
        .execute(rig.request("fake-post", &r))
        .await
        .unwrap();
    assert_eq!(res.status, ExecutionStatus::Success);
    assert!(res.metadata.contains_key(meta::POST_EXECUTE_ERROR));
    assert_eq!(
        p.hooks_of(&res.execution_id),
        [Validate, PreExecute, Execute, PostExecute, Cleanup]
    );
}

#[tokio::test(start_paused = true)]
async fn timeout_cancels_the_context_rolls_back_and_cleans_up() {
    let rig = Rig::new().await;
    let p = FakePlugin::new("fake-slow").execute_time(Duration::from_secs(3600));
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let req = rig
        .request("fake-slow", &r)
        .with_timeout(Duration::from_secs(2));
    let res = rig.engine.execute(req).await.unwrap();
    assert_eq!(res.status, ExecutionStatus::Timeout, "{res:?}");
    assert_eq!(
        p.hooks_of(&res.execution_id),
        [Validate, PreExecute, Execute, Rollback, Cleanup]
    );
    assert!(res.duration < Duration::from_secs(10), "{:?}", res.duration);
}

/// A plugin whose execute ignores its context: the engine abandons it after the grace period.
struct Deaf;

#[async_trait]
impl Plugin for Deaf {
    fn metadata(&self) -> PluginMetadata {
        PluginMetadata::new(
            "deaf",
            semver::Version::new(1, 0, 0),
            "ignores cancellation",
            ire_core::FaultKind::Action,
        )
    }
    async fn validate(&self, _: &PluginContext, _: &Resource) -> Result<()> {
        Ok(())
    }
    async fn pre_execute(&self, _: &PluginContext, _: &Resource) -> Result<Option<Snapshot>> {
        Ok(None)
    }
    async fn execute(&self, _: &PluginContext, _: &Resource) -> Result<()> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_hook_that_ignores_cancellation_is_abandoned_and_its_worker_freed() {
    let rig = Rig::new().await;
    rig.engine.set_concurrency_limit(1).await.unwrap();
    rig.register(Arc::new(Deaf)).await;
    let r = rig.resource("db");
    let req = rig.request("deaf", &r).with_timeout(Duration::from_secs(1));
    let res = rig.engine.execute(req.clone()).await.unwrap();
    assert_eq!(res.status, ExecutionStatus::Timeout);
    // The single worker is free again.
    assert_eq!(rig.engine.load().0, 0);
    let res2 = rig.engine.execute(req).await.unwrap();
    assert_eq!(res2.status, ExecutionStatus::Timeout);
}

#[tokio::test]
async fn async_execution_can_be_waited_canceled_and_queried() {
    let rig = Rig::new().await;
    let p = FakePlugin::new("fake-long").execute_time(Duration::from_secs(3600));
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let mut h = rig
        .engine
        .execute_async(rig.request("fake-long", &r))
        .await
        .unwrap();
    let id = h.execution_id().to_owned();
    assert!(!h.is_done());
    let st = rig.engine.status(&id).await.unwrap();
    assert!(
        matches!(st, ExecutionStatus::Pending | ExecutionStatus::Running),
        "{st:?}"
    );
    rig.engine.cancel(&id).await.unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), h.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status, ExecutionStatus::Canceled);
    assert!(h.is_done());
    assert_eq!(
        rig.engine.status(&id).await.unwrap(),
        ExecutionStatus::Canceled
    );
    // Cleanup ran and the fault was rolled back.
    assert_eq!(
        p.hooks_of(&id),
        [Validate, PreExecute, Execute, Rollback, Cleanup]
    );
    // Unknown ids are an error, not a silent success.
    assert!(matches!(
        rig.engine.status("nope").await,
        Err(Error::NotFound { .. })
    ));
    assert!(rig.engine.cancel("nope").await.is_err());
}

#[tokio::test]
async fn handle_cancel_stops_the_execution() {
    let rig = Rig::new().await;
    let p = FakePlugin::new("fake-long").execute_time(Duration::from_secs(3600));
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let mut h = rig
        .engine
        .execute_async(rig.request("fake-long", &r))
        .await
        .unwrap();
    h.cancel();
    tokio::time::timeout(Duration::from_secs(10), h.done())
        .await
        .unwrap();
    assert_eq!(h.wait().await.unwrap().status, ExecutionStatus::Canceled);
}

#[tokio::test]
async fn progress_and_plugin_events_go_through_the_bus() {
    let rig = Rig::new().await;
    let p = FakePlugin::new("fake-ev");
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let mut sub = rig.bus.subscribe_helper(EventFilter::default()).await;
    let res = rig
        .engine
        .execute(rig.request("fake-ev", &r))
        .await
        .unwrap();
    let mut types = Vec::new();
    while let Some(e) = sub.recv_timeout(Duration::from_secs(2)).await {
        if e.metadata.get("execution_id") == Some(&res.execution_id) {
            types.push(e.type_.clone());
        }
        if e.type_ == "execution.finished" {
            break;
        }
    }
    // The finished event comes last; progress may arrive just before or after the plugin's
    // own event, so check membership and the ends.
    assert_eq!(
        types.first().map(String::as_str),
        Some("execution.started"),
        "{types:?}"
    );
    assert_eq!(
        types.last().map(String::as_str),
        Some("execution.finished"),
        "{types:?}"
    );
    assert!(types.iter().any(|t| t == "fake.executed"), "{types:?}");
    // Progress (0 then 100) arrives through the context's channel as events.
    ire_core::testsuite::eventually(Duration::from_secs(5), "progress events", || async {
        let n = rig
            .bus
            .published()
            .iter()
            .filter(|e| {
                e.type_ == "execution.progress"
                    && e.metadata.get("execution_id") == Some(&res.execution_id)
            })
            .count();
        (n == 2).then_some(())
    })
    .await;
    let last = rig.engine.progress(&res.execution_id).unwrap().unwrap();
    assert_eq!(last.percent, 100);
}

#[tokio::test]
async fn every_execution_is_recorded_with_its_outcome() {
    let rig = Rig::new().await;
    let p = FakePlugin::new("fake-rec");
    p.fail(Execute, ErrorClass::Fatal, 1);
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let a = rig
        .engine
        .execute(rig.request("fake-rec", &r))
        .await
        .unwrap();
    let b = rig
        .engine
        .execute(rig.request("fake-rec", &r))
        .await
        .unwrap();
    let recs = rig.reporter.records();
    assert_eq!(recs.len(), 2);
    assert_eq!(
        recs.iter().find(|x| x.id == a.execution_id).unwrap().status,
        ExecutionStatus::Failed
    );
    assert_eq!(
        recs.iter().find(|x| x.id == b.execution_id).unwrap().status,
        ExecutionStatus::Success
    );
    assert!(recs
        .iter()
        .all(|x| x.principal == "tester" && x.resource_key.as_ref() == Some(&r.key)));
}

#[tokio::test]
async fn unknown_plugin_and_unsupported_kind_are_clear_errors() {
    let rig = Rig::new().await;
    let r = rig.resource("db");
    let e = rig
        .engine
        .execute(rig.request("missing", &r))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    let p = FakePlugin::with_metadata(
        ire_core::testsuite::PluginMetadataBuilder::new("pods-only")
            .kind("pod")
            .build(),
    );
    rig.register(Arc::new(p.clone())).await;
    let e = rig
        .engine
        .execute(rig.request("pods-only", &r))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not support"), "{e}");
    assert!(p.hooks().is_empty());
}

#[tokio::test(start_paused = true)]
async fn timed_fault_is_held_for_its_duration_then_reverted() {
    let rig = Rig::new().await;
    let p = FakePlugin::new("fake-timed");
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let mut req = rig.request("fake-timed", &r);
    req.labels.insert("duration".into(), "30s".into());
    let started = tokio::time::Instant::now();
    let res = rig.engine.execute(req).await.unwrap();
    assert_eq!(res.status, ExecutionStatus::Success, "{res:?}");
    assert!(started.elapsed() >= Duration::from_secs(30));
    assert_eq!(
        p.hooks_of(&res.execution_id),
        [
            Validate,
            PreExecute,
            Execute,
            Rollback,
            PostExecute,
            Cleanup
        ]
    );
    assert_eq!(res.metadata[meta::REVERTED], serde_json::json!(true));
}

#[tokio::test]
async fn ignorable_execute_error_counts_as_success() {
    let rig = Rig::new().await;
    let p = FakePlugin::new("fake-ign");
    p.fail(Execute, ErrorClass::Ignorable, 1);
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let res = rig
        .engine
        .execute(rig.request("fake-ign", &r))
        .await
        .unwrap();
    assert_eq!(res.status, ExecutionStatus::Success);
}

/// A tiny extension so tests subscribe through the trait.
trait SubscribeHelper {
    async fn subscribe_helper(&self, f: EventFilter) -> ire_core::Subscription;
}

impl SubscribeHelper for ire_core::testsuite::FakeEventBus {
    async fn subscribe_helper(&self, f: EventFilter) -> ire_core::Subscription {
        ire_core::EventBus::subscribe(self, f).await.unwrap()
    }
}
