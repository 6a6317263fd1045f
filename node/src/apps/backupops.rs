//! BackupOps: backups of a selector's resources now or on a cron schedule, restores, and
//! restore drills, each through the engine (authorization, the resource's lease, audit,
//! records) with the catalog's `backup`, `restore` and `restore-drill` plugins.

use std::sync::Arc;

use ire_core::{
    ExecutionEngine, ExecutionRequest, ExecutionResult, PluginConfig, PluginRegistry, Result,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::campaign::model::Selector;
use crate::campaign::schedule;
use crate::wiring::Node;

/// What BackupOps does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Copies each resource's data into the node's backup store.
    Backup,
    /// Puts a backup back.
    Restore,
    /// Backup, destroy, restore, health check, as one drill.
    Drill,
}

impl Operation {
    /// The plugin that does it.
    pub fn plugin(self) -> &'static str {
        match self {
            Operation::Backup => "backup",
            Operation::Restore => "restore",
            Operation::Drill => "restore-drill",
        }
    }
}

/// A BackupOps job.
#[derive(Debug, Clone)]
pub struct Job {
    /// What to do.
    pub operation: Operation,
    /// The adapter instance.
    pub adapter: String,
    /// Which of its resources.
    pub selector: Selector,
    /// The plugin's config (see `ire plugins backup`).
    pub config: serde_json::Value,
    /// Who asks.
    pub principal: String,
}

/// One resource's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The resource.
    pub resource: String,
    /// The execution's result, or why it could not run.
    pub result: std::result::Result<ExecutionResult, String>,
}

/// Runs the job once on every matched resource, concurrently.
pub async fn run_once(node: &Arc<Node>, job: &Job) -> Result<Vec<Outcome>> {
    node.registry.get(job.operation.plugin()).map_err(|e| {
        e.context(format!(
            "BackupOps needs the {} plugin",
            job.operation.plugin()
        ))
    })?;
    let adapter = node.adapter(&job.adapter)?;
    let resources = adapter.list_resources(&job.selector.to_filter()).await?;
    if resources.is_empty() {
        return Err(ire_core::Error::invalid(
            "selector",
            format!(
                "({}) matches no resource of adapter {}",
                job.selector, job.adapter
            ),
        ));
    }
    let runs = resources.into_iter().map(|r| {
        let key = r.key.to_string();
        let mut request = ExecutionRequest::new(job.operation.plugin(), r, job.principal.clone())
            .with_config(PluginConfig(job.config.clone()));
        request.labels.insert("app".into(), "backupops".into());
        request.labels.insert("node".into(), node.name.clone());
        async move {
            Outcome {
                resource: key,
                result: node
                    .engine
                    .execute(request)
                    .await
                    .map_err(|e| e.chain_message()),
            }
        }
    });
    Ok(futures::future::join_all(runs).await)
}

/// Runs the job at every tick of `cron` until `stop`; `each` sees every round's outcomes.
pub async fn run_scheduled(
    node: &Arc<Node>,
    job: &Job,
    cron: &str,
    stop: CancellationToken,
    mut each: impl FnMut(chrono::DateTime<chrono::Utc>, Result<Vec<Outcome>>),
) -> Result<()> {
    let cron = schedule::parse_cron(cron).map_err(|e| ire_core::Error::invalid("schedule", e))?;
    loop {
        let tick = tokio::select! {
            t = schedule::sleep_until_next(&cron) => t,
            _ = stop.cancelled() => return Ok(()),
        };
        let Some(tick) = tick else { return Ok(()) };
        each(tick, run_once(node, job).await);
    }
}
