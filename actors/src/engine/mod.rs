//! The engine: the seed's ExecutionEngine as a supervised actor.
//!
//! [`Engine`] is a cloneable handle implementing core's [`ExecutionEngine`]. A request is
//! authorized first (denied: an error, an audit entry, and the plugin is never called), then
//! sent to the [`EngineActor`], which admits it to the bounded [`WorkerPool`] (or rejects it
//! with `Overloaded`) and starts its task. The task takes the resource's lease through the
//! resource-lock actor, waits for a worker slot, runs the request's strategy over the plugin
//! lifecycle ([`lifecycle`]), releases the lease, and reports the result: to the caller's
//! [`ExecutionHandle`], the execution table, the reporter, the event bus and the audit log,
//! with every secret value the execution read scrubbed out.
//!
//! Tasks belong to the actor incarnation that started them: if the actor stops or crashes,
//! they are canceled (their rollback and cleanup still run) and reported failed.

pub mod lifecycle;
mod plugin_metrics;
mod pool;
pub mod strategy;
mod table;
mod timings;

pub use lifecycle::meta;
pub use pool::WorkerPool;
pub use strategy::{
    CircuitBreakerStrategy, CircuitState, RateLimitStrategy, RetryStrategy, SimpleStrategy,
};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use ire_core::event::event_type;
use ire_core::security::verb;
use ire_core::{
    Action, ActionResult, AuditEntry, AuditLogger, AuthorizationProvider, EnvironmentAdapter,
    Error, ErrorClass, Event, EventBus, ExecutionEngine, ExecutionHandle, ExecutionRecord,
    ExecutionRequest, ExecutionResult, ExecutionStatus, ExecutionStrategy, FaultKind, FaultLedger,
    Metadata, Monitor, Plugin, PluginContext, PluginFilter, PluginMetadata, PluginRegistry,
    ProgressUpdate, Reporter, Resource, Result, ResultSender, SecretProvider, Snapshot, Workflow,
    WorkflowResult,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, Message, SpawnErr};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::lock::LockManager;
use crate::metric_names;
use crate::monitor::FaultWatch;
use crate::security::{RecordingSecretProvider, RedactingEventBus, SecretRedactor};
use crate::supervisor::{ActorSlot, ChildSpec, PingFn, SpawnedChild};
use lifecycle::{Execution, LifecycleAttempt};
use plugin_metrics::EngineMetrics;
use table::ExecutionTable;

/// The request label that makes a fault timed: a humantime duration (`30s`) after which the
/// engine reverts it (the lease is renewed meanwhile).
pub const DURATION_LABEL: &str = "duration";

/// The principal recorded for actions that come from the node itself (plugin registration
/// at startup), which core's registry calls do not name.
pub const SYSTEM_PRINCIPAL: &str = "system";

/// The engine's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// This node's name (lease holders, ledger entries, records).
    pub node: String,
    /// Executions that run at once.
    pub concurrency_limit: usize,
    /// Executions that may wait for a worker; one more is rejected with `Overloaded`.
    pub queue_capacity: usize,
    /// The lifecycle's time limit when a request names none.
    pub default_timeout: Duration,
    /// How long a hook may take to return after its context was canceled.
    pub hook_grace: Duration,
    /// The time limit of PostExecute, Rollback and Cleanup each.
    pub cleanup_timeout: Duration,
    /// How long an execution waits for a resource's lease held by another.
    pub lock_wait: Duration,
    /// Finished executions whose status stays queryable.
    pub retained_results: usize,
    /// How long a stopping engine waits for its executions to roll back and clean up.
    pub shutdown_timeout: Duration,
    /// How long after an execution ends the monitor keeps watching its fault for the
    /// resource to recover; the record is written again with the time to recover.
    pub recovery_wait: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            node: "local".into(),
            concurrency_limit: 64,
            queue_capacity: 4096,
            default_timeout: Duration::from_secs(300),
            hook_grace: Duration::from_secs(5),
            cleanup_timeout: Duration::from_secs(30),
            lock_wait: Duration::from_secs(60),
            retained_results: 10_000,
            shutdown_timeout: Duration::from_secs(30),
            recovery_wait: Duration::from_secs(300),
        }
    }
}

/// Allows everything: for tools and tests that run without an authorization config.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

#[async_trait]
impl AuthorizationProvider for AllowAll {
    async fn authorize(&self, _: &str, _: &Action, _: Option<&Resource>) -> Result<()> {
        Ok(())
    }
}

/// Writes audit entries nowhere: for tools and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoAudit;

#[async_trait]
impl AuditLogger for NoAudit {
    async fn log_action(&self, _: AuditEntry) -> Result<()> {
        Ok(())
    }
}

/// What the engine works with.
#[derive(Clone)]
pub struct EngineDeps {
    /// Where plugins are registered.
    pub registry: Arc<dyn PluginRegistry>,
    /// Adapters by instance name (a resource key's first segment picks one).
    pub adapters: BTreeMap<String, Arc<dyn EnvironmentAdapter>>,
    /// Who may do what.
    pub auth: Arc<dyn AuthorizationProvider>,
    /// Where every action is recorded.
    pub audit: Arc<dyn AuditLogger>,
    /// Secrets plugins may read.
    pub secrets: Option<Arc<dyn SecretProvider>>,
    /// Where events go.
    pub event_bus: Option<Arc<dyn EventBus>>,
    /// Where execution records go.
    pub reporter: Option<Arc<dyn Reporter>>,
    /// The node's monitor, for plugins.
    pub monitor: Option<Arc<dyn Monitor>>,
    /// Leases: without it, executions on one resource are not serialized.
    pub locks: Option<LockManager>,
    /// Where faults are recorded before they are injected (needs `locks`).
    pub ledger: Option<Arc<dyn FaultLedger>>,
    /// The monitor actor's handle: every injected fault is watched, so that its record
    /// carries the time to detect and the time to recover.
    pub fault_watch: Option<FaultWatch>,
}

impl EngineDeps {
    /// Dependencies with a registry and adapters; everything else off and authorization
    /// open. Set the other fields for a real node.
    pub fn new(
        registry: Arc<dyn PluginRegistry>,
        adapters: BTreeMap<String, Arc<dyn EnvironmentAdapter>>,
    ) -> Self {
        EngineDeps {
            registry,
            adapters,
            auth: Arc::new(AllowAll),
            audit: Arc::new(NoAudit),
            secrets: None,
            event_bus: None,
            reporter: None,
            monitor: None,
            locks: None,
            ledger: None,
            fault_watch: None,
        }
    }
}

struct Core {
    config: RwLock<EngineConfig>,
    /// The config's node name, shared with every execution instead of copied.
    node: Arc<str>,
    deps: EngineDeps,
    pool: WorkerPool,
    table: ExecutionTable,
    /// Every execution task of every incarnation.
    tasks: TaskTracker,
    /// The strategy of requests that name none.
    simple: Arc<dyn ExecutionStrategy>,
    metrics: EngineMetrics,
}

/// The engine handle (cloneable; survives restarts of the actor).
#[derive(Clone)]
pub struct Engine {
    core: Arc<Core>,
    slot: ActorSlot<EngineMessage>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("pool", &self.core.pool)
            .field("slot", &self.slot)
            .finish()
    }
}

/// An execution on its way to the actor.
pub struct Job {
    request: ExecutionRequest,
    plugin: Arc<dyn Plugin>,
    /// Set for a workflow's rollback of a completed step (rare: boxed).
    revert: Option<Box<Revert>>,
}

/// A workflow's rollback of a completed step: its snapshot and ledger fault id.
struct Revert {
    snapshot: Snapshot,
    fault_id: Option<String>,
}

/// Messages of the engine actor.
pub enum EngineMessage {
    /// Admits and starts an execution.
    Submit {
        /// The execution.
        job: Box<Job>,
        /// Its handle, or the rejection.
        reply: oneshot::Sender<Result<ExecutionHandle>>,
    },
    /// Admits and starts many executions (answers in order).
    SubmitMany {
        /// The executions.
        jobs: Vec<Job>,
        /// Their handles or rejections.
        reply: oneshot::Sender<Vec<Result<ExecutionHandle>>>,
    },
    /// Heartbeat: answered at once by a healthy actor.
    Ping(oneshot::Sender<()>),
    /// Blocks the actor's mailbox for a while (exercises stuck-actor detection).
    Stall(Duration),
    /// Fails the actor on purpose, to exercise supervision (ire tests itself with chaos).
    Crash,
}

impl Message for EngineMessage {}

/// The engine actor's state: the incarnation's root cancel token and progress channel.
pub struct EngineState {
    root: CancellationToken,
    /// Every execution of this incarnation reports progress here; one task forwards it.
    progress: mpsc::Sender<ProgressUpdate>,
    guard: IncarnationGuard,
}

/// Cancels the incarnation's executions when its state goes away, a crash included.
///
/// Executions have tokens of their own rather than children of `root`: a child token is
/// added to and removed from its parent under the parent's lock, which 10,000 executions
/// starting and ending at once would all contend for. Stopping goes through the table instead.
struct IncarnationGuard {
    root: CancellationToken,
    core: Arc<Core>,
}

impl IncarnationGuard {
    fn cancel(&self) {
        self.root.cancel();
        self.core.table.cancel_live();
    }
}

impl Drop for IncarnationGuard {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// The engine actor.
pub struct EngineActor {
    core: Arc<Core>,
}

impl Actor for EngineActor {
    type Msg = EngineMessage;
    type State = EngineState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _: (),
    ) -> std::result::Result<Self::State, ActorProcessingErr> {
        let root = CancellationToken::new();
        // One channel and one forwarder per incarnation, not per execution: 10,000 running
        // executions must not mean 10,000 channels and tasks. The forwarder ends when the
        // incarnation and all its executions have dropped their senders.
        let (progress, rx) = mpsc::channel(PROGRESS_BUFFER);
        self.core
            .tasks
            .spawn(forward_progress(self.core.clone(), rx));
        Ok(EngineState {
            guard: IncarnationGuard {
                root: root.clone(),
                core: self.core.clone(),
            },
            root,
            progress,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        // A graceful stop: cancel what runs and wait (bounded) for rollback and cleanup.
        state.guard.cancel();
        let timeout = self
            .core
            .config
            .read()
            .expect("config lock")
            .shutdown_timeout;
        let waited = tokio::time::timeout(timeout, async {
            while self.core.table.live() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        if waited.is_err() {
            tracing::error!(
                component = "engine",
                live = self.core.table.live(),
                "executions still running after the shutdown timeout"
            );
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match message {
            EngineMessage::Submit { job, reply } => {
                let _ = reply.send(self.admit(job, state));
            }
            EngineMessage::SubmitMany { jobs, reply } => {
                let answers = jobs
                    .into_iter()
                    .map(|j| self.admit(Box::new(j), state))
                    .collect();
                let _ = reply.send(answers);
            }
            EngineMessage::Ping(reply) => {
                let _ = reply.send(());
            }
            EngineMessage::Stall(d) => tokio::time::sleep(d).await,
            EngineMessage::Crash => panic!("engine actor crashed on request"),
        }
        Ok(())
    }
}

impl EngineActor {
    fn admit(&self, job: Box<Job>, state: &EngineState) -> Result<ExecutionHandle> {
        let reservation = self.core.pool.reserve()?;
        let request = &job.request;
        let cancel = CancellationToken::new();
        let redactor = SecretRedactor::new();
        self.core.table.insert(
            &request.execution_id,
            cancel.clone(),
            redactor.clone(),
            request.resource.key.clone(),
        )?;
        let (tx, handle) =
            ExecutionHandle::with_sender(request.execution_id.clone(), cancel.clone());
        let span = tracing::info_span!("execution", component = "engine",
            execution_id = %request.execution_id, resource_id = %request.resource.key,
            plugin = %request.plugin_name);
        let run = Run {
            reservation: Some(reservation),
            cancel,
            root: state.root.clone(),
            redactor,
            progress: Some(state.progress.clone()),
            result_tx: tx,
        };
        self.core
            .tasks
            .spawn(run_job(self.core.clone(), job, run).instrument(span));
        Ok(handle)
    }
}

/// What the actor hands an admitted execution's task.
struct Run {
    /// Taken when the execution waits for its worker.
    reservation: Option<pool::Reservation>,
    cancel: CancellationToken,
    root: CancellationToken,
    redactor: SecretRedactor,
    /// Taken by the plugin's context.
    progress: Option<mpsc::Sender<ProgressUpdate>>,
    result_tx: ResultSender,
}

/// The started execution's shared state, with the plugin's context (built outside the
/// async functions so that the context takes no room in the task's future).
fn new_execution(
    core: &Core,
    job: &Job,
    run: &Run,
    progress: Option<mpsc::Sender<ProgressUpdate>>,
    env: Arc<dyn EnvironmentAdapter>,
    lease: Option<&crate::lock::LeaseGuard>,
    fault_duration: Option<Duration>,
) -> Arc<Execution> {
    let request = &job.request;
    let (default_timeout, hook_grace, cleanup_timeout) = {
        let c = core.config.read().expect("config lock");
        (c.default_timeout, c.hook_grace, c.cleanup_timeout)
    };
    let mut ctx = PluginContext::new(request.execution_id.clone(), env);
    // The first attempt's fault id (see `lifecycle::fault_id`).
    ctx.fault_id = lifecycle::fault_id(&request.execution_id, 1);
    ctx.timeout = request.timeout.unwrap_or(default_timeout);
    // The first attempt's token (see `Execution::base`).
    ctx.cancel = run.cancel.child_token();
    ctx.config = request.config.clone();
    ctx.monitor = core.deps.monitor.clone();
    ctx.reporter = core.deps.reporter.clone();
    ctx.event_bus =
        core.deps.event_bus.clone().map(|b| {
            Arc::new(RedactingEventBus::new(b, run.redactor.clone())) as Arc<dyn EventBus>
        });
    ctx.progress = progress;
    ctx.principal = request.principal.clone();
    ctx.auth = Some(core.deps.auth.clone());
    ctx.secrets = core.deps.secrets.clone().map(|s| {
        Arc::new(RecordingSecretProvider::new(s, run.redactor.clone())) as Arc<dyn SecretProvider>
    });
    ctx.fencing_token = lease.map(|l| l.token());
    ctx.span = tracing::Span::current();
    ctx.labels = request.labels.clone();
    Arc::new(Execution {
        plugin: job.plugin.clone(),
        plugin_name: request.plugin_name.clone(),
        resource: request.resource.clone(),
        base: ctx,
        cancel: run.cancel.clone(),
        lease_lost: lease.map(|l| l.lost().clone()),
        hook_grace,
        cleanup_timeout,
        fault_duration,
        node: core.node.clone(),
        ledger: lease.and(core.deps.ledger.clone()),
        fault_watch: core.deps.fault_watch.clone(),
        bus: core.deps.event_bus.clone(),
        redactor: run.redactor.clone(),
        attempts: AtomicU32::new(0),
        in_flight: AtomicU32::new(0),
        idle: Notify::new(),
        notes: Mutex::new(Metadata::new()),
    })
}

/// Runs one admitted execution to its end and reports it.
///
/// This future is the execution's task for as long as it runs (10,000 may be in flight), so
/// it holds little across its awaits: the job stays boxed, and what is large but short or
/// rare (the lease's acquire and release, a workflow's revert, the report at the end) is
/// boxed only while it runs.
///
/// An `async move` block rather than an `async fn`: the block keeps its captures in
/// place, where an `async fn` would also copy its arguments into locals.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn's future holds its arguments twice (about 70 bytes per execution)"
)]
fn run_job(
    core: Arc<Core>,
    job: Box<Job>,
    mut run: Run,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let started = Utc::now();
        let clock = tokio::time::Instant::now();
        let mut exec = None;
        let outcome = run_lifecycle(&core, &job, &mut run, &mut exec).await;
        let result = settle(&core, &job, &run, outcome, exec, started, clock);
        Box::pin(finish(&core, &job, result, clock.elapsed(), run.result_tx)).await;
    }
}

/// The strategy that runs the job.
fn strategy_of<'a>(core: &'a Core, job: &'a Job) -> &'a dyn ExecutionStrategy {
    job.request
        .strategy
        .as_deref()
        .unwrap_or_else(|| core.simple.as_ref())
}

/// The execution's final result, from the outcome of its lifecycle and what its attempts
/// noted, with every secret it read scrubbed out.
fn settle(
    core: &Core,
    job: &Job,
    run: &Run,
    outcome: Result<ExecutionResult>,
    exec: Option<Arc<Execution>>,
    started: chrono::DateTime<Utc>,
    clock: tokio::time::Instant,
) -> ExecutionResult {
    let mut result = match outcome {
        Ok(r) => r,
        Err(e) => failed_result(&job.request.execution_id, started, &e, &run.root),
    };
    result.start_time = started;
    if let Some(exec) = exec {
        result.attempts = exec.attempts.load(Ordering::SeqCst).max(1);
        for (k, v) in exec.notes.lock().expect("notes lock").iter() {
            result
                .metadata
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
    }
    result.duration = clock.elapsed();
    result.end_time = Utc::now();
    let strategy = strategy_of(core, job).name().to_owned();
    result
        .metadata
        .insert(meta::STRATEGY.into(), strategy.into());
    run.redactor.redact_result(&mut result);
    result
}

/// Takes the lease and a worker, and runs the strategy over the lifecycle (or a workflow's
/// revert); `exec` is set once the execution has started.
async fn run_lifecycle(
    core: &Core,
    job: &Job,
    run: &mut Run,
    exec: &mut Option<Arc<Execution>>,
) -> Result<ExecutionResult> {
    let request = &job.request;
    let id = &request.execution_id;
    let cancel = &run.cancel;
    let env = core
        .deps
        .adapters
        .get(request.resource.key.adapter())
        .cloned()
        .ok_or_else(|| {
            Error::not_found("adapter", request.resource.key.adapter())
                .context(format!("resolving the adapter of {}", request.resource.key))
        })?;
    let fault_duration = match request.labels.get(DURATION_LABEL) {
        Some(d) => Some(humantime::parse_duration(d).map_err(|e| {
            Error::invalid(
                format!("label {DURATION_LABEL} of execution {id}"),
                format!("{d:?}: {e}"),
            )
        })?),
        None => None,
    };
    let lock_wait = core.config.read().expect("config lock").lock_wait;

    // The lease first, then a worker: waiting for a busy resource does not hold a slot.
    // Both the acquire and the lease are boxed: only executions with a lease pay for them.
    let lease = match &core.deps.locks {
        Some(locks) => {
            let holder = format!("{}/{id}", core.node);
            let acquire = locks.acquire(&request.resource.key, &holder, lock_wait, cancel);
            Some(Box::new(Box::pin(acquire).await.map_err(|e| {
                e.context(format!("locking {}", request.resource.key))
            })?))
        }
        None => None,
    };
    let reservation = run.reservation.take().expect("an execution starts once");
    // `biased`: in a fixed order, without drawing a random number at every poll.
    let permit = tokio::select! {
        biased;
        _ = cancel.cancelled() => return Err(Error::Canceled { message: format!("execution {id} while queued") }),
        p = reservation.start() => p,
    };
    core.table.set_status(id, ExecutionStatus::Running);
    let progress = run.progress.take();
    let run = &*run;
    let execution = new_execution(
        core,
        job,
        run,
        progress,
        env,
        lease.as_deref(),
        fault_duration,
    );
    *exec = Some(execution.clone());
    execution.publish(event_type::EXECUTION_STARTED).await;

    let result = match &job.revert {
        Some(revert) => {
            // A workflow's rollback of a completed step: restore its snapshot, once.
            execution.attempts.store(1, Ordering::SeqCst);
            let (base, snapshot) = (&execution.base, &revert.snapshot);
            Box::pin(execution.revert_under(
                base,
                cancel.child_token(),
                snapshot,
                revert.fault_id.as_deref(),
            ))
            .await
            .map(|()| ExecutionResult::finished(id, ExecutionStatus::Success, Utc::now()))
        }
        None => {
            let attempt = LifecycleAttempt(execution.clone());
            let attempts = strategy_of(core, job).execute(&attempt);
            // After a cancel, an attempt in flight ends by itself (rollback, cleanup); a
            // strategy that is between attempts (a backoff) is dropped.
            let idle_after_cancel = async {
                cancel.cancelled().await;
                execution.wait_idle().await;
            };
            tokio::select! {
                biased;
                r = attempts => r,
                _ = idle_after_cancel => Err(Error::Canceled { message: format!("execution {id} between attempts") }),
            }
        }
    };
    drop(permit);
    if let Some(lease) = lease {
        if let Err(e) = Box::pin(lease.release()).await {
            tracing::warn!(component = "engine", execution_id = %id, error = %e, "lease release failed; it will expire");
        }
    }
    result
}

fn failed_result(
    id: &str,
    started: chrono::DateTime<Utc>,
    e: &Error,
    root: &CancellationToken,
) -> ExecutionResult {
    let status = match e.root() {
        Error::Timeout { .. } => ExecutionStatus::Timeout,
        Error::Canceled { .. } if root.is_cancelled() => ExecutionStatus::Failed,
        Error::Canceled { .. } => ExecutionStatus::Canceled,
        _ => ExecutionStatus::Failed,
    };
    if root.is_cancelled() && status == ExecutionStatus::Failed {
        // The engine actor stopped or crashed under this execution: report it failed (after
        // its rollback and cleanup ran), never leave the caller waiting.
        let e2 = Error::other(
            ErrorClass::Retryable,
            format!("engine stopped while execution {id} ran; it was canceled, rolled back and cleaned up"),
            None,
        );
        return ExecutionResult::finished(id, status, started)
            .with_error(&e2.context(e.chain_message()));
    }
    ExecutionResult::finished(id, status, started).with_error(e)
}

/// Progress updates buffered per incarnation; a full buffer drops updates (progress is
/// advisory, and a plugin never waits on it).
const PROGRESS_BUFFER: usize = 4096;

async fn forward_progress(core: Arc<Core>, mut rx: mpsc::Receiver<ProgressUpdate>) {
    while let Some(mut u) = rx.recv().await {
        // Updates of executions already forgotten (evicted) are dropped.
        let Some((redactor, key)) = core.table.progress_context(&u.execution_id) else {
            continue;
        };
        u.message = redactor.redact(&u.message);
        core.table.set_progress(u.clone());
        if let Some(bus) = &core.deps.event_bus {
            let e = Event::new(event_type::EXECUTION_PROGRESS, "engine")
                .with_metadata("execution_id", u.execution_id.clone())
                .with_metadata("resource", key.to_string())
                .with_data("percent", u.percent)
                .with_data("stage", u.stage.clone())
                .with_data("message", u.message.clone());
            let _ = bus.publish(e).await;
        }
    }
}

/// The event of a finished execution (built outside `finish`, so that it takes no room in
/// its future).
fn finished_event(request: &ExecutionRequest, result: &ExecutionResult) -> Event {
    let mut e = Event::new(event_type::EXECUTION_FINISHED, "engine")
        .with_resource((*request.resource).clone())
        .with_metadata("execution_id", result.execution_id.clone())
        .with_metadata("plugin", request.plugin_name.clone())
        .with_data("status", result.status.as_str())
        .with_data("attempts", result.attempts);
    if let Some(err) = &result.error {
        e = e.with_data("error", err.clone());
    }
    for (k, v) in &request.labels {
        e.metadata.entry(k.clone()).or_insert_with(|| v.clone());
    }
    e
}

/// Reports a finished execution everywhere it must go.
async fn finish(
    core: &Core,
    job: &Job,
    result: ExecutionResult,
    took: Duration,
    result_tx: ResultSender,
) {
    let request = &job.request;
    let id = &result.execution_id;
    let status_label = result.status.as_str();
    core.metrics
        .finished(&request.plugin_name, result.status, took.as_secs_f64());
    match &result.error {
        None => {
            tracing::info!(
                status = status_label,
                attempts = result.attempts,
                duration_ms = took.as_millis() as u64,
                "execution finished"
            )
        }
        Some(e) => {
            tracing::warn!(status = status_label, attempts = result.attempts, error = %e, "execution finished")
        }
    }

    if let Some(reporter) = &core.deps.reporter {
        let mut record = ExecutionRecord {
            id: id.clone(),
            plugin_name: request.plugin_name.clone(),
            resource_id: request.resource.id.clone(),
            resource_name: request.resource.name.clone(),
            resource_key: Some(request.resource.key.clone()),
            start_time: result.start_time,
            end_time: result.end_time,
            duration: result.duration,
            status: result.status,
            error: result.error.clone().unwrap_or_default(),
            metadata: result.metadata.clone(),
            principal: request.principal.clone(),
            campaign: request.labels.get("campaign").cloned(),
            step: request.labels.get("step").cloned(),
            node: Some(core.node.to_string()),
            fencing_token: result
                .metadata
                .get(meta::FENCING_TOKEN)
                .and_then(|v| v.as_u64())
                .map(ire_core::FencingToken),
            time_to_detect: None,
            time_to_recover: None,
        };
        let pending = Box::pin(timings::apply(core, &mut record)).await;
        if let Err(e) = reporter.record_execution(record.clone()).await {
            tracing::error!(error = %e, "execution record not written");
        }
        if pending {
            timings::follow_up(core, reporter.clone(), record);
        }
    }
    if let Some(bus) = &core.deps.event_bus {
        let published = bus.publish(finished_event(request, &result));
        let _ = published.await;
    }
    let mut meta = Metadata::new();
    meta.insert("execution_id".into(), id.clone().into());
    meta.insert("status".into(), status_label.into());
    audit(
        core,
        &request.principal,
        Action::new(
            if job.revert.is_some() {
                "rollback"
            } else {
                verb::EXECUTE
            },
            request.plugin_name.clone(),
        ),
        Some(&request.resource),
        result.error.as_deref().map_or(Ok(()), Err),
        took,
        meta,
    )
    .await;
    core.table.set_status(id, result.status);
    result_tx.send(result);
}

async fn audit(
    core: &Core,
    principal: &str,
    action: Action,
    resource: Option<&Resource>,
    outcome: std::result::Result<(), &str>,
    took: Duration,
    metadata: Metadata,
) {
    let entry = AuditEntry {
        timestamp: Utc::now(),
        principal: principal.to_owned(),
        action,
        resource: resource.cloned(),
        result: ActionResult {
            success: outcome.is_ok(),
            error: outcome.err().unwrap_or_default().to_owned(),
            duration: took,
        },
        metadata,
    };
    if let Err(e) = core.deps.audit.log_action(entry).await {
        tracing::error!(component = "engine", error = %e, "audit entry not written");
    }
}

impl Engine {
    /// An engine; start its actor with [`Engine::spawn`] or put [`Engine::child_spec`] in a
    /// supervisor.
    pub fn new(config: EngineConfig, deps: EngineDeps) -> Self {
        Engine {
            core: Arc::new(Core {
                pool: WorkerPool::new(config.concurrency_limit, config.queue_capacity),
                table: ExecutionTable::new(config.retained_results),
                node: config.node.as_str().into(),
                config: RwLock::new(config),
                deps,
                tasks: TaskTracker::new(),
                simple: Arc::new(SimpleStrategy),
                metrics: EngineMetrics::default(),
            }),
            slot: ActorSlot::new("engine"),
        }
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<dyn PluginRegistry> {
        &self.core.deps.registry
    }

    /// (running, queued, limit) of the worker pool.
    pub fn load(&self) -> (usize, usize, usize) {
        self.core.pool.load()
    }

    /// The latest progress update of an execution.
    pub fn progress(&self, execution_id: &str) -> Result<Option<ProgressUpdate>> {
        self.core.table.progress(execution_id)
    }

    async fn spawn_into(
        &self,
        supervisor: Option<ractor::ActorCell>,
    ) -> std::result::Result<SpawnedChild, SpawnErr> {
        let actor = EngineActor {
            core: self.core.clone(),
        };
        let (a, _join) = match supervisor {
            Some(s) => Actor::spawn_linked(None, actor, (), s).await?,
            None => Actor::spawn(None, actor, ()).await?,
        };
        self.slot.set(a.clone());
        let cell = a.get_cell();
        let ping: PingFn = Arc::new(move || {
            let a = a.clone();
            Box::pin(async move {
                let (tx, rx) = oneshot::channel();
                a.cast(EngineMessage::Ping(tx)).is_ok() && rx.await.is_ok()
            })
        });
        Ok(SpawnedChild {
            cell,
            ping: Some(ping),
        })
    }

    /// Starts the actor unsupervised (tools, benchmarks).
    pub async fn spawn(&self) -> Result<()> {
        self.spawn_into(None).await.map(|_| ()).map_err(|e| {
            Error::other(
                ErrorClass::Fatal,
                format!("starting the engine actor: {e}"),
                None,
            )
        })
    }

    /// The supervisor child that runs this engine's actor.
    pub fn child_spec(&self) -> ChildSpec {
        let me = self.clone();
        ChildSpec::new(
            "engine",
            Arc::new(move |sup| {
                let me = me.clone();
                Box::pin(async move { me.spawn_into(Some(sup)).await })
            }),
        )
    }

    /// Stops the actor gracefully: executions are canceled, rolled back and cleaned up.
    pub async fn stop(&self) {
        if let Ok(a) = self.slot.get() {
            let t = self
                .core
                .config
                .read()
                .expect("config lock")
                .shutdown_timeout;
            let _ = a
                .stop_and_wait(None, Some(t + Duration::from_secs(1)))
                .await;
        }
        self.slot.clear();
    }

    /// Waits until every execution task (and progress forwarder) has ended.
    pub async fn wait_idle(&self, timeout: Duration) -> Result<()> {
        self.core.tasks.close();
        let r = tokio::time::timeout(timeout, self.core.tasks.wait()).await;
        self.core.tasks.reopen();
        r.map_err(|_| Error::Timeout {
            operation: "waiting for the engine's tasks".into(),
            after: timeout,
        })
    }

    /// Tasks the engine still runs.
    pub fn task_count(&self) -> usize {
        self.core.tasks.len()
    }

    /// Fails the actor on purpose (supervision tests).
    pub fn crash(&self) -> Result<()> {
        self.slot
            .get()?
            .cast(EngineMessage::Crash)
            .map_err(|_| unavailable())
    }

    /// Blocks the actor's mailbox for `d` (stuck-actor tests).
    pub fn stall(&self, d: Duration) -> Result<()> {
        self.slot
            .get()?
            .cast(EngineMessage::Stall(d))
            .map_err(|_| unavailable())
    }

    async fn authorize(
        &self,
        principal: &str,
        action: &Action,
        resource: Option<&Resource>,
    ) -> Result<()> {
        if let Err(e) = self
            .core
            .deps
            .auth
            .authorize(principal, action, resource)
            .await
        {
            metrics::counter!(metric_names::ENGINE_UNAUTHORIZED_TOTAL).increment(1);
            audit(
                &self.core,
                principal,
                action.clone(),
                resource,
                Err(&e.to_string()),
                Duration::ZERO,
                Metadata::new(),
            )
            .await;
            tracing::warn!(component = "engine", principal, action = %action, "denied");
            return Err(e);
        }
        Ok(())
    }

    /// Authorizes, admits and starts a request; `plugin`/`revert` override the registry
    /// lookup for a workflow's rollback.
    async fn submit(
        &self,
        request: ExecutionRequest,
        revert: Option<(Arc<dyn Plugin>, Box<Revert>)>,
    ) -> Result<ExecutionHandle> {
        // Boxed, like the job: the caller's future holds neither while the actor answers.
        let job = Box::new(Box::pin(self.prepare(request, revert)).await?);
        // What an audit of a rejection needs is kept aside; the job moves to the actor.
        let principal = job.request.principal.clone();
        let resource = job.request.resource.clone();
        let plugin_name = job.request.plugin_name.clone();
        let e = match self.slot.get() {
            Err(e) => e,
            Ok(actor) => {
                let (tx, rx) = oneshot::channel();
                if actor
                    .cast(EngineMessage::Submit { job, reply: tx })
                    .is_err()
                {
                    unavailable()
                } else {
                    match rx.await {
                        Ok(Ok(h)) => return Ok(h),
                        Ok(Err(e)) => e,
                        Err(_) => unavailable(),
                    }
                }
            }
        };
        Box::pin(audit(
            &self.core,
            &principal,
            Action::new(verb::EXECUTE, plugin_name),
            Some(&resource),
            Err(&e.to_string()),
            Duration::ZERO,
            Metadata::new(),
        ))
        .await;
        Err(e)
    }

    /// Authorizes and admits many requests with one message to the actor (a campaign step
    /// fanned out over many resources). Each request gets its own handle or rejection, in
    /// order.
    pub async fn execute_many(
        &self,
        requests: Vec<ExecutionRequest>,
    ) -> Vec<Result<ExecutionHandle>> {
        let mut out: Vec<Option<Result<ExecutionHandle>>> = Vec::with_capacity(requests.len());
        let mut jobs = Vec::new();
        let mut slots = Vec::new();
        for r in requests {
            match self.prepare(r, None).await {
                Ok(job) => {
                    slots.push((
                        out.len(),
                        job.request.principal.clone(),
                        job.request.plugin_name.clone(),
                        job.request.resource.key.to_string(),
                    ));
                    out.push(None);
                    jobs.push(job);
                }
                Err(e) => out.push(Some(Err(e))),
            }
        }
        if !jobs.is_empty() {
            let answers: Vec<Result<ExecutionHandle>> = match self.slot.get() {
                Ok(actor) => {
                    let n = jobs.len();
                    let (tx, rx) = oneshot::channel();
                    let sent = actor.cast(EngineMessage::SubmitMany { jobs, reply: tx });
                    match sent {
                        Ok(()) => rx
                            .await
                            .unwrap_or_else(|_| (0..n).map(|_| Err(unavailable())).collect()),
                        Err(_) => (0..n).map(|_| Err(unavailable())).collect(),
                    }
                }
                Err(e) => jobs
                    .iter()
                    .map(|_| {
                        Err(Error::Unavailable {
                            message: e.to_string(),
                            source: None,
                        })
                    })
                    .collect(),
            };
            for ((i, principal, plugin, key), a) in slots.into_iter().zip(answers) {
                if let Err(e) = &a {
                    let mut meta = Metadata::new();
                    meta.insert("resource".into(), key.into());
                    audit(
                        &self.core,
                        &principal,
                        Action::new(verb::EXECUTE, plugin),
                        None,
                        Err(&e.to_string()),
                        Duration::ZERO,
                        meta,
                    )
                    .await;
                }
                out[i] = Some(a);
            }
        }
        out.into_iter()
            .map(|r| r.expect("every request answered"))
            .collect()
    }

    /// Authorizes and checks a request, up to admission.
    async fn prepare(
        &self,
        mut request: ExecutionRequest,
        revert: Option<(Arc<dyn Plugin>, Box<Revert>)>,
    ) -> Result<Job> {
        if request.execution_id.is_empty() {
            request.execution_id = uuid::Uuid::new_v4().to_string();
        }
        // A rollback is authorized as an execution of the plugin: it acts on the resource.
        let action = Action::new(verb::EXECUTE, request.plugin_name.clone());
        // Authorization comes before anything else, the plugin lookup included.
        self.authorize(&request.principal, &action, Some(&request.resource))
            .await?;
        let is_revert = revert.is_some();
        let (plugin, revert) = match revert {
            Some((p, revert)) => (p, Some(revert)),
            None => (self.core.deps.registry.get(&request.plugin_name)?, None),
        };
        // The metadata is read at once and not kept: this future is the caller's while the
        // actor admits the job. The checks are pure; they are reported after authorization.
        let (admin, wrong, name) = {
            let md = plugin.metadata();
            let admin = md
                .required_capabilities
                .iter()
                .any(|c| c == ire_core::plugin::requirement::ADMIN)
                .then(|| Action::new("admin", md.name.clone()));
            let wrong = self.check_fit(&md, &request, is_revert);
            (admin, wrong, md.name)
        };
        if let Some(admin) = admin {
            self.authorize(&request.principal, &admin, Some(&request.resource))
                .await?;
        }
        let rejection = wrong.err().or_else(|| {
            plugin
                .validate_config(&request.config)
                .err()
                .map(|e| e.context(format!("config of plugin {name}")))
        });
        if let Some(e) = rejection {
            audit(
                &self.core,
                &request.principal,
                action,
                Some(&request.resource),
                Err(&e.to_string()),
                Duration::ZERO,
                Metadata::new(),
            )
            .await;
            return Err(e);
        }
        Ok(Job {
            request,
            plugin,
            revert,
        })
    }

    /// Whether the plugin fits the request before anything runs: the resource's kind, the
    /// adapter's capabilities, and a duration for a sustained fault (not for its revert).
    fn check_fit(
        &self,
        md: &PluginMetadata,
        request: &ExecutionRequest,
        is_revert: bool,
    ) -> Result<()> {
        let what = || format!("execution of plugin {}", md.name);
        if !md.supports_kind(&request.resource.kind) {
            return Err(Error::invalid(
                what(),
                format!(
                    "resource {} is a {:?}, which the plugin does not support ({})",
                    request.resource.key,
                    request.resource.kind,
                    md.supported_kinds.join(", ")
                ),
            ));
        }
        let adapter = request.resource.key.adapter();
        let env = self.core.deps.adapters.get(adapter).ok_or_else(|| {
            Error::not_found("adapter", adapter)
                .context(format!("resolving the adapter of {}", request.resource.key))
        })?;
        md.check_capabilities(&env.adapter_info())
            .map_err(|e| e.context(format!("{} on {}", what(), request.resource.key)))?;
        if md.fault_kind == FaultKind::Sustained
            && !is_revert
            && !request.labels.contains_key(DURATION_LABEL)
        {
            return Err(Error::invalid(
                format!("label {DURATION_LABEL} of {}", what()),
                format!(
                    "plugin {} is a sustained fault (active until reverted): the request must say how long it lasts",
                    md.name
                ),
            ));
        }
        Ok(())
    }

    /// Restores a completed step's snapshot (a workflow's rollback), through the same
    /// authorization, lease and audit as any execution.
    pub async fn revert(
        &self,
        mut request: ExecutionRequest,
        snapshot: Snapshot,
        fault_id: Option<String>,
    ) -> Result<ExecutionResult> {
        let plugin = self.core.deps.registry.get(&request.plugin_name)?;
        if !plugin.supports_rollback() {
            return Err(Error::unsupported("rollback", request.plugin_name.clone()));
        }
        request.execution_id = format!(
            "{}-rollback-{}",
            request.execution_id,
            uuid::Uuid::new_v4().simple()
        );
        request.labels.remove(DURATION_LABEL);
        let mut h = self
            .submit(
                request,
                Some((plugin, Box::new(Revert { snapshot, fault_id }))),
            )
            .await?;
        h.wait().await
    }
}

fn unavailable() -> Error {
    Error::Unavailable {
        message: "the engine actor is not running (restarting or stopped)".into(),
        source: None,
    }
}

#[async_trait]
impl ExecutionEngine for Engine {
    async fn register_plugin(&self, plugin: Arc<dyn Plugin>) -> Result<()> {
        let name = plugin.metadata().name;
        let start = tokio::time::Instant::now();
        let r = self.core.deps.registry.register(plugin).await;
        let err = r.as_ref().err().map(|e| e.to_string());
        audit(
            &self.core,
            SYSTEM_PRINCIPAL,
            Action::new(verb::CREATE, format!("plugin/{name}")),
            None,
            err.as_deref().map_or(Ok(()), Err),
            start.elapsed(),
            Metadata::new(),
        )
        .await;
        r
    }

    async fn unregister_plugin(&self, name: &str) -> Result<()> {
        let start = tokio::time::Instant::now();
        let r = self.core.deps.registry.unregister(name).await;
        let err = r.as_ref().err().map(|e| e.to_string());
        audit(
            &self.core,
            SYSTEM_PRINCIPAL,
            Action::new(verb::DELETE, format!("plugin/{name}")),
            None,
            err.as_deref().map_or(Ok(()), Err),
            start.elapsed(),
            Metadata::new(),
        )
        .await;
        r
    }

    async fn get_plugin(&self, name: &str) -> Result<Arc<dyn Plugin>> {
        self.core.deps.registry.get(name)
    }

    async fn list_plugins(&self, filter: &PluginFilter) -> Result<Vec<PluginMetadata>> {
        self.core.deps.registry.list(filter)
    }

    async fn execute(&self, request: ExecutionRequest) -> Result<ExecutionResult> {
        let mut h = self.execute_async(request).await?;
        h.wait().await
    }

    async fn execute_async(&self, request: ExecutionRequest) -> Result<ExecutionHandle> {
        self.submit(request, None).await
    }

    async fn execute_workflow(&self, workflow: Workflow) -> Result<WorkflowResult> {
        crate::workflow::run(self, workflow).await
    }

    async fn cancel(&self, execution_id: &str) -> Result<()> {
        let r = self.core.table.cancel(execution_id);
        let err = r.as_ref().err().map(|e| e.to_string());
        let mut meta = Metadata::new();
        meta.insert("execution_id".into(), execution_id.into());
        audit(
            &self.core,
            SYSTEM_PRINCIPAL,
            Action::new("cancel", format!("execution/{execution_id}")),
            None,
            err.as_deref().map_or(Ok(()), Err),
            Duration::ZERO,
            meta,
        )
        .await;
        r.map(|_| ())
    }

    async fn status(&self, execution_id: &str) -> Result<ExecutionStatus> {
        self.core.table.status(execution_id)
    }

    async fn set_concurrency_limit(&self, limit: usize) -> Result<()> {
        if limit == 0 {
            return Err(Error::invalid("concurrency limit", "must be at least 1"));
        }
        self.core
            .config
            .write()
            .expect("config lock")
            .concurrency_limit = limit;
        self.core.pool.set_limit(limit);
        Ok(())
    }

    async fn set_default_timeout(&self, timeout: Duration) -> Result<()> {
        if timeout.is_zero() {
            return Err(Error::invalid("default timeout", "must be more than zero"));
        }
        self.core
            .config
            .write()
            .expect("config lock")
            .default_timeout = timeout;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ire_core::testsuite::{FakeAdapter, FakePlugin, ResourceBuilder};
    use ire_core::Attempt;

    /// 10,000 executions in flight must fit in about 100 MB (docs/benchmarks.md): what one
    /// holds while its plugin runs (its task's future and its attempt's) stays small. The
    /// bounds leave a little room over what was measured (448 and about 770 bytes; they
    /// were 4,720 and 4,416 before the phases that are large but rare were boxed).
    #[tokio::test]
    async fn an_execution_in_flight_holds_little() {
        let adapter = FakeAdapter::new("fake");
        let resource = adapter.insert(ResourceBuilder::new("web").build());
        let mut adapters: BTreeMap<String, Arc<dyn EnvironmentAdapter>> = BTreeMap::new();
        adapters.insert("fake".into(), Arc::new(adapter.clone()));
        let registry = Arc::new(crate::registry::DefaultPluginRegistry::new());
        let engine = Engine::new(EngineConfig::default(), EngineDeps::new(registry, adapters));
        let core = engine.core.clone();
        let job = Box::new(Job {
            request: ExecutionRequest::new("probe", resource, "tester"),
            plugin: Arc::new(FakePlugin::new("probe")),
            revert: None,
        });
        let (result_tx, _handle) = ExecutionHandle::with_sender("e", CancellationToken::new());
        let (progress, _updates) = mpsc::channel(1);
        let run = Run {
            reservation: Some(core.pool.reserve().unwrap()),
            cancel: CancellationToken::new(),
            root: CancellationToken::new(),
            redactor: SecretRedactor::new(),
            progress: Some(progress.clone()),
            result_tx,
        };
        let execution = new_execution(
            &core,
            &job,
            &run,
            Some(progress),
            Arc::new(adapter),
            None,
            None,
        );
        let attempt = LifecycleAttempt(execution);
        let attempt_future = attempt.run();
        let task = run_job(core.clone(), job, run);
        let (task_bytes, attempt_bytes) = (
            std::mem::size_of_val(&task),
            std::mem::size_of_val(&*attempt_future),
        );
        assert!(
            task_bytes <= 512,
            "the execution's task future is {task_bytes} bytes"
        );
        assert!(
            attempt_bytes <= 848,
            "an attempt's future is {attempt_bytes} bytes"
        );
    }
}
