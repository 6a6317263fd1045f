//! `ire backup`: BackupOps from the command line.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::output::{self, Format};
use super::resources::parse_labels;
use super::{exit, load_config};
use crate::apps::backupops::{self, Job, Operation, Outcome};
use crate::campaign::model::Selector;
use crate::config::ConfigSources;
use crate::wiring::Node;

/// `ire backup`.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: BackupAction,
}

/// What `ire backup` does.
#[derive(Debug, Subcommand)]
pub enum BackupAction {
    /// Backs the selected resources up now.
    Now(Target),
    /// Backs them up at every tick of a cron expression until interrupted.
    Schedule {
        /// The cron expression (5 fields, or 6 with seconds first), in UTC.
        cron: String,
        /// What to back up.
        #[command(flatten)]
        target: Target,
    },
    /// Restores a backup onto the selected resources.
    Restore(Target),
    /// Backup, destroy, restore and health check, as a drill.
    Drill(Target),
}

/// The resources and the plugin config.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The adapter instance.
    #[arg(long, default_value = "local")]
    pub adapter: String,
    /// Label selectors `key=value`; repeatable.
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Name patterns; repeatable.
    #[arg(long = "name")]
    pub names: Vec<String>,
    /// The plugin's config as JSON or YAML (`ire plugins backup` shows its fields).
    #[arg(long, value_name = "YAML")]
    pub config: Option<String>,
    /// A process fleet file for the `local` adapter.
    #[arg(long)]
    pub fleet: Option<PathBuf>,
}

#[derive(Serialize)]
struct Row {
    resource: String,
    status: String,
    detail: String,
}

fn rows(outcomes: &[Outcome]) -> Vec<Row> {
    outcomes
        .iter()
        .map(|o| match &o.result {
            Ok(r) => Row {
                resource: o.resource.clone(),
                status: r.status.as_str().into(),
                detail: r
                    .error
                    .clone()
                    .unwrap_or_else(|| serde_json::to_string(&r.metadata).unwrap_or_default()),
            },
            Err(e) => Row {
                resource: o.resource.clone(),
                status: "error".into(),
                detail: e.clone(),
            },
        })
        .collect()
}

fn show(out: Format, outcomes: &[Outcome]) -> u8 {
    let rows = rows(outcomes);
    output::print(out, &rows, || {
        output::table(
            &["resource", "status", "detail"],
            rows.iter()
                .map(|r| vec![r.resource.clone(), r.status.clone(), r.detail.clone()])
                .collect(),
        )
    });
    if rows.iter().all(|r| r.status == "success") {
        exit::OK
    } else {
        exit::CAMPAIGN_FAILED
    }
}

/// Runs `ire backup`.
pub async fn run(args: BackupArgs, sources: &ConfigSources, out: Format) -> u8 {
    let (operation, cron, target) = match args.action {
        BackupAction::Now(t) => (Operation::Backup, None, t),
        BackupAction::Schedule { cron, target } => (Operation::Backup, Some(cron), target),
        BackupAction::Restore(t) => (Operation::Restore, None, t),
        BackupAction::Drill(t) => (Operation::Drill, None, t),
    };
    let mut config = match load_config(sources).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(f) = &target.fleet {
        config = config.with_fleet(f);
    }
    let labels = match parse_labels(&target.labels) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: --label {e}");
            return exit::INVALID;
        }
    };
    let plugin_config: serde_json::Value = match &target.config {
        None => serde_json::Value::Null,
        Some(text) => match serde_yaml_ng::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: --config: {e}");
                return exit::INVALID;
            }
        },
    };
    let job = Job {
        operation,
        adapter: target.adapter.clone(),
        selector: Selector {
            labels,
            names: target.names.clone(),
            ..Selector::default()
        },
        config: plugin_config,
        principal: "cli".into(),
    };
    let node = match Node::start(config.with_detected_docker()).await {
        Ok(n) => Arc::new(n),
        Err(e) => return super::fail("starting the embedded node", e.chain_message()),
    };
    let code = match cron {
        None => match backupops::run_once(&node, &job).await {
            Ok(o) => show(out, &o),
            Err(e) => {
                eprintln!("error: {}", e.chain_message());
                exit::INVALID
            }
        },
        Some(cron) => {
            let stop = CancellationToken::new();
            let s = stop.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                s.cancel();
            });
            eprintln!("backing up on {cron:?} (UTC) until interrupted");
            let r = backupops::run_scheduled(&node, &job, &cron, stop, |tick, outcomes| {
                eprintln!("tick {}", tick.to_rfc3339());
                match outcomes {
                    Ok(o) => {
                        show(out, &o);
                    }
                    Err(e) => eprintln!("error: {}", e.chain_message()),
                }
            })
            .await;
            match r {
                Ok(()) => exit::OK,
                Err(e) => {
                    eprintln!("error: {}", e.chain_message());
                    exit::INVALID
                }
            }
        }
    };
    if let Err(e) = node.shutdown().await {
        eprintln!("warning: shutting the node down: {e}");
    }
    code
}
