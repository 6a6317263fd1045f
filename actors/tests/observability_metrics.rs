//! Seed property 54: metrics are emitted with the right type and labels, under the names of
//! `metric_names`.

#[path = "support/http_server.rs"]
mod http_server;

use std::sync::Arc;
use std::time::Duration;

use http_server::TestServer;
use ire_actors::bus::{BusConfig, LocalEventBus};
use ire_actors::metric_names as m;
use ire_actors::monitor::{Adapters, HealthMonitor};
use ire_actors::reporter::{MemoryStorage, ReporterConfig, ReporterHandle};
use ire_core::testsuite::ResourceBuilder;
use ire_core::{Event, EventBus, EventFilter, HealthCheckConfig, Monitor, Reporter};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;

#[tokio::test]
async fn runtime_metrics_have_their_type_and_labels() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    // Bus: one slow subscriber that drops.
    let bus = LocalEventBus::with_config(BusConfig {
        subscriber_buffer: 1,
        async_queue: 8,
    });
    let _slow = bus.subscribe(EventFilter::default()).await.unwrap();
    for _ in 0..3 {
        bus.publish(Event::new("x", "t")).await.unwrap();
    }
    // Reporter: one batch.
    let (reporter, _j) =
        ReporterHandle::spawn(Arc::new(MemoryStorage::new()), ReporterConfig::default())
            .await
            .unwrap();
    reporter.record_event(Event::new("x", "t")).await.unwrap();
    reporter.flush().await.unwrap();
    // Monitor: one healthy and one unhealthy http check.
    let server = TestServer::fixed(200, "ok").await;
    let monitor = HealthMonitor::new(Adapters::new());
    let r = ResourceBuilder::new("web")
        .health_check(HealthCheckConfig {
            type_: "http".into(),
            endpoint: server.url("/"),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retries: 1,
        })
        .build();
    monitor.check_health(&r).await.unwrap();
    server.set_fixed(500, "no");
    monitor.check_health(&r).await.unwrap();

    let snap = snapshotter.snapshot().into_vec();
    let find = |name: &str, kind: MetricKind, labels: &[(&str, &str)]| {
        snap.iter()
            .find(|(ck, _, _, _)| {
                ck.kind() == kind
                    && ck.key().name() == name
                    && labels
                        .iter()
                        .all(|(k, v)| ck.key().labels().any(|l| l.key() == *k && l.value() == *v))
            })
            .map(|(_, _, _, v)| v)
            .unwrap_or_else(|| panic!("no {kind:?} {name} {labels:?} in {snap:#?}"))
    };
    assert_eq!(
        find(m::BUS_EVENTS_PUBLISHED_TOTAL, MetricKind::Counter, &[]),
        &DebugValue::Counter(3)
    );
    assert_eq!(
        find(m::BUS_EVENTS_DROPPED_TOTAL, MetricKind::Counter, &[]),
        &DebugValue::Counter(2)
    );
    assert!(
        matches!(find(m::BUS_SUBSCRIBERS, MetricKind::Gauge, &[]), DebugValue::Gauge(g) if g.into_inner() == 1.0)
    );
    assert_eq!(
        find(m::REPORTER_RECORDS_STORED_TOTAL, MetricKind::Counter, &[]),
        &DebugValue::Counter(1)
    );
    assert!(
        matches!(find(m::REPORTER_BATCH_SECONDS, MetricKind::Histogram, &[]), DebugValue::Histogram(h) if h.len() == 1)
    );
    assert_eq!(
        find(
            m::MONITOR_HEALTH_CHECKS_TOTAL,
            MetricKind::Counter,
            &[("strategy", "http"), ("outcome", "healthy")]
        ),
        &DebugValue::Counter(1)
    );
    assert_eq!(
        find(
            m::MONITOR_HEALTH_CHECKS_TOTAL,
            MetricKind::Counter,
            &[("strategy", "http"), ("outcome", "unhealthy")]
        ),
        &DebugValue::Counter(1)
    );
    assert!(matches!(
        find(m::MONITOR_HEALTH_CHECK_SECONDS, MetricKind::Histogram, &[("strategy", "http")]),
        DebugValue::Histogram(h) if h.len() == 2
    ));
}
