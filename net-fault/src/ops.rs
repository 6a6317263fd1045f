//! Applying and reverting a plan in the current network namespace.
//!
//! Apply starts with a revert of the same fault (so applying twice replaces, and a leftover
//! of a crashed attempt is cleared), installs tc, then nftables, and takes everything back
//! if any step fails. Revert stops the fault's emulator, if one runs in this PID namespace,
//! then deletes the fault's table, ire's qdiscs and the fault's devices: only what is named
//! after the fault, and nothing that is already gone is an error.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use ire_core::{Error, NetworkBackend, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::emulator::{Emulator, Stats};
use crate::nftnl::QueueExpr;
use crate::plan::Plan;
use crate::{nft, probe, tc};

/// How long a revert waits for the fault's emulator to release its packets and exit.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What apply reports once the fault is in place (the helper prints it as one JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Ready {
    /// The fault's id.
    pub fault_id: String,
    /// The backend in use.
    pub backend: NetworkBackend,
    /// True when the emulator keeps running (until SIGTERM).
    pub emulator: bool,
    /// How the queue rule was written (`native` or `compat`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_rule: Option<String>,
}

/// A plan applied in this namespace; the emulator, if the plan needs one, is bound and fed.
pub struct Applied {
    plan: Plan,
    emulator: Option<Emulator>,
    /// The report.
    pub ready: Ready,
}

/// Applies the plan; on error, nothing of it is left.
pub fn apply(plan: &Plan) -> Result<Applied> {
    plan.validate()?;
    revert(plan)?;
    match apply_steps(plan) {
        Ok(a) => Ok(a),
        Err(e) => {
            if let Err(r) = revert(plan) {
                return Err(e.context(format!("and taking it back failed too: {r}")));
            }
            Err(e)
        }
    }
}

fn apply_steps(plan: &Plan) -> Result<Applied> {
    if plan.needs_tc() {
        tc::apply(plan)?;
    }
    // Bound before its rule exists, so the rule never meets an empty queue.
    let emulator = plan
        .needs_emulator()
        .then(|| Emulator::open(plan))
        .transpose()?;
    let queue_rule = if plan.needs_nft() {
        nft::apply(plan)?
    } else {
        None
    };
    Ok(Applied {
        ready: Ready {
            fault_id: plan.fault_id.clone(),
            backend: plan.backend,
            emulator: emulator.is_some(),
            queue_rule: queue_rule.map(|q| {
                match q {
                    QueueExpr::Native => "native",
                    QueueExpr::Compat => "compat",
                }
                .to_owned()
            }),
        },
        plan: plan.clone(),
        emulator,
    })
}

impl Applied {
    /// Runs the emulator until `stop` is set, then takes the fault back: the table's rules
    /// first (no packet enters the queue any more), then the held packets are released, then
    /// the table and tc.
    /// Without an emulator, returns at once and leaves the fault in place.
    pub fn serve(self, stop: &AtomicBool) -> Result<Option<Stats>> {
        let Some(mut emu) = self.emulator else {
            return Ok(None);
        };
        let run = emu.run(stop);
        let quiet = nft::quiesce(&self.plan);
        let stats = emu.finish();
        let table = nft::revert(&self.plan);
        let rest = tc::revert(&self.plan);
        run.and(quiet).and(table).and(rest)?;
        Ok(Some(stats))
    }
}

/// The processes of this PID namespace running `ire-net-fault ... apply` for `fault_id`.
pub fn emulator_pids(fault_id: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
            let is_helper = args
                .first()
                .is_some_and(|a0| a0.ends_with(b"ire-net-fault"));
            is_helper
                && args.contains(&&b"apply"[..])
                && args
                    .windows(2)
                    .any(|w| w[0] == b"--fault-id" && w[1] == fault_id.as_bytes())
        })
        .collect()
}

/// Stops the fault's emulators: SIGTERM, then SIGKILL after the grace period.
pub fn stop_emulators(fault_id: &str) {
    let pids = emulator_pids(fault_id);
    for pid in &pids {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline && pids.iter().any(|p| alive(*p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in pids.iter().filter(|p| alive(**p)) {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
}

/// True while the process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// Takes the plan's fault back in this namespace. Idempotent.
pub fn revert(plan: &Plan) -> Result<()> {
    stop_emulators(&plan.fault_id);
    let results = [
        nft::revert(plan),
        tc::revert(plan),
        probe::cleanup(&plan.names),
    ];
    let errors: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::other(
            ire_core::ErrorClass::Retryable,
            format!(
                "reverting network fault {}: {}",
                plan.fault_id,
                errors.join("; ")
            ),
            None,
        ))
    }
}

/// What of a plan is in this namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Status {
    /// The fault's nftables table exists.
    pub table: bool,
    /// ire's qdiscs (or the fault's ifb device) exist.
    pub tc: bool,
    /// The fault's emulator runs (in this PID namespace).
    pub emulator: bool,
    /// Everything the plan installs is there.
    pub complete: bool,
}

/// What of the plan is in this namespace now.
pub fn status(plan: &Plan) -> Result<Status> {
    let table = nft::exists(plan)?;
    let tc = tc::present(plan)?;
    let emulator = !emulator_pids(&plan.fault_id).is_empty();
    let complete = (table || !plan.needs_nft())
        && (tc || !plan.needs_tc())
        && (emulator || !plan.needs_emulator());
    Ok(Status {
        table,
        tc,
        emulator,
        complete,
    })
}

/// True when anything of the plan is still in this namespace.
pub fn present(plan: &Plan) -> Result<bool> {
    Ok(nft::exists(plan)? || tc::present(plan)? || !emulator_pids(&plan.fault_id).is_empty())
}
