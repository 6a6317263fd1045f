//! The engine's per-plugin metric handles, registered once per plugin (and status) rather
//! than at every execution: a handle is a counter or histogram the recorder already knows,
//! while `counter!` with labels builds the labels and looks the series up each time.
//!
//! Handles come from the recorder installed when a plugin's first execution ends (the node
//! installs its recorder at start-up, before it runs anything).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use ire_core::ExecutionStatus;
use metrics::{Counter, Histogram};

use crate::metric_names;

/// Every status, in the order of [`status_index`].
const STATUSES: usize = 7;

/// The `status` label of an execution status.
pub(crate) fn status_label(status: ExecutionStatus) -> &'static str {
    match status {
        ExecutionStatus::Pending => "pending",
        ExecutionStatus::Running => "running",
        ExecutionStatus::Success => "success",
        ExecutionStatus::Failed => "failed",
        ExecutionStatus::Timeout => "timeout",
        ExecutionStatus::Canceled => "canceled",
        ExecutionStatus::Skipped => "skipped",
    }
}

fn status_index(status: ExecutionStatus) -> usize {
    match status {
        ExecutionStatus::Pending => 0,
        ExecutionStatus::Running => 1,
        ExecutionStatus::Success => 2,
        ExecutionStatus::Failed => 3,
        ExecutionStatus::Timeout => 4,
        ExecutionStatus::Canceled => 5,
        ExecutionStatus::Skipped => 6,
    }
}

/// One plugin's handles; a status's counter is registered when it first occurs, so that
/// only statuses that happened appear as series.
struct PluginMetrics {
    plugin: String,
    duration: Histogram,
    executions: [OnceLock<Counter>; STATUSES],
}

/// The handles of every plugin that has run.
#[derive(Default)]
pub(crate) struct EngineMetrics {
    plugins: RwLock<HashMap<String, Arc<PluginMetrics>>>,
}

impl EngineMetrics {
    /// Counts a finished execution and records its duration.
    pub(crate) fn finished(&self, plugin: &str, status: ExecutionStatus, seconds: f64) {
        let m = self.plugin(plugin);
        m.duration.record(seconds);
        m.executions[status_index(status)]
            .get_or_init(|| {
                metrics::counter!(metric_names::ENGINE_EXECUTIONS_TOTAL,
                    "plugin" => m.plugin.clone(), "status" => status_label(status))
            })
            .increment(1);
    }

    fn plugin(&self, plugin: &str) -> Arc<PluginMetrics> {
        if let Some(m) = self.plugins.read().expect("metrics lock").get(plugin) {
            return m.clone();
        }
        self.plugins
            .write()
            .expect("metrics lock")
            .entry(plugin.to_owned())
            .or_insert_with(|| {
                Arc::new(PluginMetrics {
                    plugin: plugin.to_owned(),
                    duration: metrics::histogram!(
                        metric_names::ENGINE_EXECUTION_DURATION_SECONDS,
                        "plugin" => plugin.to_owned()
                    ),
                    executions: Default::default(),
                })
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_are_the_lowercase_variant_names() {
        for s in [
            ExecutionStatus::Pending,
            ExecutionStatus::Running,
            ExecutionStatus::Success,
            ExecutionStatus::Failed,
            ExecutionStatus::Timeout,
            ExecutionStatus::Canceled,
            ExecutionStatus::Skipped,
        ] {
            assert_eq!(status_label(s), format!("{s:?}").to_lowercase());
        }
        let indices: std::collections::BTreeSet<usize> = [
            ExecutionStatus::Pending,
            ExecutionStatus::Running,
            ExecutionStatus::Success,
            ExecutionStatus::Failed,
            ExecutionStatus::Timeout,
            ExecutionStatus::Canceled,
            ExecutionStatus::Skipped,
        ]
        .into_iter()
        .map(status_index)
        .collect();
        assert_eq!(indices.len(), STATUSES);
    }
}
