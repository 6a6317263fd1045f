//! The execution engine's contract: requests, strategies, backoff, workflows and handles.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::plugin::{
    ExecutionResult, ExecutionStatus, Plugin, PluginConfig, PluginFilter, PluginMetadata,
};
use crate::resource::{Labels, Resource};

/// A request to run a plugin on a resource.
#[derive(Clone)]
pub struct ExecutionRequest {
    /// The execution's id (generated when empty).
    pub execution_id: String,
    /// The plugin to run.
    pub plugin_name: String,
    /// The resource to run it on; shared, since the engine hands it to the execution, its
    /// events, records and audit entries without copying it.
    pub resource: Arc<Resource>,
    /// The step's config.
    pub config: PluginConfig,
    /// How to run it (the engine's default when None).
    pub strategy: Option<Arc<dyn ExecutionStrategy>>,
    /// Who asks.
    pub principal: String,
    /// The lifecycle's time limit (the engine's default when None).
    pub timeout: Option<Duration>,
    /// Campaign, step, and other labels carried into events and records.
    pub labels: Labels,
}

impl std::fmt::Debug for ExecutionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutionRequest")
            .field("execution_id", &self.execution_id)
            .field("plugin_name", &self.plugin_name)
            .field("resource", &self.resource.key)
            .field(
                "strategy",
                &self.strategy.as_ref().map(|s| s.name().to_owned()),
            )
            .field("principal", &self.principal)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ExecutionRequest {
    /// A request with defaults for everything but the plugin, resource and principal (a
    /// [`Resource`] or an `Arc<Resource>`).
    pub fn new(
        plugin_name: impl Into<String>,
        resource: impl Into<Arc<Resource>>,
        principal: impl Into<String>,
    ) -> Self {
        ExecutionRequest {
            execution_id: String::new(),
            plugin_name: plugin_name.into(),
            resource: resource.into(),
            config: PluginConfig::empty(),
            strategy: None,
            principal: principal.into(),
            timeout: None,
            labels: Labels::new(),
        }
    }

    /// Sets the config.
    pub fn with_config(mut self, config: PluginConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the strategy.
    pub fn with_strategy(mut self, strategy: Arc<dyn ExecutionStrategy>) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// Sets the timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// One full run of a plugin's lifecycle, which a strategy may run several times.
pub trait Attempt: Send + Sync {
    /// The plugin being run.
    fn plugin(&self) -> &Arc<dyn Plugin>;
    /// The resource it runs on.
    fn resource(&self) -> &Resource;
    /// Runs the lifecycle once. `Err` when it did not succeed; the error's class tells
    /// whether another attempt may help.
    fn run(&self) -> BoxFuture<'_, Result<ExecutionResult>>;
}

/// How an execution is run: once, with retries, behind a circuit breaker, rate limited, or
/// any custom way (the seed's ExecutionStrategy).
#[async_trait]
pub trait ExecutionStrategy: Send + Sync + 'static {
    /// Runs the attempt as the strategy sees fit.
    async fn execute(&self, attempt: &dyn Attempt) -> Result<ExecutionResult>;
    /// The strategy's name.
    fn name(&self) -> &str;
}

/// The delay before a retry.
pub trait BackoffStrategy: Send + Sync + 'static {
    /// The delay before retry number `attempt` (1 is the first retry).
    fn next_delay(&self, attempt: u32) -> Duration;
}

/// Exponential backoff: `initial`, then doubling, capped at `max` (1 s, 2 s, 4 s ... 60 s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExponentialBackoff {
    /// The first retry's delay.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// The largest delay.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for ExponentialBackoff {
    fn default() -> Self {
        ExponentialBackoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl BackoffStrategy for ExponentialBackoff {
    fn next_delay(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(31);
        self.initial.saturating_mul(1u32 << shift).min(self.max)
    }
}

/// What to do when a workflow step fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorAction {
    /// Record the failure and go on with the steps that do not depend on it.
    Continue,
    /// Stop the workflow.
    Abort,
    /// Run the step again.
    Retry,
    /// Roll back the completed steps, newest first, and stop.
    Rollback,
}

/// Decides what a failed step leads to.
#[async_trait]
pub trait ErrorHandler: Send + Sync + 'static {
    /// The action for this failure; `attempt` counts the step's runs so far.
    async fn handle(&self, step: &WorkflowStep, error: &Error, attempt: u32) -> ErrorAction;
}

/// An error handler that always answers the same, retrying up to `max_retries` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedErrorHandler {
    /// The action.
    pub action: ErrorAction,
    /// For `Retry`: the runs after which the step gives up and the workflow aborts.
    pub max_retries: u32,
}

#[async_trait]
impl ErrorHandler for FixedErrorHandler {
    async fn handle(&self, _step: &WorkflowStep, _error: &Error, attempt: u32) -> ErrorAction {
        match self.action {
            ErrorAction::Retry if attempt > self.max_retries => ErrorAction::Abort,
            a => a,
        }
    }
}

/// A custom step condition: a predicate over the step results so far.
pub type StepPredicate = Arc<dyn Fn(&BTreeMap<String, ExecutionResult>) -> bool + Send + Sync>;

/// When a step runs, given the outcome of the steps it depends on.
#[derive(Clone)]
pub enum StepCondition {
    /// Always.
    Always,
    /// When every dependency succeeded.
    OnSuccess,
    /// When some dependency failed.
    OnFailure,
    /// When the predicate over the results so far says so.
    Custom(StepPredicate),
}

impl std::fmt::Debug for StepCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepCondition::Always => f.write_str("Always"),
            StepCondition::OnSuccess => f.write_str("OnSuccess"),
            StepCondition::OnFailure => f.write_str("OnFailure"),
            StepCondition::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// One step of a workflow.
#[derive(Clone)]
pub struct WorkflowStep {
    /// Unique name within the workflow.
    pub name: String,
    /// The request the step makes.
    pub request: ExecutionRequest,
    /// Steps that must have finished first.
    pub depends_on: Vec<String>,
    /// Runs concurrently with other ready parallel steps; sequential steps run alone.
    pub parallel: bool,
    /// When the step runs (default: on success of its dependencies).
    pub condition: StepCondition,
    /// What its failure leads to (default: abort).
    pub on_error: Arc<dyn ErrorHandler>,
}

impl std::fmt::Debug for WorkflowStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowStep")
            .field("name", &self.name)
            .field("request", &self.request)
            .field("depends_on", &self.depends_on)
            .field("parallel", &self.parallel)
            .field("condition", &self.condition)
            .finish_non_exhaustive()
    }
}

impl WorkflowStep {
    /// A sequential step that runs on success of its dependencies and aborts on failure.
    pub fn new(name: impl Into<String>, request: ExecutionRequest) -> Self {
        WorkflowStep {
            name: name.into(),
            request,
            depends_on: Vec::new(),
            parallel: false,
            condition: StepCondition::OnSuccess,
            on_error: Arc::new(FixedErrorHandler {
                action: ErrorAction::Abort,
                max_retries: 0,
            }),
        }
    }
}

/// A DAG of steps.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// Its name.
    pub name: String,
    /// Its steps.
    pub steps: Vec<WorkflowStep>,
}

/// The outcome of a workflow: every step's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowResult {
    /// Success when every step that ran succeeded or was handled with continue.
    pub status: ExecutionStatus,
    /// Each step's result, skipped steps included.
    pub step_results: BTreeMap<String, ExecutionResult>,
    /// When it started.
    pub start_time: DateTime<Utc>,
    /// When it ended.
    pub end_time: DateTime<Utc>,
    /// How long it took.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

/// A running execution (the seed's Future): wait for it, cancel it, ask if it is done.
#[derive(Debug, Clone)]
pub struct ExecutionHandle {
    execution_id: String,
    result: Arc<ResultSlot>,
    cancel: CancellationToken,
}

const PENDING: u8 = 0;
const DONE: u8 = 1;
const CLOSED: u8 = 2;

/// An execution's result, set once: lighter than a watch channel (an engine may have
/// 10,000 executions in flight, each with one).
struct ResultSlot {
    state: AtomicU8,
    result: Mutex<Option<ExecutionResult>>,
    changed: Notify,
}

impl std::fmt::Debug for ResultSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultSlot")
            .field("state", &self.state.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl ResultSlot {
    /// Waits until the result is in (true) or will never come (false).
    async fn settled(&self) -> bool {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a result set in between is not missed.
            changed.as_mut().enable();
            match self.state.load(Ordering::Acquire) {
                DONE => return true,
                CLOSED => return false,
                _ => changed.await,
            }
        }
    }

    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        self.changed.notify_waiters();
    }
}

/// The engine's end of an execution's handles: it sets the result once. Dropped without
/// a result, it tells the handles that the execution ended without one.
#[derive(Debug)]
pub struct ResultSender {
    slot: Arc<ResultSlot>,
}

impl ResultSender {
    /// Delivers the result to every handle.
    pub fn send(self, result: ExecutionResult) {
        *self.slot.result.lock().expect("result lock") = Some(result);
        self.slot.set(DONE);
    }
}

impl Drop for ResultSender {
    fn drop(&mut self) {
        if self.slot.state.load(Ordering::Acquire) == PENDING {
            self.slot.set(CLOSED);
        }
    }
}

impl ExecutionHandle {
    /// A handle canceled through `cancel`, and the sender that delivers its result.
    pub fn with_sender(
        execution_id: impl Into<String>,
        cancel: CancellationToken,
    ) -> (ResultSender, Self) {
        let slot = Arc::new(ResultSlot {
            state: AtomicU8::new(PENDING),
            result: Mutex::new(None),
            changed: Notify::new(),
        });
        let handle = ExecutionHandle {
            execution_id: execution_id.into(),
            result: slot.clone(),
            cancel,
        };
        (ResultSender { slot }, handle)
    }

    /// The execution's id.
    pub fn execution_id(&self) -> &str {
        &self.execution_id
    }

    /// Waits for the result.
    pub async fn wait(&mut self) -> Result<ExecutionResult> {
        let result = match self.result.settled().await {
            true => self.result.result.lock().expect("result lock").clone(),
            false => None,
        };
        result.ok_or_else(|| Error::Canceled {
            message: format!("execution {} ended without a result", self.execution_id),
        })
    }

    /// Asks the execution to stop; its cleanup still runs.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// True once the result is in.
    pub fn is_done(&self) -> bool {
        self.result.state.load(Ordering::Acquire) == DONE
    }

    /// Resolves when the execution is done.
    pub async fn done(&mut self) {
        self.result.settled().await;
    }
}

/// Runs plugins (the seed's ExecutionEngine).
#[async_trait]
pub trait ExecutionEngine: Send + Sync + 'static {
    /// Registers a plugin.
    async fn register_plugin(&self, plugin: Arc<dyn Plugin>) -> Result<()>;
    /// Unregisters a plugin.
    async fn unregister_plugin(&self, name: &str) -> Result<()>;
    /// A registered plugin.
    async fn get_plugin(&self, name: &str) -> Result<Arc<dyn Plugin>>;
    /// Registered plugins that match.
    async fn list_plugins(&self, filter: &PluginFilter) -> Result<Vec<PluginMetadata>>;
    /// Runs a request to the end.
    async fn execute(&self, request: ExecutionRequest) -> Result<ExecutionResult>;
    /// Starts a request and returns its handle.
    async fn execute_async(&self, request: ExecutionRequest) -> Result<ExecutionHandle>;
    /// Runs a workflow to the end.
    async fn execute_workflow(&self, workflow: Workflow) -> Result<WorkflowResult>;
    /// Cancels an execution by id.
    async fn cancel(&self, execution_id: &str) -> Result<()>;
    /// An execution's status by id.
    async fn status(&self, execution_id: &str) -> Result<ExecutionStatus>;
    /// Sets the number of executions that run at once.
    async fn set_concurrency_limit(&self, limit: usize) -> Result<()>;
    /// Sets the timeout of requests that name none.
    async fn set_default_timeout(&self, timeout: Duration) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str) -> ExecutionResult {
        ExecutionResult::finished(id, ExecutionStatus::Success, Utc::now())
    }

    #[tokio::test]
    async fn a_sent_result_reaches_every_handle() {
        let (tx, mut h) = ExecutionHandle::with_sender("e1", CancellationToken::new());
        let mut h2 = h.clone();
        assert!(!h.is_done());
        let waiter = tokio::spawn(async move { h2.wait().await });
        tokio::task::yield_now().await;
        tx.send(result("e1"));
        assert!(h.is_done());
        assert_eq!(h.wait().await.unwrap().execution_id, "e1");
        let r = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter was woken")
            .unwrap();
        assert_eq!(r.unwrap().execution_id, "e1");
        h.done().await;
    }

    #[tokio::test]
    async fn a_sender_dropped_without_a_result_ends_the_wait() {
        let (tx, mut h) = ExecutionHandle::with_sender("e2", CancellationToken::new());
        let mut h2 = h.clone();
        let waiter = tokio::spawn(async move { h2.wait().await });
        tokio::task::yield_now().await;
        drop(tx);
        let e = h.wait().await.unwrap_err();
        assert!(matches!(e, Error::Canceled { .. }), "{e}");
        let r = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter was woken")
            .unwrap();
        assert!(r.is_err());
        assert!(!h.is_done());
        h.done().await;
    }

    #[test]
    fn a_handle_cancels_through_its_token() {
        let token = CancellationToken::new();
        let (_tx, h) = ExecutionHandle::with_sender("e3", token.clone());
        h.cancel();
        assert!(token.is_cancelled());
        assert_eq!(h.execution_id(), "e3");
    }

    #[test]
    fn exponential_backoff_follows_the_seed() {
        let b = ExponentialBackoff::default();
        let delays: Vec<u64> = (1..=8).map(|a| b.next_delay(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.next_delay(1000).as_secs(), 60);
    }
}
