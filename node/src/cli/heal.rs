//! `ire heal`: NecroOps until Ctrl-C (or `--for`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::output::{self, Format};
use super::resources::parse_labels;
use super::{exit, load_config};
use crate::apps::necroops::{HealPolicy, NecroOps};
use crate::campaign::model::Selector;
use crate::config::ConfigSources;
use crate::wiring::Node;

/// `ire heal`.
#[derive(Debug, clap::Args)]
pub struct HealArgs {
    /// The adapter instance.
    #[arg(long, default_value = "local")]
    pub adapter: String,
    /// Label selectors `key=value`; repeatable.
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Name patterns; repeatable.
    #[arg(long = "name")]
    pub names: Vec<String>,
    /// A process fleet file for the `local` adapter (started, healed, stopped at the end).
    #[arg(long)]
    pub fleet: Option<PathBuf>,
    /// The healing plugin.
    #[arg(long, default_value = "restart-unhealthy")]
    pub plugin: String,
    /// Unhealthy this long before a restart.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub unhealthy_for: Duration,
    /// Restarts per heal before it is counted failed.
    #[arg(long, default_value_t = 3)]
    pub max_restarts: u32,
    /// The first backoff between restarts and between failed heals.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub backoff: Duration,
    /// The longest backoff.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub backoff_max: Duration,
    /// Resync and health-check interval.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Heals at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Stop after this long instead of at Ctrl-C.
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    pub for_: Option<Duration>,
}

/// Runs `ire heal`.
pub async fn run(args: HealArgs, sources: &ConfigSources, out: Format) -> u8 {
    let mut config = match load_config(sources).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(f) = &args.fleet {
        config = config.with_fleet(f);
    }
    let labels = match parse_labels(&args.labels) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: --label {e}");
            return exit::INVALID;
        }
    };
    let mut policy = HealPolicy::new(
        args.adapter.clone(),
        Selector {
            labels,
            names: args.names.clone(),
            ..Selector::default()
        },
    );
    policy.plugin = args.plugin.clone();
    policy.unhealthy_for = args.unhealthy_for;
    policy.max_restarts = args.max_restarts;
    policy.backoff_initial = args.backoff;
    policy.backoff_max = args.backoff_max;
    policy.interval = args.interval;
    policy.concurrency = args.concurrency;
    policy.principal = "cli".into();
    let node = match Node::start(config.with_detected_docker()).await {
        Ok(n) => Arc::new(n),
        Err(e) => return super::fail("starting the embedded node", e.chain_message()),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let code = match NecroOps::new(node.clone(), policy, Some(tx)) {
        Err(e) => {
            eprintln!("error: {}", e.chain_message());
            exit::INVALID
        }
        Ok(necro) => {
            let stop = CancellationToken::new();
            let s = stop.clone();
            let limit = args.for_;
            tokio::spawn(async move {
                match limit {
                    Some(d) => {
                        tokio::select! {
                            _ = tokio::time::sleep(d) => {}
                            _ = tokio::signal::ctrl_c() => {}
                        }
                    }
                    None => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
                s.cancel();
            });
            eprintln!(
                "healing {} on adapter {} until interrupted",
                args.labels.join(","),
                args.adapter
            );
            let printer = tokio::spawn(async move {
                while let Some(e) = rx.recv().await {
                    if out == Format::Table {
                        eprintln!("{e}");
                    } else if let Ok(s) = serde_json::to_string(&e) {
                        eprintln!("{s}");
                    }
                }
            });
            let summary = necro.run(stop).await;
            printer.abort();
            match summary {
                Ok(s) => {
                    output::print(out, &s, || {
                        format!(
                            "{} reconciles; {} unhealthy, {} healed, {} recovered by themselves, {} failed heals",
                            s.reconciles, s.unhealthy, s.healed, s.recovered, s.failed
                        )
                    });
                    exit::OK
                }
                Err(e) => super::fail("healing", e.chain_message()),
            }
        }
    };
    if let Err(e) = node.shutdown().await {
        eprintln!("warning: shutting the node down: {e}");
    }
    code
}
