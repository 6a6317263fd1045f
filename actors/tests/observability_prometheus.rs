//! The Prometheus exporter the node serves on /metrics.

use ire_actors::bus::LocalEventBus;
use ire_actors::observability::install_prometheus_recorder;
use ire_core::{Event, EventBus};

#[tokio::test]
async fn the_prometheus_recorder_renders_runtime_metrics_with_help_text() {
    let handle = install_prometheus_recorder().unwrap();
    let bus = LocalEventBus::new();
    bus.publish(Event::new("x", "t")).await.unwrap();
    let text = handle.render();
    assert!(
        text.contains("# TYPE ire_bus_events_published_total counter"),
        "{text}"
    );
    assert!(text.contains("ire_bus_events_published_total 1"), "{text}");
    assert!(
        text.contains("# HELP ire_bus_events_published_total Events published"),
        "{text}"
    );
    // A second install fails clearly instead of silently replacing the first.
    assert!(install_prometheus_recorder().is_err());
}
