//! `ire run FILE`: GrimOps on an embedded node.

use std::path::PathBuf;
use std::sync::Arc;

use ire_consensus::types::CampaignState;

use super::output::{self, Format};
use super::{exit, load_config};
use crate::apps::grimops::{self, Presentation};
use crate::campaign::{schedule, Executor, RunOptions, Source};
use crate::config::ConfigSources;
use crate::wiring::Node;

/// `ire run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The campaign file.
    pub file: PathBuf,
    /// Seed of the random choices (`ire plan --seed` shows them).
    #[arg(long)]
    pub seed: Option<u64>,
    /// A process fleet file for the `local` adapter (started for the campaign, stopped after).
    #[arg(long)]
    pub fleet: Option<PathBuf>,
    /// Where to write the HTML report (default: in the config's reports directory).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Run at every tick of the campaign's `schedule` until interrupted, instead of once.
    #[arg(long)]
    pub scheduled: bool,
    /// Who runs it (recorded in the store and the ledger).
    #[arg(long, default_value = "cli")]
    pub principal: String,
}

/// Runs `ire run`.
pub async fn run(args: RunArgs, sources: &ConfigSources, out: Format) -> u8 {
    let mut config = match load_config(sources).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(f) = &args.fleet {
        config = config.with_fleet(f);
    }
    let config = config.with_detected_docker();
    let source = match Source::read(&args.file) {
        Ok(s) => s,
        Err(d) => {
            eprintln!("{d}");
            return exit::INVALID;
        }
    };
    let presentation = Presentation {
        progress: !args.no_progress && out == Format::Table,
        report: args.report.clone(),
        report_dir: config.reports.dir(),
        handle_ctrl_c: true,
    };
    let node = match Node::start(config).await {
        Ok(n) => Arc::new(n),
        Err(e) => return super::fail("starting the embedded node", e.chain_message()),
    };
    let executor = Executor::new(node.clone());
    let code = match executor.prepare(source) {
        Err(d) => {
            eprintln!("{d}");
            exit::INVALID
        }
        Ok(prepared) => {
            let cron = match (&prepared.campaign.schedule, args.scheduled) {
                (Some(expr), true) => match schedule::parse_cron(expr) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        eprintln!("error: schedule: {e}");
                        return shutdown(node, exit::INVALID).await;
                    }
                },
                (None, true) => {
                    eprintln!("error: --scheduled: the campaign has no schedule");
                    return shutdown(node, exit::INVALID).await;
                }
                _ => None,
            };
            match cron {
                None => once(&executor, prepared, &args, &presentation, out).await,
                Some(cron) => loop {
                    let next = schedule::next_after(&cron, chrono::Utc::now());
                    eprintln!(
                        "next run at {}",
                        next.map(|t| t.to_rfc3339())
                            .unwrap_or_else(|| "never".into())
                    );
                    tokio::select! {
                        _ = schedule::sleep_until_next(&cron) => {}
                        _ = tokio::signal::ctrl_c() => break exit::OK,
                    }
                    once(&executor, prepared.clone(), &args, &presentation, out).await;
                },
            }
        }
    };
    shutdown(node, code).await
}

async fn once(
    executor: &Executor,
    prepared: crate::campaign::Prepared,
    args: &RunArgs,
    presentation: &Presentation,
    out: Format,
) -> u8 {
    let options = RunOptions {
        principal: args.principal.clone(),
        seed: args.seed,
        id: None,
    };
    match grimops::run(executor, prepared, options, presentation).await {
        Err(e) => super::fail("running the campaign", e.chain_message()),
        Ok(outcome) => {
            output::print(out, &outcome.report, || outcome.report.table());
            if let Some(p) = &outcome.html {
                eprintln!("HTML report: {}", p.display());
            }
            if outcome.report.state == CampaignState::Succeeded {
                exit::OK
            } else {
                exit::CAMPAIGN_FAILED
            }
        }
    }
}

async fn shutdown(node: Arc<Node>, code: u8) -> u8 {
    if let Err(e) = node.shutdown().await {
        eprintln!("warning: shutting the node down: {e}");
    }
    code
}
