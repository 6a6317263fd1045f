//! `ire-net-fault`: applies, reverts and probes network faults in a network namespace.
//!
//! ```text
//! ire-net-fault [--netns PATH] probe  --fault-id ID [--termination-log PATH]
//! ire-net-fault [--netns PATH] apply  --fault-id ID --plan JSON [--termination-log PATH]
//! ire-net-fault [--netns PATH] status --fault-id ID --plan JSON
//! ire-net-fault [--netns PATH] revert --fault-id ID --plan JSON
//! ```
//!
//! `apply` prints one JSON line once the fault is in place. With the userspace backend it
//! then runs the emulator until SIGTERM or SIGINT and takes the fault back before exiting;
//! otherwise it exits at once and the fault stays until `revert`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use ire_core::Result;
use ire_net_fault::{netns, ops, probe, Names, Plan};

#[derive(Parser)]
#[command(name = "ire-net-fault", version, about = "ire's network-fault helper")]
struct Cli {
    /// Act in this network namespace (`/run/netns/NAME`, `/proc/PID/ns/net`).
    #[arg(long, global = true)]
    netns: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prints whether the kernel has netem, and the interfaces (JSON).
    Probe {
        /// The fault the probe is for (its devices are named after it).
        #[arg(long)]
        fault_id: String,
        /// Also write the answer here (a Kubernetes termination log, read from the pod's
        /// status).
        #[arg(long)]
        termination_log: Option<PathBuf>,
    },
    /// Applies a plan; with the userspace backend, runs the emulator until stopped.
    Apply {
        /// The fault's id (must be the plan's).
        #[arg(long)]
        fault_id: String,
        /// The plan, as JSON.
        #[arg(long)]
        plan: String,
        /// Where to write the error if applying fails (a Kubernetes termination log).
        #[arg(long)]
        termination_log: Option<PathBuf>,
    },
    /// Exits 0 when everything the plan installs is in place (prints what is).
    Status {
        /// The fault's id (must be the plan's).
        #[arg(long)]
        fault_id: String,
        /// The plan, as JSON.
        #[arg(long)]
        plan: String,
    },
    /// Takes a plan back. Idempotent.
    Revert {
        /// The fault's id (must be the plan's).
        #[arg(long)]
        fault_id: String,
        /// The plan, as JSON.
        #[arg(long)]
        plan: String,
    },
}

fn plan_for(fault_id: &str, json: &str) -> Result<Plan> {
    let plan = Plan::from_json(json)?;
    if plan.fault_id != fault_id {
        return Err(ire_core::Error::invalid(
            "--fault-id",
            format!(
                "{fault_id:?} is not the plan's fault id {:?}",
                plan.fault_id
            ),
        ));
    }
    Ok(plan)
}

fn write_log(path: &std::path::Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| {
        ire_core::Error::other(
            ire_core::ErrorClass::Fatal,
            format!("writing {}", path.display()),
            Some(Box::new(e)),
        )
    })
}

/// Writes a line to stdout; a closed stdout (the caller stopped reading) is not an error.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn run(cli: Cli) -> Result<()> {
    if let Some(path) = &cli.netns {
        netns::enter(path)?;
    }
    match cli.command {
        Command::Probe {
            fault_id,
            termination_log,
        } => {
            ire_core::network::check_fault_id(&fault_id)?;
            let p = probe::probe(&Names::for_fault(&fault_id))?;
            let json = serde_json::to_string(&p).expect("a probe serializes");
            if let Some(path) = termination_log {
                write_log(&path, &json)?;
            }
            say(&json);
            Ok(())
        }
        Command::Status { fault_id, plan } => {
            let plan = plan_for(&fault_id, &plan)?;
            let s = ops::status(&plan)?;
            say(&serde_json::to_string(&s).expect("a status serializes"));
            if s.complete {
                Ok(())
            } else {
                Err(ire_core::Error::other(
                    ire_core::ErrorClass::Retryable,
                    format!("network fault {fault_id} is not (fully) in place"),
                    None,
                ))
            }
        }
        Command::Revert { fault_id, plan } => ops::revert(&plan_for(&fault_id, &plan)?),
        Command::Apply {
            fault_id,
            plan,
            termination_log,
        } => {
            let result = (|| -> Result<()> {
                let plan = plan_for(&fault_id, &plan)?;
                let stop = Arc::new(AtomicBool::new(false));
                for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                    signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| {
                        ire_core::Error::other(
                            ire_core::ErrorClass::Fatal,
                            "installing signal handlers",
                            Some(Box::new(e)),
                        )
                    })?;
                }
                let applied = ops::apply(&plan)?;
                say(&serde_json::to_string(&applied.ready).expect("a report serializes"));
                if let Some(stats) = applied.serve(&stop)? {
                    let _ = writeln!(
                        std::io::stderr(),
                        "{}",
                        serde_json::to_string(&stats).expect("stats serialize")
                    );
                }
                Ok(())
            })();
            if let (Err(e), Some(path)) = (&result, &termination_log) {
                let _ = std::fs::write(path, e.chain_message());
            }
            result
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "ire-net-fault: {}", e.chain_message());
            ExitCode::FAILURE
        }
    }
}
