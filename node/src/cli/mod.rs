//! The `ire` command line: parses arguments (clap) and dispatches to one module per
//! command. Each command is a thin layer over the library.
//!
//! Exit codes (stable, for scripts):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the campaign file (or another input) is invalid: nothing ran |
//! | 2 | the command line is wrong (clap) |
//! | 3 | the campaign ran and did not succeed (failed, aborted, canceled) |
//! | 4 | ire could not do its work (the node, an adapter or a plugin failed to start, I/O) |
//! | 130 | interrupted twice (Ctrl-C); the first Ctrl-C aborts and reverts |

mod backup;
mod demo;
mod demo_service;
mod heal;
pub mod output;
mod plan;
mod plugins;
mod resources;
mod run;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, ConfigSources, NodeConfig};

/// Exit codes (see the module docs).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Invalid input; nothing ran.
    pub const INVALID: u8 = 1;
    /// The campaign ran and did not succeed.
    pub const CAMPAIGN_FAILED: u8 = 3;
    /// ire could not do its work.
    pub const ERROR: u8 = 4;
    /// Interrupted twice.
    pub const INTERRUPTED: u8 = 130;
}

/// ire, the Infrastructure Resilience Engine: chaos campaigns, self-healing and backups
/// with no fault left behind.
#[derive(Debug, Parser)]
#[command(name = "ire", version, about, long_about = None)]
pub struct Cli {
    /// The node's TOML config (default: built-in defaults).
    #[arg(long, global = true, env = "IRE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Overrides a config key (`--set engine.concurrency=8`); repeatable.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Output format of results.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = output::Format::Table)]
    pub output: output::Format,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the demo: a local fleet, a chaos campaign while NecroOps heals, the report.
    Demo(demo::DemoArgs),
    /// Runs a campaign on an embedded node (GrimOps).
    Run(run::RunArgs),
    /// Checks campaign files; prints every problem with its file, line and field.
    Validate(validate::ValidateArgs),
    /// Shows what a campaign would do, changing nothing.
    Plan(plan::PlanArgs),
    /// Heals unhealthy resources continuously until interrupted (NecroOps).
    Heal(heal::HealArgs),
    /// Backs resources up, now or on a schedule; restores; runs restore drills (BackupOps).
    Backup(backup::BackupArgs),
    /// Lists the node's plugins and their config schemas.
    Plugins(plugins::PluginsArgs),
    /// Lists the resources an adapter sees.
    Resources(resources::ResourcesArgs),
    /// A small HTTP service for the demo fleet (the demo starts it; not for direct use).
    #[command(hide = true)]
    DemoService(demo_service::DemoServiceArgs),
}

/// Parses the arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::DemoService(args) = &cli.command {
        return demo_service::main(args);
    }
    init_logs();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let code = rt.block_on(dispatch(cli));
    // Nothing the commands started outlives them; do not wait for stray blocking tasks.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    ExitCode::from(code)
}

async fn dispatch(cli: Cli) -> u8 {
    let sources = ConfigSources {
        file: cli.config.clone(),
        overrides: cli.set.clone(),
        env: None,
    };
    let out = cli.output;
    match cli.command {
        Command::Demo(a) => demo::run(a, &sources, out).await,
        Command::Run(a) => run::run(a, &sources, out).await,
        Command::Validate(a) => validate::run(a, &sources, out).await,
        Command::Plan(a) => plan::run(a, &sources, out).await,
        Command::Heal(a) => heal::run(a, &sources, out).await,
        Command::Backup(a) => backup::run(a, &sources, out).await,
        Command::Plugins(a) => plugins::run(a, &sources, out).await,
        Command::Resources(a) => resources::run(a, &sources, out).await,
        Command::DemoService(_) => unreachable!("handled before the runtime starts"),
    }
}

/// Logs to stderr, filtered by `IRE_LOG` (default: warnings only, so that progress bars
/// and reports stay readable).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IRE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Reads the config; an error is printed and becomes exit code 1.
pub(crate) async fn load_config(sources: &ConfigSources) -> Result<NodeConfig, u8> {
    config::load(sources).await.map_err(|e| {
        eprintln!("error: {}", e.chain_message());
        exit::INVALID
    })
}

/// Prints an error that stops the command and returns the "ire failed" exit code.
pub(crate) fn fail(what: &str, e: impl std::fmt::Display) -> u8 {
    eprintln!("error: {what}: {e}");
    exit::ERROR
}
