//! Every metric the node emits, named in one place (documented in the README).
//!
//! Names follow Prometheus conventions: `ire_` prefix, base units, `_total` for counters.

// ---- Node runtime II: event bus, monitor, reporter, config. ----

/// Counter: events published on the local bus.
pub const BUS_EVENTS_PUBLISHED_TOTAL: &str = "ire_bus_events_published_total";
/// Counter: event deliveries into subscriber buffers.
pub const BUS_EVENTS_DELIVERED_TOTAL: &str = "ire_bus_events_delivered_total";
/// Counter: events dropped for a subscriber whose buffer was full (its lag).
pub const BUS_EVENTS_DROPPED_TOTAL: &str = "ire_bus_events_dropped_total";
/// Gauge: live subscriptions.
pub const BUS_SUBSCRIBERS: &str = "ire_bus_subscribers";
/// Counter: events sent to other nodes' bridges.
pub const BUS_EVENTS_FORWARDED_TOTAL: &str = "ire_bus_events_forwarded_total";
/// Counter: events received from other nodes.
pub const BUS_EVENTS_RECEIVED_TOTAL: &str = "ire_bus_events_received_total";
/// Counter: batches the reporter wrote.
pub const REPORTER_BATCHES_TOTAL: &str = "ire_reporter_batches_total";
/// Counter: records (executions and events) the reporter stored.
pub const REPORTER_RECORDS_STORED_TOTAL: &str = "ire_reporter_records_stored_total";
/// Counter: batches that failed to store (kept and retried).
pub const REPORTER_FLUSH_FAILURES_TOTAL: &str = "ire_reporter_flush_failures_total";
/// Histogram: seconds to write one batch.
pub const REPORTER_BATCH_SECONDS: &str = "ire_reporter_batch_seconds";
/// Counter: health checks run, by `strategy` and `outcome` (healthy, unhealthy, unknown, error).
pub const MONITOR_HEALTH_CHECKS_TOTAL: &str = "ire_monitor_health_checks_total";
/// Histogram: seconds one health check took, by `strategy`.
pub const MONITOR_HEALTH_CHECK_SECONDS: &str = "ire_monitor_health_check_seconds";
/// Histogram: seconds from a fault's injection to its resource being seen unhealthy.
pub const MONITOR_TIME_TO_DETECT_SECONDS: &str = "ire_monitor_time_to_detect_seconds";
/// Histogram: seconds from a fault's injection to its resource being healthy again.
pub const MONITOR_TIME_TO_RECOVER_SECONDS: &str = "ire_monitor_time_to_recover_seconds";
/// Gauge: faults whose resource the monitor is watching.
pub const MONITOR_FAULTS_WATCHED: &str = "ire_monitor_faults_watched";
