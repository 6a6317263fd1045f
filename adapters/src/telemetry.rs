//! The adapters' metric names (through the `metrics` facade) and the wrapper that records
//! every adapter operation.
//!
//! | name                                   | type      | labels                                        |
//! |----------------------------------------|-----------|-----------------------------------------------|
//! | `ire_adapter_operations_total`         | counter   | environment, adapter, operation, outcome      |
//! | `ire_adapter_operation_seconds`        | histogram | environment, adapter, operation               |
//! | `ire_adapter_watch_events_total`       | counter   | environment, adapter, type                    |
//! | `ire_adapter_watch_reconnects_total`   | counter   | environment, adapter                          |
//!
//! `outcome` is `ok`, or the error's class: `retryable`, `fatal`, `ignorable`.
#![allow(dead_code)]

use std::future::Future;
use std::time::Instant;

use ire_core::{ErrorClass, ResourceEventType, Result};

/// Operations by outcome.
pub const OPERATIONS_TOTAL: &str = "ire_adapter_operations_total";
/// Operation latency.
pub const OPERATION_SECONDS: &str = "ire_adapter_operation_seconds";
/// Events delivered to watches.
pub const WATCH_EVENTS_TOTAL: &str = "ire_adapter_watch_events_total";
/// Event streams reopened after they broke.
pub const WATCH_RECONNECTS_TOTAL: &str = "ire_adapter_watch_reconnects_total";

/// Runs one adapter operation, counting it by outcome and timing it.
pub(crate) async fn observed<T>(
    environment: &'static str,
    adapter: &str,
    operation: &'static str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let start = Instant::now();
    let result = fut.await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => match e.class() {
            ErrorClass::Retryable => "retryable",
            ErrorClass::Fatal => "fatal",
            ErrorClass::Ignorable => "ignorable",
        },
    };
    if let Err(e) = &result {
        tracing::debug!(component = environment, adapter, operation, error = %e.chain_message(), "adapter operation failed");
    }
    metrics::counter!(OPERATIONS_TOTAL,
        "environment" => environment, "adapter" => adapter.to_owned(),
        "operation" => operation, "outcome" => outcome)
    .increment(1);
    metrics::histogram!(OPERATION_SECONDS,
        "environment" => environment, "adapter" => adapter.to_owned(), "operation" => operation)
    .record(start.elapsed().as_secs_f64());
    result
}

/// Counts an event delivered to a watch.
pub(crate) fn watch_event(environment: &'static str, adapter: &str, type_: ResourceEventType) {
    let t = match type_ {
        ResourceEventType::Added => "added",
        ResourceEventType::Modified => "modified",
        ResourceEventType::Deleted => "deleted",
    };
    metrics::counter!(WATCH_EVENTS_TOTAL,
        "environment" => environment, "adapter" => adapter.to_owned(), "type" => t)
    .increment(1);
}

/// Counts a reopened event stream.
pub(crate) fn watch_reconnect(environment: &'static str, adapter: &str) {
    metrics::counter!(WATCH_RECONNECTS_TOTAL,
        "environment" => environment, "adapter" => adapter.to_owned())
    .increment(1);
}
