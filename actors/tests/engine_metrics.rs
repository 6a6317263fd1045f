//! The engine's per-plugin metrics: executions counted by plugin and status, durations
//! recorded by plugin (handles registered once per plugin, then reused).

mod engine_common;

use std::sync::Arc;

use engine_common::Rig;
use ire_actors::metric_names as m;
use ire_core::testsuite::{FakePlugin, Hook};
use ire_core::{ErrorClass, ExecutionEngine, ExecutionStatus};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;

#[tokio::test]
async fn executions_are_counted_by_plugin_and_status() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    let rig = Rig::new().await;
    let ok = FakePlugin::new("metered-ok");
    let bad = FakePlugin::new("metered-bad");
    bad.fail(Hook::Execute, ErrorClass::Fatal, 1);
    rig.register(Arc::new(ok)).await;
    rig.register(Arc::new(bad)).await;
    let r = rig.resource("web");
    for _ in 0..3 {
        let res = rig
            .engine
            .execute(rig.request("metered-ok", &r))
            .await
            .unwrap();
        assert_eq!(res.status, ExecutionStatus::Success, "{res:?}");
    }
    let res = rig
        .engine
        .execute(rig.request("metered-bad", &r))
        .await
        .unwrap();
    assert_eq!(res.status, ExecutionStatus::Failed, "{res:?}");

    let snap = snapshotter.snapshot().into_vec();
    let find = |kind: MetricKind, name: &str, labels: &[(&str, &str)]| {
        snap.iter()
            .find(|(ck, _, _, _)| {
                ck.kind() == kind
                    && ck.key().name() == name
                    && ck.key().labels().count() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| ck.key().labels().any(|l| l.key() == *k && l.value() == *v))
            })
            .map(|(_, _, _, v)| v)
    };
    let count = |plugin: &str, status: &str| {
        find(
            MetricKind::Counter,
            m::ENGINE_EXECUTIONS_TOTAL,
            &[("plugin", plugin), ("status", status)],
        )
    };
    assert_eq!(
        count("metered-ok", "success"),
        Some(&DebugValue::Counter(3))
    );
    assert_eq!(
        count("metered-bad", "failed"),
        Some(&DebugValue::Counter(1))
    );
    // Only statuses that happened are series.
    assert_eq!(count("metered-ok", "failed"), None);
    let durations = |plugin: &str| match find(
        MetricKind::Histogram,
        m::ENGINE_EXECUTION_DURATION_SECONDS,
        &[("plugin", plugin)],
    ) {
        Some(DebugValue::Histogram(h)) => h.len(),
        other => panic!("no duration histogram for {plugin}: {other:?}"),
    };
    assert_eq!(durations("metered-ok"), 3);
    assert_eq!(durations("metered-bad"), 1);
}
