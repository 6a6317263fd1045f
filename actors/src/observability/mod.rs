//! Observability: structured logs through `tracing`, a span per execution, and metrics
//! through the `metrics` facade with a Prometheus exporter.
//!
//! # Logs
//! [`init`] installs the node's subscriber: human-readable text ([`LogFormat::Text`]) or one
//! JSON object per line ([`LogFormat::Json`]) with `timestamp`, `level`, `component`,
//! `execution_id` and `resource_id` always present (null outside an execution). The filter
//! comes from `IRE_LOG` (or `RUST_LOG`), default `info`.
//!
//! # Execution spans
//! The engine creates one span per execution with [`execution_span`], stores it in
//! `PluginContext::span`, and runs the lifecycle inside it (`.instrument(ctx.span.clone())`);
//! plugins' own spans and logs are then children of it and carry its `execution_id`,
//! `resource_id` and `plugin` fields. At the end the engine calls [`finish_execution_span`],
//! which records the outcome on the span and logs one `execution finished` event.
//!
//! # Metrics
//! Names are constants in [`crate::metric_names`]. The node calls
//! [`install_prometheus_recorder`] once at start-up and serves
//! [`metrics_exporter_prometheus::PrometheusHandle::render`] on `/metrics`.

mod json;

use ire_core::{Error, ExecutionResult, Result};
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::metric_names as m;

pub use json::JsonLogLayer;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text, with span fields in context.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" | "pretty" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(Error::invalid(
                "log format",
                format!("{other:?} is not text or json"),
            )),
        }
    }
}

/// The log layer for `format`, writing to `writer` (stderr for the node; a buffer in tests).
pub fn log_layer<W>(format: LogFormat, writer: W) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Json => Box::new(JsonLogLayer::new(writer)),
        LogFormat::Text => Box::new(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_target(true)
                .with_ansi(false),
        ),
    }
}

/// The filter from `IRE_LOG`, else `RUST_LOG`, else `info`.
pub fn env_filter() -> EnvFilter {
    let spec = std::env::var("IRE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    EnvFilter::try_new(&spec).unwrap_or_else(|e| {
        eprintln!("ignoring invalid log filter {spec:?}: {e}");
        EnvFilter::new("info")
    })
}

/// Installs the process's log subscriber, writing to stderr; fails if one is installed.
pub fn init(format: LogFormat) -> Result<()> {
    tracing_subscriber::registry()
        .with(log_layer(format, std::io::stderr).with_filter(env_filter()))
        .try_init()
        .map_err(|e| {
            Error::other(
                ire_core::ErrorClass::Fatal,
                format!("installing the log subscriber: {e}"),
                None,
            )
        })
}

/// The span of one execution: `component`, `execution_id`, `resource_id` and `plugin`, with
/// `status`, `duration_ms` and `error` recorded by [`finish_execution_span`].
pub fn execution_span(execution_id: &str, resource_id: &str, plugin: &str) -> tracing::Span {
    tracing::info_span!(
        "execution",
        component = "engine",
        execution_id = %execution_id,
        resource_id = %resource_id,
        plugin = %plugin,
        status = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
        error = tracing::field::Empty,
    )
}

/// Records an execution's outcome on its span and logs `execution finished` inside it.
pub fn finish_execution_span(span: &tracing::Span, result: &ExecutionResult) {
    let status = serde_json::to_value(result.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    span.record("status", status.as_str());
    span.record("duration_ms", result.duration.as_millis() as u64);
    if let Some(e) = &result.error {
        span.record("error", e.as_str());
    }
    span.in_scope(|| {
        if result.is_success() {
            tracing::info!(status = %status, attempts = result.attempts, "execution finished");
        } else {
            tracing::warn!(status = %status, attempts = result.attempts, error = result.error.as_deref().unwrap_or(""), "execution finished");
        }
    });
}

/// Describes (type, unit, help text) the metrics of the event bus, monitor and reporter.
pub fn describe_runtime_metrics() {
    describe_counter!(
        m::BUS_EVENTS_PUBLISHED_TOTAL,
        Unit::Count,
        "Events published on the local bus."
    );
    describe_counter!(
        m::BUS_EVENTS_DELIVERED_TOTAL,
        Unit::Count,
        "Event deliveries into subscriber buffers."
    );
    describe_counter!(
        m::BUS_EVENTS_DROPPED_TOTAL,
        Unit::Count,
        "Events dropped for subscribers whose buffer was full."
    );
    describe_gauge!(
        m::BUS_SUBSCRIBERS,
        Unit::Count,
        "Live event bus subscriptions."
    );
    describe_counter!(
        m::BUS_EVENTS_FORWARDED_TOTAL,
        Unit::Count,
        "Events sent to other nodes."
    );
    describe_counter!(
        m::BUS_EVENTS_RECEIVED_TOTAL,
        Unit::Count,
        "Events received from other nodes."
    );
    describe_counter!(
        m::REPORTER_BATCHES_TOTAL,
        Unit::Count,
        "Batches the reporter wrote."
    );
    describe_counter!(
        m::REPORTER_RECORDS_STORED_TOTAL,
        Unit::Count,
        "Records the reporter stored."
    );
    describe_counter!(
        m::REPORTER_FLUSH_FAILURES_TOTAL,
        Unit::Count,
        "Reporter batches that failed to store (retried)."
    );
    describe_histogram!(
        m::REPORTER_BATCH_SECONDS,
        Unit::Seconds,
        "Time to write one reporter batch."
    );
    describe_counter!(
        m::MONITOR_HEALTH_CHECKS_TOTAL,
        Unit::Count,
        "Health checks, by strategy and outcome."
    );
    describe_histogram!(
        m::MONITOR_HEALTH_CHECK_SECONDS,
        Unit::Seconds,
        "Time one health check took, by strategy."
    );
    describe_histogram!(
        m::MONITOR_TIME_TO_DETECT_SECONDS,
        Unit::Seconds,
        "Time from a fault's injection to its resource being seen unhealthy."
    );
    describe_histogram!(
        m::MONITOR_TIME_TO_RECOVER_SECONDS,
        Unit::Seconds,
        "Time from a fault's injection to its resource being healthy again."
    );
    describe_gauge!(
        m::MONITOR_FAULTS_WATCHED,
        Unit::Count,
        "Faults whose resource the monitor is watching."
    );
}

/// Installs the Prometheus recorder as the process's metrics recorder and describes the
/// runtime's metrics; the node serves `handle.render()` on `/metrics`.
pub fn install_prometheus_recorder() -> Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new().install_recorder().map_err(|e| {
        Error::other(
            ire_core::ErrorClass::Fatal,
            format!("installing the Prometheus recorder: {e}"),
            None,
        )
    })?;
    describe_runtime_metrics();
    Ok(handle)
}
