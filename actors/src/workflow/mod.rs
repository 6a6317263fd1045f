//! Workflows: a DAG of steps run through the engine (seed properties 25, 26, 74-78).
//!
//! Before anything runs, the workflow is planned: unique step names, known dependencies, no
//! cycle, known plugins; the plan is a topological order. Then steps start as soon as every
//! dependency has finished and their condition holds (a step whose condition is false is
//! recorded as skipped). Parallel steps run together; a sequential step runs alone. A failed
//! step's error handler decides: continue, abort, retry, or rollback (the completed steps are
//! reverted with their snapshots, newest first). The result holds every step's result,
//! skipped ones included.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use chrono::Utc;
use futures::stream::{FuturesUnordered, StreamExt};
use ire_core::{
    Error, ErrorAction, ErrorClass, ExecutionEngine, ExecutionResult, ExecutionStatus, Result,
    Snapshot, StepCondition, Workflow, WorkflowResult,
};

use crate::engine::{meta, Engine};
use crate::metric_names;
use crate::registry::find_cycle;

/// A validated workflow: its steps in topological order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowPlan {
    /// Step indexes in an order where every step comes after its dependencies (ties keep the
    /// declaration order).
    pub order: Vec<usize>,
    /// Each step's dependencies, as indexes.
    pub deps: Vec<Vec<usize>>,
}

/// Checks a workflow and orders its steps; nothing runs.
pub fn plan(workflow: &Workflow) -> Result<WorkflowPlan> {
    let field = |i: usize| format!("workflow {} steps[{i}]", workflow.name);
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, s) in workflow.steps.iter().enumerate() {
        if s.name.trim().is_empty() {
            return Err(Error::invalid(
                format!("{} name", field(i)),
                "must not be empty",
            ));
        }
        if index.insert(s.name.as_str(), i).is_some() {
            return Err(Error::invalid(
                format!("{} name", field(i)),
                format!("{:?} is used by two steps", s.name),
            ));
        }
    }
    let mut deps = Vec::with_capacity(workflow.steps.len());
    for (i, s) in workflow.steps.iter().enumerate() {
        let mut d = Vec::new();
        for dep in &s.depends_on {
            let Some(&j) = index.get(dep.as_str()) else {
                return Err(Error::invalid(
                    format!("{} ({}) depends-on", field(i), s.name),
                    format!("unknown step {dep:?}"),
                ));
            };
            if !d.contains(&j) {
                d.push(j);
            }
        }
        deps.push(d);
    }
    // Kahn's algorithm, taking ready steps in declaration order.
    let n = workflow.steps.len();
    let mut indegree: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependents = vec![Vec::new(); n];
    for (i, d) in deps.iter().enumerate() {
        for &j in d {
            dependents[j].push(i);
        }
    }
    let mut ready: VecDeque<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_front() {
        order.push(i);
        let mut next: Vec<usize> = Vec::new();
        for &k in &dependents[i] {
            indegree[k] -= 1;
            if indegree[k] == 0 {
                next.push(k);
            }
        }
        next.sort_unstable();
        ready.extend(next);
    }
    if order.len() < n {
        let graph: BTreeMap<String, Vec<String>> = workflow
            .steps
            .iter()
            .map(|s| (s.name.clone(), s.depends_on.clone()))
            .collect();
        let cycle = find_cycle(&graph).unwrap_or_default();
        return Err(Error::invalid(
            format!("workflow {} depends-on", workflow.name),
            format!("steps form a cycle: {}", cycle.join(" -> ")),
        ));
    }
    Ok(WorkflowPlan { order, deps })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepState {
    Waiting,
    Running,
    Done,
}

fn failed(status: ExecutionStatus) -> bool {
    matches!(
        status,
        ExecutionStatus::Failed | ExecutionStatus::Timeout | ExecutionStatus::Canceled
    )
}

fn skipped(id: &str, why: &str) -> ExecutionResult {
    let mut r = ExecutionResult::finished(id, ExecutionStatus::Skipped, Utc::now());
    r.metadata.insert("skipped".into(), why.into());
    r
}

/// Runs a workflow through the engine.
pub async fn run(engine: &Engine, workflow: Workflow) -> Result<WorkflowResult> {
    let plan = plan(&workflow)?;
    for (i, s) in workflow.steps.iter().enumerate() {
        engine.registry().get(&s.request.plugin_name).map_err(|e| {
            e.context(format!(
                "workflow {} steps[{i}] ({}) plugin",
                workflow.name, s.name
            ))
        })?;
    }
    let started = Utc::now();
    let clock = tokio::time::Instant::now();
    let steps = &workflow.steps;
    let n = steps.len();
    let mut state = vec![StepState::Waiting; n];
    let mut results: BTreeMap<String, ExecutionResult> = BTreeMap::new();
    let mut runs = vec![0u32; n];
    let mut completed: Vec<usize> = Vec::new();
    let mut running = FuturesUnordered::new();
    let mut sequential_running = false;
    let mut stop: Option<ErrorAction> = None;
    let mut unhandled_failure = false;

    let launch = |i: usize| {
        let mut request = steps[i].request.clone();
        request.execution_id = String::new();
        request
            .labels
            .insert("workflow".into(), workflow.name.clone());
        request.labels.insert("step".into(), steps[i].name.clone());
        let engine = engine.clone();
        async move {
            let r = engine.execute(request).await;
            (i, r)
        }
    };

    loop {
        // Start what can start: repeat while conditions skip steps (which may free others).
        let mut progressed = stop.is_none();
        while progressed {
            progressed = false;
            for &i in &plan.order {
                if state[i] != StepState::Waiting
                    || !plan.deps[i].iter().all(|&d| state[d] == StepState::Done)
                {
                    continue;
                }
                let step = &steps[i];
                let dep_results: Vec<&ExecutionResult> = step
                    .depends_on
                    .iter()
                    .filter_map(|d| results.get(d))
                    .collect();
                let run_it = match &step.condition {
                    StepCondition::Always => true,
                    StepCondition::OnSuccess => dep_results.iter().all(|r| r.is_success()),
                    StepCondition::OnFailure => dep_results.iter().any(|r| failed(r.status)),
                    StepCondition::Custom(p) => p(&results),
                };
                if !run_it {
                    state[i] = StepState::Done;
                    results.insert(step.name.clone(), skipped(&step.name, "condition not met"));
                    progressed = true;
                    continue;
                }
                if sequential_running {
                    break;
                }
                if step.parallel {
                    state[i] = StepState::Running;
                    running.push(launch(i));
                } else if running.is_empty() {
                    state[i] = StepState::Running;
                    sequential_running = true;
                    running.push(launch(i));
                    break;
                } else {
                    // A sequential step waits until it can run alone.
                    break;
                }
            }
        }
        let Some((i, outcome)) = running.next().await else {
            break;
        };
        if running.is_empty() {
            sequential_running = false;
        }
        let step = &steps[i];
        runs[i] += 1;
        let result = match outcome {
            Ok(r) => r,
            Err(e) => {
                let mut r =
                    ExecutionResult::finished(&step.name, ExecutionStatus::Failed, Utc::now());
                r = r.with_error(&e);
                r
            }
        };
        if result.is_success() {
            state[i] = StepState::Done;
            completed.push(i);
            results.insert(step.name.clone(), result);
            continue;
        }
        let error = Error::other(
            result.error_class.unwrap_or(ErrorClass::Fatal),
            result
                .error
                .clone()
                .unwrap_or_else(|| format!("{:?}", result.status)),
            None,
        );
        let action = step.on_error.handle(step, &error, runs[i]).await;
        tracing::info!(component = "workflow", workflow = %workflow.name, step = %step.name, run = runs[i], ?action, "step failed");
        let mut result = result;
        result.attempts = runs[i];
        match action {
            ErrorAction::Retry if stop.is_none() => {
                // Runs again at once: it is still ready.
                state[i] = StepState::Waiting;
                results.insert(step.name.clone(), result);
                continue;
            }
            ErrorAction::Continue => {}
            ErrorAction::Abort | ErrorAction::Retry => {
                unhandled_failure = true;
                stop.get_or_insert(ErrorAction::Abort);
            }
            ErrorAction::Rollback => {
                unhandled_failure = true;
                stop = Some(ErrorAction::Rollback);
            }
        }
        state[i] = StepState::Done;
        results.insert(step.name.clone(), result);
    }

    for (i, s) in steps.iter().enumerate() {
        if state[i] != StepState::Done || !results.contains_key(&s.name) {
            results.insert(
                s.name.clone(),
                skipped(&s.name, "workflow stopped before it ran"),
            );
        }
    }

    if stop == Some(ErrorAction::Rollback) {
        for &i in completed.iter().rev() {
            let step = &steps[i];
            let Some(r) = results.get_mut(&step.name) else {
                continue;
            };
            let Some(snapshot) = r
                .metadata
                .get(meta::SNAPSHOT)
                .and_then(|v| serde_json::from_value::<Snapshot>(v.clone()).ok())
            else {
                r.metadata.insert("rolledBack".into(), false.into());
                r.metadata
                    .insert("rollbackSkipped".into(), "no snapshot".into());
                continue;
            };
            let fault_id = r
                .metadata
                .get(meta::FAULT_ID)
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            let mut request = step.request.clone();
            request.execution_id = r.execution_id.clone();
            request
                .labels
                .insert("workflow".into(), workflow.name.clone());
            request.labels.insert("step".into(), step.name.clone());
            match engine.revert(request, snapshot, fault_id).await {
                Ok(rr) if rr.is_success() => {
                    r.metadata.insert("rolledBack".into(), true.into());
                }
                Ok(rr) => {
                    r.metadata.insert("rolledBack".into(), false.into());
                    r.metadata.insert(
                        meta::ROLLBACK_ERROR.into(),
                        rr.error.unwrap_or_default().into(),
                    );
                }
                Err(e) => {
                    r.metadata.insert("rolledBack".into(), false.into());
                    r.metadata
                        .insert(meta::ROLLBACK_ERROR.into(), e.chain_message().into());
                }
            }
        }
    }

    let status = if unhandled_failure {
        ExecutionStatus::Failed
    } else {
        ExecutionStatus::Success
    };
    metrics::counter!(metric_names::WORKFLOW_RUNS_TOTAL, "status" => status.as_str()).increment(1);
    Ok(WorkflowResult {
        status,
        step_results: results,
        start_time: started,
        end_time: Utc::now(),
        duration: Duration::from_nanos(clock.elapsed().as_nanos() as u64),
    })
}
