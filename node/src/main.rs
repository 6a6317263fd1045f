//! The `ire` binary.

use clap::Parser;

/// ire, the Infrastructure Resilience Engine: distributed chaos engineering and healing.
#[derive(Debug, Parser)]
#[command(name = "ire", version, about, long_about = None)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
