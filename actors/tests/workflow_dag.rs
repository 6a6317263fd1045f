//! Workflows (seed properties 25, 26, 74-78): DAG validation before anything runs,
//! dependency order, parallel and sequential steps, conditions, error handlers, results.

mod engine_common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use engine_common::Rig;
use ire_core::{
    Error, ErrorAction, ErrorClass, ErrorHandler, ExecutionEngine, ExecutionResult,
    ExecutionStatus, FixedErrorHandler, Plugin, PluginConfig, PluginContext, PluginMetadata,
    Resource, Result, Snapshot, StepCondition, Workflow, WorkflowStep,
};
use proptest::prelude::*;

/// A plugin that records when each step starts and ends, fails steps listed in its config
/// (`fail: n` fails the first n runs), and restores snapshots on rollback.
#[derive(Clone, Default)]
struct Recorder {
    log: Arc<Mutex<Vec<(String, &'static str)>>>,
    running: Arc<AtomicUsize>,
    max_running: Arc<AtomicUsize>,
    fails: Arc<Mutex<BTreeMap<String, u32>>>,
    rolled_back: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn events(&self) -> Vec<(String, &'static str)> {
        self.log.lock().unwrap().clone()
    }
    fn index(&self, step: &str, what: &str) -> usize {
        self.events()
            .iter()
            .position(|(s, w)| s == step && *w == what)
            .unwrap_or_else(|| panic!("{step} never {what}: {:?}", self.events()))
    }
    fn ran(&self, step: &str) -> bool {
        self.events()
            .iter()
            .any(|(s, w)| s == step && *w == "start")
    }
}

#[async_trait]
impl Plugin for Recorder {
    fn metadata(&self) -> PluginMetadata {
        PluginMetadata::new(
            "recorder",
            semver::Version::new(1, 0, 0),
            "records steps",
            ire_core::FaultKind::Action,
        )
    }
    async fn validate(&self, _: &PluginContext, _: &Resource) -> Result<()> {
        Ok(())
    }
    async fn pre_execute(&self, ctx: &PluginContext, r: &Resource) -> Result<Option<Snapshot>> {
        Snapshot::new("recorder", r, &ctx.labels["step"]).map(Some)
    }
    async fn execute(&self, ctx: &PluginContext, _: &Resource) -> Result<()> {
        let step = ctx.labels["step"].clone();
        self.log.lock().unwrap().push((step.clone(), "start"));
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        let ms = ctx
            .config
            .0
            .get("ms")
            .and_then(|v| v.as_u64())
            .unwrap_or(20);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.log.lock().unwrap().push((step.clone(), "end"));
        let mut fails = self.fails.lock().unwrap();
        if let Some(n) = fails.get_mut(&step) {
            if *n > 0 {
                *n -= 1;
                return Err(Error::other(
                    ErrorClass::Fatal,
                    format!("{step} failed"),
                    None,
                ));
            }
        }
        Ok(())
    }
    fn supports_rollback(&self) -> bool {
        true
    }
    async fn rollback(&self, _: &PluginContext, _: &Resource, s: &Snapshot) -> Result<()> {
        let step: String = s.state_as()?;
        self.rolled_back.lock().unwrap().push(step);
        Ok(())
    }
}

struct Fx {
    rig: Rig,
    rec: Recorder,
    res: Resource,
}

async fn fx() -> Fx {
    let rig = Rig::new().await;
    let rec = Recorder::default();
    rig.register(Arc::new(rec.clone())).await;
    let res = rig.resource("db");
    Fx { rig, rec, res }
}

impl Fx {
    fn step(&self, name: &str, deps: &[&str]) -> WorkflowStep {
        let mut s = WorkflowStep::new(name, self.rig.request("recorder", &self.res));
        s.depends_on = deps.iter().map(|d| (*d).to_owned()).collect();
        s
    }
    fn fail(&self, step: &str, times: u32) {
        self.rec.fails.lock().unwrap().insert(step.into(), times);
    }
}

fn wf(steps: Vec<WorkflowStep>) -> Workflow {
    Workflow {
        name: "wf".into(),
        steps,
    }
}

fn handler(action: ErrorAction, max_retries: u32) -> Arc<dyn ErrorHandler> {
    Arc::new(FixedErrorHandler {
        action,
        max_retries,
    })
}

#[tokio::test]
async fn cycles_are_rejected_before_anything_runs() {
    let f = fx().await;
    let w = wf(vec![
        f.step("a", &[]),
        f.step("b", &["c"]),
        f.step("c", &["d"]),
        f.step("d", &["b"]),
    ]);
    let e = f.rig.engine.execute_workflow(w).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("cycle") && msg.contains("b -> c -> d -> b"),
        "{msg}"
    );
    assert!(
        f.rec.events().is_empty(),
        "a step ran: {:?}",
        f.rec.events()
    );
}

#[tokio::test]
async fn unknown_dependencies_and_duplicate_names_are_rejected() {
    let f = fx().await;
    let e = f
        .rig
        .engine
        .execute_workflow(wf(vec![f.step("a", &["ghost"])]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unknown step \"ghost\""), "{e}");
    let e = f
        .rig
        .engine
        .execute_workflow(wf(vec![f.step("a", &[]), f.step("a", &[])]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("used by two steps"), "{e}");
    let mut bad = f.step("x", &[]);
    bad.request.plugin_name = "nope".into();
    let e = f
        .rig
        .engine
        .execute_workflow(wf(vec![bad]))
        .await
        .unwrap_err();
    assert!(e.chain_message().contains("steps[0] (x) plugin"), "{e}");
    assert!(f.rec.events().is_empty());
}

#[tokio::test]
async fn steps_start_only_after_their_dependencies_end() {
    let f = fx().await;
    // Declared out of order on purpose.
    let w = wf(vec![
        f.step("deploy", &["build", "test"]),
        f.step("test", &["build"]),
        f.step("build", &[]),
    ]);
    let r = f.rig.engine.execute_workflow(w).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Success);
    assert!(f.rec.index("build", "end") < f.rec.index("test", "start"));
    assert!(f.rec.index("test", "end") < f.rec.index("deploy", "start"));
}

#[tokio::test]
async fn parallel_steps_overlap_and_sequential_steps_run_alone() {
    let f = fx().await;
    let mut steps = Vec::new();
    for n in ["p1", "p2", "p3"] {
        let mut s = f.step(n, &[]);
        s.parallel = true;
        s.request.config = PluginConfig(serde_json::json!({"ms": 150}));
        steps.push(s);
    }
    steps.push(f.step("s1", &[]));
    steps.push(f.step("s2", &[]));
    let r = f.rig.engine.execute_workflow(wf(steps)).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Success);
    assert_eq!(f.rec.max_running.load(Ordering::SeqCst), 3);
    // Each sequential step started after everything before it ended, and ended before the
    // next started.
    let ev = f.rec.events();
    for s in ["s1", "s2"] {
        let start = f.rec.index(s, "start");
        let end = f.rec.index(s, "end");
        assert_eq!(end, start + 1, "{s} overlapped another step: {ev:?}");
    }
}

#[tokio::test]
async fn conditions_decide_which_steps_run_and_skipped_ones_are_reported() {
    let f = fx().await;
    f.fail("probe", 1);
    let mut probe = f.step("probe", &[]);
    probe.on_error = handler(ErrorAction::Continue, 0);
    let heal = {
        let mut s = f.step("heal", &["probe"]);
        s.condition = StepCondition::OnFailure;
        s
    };
    let celebrate = f.step("celebrate", &["probe"]); // on success: skipped
    let report = {
        let mut s = f.step("report", &["heal", "celebrate"]);
        s.condition = StepCondition::Always;
        s
    };
    let custom = {
        let mut s = f.step("custom", &["report"]);
        s.condition = StepCondition::Custom(Arc::new(|rs: &BTreeMap<String, ExecutionResult>| {
            rs.get("heal").is_some_and(|r| r.is_success())
        }));
        s
    };
    let custom_no = {
        let mut s = f.step("custom-no", &["report"]);
        s.condition =
            StepCondition::Custom(Arc::new(|_: &BTreeMap<String, ExecutionResult>| false));
        s
    };
    let r = f
        .rig
        .engine
        .execute_workflow(wf(vec![probe, heal, celebrate, report, custom, custom_no]))
        .await
        .unwrap();
    let st = |n: &str| r.step_results[n].status;
    assert_eq!(st("probe"), ExecutionStatus::Failed);
    assert_eq!(st("heal"), ExecutionStatus::Success);
    assert_eq!(st("celebrate"), ExecutionStatus::Skipped);
    assert_eq!(st("report"), ExecutionStatus::Success);
    assert_eq!(st("custom"), ExecutionStatus::Success);
    assert_eq!(st("custom-no"), ExecutionStatus::Skipped);
    assert!(!f.rec.ran("celebrate") && !f.rec.ran("custom-no"));
    assert_eq!(r.step_results.len(), 6);
    // A failure handled with continue does not fail the workflow.
    assert_eq!(r.status, ExecutionStatus::Success);
}

/// A handler that counts its calls.
struct Counting(AtomicUsize, ErrorAction);

#[async_trait]
impl ErrorHandler for Counting {
    async fn handle(&self, _: &WorkflowStep, _: &Error, _: u32) -> ErrorAction {
        self.0.fetch_add(1, Ordering::SeqCst);
        self.1
    }
}

#[tokio::test]
async fn abort_stops_the_workflow_and_reports_the_rest_skipped() {
    let f = fx().await;
    f.fail("b", 1);
    let h = Arc::new(Counting(AtomicUsize::new(0), ErrorAction::Abort));
    let mut b = f.step("b", &["a"]);
    b.on_error = h.clone();
    let w = wf(vec![
        f.step("a", &[]),
        b,
        f.step("c", &["b"]),
        f.step("d", &["a"]),
    ]);
    let r = f.rig.engine.execute_workflow(w).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Failed);
    assert_eq!(
        h.0.load(Ordering::SeqCst),
        1,
        "the handler was not called once"
    );
    assert_eq!(r.step_results["b"].status, ExecutionStatus::Failed);
    assert_eq!(r.step_results["c"].status, ExecutionStatus::Skipped);
    assert_eq!(r.step_results.len(), 4);
    assert!(!f.rec.ran("c"));
}

#[tokio::test]
async fn retry_runs_a_failed_step_again_until_the_handler_gives_up() {
    let f = fx().await;
    f.fail("flaky", 2);
    let mut flaky = f.step("flaky", &[]);
    flaky.on_error = handler(ErrorAction::Retry, 3);
    let r = f
        .rig
        .engine
        .execute_workflow(wf(vec![flaky, f.step("after", &["flaky"])]))
        .await
        .unwrap();
    assert_eq!(r.status, ExecutionStatus::Success);
    assert_eq!(r.step_results["flaky"].status, ExecutionStatus::Success);
    assert_eq!(
        f.rec
            .events()
            .iter()
            .filter(|(s, w)| s == "flaky" && *w == "start")
            .count(),
        3
    );
    assert!(f.rec.ran("after"));

    let g = fx().await;
    g.fail("down", 10);
    let mut down = g.step("down", &[]);
    down.on_error = handler(ErrorAction::Retry, 2);
    let r = g.rig.engine.execute_workflow(wf(vec![down])).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Failed);
    assert_eq!(r.step_results["down"].attempts, 3);
}

#[tokio::test]
async fn rollback_reverts_completed_steps_newest_first() {
    let f = fx().await;
    f.fail("third", 1);
    let mut third = f.step("third", &["second"]);
    third.on_error = handler(ErrorAction::Rollback, 0);
    let w = wf(vec![
        f.step("first", &[]),
        f.step("second", &["first"]),
        third,
    ]);
    let r = f.rig.engine.execute_workflow(w).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Failed);
    // "third" rolled itself back when its execute failed (the lifecycle); then the workflow
    // reverted the completed steps, newest first.
    assert_eq!(
        *f.rec.rolled_back.lock().unwrap(),
        ["third", "second", "first"]
    );
    for s in ["first", "second"] {
        assert_eq!(
            r.step_results[s].metadata["rolledBack"],
            serde_json::json!(true)
        );
    }
}

#[derive(Debug, Clone)]
struct Dag {
    deps: Vec<Vec<usize>>,
    parallel: Vec<bool>,
}

fn dag() -> impl Strategy<Value = Dag> {
    (1usize..7).prop_flat_map(|n| {
        let deps = (0..n)
            .map(|i| proptest::sample::subsequence((0..i).collect::<Vec<_>>(), 0..=i.min(3)))
            .collect::<Vec<_>>();
        (deps, proptest::collection::vec(any::<bool>(), n))
            .prop_map(|(deps, parallel)| Dag { deps, parallel })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Properties 25, 75, 77: for any DAG, every step runs after all its dependencies
    /// ended, and the result holds one result per step.
    #[test]
    fn any_dag_runs_in_dependency_order(d in dag()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let f = fx().await;
            let names: Vec<String> = (0..d.deps.len()).map(|i| format!("s{i}")).collect();
            // Shuffle the declaration order: reverse it.
            let mut steps = Vec::new();
            for i in (0..d.deps.len()).rev() {
                let deps: Vec<&str> = d.deps[i].iter().map(|&j| names[j].as_str()).collect();
                let mut s = f.step(&names[i], &deps);
                s.parallel = d.parallel[i];
                s.request.config = PluginConfig(serde_json::json!({"ms": 2}));
                steps.push(s);
            }
            let r = f.rig.engine.execute_workflow(wf(steps)).await.unwrap();
            prop_assert_eq!(r.status, ExecutionStatus::Success);
            prop_assert_eq!(r.step_results.len(), d.deps.len());
            for (i, deps) in d.deps.iter().enumerate() {
                for &j in deps {
                    prop_assert!(f.rec.index(&names[j], "end") < f.rec.index(&names[i], "start"));
                }
            }
            Ok(())
        })?;
    }
}
