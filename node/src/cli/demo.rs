//! `ire demo`: the first thing to run (see [`crate::demo`]).

use std::path::PathBuf;

use ire_consensus::types::{CampaignState, TaskState};

use super::output::{self, Format};
use super::{exit, load_config};
use crate::config::ConfigSources;
use crate::demo::{self, DemoOptions};

/// `ire demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where to write the HTML report.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Seed of the campaign's random choices.
    #[arg(long)]
    pub seed: Option<u64>,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// How long the api stays paused.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    pub pause_for: std::time::Duration,
}

/// Runs `ire demo`.
pub async fn run(args: DemoArgs, sources: &ConfigSources, out: Format) -> u8 {
    let config = match load_config(sources).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let options = DemoOptions {
        progress: !args.no_progress && out == Format::Table,
        report: args.report.clone(),
        report_dir: config.reports.dir(),
        seed: args.seed,
        pause_for: args.pause_for,
        heal_log: out == Format::Table,
        ..DemoOptions::default()
    };
    if out == Format::Table {
        eprintln!(
            "ire demo: an embedded node, four local services, a campaign that kills the cache and pauses the api while NecroOps heals\n"
        );
    }
    let outcome = match demo::run(options).await {
        Ok(o) => o,
        Err(e) => return super::fail("the demo", e.chain_message()),
    };
    #[derive(serde::Serialize)]
    struct Json<'a> {
        report: &'a crate::campaign::CampaignReport,
        necroops: &'a crate::apps::necroops::HealSummary,
        services: Vec<Service<'a>>,
        leftovers: Vec<Service<'a>>,
        wall_seconds: f64,
        html_report: Option<String>,
    }
    #[derive(serde::Serialize)]
    struct Service<'a> {
        name: &'a str,
        pid: u32,
    }
    fn services(v: &[(u32, String)]) -> Vec<Service<'_>> {
        v.iter()
            .map(|(pid, name)| Service { name, pid: *pid })
            .collect()
    }
    let json = Json {
        report: &outcome.report,
        necroops: &outcome.heal,
        services: services(&outcome.services),
        leftovers: services(&outcome.leftovers),
        wall_seconds: outcome.wall.as_secs_f64(),
        html_report: outcome.html.as_ref().map(|p| p.display().to_string()),
    };
    output::print(out, &json, || {
        let mut text = outcome.report.table();
        text.push_str(&format!(
            "\nNecroOps: {} unhealthy, {} healed, {} recovered by themselves, {} failed heals",
            outcome.heal.unhealthy,
            outcome.heal.healed,
            outcome.heal.recovered,
            outcome.heal.failed
        ));
        text
    });
    if let Some(p) = &outcome.html {
        eprintln!("HTML report: {}", p.display());
    }
    if outcome.leftovers.is_empty() {
        eprintln!(
            "no process left running ({} services stopped); demo took {:.1}s",
            outcome.services.len(),
            outcome.wall.as_secs_f64()
        );
    } else {
        eprintln!(
            "error: processes left running: {}",
            outcome
                .leftovers
                .iter()
                .map(|(p, n)| format!("{n} (pid {p})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        return exit::ERROR;
    }
    let killed_measured = outcome.report.tasks().any(|(s, t)| {
        s.plugin == "kill"
            && t.state == TaskState::Succeeded
            && t.time_to_detect.is_some()
            && t.time_to_recover.is_some()
    });
    if outcome.report.state == CampaignState::Succeeded && killed_measured {
        exit::OK
    } else {
        exit::CAMPAIGN_FAILED
    }
}
