//! GrimOps: runs a chaos campaign on a node, shows its progress, writes its report.
//!
//! The executor does the work; GrimOps adds what a person running `ire run` wants: a
//! progress display fed by the campaign's events (indicatif), Ctrl-C as an abort that
//! reverts every active fault (a second Ctrl-C leaves at once), and the HTML report
//! written to a file whose path is printed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use ire_core::{Result, Subscription};

use crate::campaign::run::events;
use crate::campaign::{CampaignReport, Control, Executor, Prepared, RunOptions};

/// How GrimOps presents a run.
#[derive(Debug, Clone, Default)]
pub struct Presentation {
    /// Show progress bars (stderr).
    pub progress: bool,
    /// Where the HTML report goes (a file; default: `<dir>/<campaign>-<id>.html`).
    pub report: Option<PathBuf>,
    /// The default directory of HTML reports.
    pub report_dir: PathBuf,
    /// Abort on Ctrl-C.
    pub handle_ctrl_c: bool,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Outcome {
    /// The report.
    pub report: CampaignReport,
    /// Where the HTML report was written.
    pub html: Option<PathBuf>,
    /// True when a second Ctrl-C asked to leave at once.
    pub interrupted_twice: bool,
}

/// Runs a prepared campaign to its end.
pub async fn run(
    executor: &Executor,
    prepared: Prepared,
    options: RunOptions,
    presentation: &Presentation,
) -> Result<Outcome> {
    let mut run = executor.start(prepared, options).await?;
    let control = run.control.clone();
    let progress = match (presentation.progress, run.events.take()) {
        (true, Some(events)) => Some(tokio::spawn(show_progress(events))),
        _ => None,
    };
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signals = presentation
        .handle_ctrl_c
        .then(|| tokio::spawn(abort_on_ctrl_c(control, interrupted.clone())));
    let report = run.wait().await;
    if let Some(s) = signals {
        s.abort();
    }
    if let Some(p) = progress {
        let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
    }
    let report = report?;
    let html = write_html(&report, presentation).await;
    Ok(Outcome {
        report,
        html,
        interrupted_twice: interrupted.load(std::sync::atomic::Ordering::SeqCst),
    })
}

/// The first Ctrl-C aborts the campaign (its faults are reverted); the second leaves.
async fn abort_on_ctrl_c(control: Control, twice: Arc<std::sync::atomic::AtomicBool>) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    eprintln!("\ninterrupted: aborting the campaign and reverting its faults (Ctrl-C again to leave at once)");
    control.abort("interrupted by the operator (Ctrl-C)");
    if tokio::signal::ctrl_c().await.is_ok() {
        twice.store(true, std::sync::atomic::Ordering::SeqCst);
        eprintln!("interrupted twice: leaving; active faults stay in the ledger");
        std::process::exit(i32::from(crate::cli::exit::INTERRUPTED));
    }
}

/// Writes the HTML report; returns its path (None, with a warning, when it cannot).
pub async fn write_html(report: &CampaignReport, presentation: &Presentation) -> Option<PathBuf> {
    let path = presentation
        .report
        .clone()
        .unwrap_or_else(|| default_report_path(&presentation.report_dir, &report.name, &report.id));
    let html = match report.html().await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("warning: the HTML report could not be rendered: {e}");
            return None;
        }
    };
    if let Some(dir) = path.parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("warning: {}: {e}", dir.display());
            return None;
        }
    }
    match std::fs::write(&path, html) {
        Ok(()) => Some(path),
        Err(e) => {
            eprintln!("warning: writing {}: {e}", path.display());
            None
        }
    }
}

/// `<dir>/<campaign name>-<first 8 characters of the id>.html`.
pub fn default_report_path(dir: &Path, name: &str, id: &str) -> PathBuf {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    dir.join(format!("{safe}-{}.html", &id[..id.len().min(8)]))
}

/// Draws a bar per step from the campaign's events until it finishes.
async fn show_progress(mut events: Subscription) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let header = multi.add(ProgressBar::new_spinner());
    header.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("template"));
    header.enable_steady_tick(Duration::from_millis(120));
    header.set_message("starting");
    let style = ProgressStyle::with_template("  {prefix:<24} [{bar:30}] {pos}/{len} {msg}")
        .expect("template")
        .progress_chars("=> ");
    let mut bars: std::collections::BTreeMap<String, ProgressBar> = Default::default();
    while let Some(e) = events.recv().await {
        let step = e.metadata.get("step").cloned().unwrap_or_default();
        let data = |k: &str| e.data.get(k).cloned().unwrap_or_default();
        match e.type_.as_str() {
            events::STARTED => header.set_message(format!(
                "campaign {} (seed {})",
                data("name").as_str().unwrap_or_default(),
                data("seed").as_str().unwrap_or_default()
            )),
            events::STEP_STARTED => {
                let b = multi.add(ProgressBar::new(0));
                b.set_style(style.clone());
                b.set_prefix(step.clone());
                b.set_message("planning");
                bars.insert(step, b);
            }
            events::STEP_PLANNED => {
                if let Some(b) = bars.get(&step) {
                    b.set_length(data("chosen").as_u64().unwrap_or(0));
                    b.set_message(format!(
                        "of {} matched",
                        data("matched").as_u64().unwrap_or(0)
                    ));
                }
            }
            events::TASK_FINISHED => {
                if let Some(b) = bars.get(&step) {
                    b.inc(1);
                }
            }
            events::STEP_FINISHED => {
                let state = data("state").as_str().unwrap_or_default().to_owned();
                if let Some(b) = bars.get(&step) {
                    b.finish_with_message(state);
                } else {
                    let b = multi.add(ProgressBar::new(0));
                    b.set_style(style.clone());
                    b.set_prefix(step.clone());
                    b.finish_with_message(state);
                    bars.insert(step, b);
                }
            }
            events::PROBES if data("ok").as_bool() == Some(false) => {
                header.set_message(format!(
                    "steady state failing: {}",
                    data("failures")
                        .as_array()
                        .and_then(|a| a.first())
                        .and_then(|f| f.as_str())
                        .unwrap_or_default()
                ));
            }
            events::PAUSED => header.set_message("paused"),
            events::RESUMED => header.set_message("running"),
            events::STOPPING => header.set_message(format!(
                "stopping ({}): reverting active faults",
                data("reason").as_str().unwrap_or_default()
            )),
            events::FINISHED => {
                header.finish_with_message(format!(
                    "campaign {}",
                    data("state").as_str().unwrap_or_default()
                ));
                break;
            }
            _ => {}
        }
    }
    for b in bars.values() {
        if !b.is_finished() {
            b.abandon();
        }
    }
}
