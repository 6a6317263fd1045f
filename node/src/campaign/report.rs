//! What a campaign did: per step, its resources, how each task ended, time to detect and
//! time to recover. Rendered as a table (the CLI), JSON or YAML, and HTML (the reporter's
//! standalone page, with a timeline per resource).

use std::time::Duration;

use chrono::{DateTime, Utc};
use ire_actors::reporter::stats;
use ire_actors::reporter::HtmlFormatter;
use ire_consensus::types::{CampaignState, StepState, TaskState};
use ire_core::{
    Event, ExecutionRecord, ExecutionStatus, Report, ReportFilter, ReportFormatter, ResourceKey,
    Result,
};
use serde::Serialize;

use super::probes::ProbeResult;

/// The whole report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CampaignReport {
    /// The campaign's id in the store.
    pub id: String,
    /// Its name.
    pub name: String,
    /// How it ended.
    pub state: CampaignState,
    /// Why it ended that way.
    pub message: String,
    /// The seed of the random choices (`ire plan --seed` / `ire run --seed` reproduce them).
    pub seed: u64,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub ended_at: DateTime<Utc>,
    /// Steady-state probes before, during and after.
    pub steady_state: SteadyState,
    /// Every step, in file order.
    pub steps: Vec<StepReport>,
    /// Faults that were still active at the end and were reverted then (untimed sustained
    /// faults, and those of an abort).
    pub reverted_at_end: Vec<String>,
    /// Faults that could not be reverted (they stay in the ledger, active, for an operator
    /// or another node's scanner).
    pub revert_failures: Vec<String>,
    /// The campaign's progress events (the HTML timeline).
    #[serde(skip)]
    pub events: Vec<Event>,
}

/// Probe results.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SteadyState {
    /// Before the first step.
    pub before: Vec<ProbeResult>,
    /// Failures seen while the campaign ran (the first ones per probe).
    pub failures_during: Vec<ProbeFailure>,
    /// Rounds run while the campaign ran.
    pub rounds_during: u64,
    /// After the last step.
    pub after: Vec<ProbeResult>,
}

/// A probe failure during the campaign.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ProbeFailure {
    /// When.
    pub at: DateTime<Utc>,
    /// What.
    pub result: ProbeResult,
}

/// One step.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StepReport {
    /// Its name.
    pub name: String,
    /// Its plugin.
    pub plugin: String,
    /// Its target.
    pub target: String,
    /// How it ended.
    pub state: StepState,
    /// Why.
    pub message: String,
    /// Resources the selector matched.
    pub matched: usize,
    /// Resources left out, with why.
    pub excluded: Vec<Excluded>,
    /// One per chosen resource.
    pub tasks: Vec<TaskReport>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
}

/// A resource a step left out.
#[derive(Debug, Clone, Serialize)]
pub struct Excluded {
    /// The resource.
    pub resource: String,
    /// Why.
    pub reason: String,
}

/// One task: a plugin run on one resource.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TaskReport {
    /// The resource.
    pub resource: ResourceKey,
    /// Its name.
    pub resource_name: String,
    /// Its runtime id.
    pub resource_id: String,
    /// How it ended.
    pub state: TaskState,
    /// The execution (the last attempt's).
    pub execution_id: Option<String>,
    /// Attempts made (retries included).
    pub attempts: u32,
    /// The fault's ledger id.
    pub fault_id: Option<String>,
    /// The lease's fencing token.
    pub token: Option<u64>,
    /// Why it failed or was left undone.
    pub error: Option<String>,
    /// When the plugin started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// When the fault was injected.
    pub injected_at: Option<DateTime<Utc>>,
    /// From injection to the resource seen unhealthy.
    #[serde(with = "humantime_serde")]
    pub time_to_detect: Option<Duration>,
    /// From injection to the resource healthy again (MTTR).
    #[serde(with = "humantime_serde")]
    pub time_to_recover: Option<Duration>,
    /// Its snapshot, kept for a rollback.
    #[serde(skip)]
    pub snapshot: Option<ire_core::Snapshot>,
}

impl TaskReport {
    /// A task on `resource`, not started.
    pub fn new(resource: &ire_core::Resource) -> Self {
        TaskReport {
            resource: resource.key.clone(),
            resource_name: resource.name.clone(),
            resource_id: resource.id.clone(),
            state: TaskState::Assigned,
            execution_id: None,
            attempts: 0,
            fault_id: None,
            token: None,
            error: None,
            started_at: None,
            ended_at: None,
            injected_at: None,
            time_to_detect: None,
            time_to_recover: None,
            snapshot: None,
        }
    }
}

impl CampaignReport {
    /// Every task of every step.
    pub fn tasks(&self) -> impl Iterator<Item = (&StepReport, &TaskReport)> {
        self.steps
            .iter()
            .flat_map(|s| s.tasks.iter().map(move |t| (s, t)))
    }

    /// Tasks that failed.
    pub fn failed_tasks(&self) -> usize {
        self.tasks()
            .filter(|(_, t)| t.state == TaskState::Failed)
            .count()
    }

    /// The tasks as execution records (for statistics and the HTML page).
    pub fn records(&self) -> Vec<ExecutionRecord> {
        self.tasks()
            .filter_map(|(s, t)| {
                let start = t.started_at?;
                let end = t.ended_at.unwrap_or(self.ended_at);
                Some(ExecutionRecord {
                    id: t
                        .execution_id
                        .clone()
                        .unwrap_or_else(|| format!("{}/{}", s.name, t.resource)),
                    plugin_name: s.plugin.clone(),
                    resource_id: t.resource_id.clone(),
                    resource_name: t.resource_name.clone(),
                    resource_key: Some(t.resource.clone()),
                    start_time: t.injected_at.unwrap_or(start).min(start),
                    end_time: end,
                    duration: (end - start).to_std().unwrap_or_default(),
                    status: match t.state {
                        TaskState::Succeeded => ExecutionStatus::Success,
                        TaskState::Failed => ExecutionStatus::Failed,
                        TaskState::Canceled => ExecutionStatus::Canceled,
                        TaskState::Assigned | TaskState::Running => ExecutionStatus::Running,
                    },
                    error: t.error.clone().unwrap_or_default(),
                    metadata: Default::default(),
                    principal: String::new(),
                    campaign: Some(self.id.clone()),
                    step: Some(s.name.clone()),
                    node: None,
                    fencing_token: t.token.map(ire_core::FencingToken),
                    time_to_detect: t.time_to_detect,
                    time_to_recover: t.time_to_recover,
                })
            })
            .collect()
    }

    /// The standalone HTML page.
    pub async fn html(&self) -> Result<Vec<u8>> {
        let records = self.records();
        let report = Report {
            title: format!("Campaign {} ({})", self.name, state_name(self.state)),
            generated_at: Utc::now(),
            filter: ReportFilter {
                campaign: Some(self.id.clone()),
                ..ReportFilter::default()
            },
            statistics: stats::compute(&records),
            executions: records,
            events: self.events.clone(),
        };
        HtmlFormatter.format(&report).await
    }

    /// The report as text: a summary line, then a table of tasks.
    pub fn table(&self) -> String {
        use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, ContentArrangement, Table};
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(vec![
                "step",
                "plugin",
                "resource",
                "result",
                "detect",
                "recover (MTTR)",
                "note",
            ]);
        for s in &self.steps {
            if s.tasks.is_empty() {
                t.add_row(vec![
                    Cell::new(&s.name),
                    Cell::new(&s.plugin),
                    Cell::new("-"),
                    Cell::new(step_state_name(s.state)),
                    Cell::new("-"),
                    Cell::new("-"),
                    Cell::new(&s.message),
                ]);
            }
            for task in &s.tasks {
                t.add_row(vec![
                    Cell::new(&s.name),
                    Cell::new(&s.plugin),
                    Cell::new(task.resource.as_str()),
                    Cell::new(task_state_name(task.state)),
                    Cell::new(opt(task.time_to_detect)),
                    Cell::new(opt(task.time_to_recover)),
                    Cell::new(task.error.clone().unwrap_or_default()),
                ]);
            }
        }
        let mut out = format!(
            "campaign {} {} in {}: {}\n",
            self.name,
            state_name(self.state),
            human(
                (self.ended_at - self.started_at)
                    .to_std()
                    .unwrap_or_default()
            ),
            self.message
        );
        out.push_str(&t.to_string());
        let failing: Vec<&ProbeResult> = self.steady_state.after.iter().filter(|p| !p.ok).collect();
        if !self.steady_state.before.is_empty() {
            out.push_str(&format!(
                "\nsteady state: before {}, during {} failure(s) in {} rounds, after {}",
                pass_fail(&self.steady_state.before),
                self.steady_state.failures_during.len(),
                self.steady_state.rounds_during,
                if self.steady_state.after.is_empty() {
                    "not run".to_owned()
                } else if failing.is_empty() {
                    "passed".to_owned()
                } else {
                    format!(
                        "failed ({})",
                        failing
                            .iter()
                            .map(|p| format!("{}: {}", p.name, p.message))
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                }
            ));
        }
        if !self.reverted_at_end.is_empty() {
            out.push_str(&format!(
                "\nreverted at the end: {} fault(s)",
                self.reverted_at_end.len()
            ));
        }
        if !self.revert_failures.is_empty() {
            out.push_str(&format!(
                "\nNOT REVERTED (still active in the ledger): {}",
                self.revert_failures.join("; ")
            ));
        }
        out
    }
}

fn pass_fail(r: &[ProbeResult]) -> String {
    let failed: Vec<String> = r
        .iter()
        .filter(|p| !p.ok)
        .map(|p| format!("{}: {}", p.name, p.message))
        .collect();
    if failed.is_empty() {
        "passed".into()
    } else {
        format!("failed ({})", failed.join("; "))
    }
}

fn opt(d: Option<Duration>) -> String {
    d.map(human).unwrap_or_else(|| "-".into())
}

/// A duration for people: milliseconds under a second, else seconds with one decimal.
pub fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// A campaign state's name.
pub fn state_name(s: CampaignState) -> &'static str {
    match s {
        CampaignState::Pending => "pending",
        CampaignState::Running => "running",
        CampaignState::Succeeded => "succeeded",
        CampaignState::Failed => "failed",
        CampaignState::Aborted => "aborted",
        CampaignState::Canceled => "canceled",
    }
}

/// A step state's name.
pub fn step_state_name(s: StepState) -> &'static str {
    match s {
        StepState::Pending => "pending",
        StepState::Planning => "planning",
        StepState::Running => "running",
        StepState::Succeeded => "succeeded",
        StepState::Failed => "failed",
        StepState::Skipped => "skipped",
        StepState::Aborted => "aborted",
    }
}

/// A task state's name.
pub fn task_state_name(s: TaskState) -> &'static str {
    match s {
        TaskState::Assigned => "assigned",
        TaskState::Running => "running",
        TaskState::Succeeded => "succeeded",
        TaskState::Failed => "failed",
        TaskState::Canceled => "canceled",
    }
}
