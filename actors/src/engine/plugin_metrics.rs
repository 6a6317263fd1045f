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

/// One plugin's handles; a status's counter is registered when it first occurs, so that
/// only statuses that happened appear as series.
struct PluginMetrics {
    plugin: String,
    duration: Histogram,
    executions: [OnceLock<Counter>; ExecutionStatus::ALL.len()],
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
        m.executions[status as usize]
            .get_or_init(|| {
                metrics::counter!(metric_names::ENGINE_EXECUTIONS_TOTAL,
                    "plugin" => m.plugin.clone(), "status" => status.as_str())
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
