//! `ire demo-service`: the demo fleet's services, served by the `ire` binary itself so
//! that the demo needs nothing else installed.

use std::process::ExitCode;

/// `ire demo-service` (hidden).
#[derive(Debug, clap::Args)]
pub struct DemoServiceArgs {
    /// The service's name (in its answers).
    #[arg(long)]
    pub name: String,
    /// The loopback port it listens on.
    #[arg(long)]
    pub port: u16,
}

/// Serves until SIGTERM or SIGINT.
pub fn main(args: &DemoServiceArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo-service: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(crate::demo::service::serve(&args.name, args.port)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-service {}: {e}", args.name);
            ExitCode::FAILURE
        }
    }
}
