//! The campaign executor: runs a campaign's steps over its targets' resources on a node,
//! under its safety rules, and reports what happened.
//!
//! A run goes:
//! 1. The campaign is stored (`put_campaign`: every step pending). Steady-state probes run
//!    once; if one fails, nothing is injected and the campaign ends aborted.
//! 2. Steps start when the steps they depend on have ended (`depends-on`, by default the
//!    step before) and their `when` holds. A step resolves its target's selector on the
//!    adapter, reads every matched resource's health and lease, and chooses with
//!    [`plan::select`] (mode, leases, guard). Each chosen resource is a task, stored
//!    `assigned`, then admitted once more by the target's [`LiveGuard`] against live health,
//!    and run through the engine (lease, ledger entry, plugin lifecycle; a `duration` makes
//!    the fault timed: held, then reverted by the engine).
//! 3. Meanwhile the probes run every `probe-interval`; an abort condition, an operator's
//!    abort, or a failed step with `on-error: abort` stops the campaign: running executions
//!    are canceled (the engine reverts their faults) and every fault of the campaign still
//!    active in the ledger is reverted, all at once.
//! 4. At the end, faults still active (sustained faults without a duration) are reverted,
//!    the probes run once more, the monitor's measurements (time to detect, time to
//!    recover) are collected, and the campaign's final state is stored.
//!
//! Every transition of the campaign, its steps and its tasks is written to the replicated
//! store as it happens (`update_step`, `update_task`, `finish_campaign`), so another
//! coordinator can pick the campaign up ([`Executor::resume`]). Progress goes out on the
//! node's event bus as `campaign.*` events carrying the campaign's id.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::{FuturesUnordered, StreamExt};
use ire_actors::engine::{meta, DURATION_LABEL};
use ire_consensus::types::{CampaignState, NewCampaign, StepState, TaskState, TaskUpdate};
use ire_core::event::event_type;
use ire_core::{
    Error, Event, EventBus, EventFilter, ExecutionHandle, ExecutionRequest, ExecutionResult,
    ExecutionStatus, FaultQuery, FaultState, Labels, LockService, Plugin, PluginConfig,
    PluginRegistry, Resource, ResourceKey, Result, Snapshot, StorageBackend, Subscription,
};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio::sync::watch;

use super::guard::{HealthSource, LiveGuard, MonitorHealth};
use super::model::{Campaign, OnError, Step, When};
use super::parse::{Diagnostics, Source};
use super::plan::{self, Candidate};
use super::probes::{AbortTracker, Prober};
use super::report::{CampaignReport, Excluded, ProbeFailure, SteadyState, StepReport, TaskReport};
use super::validate::{self, Context};
use crate::catalog;
use crate::wiring::Node;

/// Types of the progress events a run publishes (metadata `campaign` = the campaign's id).
pub mod events {
    /// The campaign started (data: `name`, `steps`).
    pub const STARTED: &str = "campaign.started";
    /// A round of steady-state probes (data: `ok`, `failures`).
    pub const PROBES: &str = "campaign.probes";
    /// A step started planning (metadata `step`).
    pub const STEP_STARTED: &str = "campaign.step.started";
    /// A step chose its resources (data: `matched`, `chosen`).
    pub const STEP_PLANNED: &str = "campaign.step.planned";
    /// A step ended (data: `state`, `message`).
    pub const STEP_FINISHED: &str = "campaign.step.finished";
    /// A task started (metadata `step`, `resource`).
    pub const TASK_STARTED: &str = "campaign.task.started";
    /// A task ended (data: `state`, `error`).
    pub const TASK_FINISHED: &str = "campaign.task.finished";
    /// An operator paused the campaign.
    pub const PAUSED: &str = "campaign.paused";
    /// An operator resumed it.
    pub const RESUMED: &str = "campaign.resumed";
    /// The campaign is stopping (data: `state`, `reason`); faults are being reverted.
    pub const STOPPING: &str = "campaign.stopping";
    /// The campaign ended (data: `state`, `message`).
    pub const FINISHED: &str = "campaign.finished";
}

/// The store collection where finished campaigns' reports are kept (key: campaign id).
pub const REPORTS_COLLECTION: &str = "campaign-reports";
/// The store collection of operator controls (pause) of running campaigns (key: id).
pub const CONTROL_COLLECTION: &str = "campaign-control";

/// A campaign ready to run: parsed and validated against a node.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The file.
    pub source: Source,
    /// The campaign.
    pub campaign: Campaign,
}

/// How to run a campaign.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Who runs it (recorded in the store, the ledger and the audit).
    pub principal: String,
    /// The seed of the random choices (random when None; the report says which).
    pub seed: Option<u64>,
    /// The campaign's id (a fresh one when None).
    pub id: Option<String>,
}

/// What operators do to a running campaign: pause, resume, abort.
#[derive(Clone, Debug)]
pub struct Control {
    state: Arc<watch::Sender<ControlState>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct ControlState {
    paused: bool,
    stop: Option<(CampaignState, String)>,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            state: Arc::new(watch::Sender::new(ControlState::default())),
        }
    }
}

impl Control {
    /// Stops starting tasks and steps (running faults keep their course) until resumed.
    pub fn pause(&self) {
        self.state
            .send_if_modified(|s| !std::mem::replace(&mut s.paused, true));
    }

    /// Lets a paused campaign go on.
    pub fn resume(&self) {
        self.state
            .send_if_modified(|s| std::mem::replace(&mut s.paused, false));
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.state.borrow().paused
    }

    /// An operator's abort: running executions are canceled and every active fault is
    /// reverted; the campaign ends `Canceled`.
    pub fn abort(&self, reason: impl Into<String>) {
        self.stop(CampaignState::Canceled, reason.into());
    }

    /// Stops the campaign with `state`; the first reason given wins.
    fn stop(&self, state: CampaignState, reason: String) {
        self.state.send_if_modified(|s| {
            if s.stop.is_some() {
                return false;
            }
            s.stop = Some((state, reason));
            s.paused = false;
            true
        });
    }

    /// Why the campaign is stopping, once it is.
    pub fn stopped(&self) -> Option<(CampaignState, String)> {
        self.state.borrow().stop.clone()
    }

    /// Waits while paused; false when the campaign is stopping.
    async fn wait_unpaused(&self) -> bool {
        let mut rx = self.state.subscribe();
        loop {
            {
                let s = rx.borrow_and_update();
                if s.stop.is_some() {
                    return false;
                }
                if !s.paused {
                    return true;
                }
            }
            if rx.changed().await.is_err() {
                return false;
            }
        }
    }

    /// Resolves when the campaign starts stopping.
    async fn stopping(&self) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| s.stop.is_some()).await;
    }
}

/// A campaign running on a node.
pub struct CampaignRun {
    /// Its id.
    pub id: String,
    /// Its controls.
    pub control: Control,
    /// Its progress events (subscribed before it started, so none is missed).
    pub events: Option<Subscription>,
    task: tokio::task::JoinHandle<Result<CampaignReport>>,
}

impl CampaignRun {
    /// Waits for the end and returns the report.
    pub async fn wait(self) -> Result<CampaignReport> {
        self.task.await.map_err(|e| {
            Error::other(
                ire_core::ErrorClass::Fatal,
                format!("the campaign's task ended abnormally: {e}"),
                None,
            )
        })?
    }

    /// Stops the run's task at once, without reverting anything (crash tests: what a
    /// coordinator that dies leaves behind). Its leases lapse; its state stays in the store.
    pub fn crash(self) {
        self.task.abort();
    }
}

/// Runs campaigns on a node (the CLI, the daemon and the coordinator drive it).
#[derive(Clone)]
pub struct Executor {
    node: Arc<Node>,
}

impl Executor {
    /// An executor on `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Executor { node }
    }

    /// The node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Parses and validates a campaign against this node's plugins and adapters; every
    /// problem is returned, each with its file, line, column and field.
    pub fn prepare(&self, source: Source) -> std::result::Result<Prepared, Diagnostics> {
        let campaign = validate::check(
            &source,
            &Context {
                plugins: self.node.registry.as_ref(),
                adapters: Some(&self.node.adapter_infos),
            },
        )?;
        Ok(Prepared { source, campaign })
    }

    /// Stores the campaign and starts it.
    pub async fn start(&self, prepared: Prepared, options: RunOptions) -> Result<CampaignRun> {
        let id = options
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let principal = if options.principal.is_empty() {
            "ire".to_owned()
        } else {
            options.principal.clone()
        };
        self.node
            .store
            .put_campaign(NewCampaign {
                id: id.clone(),
                name: prepared.campaign.name.clone(),
                spec: prepared.source.text.clone(),
                submitted_by: principal.clone(),
                steps: prepared
                    .campaign
                    .steps
                    .iter()
                    .map(|s| s.name.clone())
                    .collect(),
            })
            .await?;
        self.launch(
            id,
            prepared.campaign,
            principal,
            options.seed,
            Resumed::default(),
        )
        .await
    }

    /// Picks up a stored campaign that did not finish (its coordinator died): steps that
    /// ended keep their outcome and are not run again; a step that was running is run again
    /// for its resources whose task had not ended, after any fault those tasks left active is
    /// reverted; faults the campaign left active are reverted at its end as usual.
    pub async fn resume(&self, id: &str, principal: &str) -> Result<CampaignRun> {
        let record = self.node.store.campaign(id).await?;
        if record.state.is_terminal() {
            return Err(Error::Conflict {
                message: format!(
                    "campaign {id} already ended ({:?}); nothing to resume",
                    record.state
                ),
            });
        }
        let source = Source::new(format!("campaign {id}"), record.spec.clone());
        let prepared = self
            .prepare(source)
            .map_err(|d| Error::invalid(format!("stored campaign {id}"), d.to_string()))?;
        let mut resumed = Resumed::default();
        for s in &record.steps {
            if s.state.is_terminal() {
                resumed
                    .ended
                    .insert(s.name.clone(), (s.state, s.message.clone()));
            }
            let done: Vec<ResourceKey> = s
                .tasks
                .values()
                .filter(|t| t.state.is_terminal())
                .map(|t| t.resource.clone())
                .collect();
            resumed.done_tasks.insert(s.name.clone(), done);
        }
        // Faults of tasks that were in flight when the coordinator died: revert them now,
        // before their step runs again on those resources.
        let active = self
            .node
            .store
            .query_faults_active(id)
            .await
            .unwrap_or_default();
        let ended_steps: Vec<&String> = resumed.ended.keys().collect();
        let interrupted: Vec<_> = active
            .into_iter()
            .filter(|f| f.step.as_ref().is_none_or(|s| !ended_steps.contains(&s)))
            .collect();
        for f in interrupted {
            match revert_entry(&self.node, &f, principal).await {
                Ok(()) => resumed.reverted.push(f.id.clone()),
                Err(e) => resumed.failures.push(format!("{}: {e}", f.id)),
            }
        }
        self.launch(
            id.to_owned(),
            prepared.campaign,
            principal.to_owned(),
            None,
            resumed,
        )
        .await
    }

    async fn launch(
        &self,
        id: String,
        campaign: Campaign,
        principal: String,
        seed: Option<u64>,
        resumed: Resumed,
    ) -> Result<CampaignRun> {
        let seed = seed.unwrap_or_else(|| rand::rng().next_u64());
        let control = Control::default();
        let events = self
            .node
            .bus
            .subscribe(EventFilter {
                types: vec!["campaign.*".into()],
                metadata: Labels::from([("campaign".into(), id.clone())]),
                ..EventFilter::default()
            })
            .await
            .ok();
        let injections = self
            .node
            .bus
            .subscribe(EventFilter {
                types: vec![event_type::FAULT_INJECTED.into()],
                metadata: Labels::from([("campaign".into(), id.clone())]),
                ..EventFilter::default()
            })
            .await?;
        let health: Arc<dyn HealthSource> = Arc::new(MonitorHealth(self.node.monitor.clone()));
        let node = self.node.clone();
        let prober = Prober::new(&campaign, |name| node.adapters.get(name).cloned());
        let steps = campaign
            .steps
            .iter()
            .map(|s| StepReport {
                name: s.name.clone(),
                plugin: s.plugin.clone(),
                target: s.target.clone(),
                state: StepState::Pending,
                message: String::new(),
                matched: 0,
                excluded: Vec::new(),
                tasks: Vec::new(),
                started_at: None,
                ended_at: None,
            })
            .collect();
        let run = Arc::new(Run {
            node: self.node.clone(),
            id: id.clone(),
            tracker: Mutex::new(AbortTracker::new(&campaign.abort_when)),
            campaign,
            control: control.clone(),
            principal,
            seed,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            prober,
            health,
            state: Mutex::new(RunState {
                started_at: Utc::now(),
                steps,
                steady_state: SteadyState::default(),
                reverted_at_end: resumed.reverted.clone(),
                revert_failures: resumed.failures.clone(),
                events: Vec::new(),
                completion_order: Vec::new(),
            }),
            handles: Mutex::new(BTreeMap::new()),
            executions: Mutex::new(BTreeMap::new()),
            guards: tokio::sync::Mutex::new(BTreeMap::new()),
            resumed,
        });
        let task = tokio::spawn(run.drive(injections));
        Ok(CampaignRun {
            id,
            control,
            events,
            task,
        })
    }
}

/// What a resumed campaign keeps from before.
#[derive(Debug, Default, Clone)]
struct Resumed {
    /// Steps that had ended: their state and message.
    ended: BTreeMap<String, (StepState, String)>,
    /// Per step, resources whose task had ended.
    done_tasks: BTreeMap<String, Vec<ResourceKey>>,
    /// Faults reverted when resuming.
    reverted: Vec<String>,
    /// Faults that could not be reverted when resuming.
    failures: Vec<String>,
}

struct RunState {
    started_at: DateTime<Utc>,
    steps: Vec<StepReport>,
    steady_state: SteadyState,
    reverted_at_end: Vec<String>,
    revert_failures: Vec<String>,
    /// The campaign's events, for the HTML timeline.
    events: Vec<Event>,
    /// Steps in the order they ended (for a rollback, newest first).
    completion_order: Vec<usize>,
}

/// Where an execution of the campaign belongs.
#[derive(Debug, Clone, Copy)]
struct TaskRef {
    step: usize,
    task: usize,
}

struct Run {
    node: Arc<Node>,
    id: String,
    campaign: Campaign,
    control: Control,
    principal: String,
    seed: u64,
    rng: Mutex<StdRng>,
    prober: Prober,
    health: Arc<dyn HealthSource>,
    tracker: Mutex<AbortTracker>,
    state: Mutex<RunState>,
    /// Executions running now, for an abort to cancel.
    handles: Mutex<BTreeMap<String, ExecutionHandle>>,
    /// Every execution of the campaign, by id.
    executions: Mutex<BTreeMap<String, TaskRef>>,
    /// One live guard per target.
    guards: tokio::sync::Mutex<BTreeMap<String, Arc<LiveGuard>>>,
    resumed: Resumed,
}

/// The watch key of an execution's fault in the monitor (distinct from the engine's own).
fn watch_key(execution_id: &str) -> String {
    format!("campaign:{execution_id}")
}

impl Run {
    fn step(&self, i: usize) -> &Step {
        &self.campaign.steps[i]
    }

    /// True when step `i`'s plugin is a fault (not a healing or checking plugin).
    fn is_fault(&self, i: usize) -> bool {
        self.plugin(i)
            .is_some_and(|p| catalog::is_fault(&p.metadata()))
    }

    fn plugin(&self, i: usize) -> Option<Arc<dyn Plugin>> {
        self.node.registry.get(&self.step(i).plugin).ok()
    }

    async fn publish(&self, kind: &str, step: Option<&str>, data: &[(&str, serde_json::Value)]) {
        self.publish_about(kind, step, None, data).await
    }

    async fn publish_about(
        &self,
        kind: &str,
        step: Option<&str>,
        resource: Option<&Resource>,
        data: &[(&str, serde_json::Value)],
    ) {
        let mut e = Event::new(kind, "campaign")
            .with_metadata("campaign", self.id.clone())
            .with_metadata("campaign_name", self.campaign.name.clone());
        if let Some(s) = step {
            e = e.with_metadata("step", s);
        }
        if let Some(r) = resource {
            e = e
                .with_metadata("resource", r.key.to_string())
                .with_resource(r.clone());
        }
        for (k, v) in data {
            e = e.with_data(*k, v.clone());
        }
        self.state.lock().expect("run state").events.push(e.clone());
        if let Err(err) = self.node.bus.publish(e).await {
            tracing::debug!(component = "campaign", campaign = %self.id, error = %err, "event not published");
        }
    }

    /// Writes to the store; a failure is logged (the run goes on: the report has it all).
    async fn stored(&self, what: &str, r: Result<()>) {
        if let Err(e) = r {
            tracing::warn!(component = "campaign", campaign = %self.id, error = %e, "store: {what}");
        }
    }

    async fn set_step(&self, i: usize, state: StepState, message: &str) {
        {
            let mut st = self.state.lock().expect("run state");
            let s = &mut st.steps[i];
            s.state = state;
            if !message.is_empty() {
                s.message = message.to_owned();
            }
            let now = Utc::now();
            if matches!(state, StepState::Planning | StepState::Running) && s.started_at.is_none() {
                s.started_at = Some(now);
            }
            if state.is_terminal() {
                s.ended_at = Some(now);
                st.completion_order.push(i);
            }
        }
        let name = self.step(i).name.clone();
        let r = self
            .node
            .store
            .update_step(&self.id, &name, state, message)
            .await;
        self.stored(&format!("step {name} -> {state:?}"), r).await;
        if state.is_terminal() {
            self.publish(
                events::STEP_FINISHED,
                Some(&name),
                &[
                    ("state", super::report::step_state_name(state).into()),
                    ("message", message.into()),
                ],
            )
            .await;
        }
    }

    async fn set_task(&self, r: TaskRef, state: TaskState, message: &str) {
        let (update, resource) = {
            let mut st = self.state.lock().expect("run state");
            let t = &mut st.steps[r.step].tasks[r.task];
            t.state = state;
            if !message.is_empty() && state != TaskState::Succeeded {
                t.error = Some(message.to_owned());
            }
            (
                TaskUpdate {
                    id: t.resource.to_string(),
                    resource: t.resource.clone(),
                    node: self.node.name.clone(),
                    state,
                    execution_id: t.execution_id.clone(),
                    token: t.token.map(ire_core::FencingToken),
                    message: message.to_owned(),
                },
                t.resource.clone(),
            )
        };
        let name = self.step(r.step).name.clone();
        let res = self.node.store.update_task(&self.id, &name, update).await;
        self.stored(&format!("task {name}/{resource} -> {state:?}"), res)
            .await;
    }

    /// The whole run (see the module docs).
    async fn drive(self: Arc<Self>, injections: Subscription) -> Result<CampaignReport> {
        self.publish(
            events::STARTED,
            None,
            &[
                ("name", self.campaign.name.clone().into()),
                ("steps", self.campaign.steps.len().into()),
                ("seed", self.seed.to_string().into()),
            ],
        )
        .await;
        // Helpers end with the run, even when the run itself is dropped (a crash).
        let _dispatcher = AbortOnDrop(tokio::spawn(self.clone().follow_injections(injections)));

        let mut before_failed = None;
        if !self.prober.is_empty() && self.resumed.ended.is_empty() {
            let before = self.prober.round().await;
            let failed: Vec<String> = before
                .iter()
                .filter(|p| !p.ok)
                .map(|p| format!("{}: {}", p.name, p.message))
                .collect();
            self.state.lock().expect("run state").steady_state.before = before;
            if !failed.is_empty() {
                before_failed = Some(format!(
                    "steady state failed before the first step, nothing was injected ({})",
                    failed.join("; ")
                ));
            }
        }
        if let Some(reason) = before_failed {
            self.control.stop(CampaignState::Aborted, reason);
        }

        let probes_done = tokio_util::sync::CancellationToken::new();
        let mut probing = (!self.prober.is_empty() && self.control.stopped().is_none())
            .then(|| AbortOnDrop(tokio::spawn(self.clone().probe_loop(probes_done.clone()))));

        let failed_step = self.schedule().await;

        probes_done.cancel();
        if let Some(p) = probing.as_mut() {
            let _ = (&mut p.0).await;
        }

        // A rollback reverts what the completed steps did, newest first.
        if let Some(i) = failed_step {
            if self.step(i).on_error == OnError::Rollback {
                self.rollback().await;
            }
        }
        // Whatever is still active (untimed sustained faults, an abort's leftovers).
        self.revert_remaining().await;

        if !self.prober.is_empty()
            && self
                .state
                .lock()
                .expect("run state")
                .steady_state
                .before
                .iter()
                .all(|p| p.ok)
        {
            let after = self.prober.round().await;
            self.state.lock().expect("run state").steady_state.after = after;
        }

        self.collect_timings().await;
        let (state, message) = self.final_state();
        let r = self
            .node
            .store
            .finish_campaign(&self.id, state, &message)
            .await;
        self.stored("finish campaign", r).await;
        self.publish(
            events::FINISHED,
            None,
            &[
                ("state", super::report::state_name(state).into()),
                ("message", message.clone().into()),
            ],
        )
        .await;
        let report = self.report(state, message);
        if let Ok(v) = serde_json::to_value(&report) {
            let r = self.node.store.save(REPORTS_COLLECTION, &self.id, v).await;
            self.stored("save the report", r).await;
        }
        Ok(report)
    }

    fn final_state(&self) -> (CampaignState, String) {
        if let Some((state, reason)) = self.control.stopped() {
            return (state, reason);
        }
        let st = self.state.lock().expect("run state");
        let failed: Vec<&StepReport> = st
            .steps
            .iter()
            .filter(|s| s.state == StepState::Failed)
            .collect();
        let after_failed: Vec<String> = st
            .steady_state
            .after
            .iter()
            .filter(|p| !p.ok)
            .map(|p| format!("{}: {}", p.name, p.message))
            .collect();
        if !failed.is_empty() {
            let names: Vec<&str> = failed.iter().map(|s| s.name.as_str()).collect();
            (
                CampaignState::Failed,
                format!(
                    "step{} {} failed (on-error: continue)",
                    if names.len() > 1 { "s" } else { "" },
                    names.join(", ")
                ),
            )
        } else if !after_failed.is_empty() {
            (
                CampaignState::Failed,
                format!(
                    "steady state did not hold after the campaign ({})",
                    after_failed.join("; ")
                ),
            )
        } else {
            let tasks: usize = st.steps.iter().map(|s| s.tasks.len()).sum();
            (
                CampaignState::Succeeded,
                format!(
                    "{} step(s), {tasks} task(s); steady state held",
                    st.steps.len()
                ),
            )
        }
    }

    fn report(&self, state: CampaignState, message: String) -> CampaignReport {
        let st = self.state.lock().expect("run state");
        CampaignReport {
            id: self.id.clone(),
            name: self.campaign.name.clone(),
            state,
            message,
            seed: self.seed,
            started_at: st.started_at,
            ended_at: Utc::now(),
            steady_state: st.steady_state.clone(),
            steps: st.steps.clone(),
            reverted_at_end: st.reverted_at_end.clone(),
            revert_failures: st.revert_failures.clone(),
            events: st.events.clone(),
        }
    }

    /// Starts steps as their dependencies end; returns the step whose failure stopped the
    /// campaign, if one did.
    async fn schedule(self: &Arc<Self>) -> Option<usize> {
        let n = self.campaign.steps.len();
        let mut outcome: Vec<Option<StepState>> = vec![None; n];
        let mut started = vec![false; n];
        for (i, s) in self.campaign.steps.iter().enumerate() {
            if let Some((state, message)) = self.resumed.ended.get(&s.name) {
                outcome[i] = Some(*state);
                started[i] = true;
                let mut st = self.state.lock().expect("run state");
                st.steps[i].state = *state;
                st.steps[i].message = message.clone();
            }
        }
        let deps: Vec<Vec<usize>> = (0..n)
            .map(|i| {
                self.campaign
                    .dependencies(i)
                    .iter()
                    .filter_map(|d| self.campaign.steps.iter().position(|s| &s.name == d))
                    .collect()
            })
            .collect();
        let mut running = FuturesUnordered::new();
        let mut failed_step = None;
        let mut control = self.control.state.subscribe();
        let mut was_paused = control.borrow_and_update().paused;
        loop {
            let stopped = self.control.stopped().is_some();
            if !stopped && !self.control.is_paused() {
                // Start what is ready; a skip can make more ready, so go round until stable.
                loop {
                    let mut progressed = false;
                    for i in 0..n {
                        if started[i] || !deps[i].iter().all(|d| outcome[*d].is_some()) {
                            continue;
                        }
                        started[i] = true;
                        progressed = true;
                        let dep_states: Vec<(String, StepState)> = deps[i]
                            .iter()
                            .map(|d| (self.step(*d).name.clone(), outcome[*d].expect("ended")))
                            .collect();
                        match should_run(self.step(i).when, &dep_states) {
                            Ok(()) => {
                                let me = self.clone();
                                running.push(async move { (i, me.run_step(i).await) });
                            }
                            Err(why) => {
                                outcome[i] = Some(StepState::Skipped);
                                self.set_step(i, StepState::Skipped, &why).await;
                            }
                        }
                    }
                    if !progressed {
                        break;
                    }
                }
            }
            if running.is_empty() {
                let all_started = started.iter().all(|s| *s);
                if self.control.stopped().is_some() || all_started {
                    break;
                }
                if !self.control.is_paused() {
                    break; // nothing can start (cannot happen after validation)
                }
            }
            tokio::select! {
                Some((i, state)) = running.next(), if !running.is_empty() => {
                    outcome[i] = Some(state);
                    if state == StepState::Failed {
                        let step = self.step(i);
                        match step.on_error {
                            OnError::Continue => {}
                            OnError::Abort | OnError::Retry | OnError::Rollback => {
                                failed_step = Some(i);
                                let msg = self.state.lock().expect("run state").steps[i].message.clone();
                                self.control.stop(
                                    CampaignState::Failed,
                                    format!("step {} failed (on-error: {}): {msg}", step.name, on_error_name(step.on_error)),
                                );
                            }
                        }
                    }
                }
                changed = control.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let now = control.borrow_and_update().clone();
                    if now.stop.is_some() {
                        break;
                    }
                    if now.paused != was_paused {
                        was_paused = now.paused;
                        self.note_pause(now.paused).await;
                    }
                }
            }
        }
        // Stopping: cancel what runs (the engine reverts it), then let the steps end.
        if let Some((state, reason)) = self.control.stopped() {
            self.publish(
                events::STOPPING,
                None,
                &[
                    ("state", super::report::state_name(state).into()),
                    ("reason", reason.clone().into()),
                ],
            )
            .await;
            let handles: Vec<ExecutionHandle> = self
                .handles
                .lock()
                .expect("handles")
                .values()
                .cloned()
                .collect();
            for h in &handles {
                h.cancel();
            }
            while let Some((i, state)) = running.next().await {
                outcome[i] = Some(state);
            }
            for (i, o) in outcome.iter().enumerate() {
                if o.is_none() {
                    self.set_step(i, StepState::Skipped, &format!("not run: {reason}"))
                        .await;
                }
            }
        }
        failed_step
    }

    async fn note_pause(&self, paused: bool) {
        let kind = if paused {
            events::PAUSED
        } else {
            events::RESUMED
        };
        self.publish(kind, None, &[]).await;
        let r = self
            .node
            .store
            .save(
                CONTROL_COLLECTION,
                &self.id,
                serde_json::json!({"paused": paused, "at": Utc::now()}),
            )
            .await;
        self.stored("pause state", r).await;
    }

    /// Runs one step to its end state.
    async fn run_step(self: Arc<Self>, i: usize) -> StepState {
        let step = self.step(i).clone();
        self.set_step(i, StepState::Planning, "").await;
        self.publish(events::STEP_STARTED, Some(&step.name), &[])
            .await;
        let (resources, candidates, selection) = match self.plan_step(i).await {
            Ok(p) => p,
            Err(msg) => {
                self.set_step(i, StepState::Failed, &msg).await;
                return StepState::Failed;
            }
        };
        let done_before: Vec<ResourceKey> = self
            .resumed
            .done_tasks
            .get(&step.name)
            .cloned()
            .unwrap_or_default();
        let chosen: Vec<Arc<Resource>> = selection
            .chosen
            .iter()
            .map(|&c| resources[c].clone())
            .filter(|r| !done_before.contains(&r.key))
            .collect();
        // Healing and checking steps take nothing away: only faults are guarded.
        let guard = match self.is_fault(i) {
            true => Some(self.guard_for(&step.target, &resources).await),
            false => None,
        };
        let task_refs: Vec<TaskRef> = {
            let mut st = self.state.lock().expect("run state");
            let s = &mut st.steps[i];
            s.matched = resources.len();
            s.excluded = selection
                .excluded
                .iter()
                .map(|(c, why)| Excluded {
                    resource: candidates[*c].key.clone(),
                    reason: why.to_string(),
                })
                .collect();
            chosen
                .iter()
                .map(|r| {
                    s.tasks.push(TaskReport::new(r));
                    TaskRef {
                        step: i,
                        task: s.tasks.len() - 1,
                    }
                })
                .collect()
        };
        let summary = format!(
            "{} of {} matched resource(s) chosen ({}){}",
            chosen.len(),
            resources.len(),
            self.campaign.targets[&step.target].mode,
            if selection.excluded.is_empty() {
                String::new()
            } else {
                format!(", {} left out", selection.excluded.len())
            }
        );
        self.publish(
            events::STEP_PLANNED,
            Some(&step.name),
            &[
                ("matched", resources.len().into()),
                ("chosen", chosen.len().into()),
            ],
        )
        .await;
        futures::future::join_all(
            task_refs
                .iter()
                .map(|r| self.set_task(*r, TaskState::Assigned, "")),
        )
        .await;
        self.set_step(i, StepState::Running, &summary).await;

        let limit = match self.campaign.settings.max_parallel {
            0 => chosen.len().max(1),
            n => n,
        };
        let outcomes: Vec<TaskState> = futures::stream::iter(
            chosen
                .iter()
                .cloned()
                .zip(task_refs.iter().copied())
                .map(|(r, t)| self.clone().run_task(t, r, guard.clone())),
        )
        .buffer_unordered(limit)
        .collect()
        .await;

        let failed: Vec<String> = {
            let st = self.state.lock().expect("run state");
            st.steps[i]
                .tasks
                .iter()
                .filter(|t| t.state == TaskState::Failed)
                .map(|t| format!("{}: {}", t.resource, t.error.clone().unwrap_or_default()))
                .collect()
        };
        let canceled = outcomes
            .iter()
            .filter(|s| **s == TaskState::Canceled)
            .count();
        let (state, message) = if let (Some((_, reason)), true) =
            (self.control.stopped(), canceled > 0 || outcomes.is_empty())
        {
            (StepState::Aborted, format!("stopped: {reason}"))
        } else if !failed.is_empty() {
            (
                StepState::Failed,
                format!(
                    "{} of {} task(s) failed: {}",
                    failed.len(),
                    outcomes.len(),
                    failed[0]
                ),
            )
        } else if chosen.is_empty() && done_before.is_empty() {
            (StepState::Succeeded, format!("nothing to do: {summary}"))
        } else {
            let guarded = canceled;
            (
                StepState::Succeeded,
                format!(
                    "{} task(s) succeeded{}",
                    outcomes.len() - guarded,
                    if guarded > 0 {
                        format!(", {guarded} held back by the guard")
                    } else {
                        String::new()
                    }
                ),
            )
        };
        self.set_step(i, state, &message).await;
        state
    }

    /// Resolves a step's target and chooses its resources: (matched resources, their
    /// candidates, the selection). The error is the step's failure message.
    async fn plan_step(
        &self,
        i: usize,
    ) -> std::result::Result<(Vec<Arc<Resource>>, Vec<Candidate>, plan::Selection), String> {
        let step = self.step(i);
        let target = &self.campaign.targets[&step.target];
        let resources =
            super::preview::resolve_target(&self.node, &self.campaign, &step.target).await?;
        let mut candidates = candidates(&self.node.store, self.health.as_ref(), &resources).await;
        if !self.is_fault(i) {
            // A healing or checking step waits for a busy resource's lease in the engine
            // (a heal in progress is what it waits for) rather than leaving it out.
            for c in &mut candidates {
                c.leased_by = None;
            }
        }
        let selection = {
            let mut rng = self.rng.lock().expect("rng");
            let guard = match self.is_fault(i) {
                true => target.guard,
                false => Default::default(),
            };
            plan::select(target.mode, &guard, &candidates, &mut *rng)
        };
        Ok((resources, candidates, selection))
    }

    async fn guard_for(&self, target: &str, resources: &[Arc<Resource>]) -> Arc<LiveGuard> {
        let min = self.campaign.targets[target]
            .guard
            .min_available
            .map(|m| m.resolve(resources.len()))
            .unwrap_or(0);
        let mut guards = self.guards.lock().await;
        match guards.get_mut(target) {
            Some(g) => {
                if let Some(g) = Arc::get_mut(g) {
                    g.extend(resources.iter().cloned());
                }
                g.clone()
            }
            None => {
                let g = Arc::new(LiveGuard::new(
                    min,
                    resources.iter().cloned(),
                    self.health.clone(),
                ));
                guards.insert(target.to_owned(), g.clone());
                g
            }
        }
    }

    /// Runs one task: guard admission, the engine, retries.
    async fn run_task(
        self: Arc<Self>,
        t: TaskRef,
        resource: Arc<Resource>,
        guard: Option<Arc<LiveGuard>>,
    ) -> TaskState {
        let step = self.step(t.step).clone();
        let retries = step.retry_count();
        let mut attempt = 0u32;
        loop {
            if !self.control.wait_unpaused().await {
                let why = self.control.stopped().map(|s| s.1).unwrap_or_default();
                self.set_task(t, TaskState::Canceled, &format!("not started: {why}"))
                    .await;
                return TaskState::Canceled;
            }
            let admitted = match &guard {
                Some(g) => g.admit(&resource).await.map(|_| ()),
                None => Ok(()),
            };
            if let Err(why) = admitted {
                self.set_task(t, TaskState::Canceled, &format!("held back: {why}"))
                    .await;
                return TaskState::Canceled;
            }
            attempt += 1;
            let result = self.execute(t, &resource, &step, attempt).await;
            let injected = {
                let st = self.state.lock().expect("run state");
                st.steps[t.step].tasks[t.task].injected_at.is_some()
            };
            if let Some(g) = &guard {
                if injected || result.as_ref().is_ok_and(|r| r.is_success()) {
                    g.release(&resource).await;
                } else {
                    g.cancel(&resource).await;
                }
            }
            let stopped = self.control.stopped();
            match result {
                Ok(r) if r.is_success() => {
                    self.set_task(t, TaskState::Succeeded, "").await;
                    self.task_finished(t, &resource, TaskState::Succeeded, None)
                        .await;
                    return TaskState::Succeeded;
                }
                Ok(r) if r.status == ExecutionStatus::Canceled && stopped.is_some() => {
                    let msg = format!(
                        "canceled: {}{}",
                        stopped.map(|s| s.1).unwrap_or_default(),
                        if r.metadata.contains_key(meta::REVERTED) {
                            " (its fault was reverted)"
                        } else {
                            ""
                        }
                    );
                    self.set_task(t, TaskState::Canceled, &msg).await;
                    self.task_finished(t, &resource, TaskState::Canceled, Some(&msg))
                        .await;
                    return TaskState::Canceled;
                }
                other => {
                    let err = match other {
                        Ok(r) => r.error.unwrap_or_else(|| format!("{:?}", r.status)),
                        Err(e) => e.chain_message(),
                    };
                    if attempt <= retries && stopped.is_none() {
                        let backoff = Duration::from_secs(1 << (attempt - 1).min(5));
                        tracing::info!(component = "campaign", campaign = %self.id, step = %step.name,
                            resource = %resource.key, attempt, error = %err, "task failed; retrying in {backoff:?}");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = self.control.stopping() => {}
                        }
                        continue;
                    }
                    let msg = if attempt > 1 {
                        format!("{err} (after {attempt} attempts)")
                    } else {
                        err
                    };
                    self.set_task(t, TaskState::Failed, &msg).await;
                    self.task_finished(t, &resource, TaskState::Failed, Some(&msg))
                        .await;
                    let why = self
                        .tracker
                        .lock()
                        .expect("tracker")
                        .task_failed(Instant::now());
                    if let Some(why) = why {
                        self.control.stop(CampaignState::Aborted, why.0);
                    }
                    return TaskState::Failed;
                }
            }
        }
    }

    async fn task_finished(&self, t: TaskRef, r: &Resource, state: TaskState, error: Option<&str>) {
        let step = self.step(t.step).name.clone();
        self.publish_about(
            events::TASK_FINISHED,
            Some(&step),
            Some(r),
            &[
                ("state", super::report::task_state_name(state).into()),
                ("error", error.unwrap_or_default().into()),
            ],
        )
        .await;
    }

    /// One attempt through the engine.
    async fn execute(
        &self,
        t: TaskRef,
        resource: &Arc<Resource>,
        step: &Step,
        attempt: u32,
    ) -> Result<ExecutionResult> {
        let execution_id = uuid::Uuid::new_v4().to_string();
        let mut request = ExecutionRequest::new(
            step.plugin.clone(),
            resource.clone(),
            self.principal.clone(),
        )
        .with_config(PluginConfig(step.config.clone()))
        .with_timeout(
            step.timeout
                .unwrap_or(self.campaign.settings.task_timeout)
                .get(),
        );
        request.execution_id = execution_id.clone();
        request.labels.insert("campaign".into(), self.id.clone());
        request
            .labels
            .insert("campaign_name".into(), self.campaign.name.clone());
        request.labels.insert("step".into(), step.name.clone());
        request.labels.insert("node".into(), self.node.name.clone());
        if let Some(d) = step.duration {
            request.labels.insert(
                DURATION_LABEL.into(),
                humantime::format_duration(d.get()).to_string(),
            );
        }
        self.executions
            .lock()
            .expect("executions")
            .insert(execution_id.clone(), t);
        {
            let mut st = self.state.lock().expect("run state");
            let task = &mut st.steps[t.step].tasks[t.task];
            task.execution_id = Some(execution_id.clone());
            task.attempts = attempt;
            task.started_at.get_or_insert_with(Utc::now);
        }
        let handle = ire_core::ExecutionEngine::execute_async(&self.node.engine, request).await;
        let mut handle = match handle {
            Ok(h) => h,
            Err(e) => return Err(e),
        };
        self.handles
            .lock()
            .expect("handles")
            .insert(execution_id.clone(), handle.clone());
        // An abort that came while the request was being admitted.
        if self.control.stopped().is_some() {
            handle.cancel();
        }
        self.set_task(t, TaskState::Running, "").await;
        self.publish_about(events::TASK_STARTED, Some(&step.name), Some(resource), &[])
            .await;
        let result = handle.wait().await;
        self.handles.lock().expect("handles").remove(&execution_id);
        if let Ok(r) = &result {
            self.note_result(t, resource, r).await;
        }
        result
    }

    /// Keeps what a result says about the fault (id, token, snapshot), and starts measuring
    /// an action's fault from its end when the engine announced no injection.
    async fn note_result(&self, t: TaskRef, resource: &Arc<Resource>, r: &ExecutionResult) {
        let is_fault = self.is_fault(t.step);
        let start_watch = {
            let mut st = self.state.lock().expect("run state");
            let task = &mut st.steps[t.step].tasks[t.task];
            task.ended_at = Some(r.end_time);
            task.fault_id = r
                .metadata
                .get(meta::FAULT_ID)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .or(task.fault_id.take());
            task.token = r.metadata.get(meta::FENCING_TOKEN).and_then(|v| v.as_u64());
            task.snapshot = r
                .metadata
                .get(meta::SNAPSHOT)
                .and_then(|v| serde_json::from_value::<Snapshot>(v.clone()).ok());
            if r.is_success() && is_fault && task.injected_at.is_none() {
                task.injected_at = Some(r.end_time);
                Some(r.end_time)
            } else {
                None
            }
        };
        if let Some(at) = start_watch {
            let key = watch_key(&r.execution_id);
            if let Err(e) = self.node.fault_watch.fault_injected(&key, resource, at) {
                tracing::warn!(component = "campaign", error = %e, "fault not watched");
            }
        }
    }

    /// Starts measuring each fault of the campaign when the engine announces its injection.
    async fn follow_injections(self: Arc<Self>, mut sub: Subscription) {
        while let Some(e) = sub.recv().await {
            let Some(exec) = e.metadata.get("execution_id") else {
                continue;
            };
            let Some(t) = self
                .executions
                .lock()
                .expect("executions")
                .get(exec)
                .copied()
            else {
                continue;
            };
            if !self.is_fault(t.step) {
                continue;
            }
            let resource = {
                let mut st = self.state.lock().expect("run state");
                let task = &mut st.steps[t.step].tasks[t.task];
                if task.injected_at.is_some() {
                    continue;
                }
                task.injected_at = Some(e.timestamp);
                e.resource.clone()
            };
            if let Some(r) = resource {
                if let Err(err) =
                    self.node
                        .fault_watch
                        .fault_injected(&watch_key(exec), &r, e.timestamp)
                {
                    tracing::warn!(component = "campaign", error = %err, "fault not watched");
                }
            }
        }
    }

    /// Probes every `probe-interval` until told to stop; stops the campaign when an abort
    /// condition holds.
    async fn probe_loop(self: Arc<Self>, done: tokio_util::sync::CancellationToken) {
        let every = self.campaign.settings.probe_interval.get();
        let mut seen_failing: BTreeMap<String, bool> = BTreeMap::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = done.cancelled() => return,
            }
            if self.control.stopped().is_some() {
                return;
            }
            let round = self.prober.round().await;
            let now = Instant::now();
            let failures: Vec<&super::probes::ProbeResult> =
                round.iter().filter(|r| !r.ok).collect();
            {
                let mut st = self.state.lock().expect("run state");
                st.steady_state.rounds_during += 1;
                for f in &failures {
                    // The first failure of each spell, not every round's.
                    if !seen_failing.get(&f.name).copied().unwrap_or(false)
                        && st.steady_state.failures_during.len() < 100
                    {
                        st.steady_state.failures_during.push(ProbeFailure {
                            at: Utc::now(),
                            result: (*f).clone(),
                        });
                    }
                }
            }
            for r in &round {
                seen_failing.insert(r.name.clone(), !r.ok);
            }
            self.publish(
                events::PROBES,
                None,
                &[
                    ("ok", failures.is_empty().into()),
                    (
                        "failures",
                        failures
                            .iter()
                            .map(|f| format!("{}: {}", f.name, f.message))
                            .collect::<Vec<_>>()
                            .into(),
                    ),
                ],
            )
            .await;
            let why = self.tracker.lock().expect("tracker").observe(&round, now);
            if let Some(why) = why {
                self.control.stop(CampaignState::Aborted, why.0);
                return;
            }
        }
    }

    /// Reverts what completed steps did, newest first (`on-error: rollback`).
    async fn rollback(&self) {
        let order: Vec<usize> = {
            let st = self.state.lock().expect("run state");
            st.completion_order.iter().rev().copied().collect()
        };
        for i in order {
            let Some(plugin) = self.plugin(i) else {
                continue;
            };
            if !plugin.supports_rollback() {
                continue;
            }
            let tasks: Vec<TaskReport> = self.state.lock().expect("run state").steps[i]
                .tasks
                .iter()
                .filter(|t| t.state == TaskState::Succeeded && t.snapshot.is_some())
                .cloned()
                .collect();
            let reverts = tasks.iter().map(|t| self.revert_task(i, t));
            for (t, r) in tasks.iter().zip(futures::future::join_all(reverts).await) {
                let mut st = self.state.lock().expect("run state");
                match r {
                    Ok(()) => st
                        .reverted_at_end
                        .push(t.fault_id.clone().unwrap_or_else(|| t.resource.to_string())),
                    Err(e) => st.revert_failures.push(format!("{}: {e}", t.resource)),
                }
            }
        }
    }

    async fn revert_task(&self, i: usize, t: &TaskReport) -> Result<()> {
        let snapshot = t.snapshot.clone().expect("filtered on snapshot");
        // A fault already reverted (a timed one) needs nothing.
        if let Some(id) = &t.fault_id {
            if let Ok(f) = ire_core::FaultLedger::fault(&self.node.store, id).await {
                if matches!(f.state, FaultState::Reverted { .. }) {
                    return Ok(());
                }
            }
        }
        let adapter = self.node.adapter(t.resource.adapter())?;
        let resource = adapter
            .get_resource(t.resource.as_str())
            .await
            .unwrap_or_else(|_| stand_in(&t.resource, &snapshot));
        let mut request = ExecutionRequest::new(
            self.step(i).plugin.clone(),
            resource,
            self.principal.clone(),
        );
        request.execution_id = t.execution_id.clone().unwrap_or_default();
        request.labels.insert("campaign".into(), self.id.clone());
        request
            .labels
            .insert("step".into(), self.step(i).name.clone());
        let r = self
            .node
            .engine
            .revert(request, snapshot, t.fault_id.clone())
            .await?;
        if r.is_success() {
            Ok(())
        } else {
            Err(Error::other(
                ire_core::ErrorClass::Fatal,
                r.error.unwrap_or_else(|| format!("{:?}", r.status)),
                None,
            ))
        }
    }

    /// Reverts, all at once, every fault of the campaign still active in the ledger.
    async fn revert_remaining(&self) {
        let active = match self.node.store.query_faults_active(&self.id).await {
            Ok(a) => a,
            Err(e) => {
                self.state
                    .lock()
                    .expect("run state")
                    .revert_failures
                    .push(format!("reading the ledger: {e}"));
                return;
            }
        };
        let reverts = active
            .iter()
            .map(|f| revert_entry(&self.node, f, &self.principal));
        let results = futures::future::join_all(reverts).await;
        let mut st = self.state.lock().expect("run state");
        for (f, r) in active.iter().zip(results) {
            match r {
                Ok(()) => st.reverted_at_end.push(f.id.clone()),
                Err(e) => st
                    .revert_failures
                    .push(format!("{} on {}: {e}", f.id, f.resource)),
            }
        }
    }

    /// Waits (up to `recovery-timeout` in all) for faulted resources to recover, then takes
    /// the monitor's measurements into the report.
    async fn collect_timings(&self) {
        let deadline = tokio::time::Instant::now() + self.campaign.settings.recovery_timeout.get();
        let watched: Vec<(String, TaskRef)> = {
            let execs = self.executions.lock().expect("executions").clone();
            let st = self.state.lock().expect("run state");
            execs
                .into_iter()
                .filter(|(id, t)| {
                    let task = &st.steps[t.step].tasks[t.task];
                    task.injected_at.is_some() && task.execution_id.as_deref() == Some(id.as_str())
                })
                .collect()
        };
        // A fault that was never seen to do harm is not waited for past a grace period
        // (a few probes after its task ended); one that was is waited for until it
        // recovers or the recovery timeout passes.
        let grace = chrono::Duration::from_std(
            (self.node.config.monitor.probe_interval * 4).max(Duration::from_secs(2)),
        )
        .unwrap_or_default();
        let waits = watched.iter().map(|(id, t)| async move {
            let key = watch_key(id);
            let ended = {
                let st = self.state.lock().expect("run state");
                st.steps[t.step].tasks[t.task].ended_at
            }
            .unwrap_or_else(Utc::now);
            loop {
                let now = tokio::time::Instant::now();
                let seen = self.node.fault_watch.timings(&key).await.ok().flatten();
                let done = match &seen {
                    None => true,
                    Some(s) => {
                        s.recovered_at.is_some()
                            || s.gave_up
                            || (s.detected_at.is_none() && Utc::now() > ended + grace)
                    }
                };
                if done || now >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (*t, self.node.fault_watch.finish(&key).await)
        });
        for (t, timings) in futures::future::join_all(waits).await {
            if let Ok(Some(timings)) = timings {
                let mut st = self.state.lock().expect("run state");
                let task = &mut st.steps[t.step].tasks[t.task];
                task.time_to_detect = timings.time_to_detect();
                task.time_to_recover = timings.time_to_recover();
            }
        }
    }
}

/// Aborts a helper task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether a step runs given how its dependencies ended (`Err`: why it is skipped).
fn should_run(when: When, deps: &[(String, StepState)]) -> std::result::Result<(), String> {
    let failed: Vec<&str> = deps
        .iter()
        .filter(|(_, s)| matches!(s, StepState::Failed | StepState::Aborted))
        .map(|(n, _)| n.as_str())
        .collect();
    match when {
        When::Always => Ok(()),
        When::OnSuccess if failed.is_empty() => Ok(()),
        When::OnSuccess => Err(format!(
            "when: on-success, and {} failed",
            failed.join(", ")
        )),
        When::OnFailure if !failed.is_empty() => Ok(()),
        When::OnFailure => Err("when: on-failure, and no dependency failed".into()),
    }
}

fn on_error_name(e: OnError) -> &'static str {
    match e {
        OnError::Continue => "continue",
        OnError::Abort => "abort",
        OnError::Retry => "retry",
        OnError::Rollback => "rollback",
    }
}

/// What the selection knows of each resource: its health now and who else holds its lease.
pub async fn candidates(
    locks: &dyn LockService,
    health: &dyn HealthSource,
    resources: &[Arc<Resource>],
) -> Vec<Candidate> {
    let infos = resources.iter().map(|r| async move {
        let healthy = health.healthy(r).await;
        let leased_by = match locks.lock_info(&r.key).await {
            Ok(info) => match (info.hold, info.lease) {
                (Some(h), _) => Some(format!("operator hold by {} ({})", h.by, h.reason)),
                (None, Some(l)) => Some(l.holder),
                (None, None) => None,
            },
            Err(e) => Some(format!("unknown (lock service: {e})")),
        };
        Candidate {
            key: r.key.to_string(),
            healthy,
            leased_by,
        }
    });
    futures::future::join_all(infos).await
}

/// Reverts a ledger entry through the engine (lease, plugin rollback, ledger update).
async fn revert_entry(node: &Node, f: &ire_core::FaultEntry, principal: &str) -> Result<()> {
    let snapshot = f.snapshot.clone().ok_or_else(|| {
        Error::invalid(
            format!("fault {}", f.id),
            "the ledger entry has no snapshot to revert from",
        )
    })?;
    let adapter = node.adapter(f.resource.adapter())?;
    let resource = adapter
        .get_resource(f.resource.as_str())
        .await
        .unwrap_or_else(|_| stand_in(&f.resource, &snapshot));
    let mut request = ExecutionRequest::new(f.plugin.clone(), resource, principal.to_owned());
    request.execution_id = f.execution_id.clone();
    if let Some(c) = &f.campaign {
        request.labels.insert("campaign".into(), c.clone());
    }
    if let Some(s) = &f.step {
        request.labels.insert("step".into(), s.clone());
    }
    let r = node
        .engine
        .revert(request, snapshot, Some(f.id.clone()))
        .await?;
    if r.is_success() {
        Ok(())
    } else {
        Err(Error::other(
            ire_core::ErrorClass::Fatal,
            r.error.unwrap_or_else(|| format!("{:?}", r.status)),
            None,
        ))
    }
}

/// A resource the adapter no longer lists, rebuilt from its key and snapshot so that its
/// fault can still be reverted (the plugin decides what that means for a gone resource).
fn stand_in(key: &ResourceKey, snapshot: &Snapshot) -> Resource {
    Resource {
        key: key.clone(),
        id: snapshot.resource_id.clone(),
        name: key.path().last().unwrap_or_default().to_owned(),
        kind: String::new(),
        labels: Default::default(),
        annotations: Default::default(),
        status: Default::default(),
        spec: Default::default(),
        metadata: Default::default(),
    }
}

/// Ledger queries the executor needs.
trait CampaignLedger {
    /// The campaign's faults that are still active.
    async fn query_faults_active(&self, campaign: &str) -> Result<Vec<ire_core::FaultEntry>>;
}

impl CampaignLedger for ire_consensus::client::ConsensusClient {
    async fn query_faults_active(&self, campaign: &str) -> Result<Vec<ire_core::FaultEntry>> {
        ire_core::FaultLedger::query_faults(
            self,
            &FaultQuery {
                campaign: Some(campaign.to_owned()),
                active_only: true,
                ..FaultQuery::default()
            },
        )
        .await
    }
}
