//! `ire plan FILE`: which resources each step would act on, and why the others would not.

use std::path::PathBuf;
use std::sync::Arc;

use super::output::{self, Format};
use super::{exit, load_config};
use crate::campaign::preview;
use crate::campaign::{Executor, Source};
use crate::config::ConfigSources;
use crate::wiring::Node;

/// `ire plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The campaign file.
    pub file: PathBuf,
    /// Seed of the random choices: the same seed gives the same plan (and `ire run --seed`
    /// the same choices on the same fleet).
    #[arg(long)]
    pub seed: Option<u64>,
    /// A process fleet file for the `local` adapter (its processes are listed as declared,
    /// not started).
    #[arg(long)]
    pub fleet: Option<PathBuf>,
}

/// Runs `ire plan`.
pub async fn run(args: PlanArgs, sources: &ConfigSources, out: Format) -> u8 {
    let mut config = match load_config(sources).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(f) = &args.fleet {
        config = config.with_fleet(f);
    }
    // A plan changes nothing: process fleets are not started.
    for a in config.adapters.values_mut() {
        if a.type_ == "process" {
            a.config.insert("autostart".into(), false.into());
        }
    }
    let config = config.with_detected_docker();
    let source = match Source::read(&args.file) {
        Ok(s) => s,
        Err(d) => {
            eprintln!("{d}");
            return exit::INVALID;
        }
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
        Ok(p) => {
            let plan = preview::dry_run(&node, &p.campaign, args.seed).await;
            output::print(out, &plan, || plan.table());
            exit::OK
        }
    };
    if let Err(e) = node.shutdown().await {
        eprintln!("warning: shutting the node down: {e}");
    }
    code
}
