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

// Engine, locks, registry, supervision (node runtime I).

/// Counter: executions finished, by `plugin` and `status`.
pub const ENGINE_EXECUTIONS_TOTAL: &str = "ire_engine_executions_total";
/// Histogram: an execution's duration in seconds, by `plugin`.
pub const ENGINE_EXECUTION_DURATION_SECONDS: &str = "ire_engine_execution_duration_seconds";
/// Gauge: executions running in the worker pool.
pub const ENGINE_EXECUTIONS_RUNNING: &str = "ire_engine_executions_running";
/// Gauge: executions admitted and waiting for a worker.
pub const ENGINE_EXECUTIONS_QUEUED: &str = "ire_engine_executions_queued";
/// Counter: executions rejected because the queue was full.
pub const ENGINE_REJECTED_TOTAL: &str = "ire_engine_rejected_total";
/// Counter: executions refused by authorization.
pub const ENGINE_UNAUTHORIZED_TOTAL: &str = "ire_engine_unauthorized_total";
/// Counter: rollbacks run, by `outcome` (ok, failed).
pub const ENGINE_ROLLBACKS_TOTAL: &str = "ire_engine_rollbacks_total";
/// Counter: plugin hooks abandoned because they ignored cancellation, by `hook`.
pub const ENGINE_ABANDONED_HOOKS_TOTAL: &str = "ire_engine_abandoned_hooks_total";
/// Counter: circuit breaker state changes, by `state`.
pub const ENGINE_CIRCUIT_TRANSITIONS_TOTAL: &str = "ire_engine_circuit_transitions_total";
/// Counter: leases acquired.
pub const LOCK_ACQUIRED_TOTAL: &str = "ire_lock_acquired_total";
/// Counter: lease renewals, by `outcome` (ok, failed).
pub const LOCK_RENEWALS_TOTAL: &str = "ire_lock_renewals_total";
/// Counter: leases lost (a renewal failed or the lock actor stopped).
pub const LOCK_LOST_TOTAL: &str = "ire_lock_lost_total";
/// Histogram: time waited for a lease, in seconds.
pub const LOCK_WAIT_SECONDS: &str = "ire_lock_wait_seconds";
/// Gauge: leases held by this node.
pub const LOCK_HELD: &str = "ire_lock_held";
/// Gauge: registered plugins.
pub const REGISTRY_PLUGINS: &str = "ire_registry_plugins";
/// Counter: plugin reloads.
pub const REGISTRY_RELOADS_TOTAL: &str = "ire_registry_reloads_total";
/// Counter: child restarts by the supervisor, by `child`.
pub const SUPERVISOR_RESTARTS_TOTAL: &str = "ire_supervisor_restarts_total";
/// Counter: children found stuck (missed heartbeat) and replaced, by `child`.
pub const SUPERVISOR_STUCK_TOTAL: &str = "ire_supervisor_stuck_total";
/// Counter: workflows finished, by `status`.
pub const WORKFLOW_RUNS_TOTAL: &str = "ire_workflow_runs_total";
