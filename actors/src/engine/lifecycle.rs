//! One run of a plugin's lifecycle, exactly as the seed's Plugin Execution Flow:
//!
//! 1. Validate: a failure returns the error (nothing was touched, no cleanup).
//! 2. PreExecute: returns the snapshot; a failure runs Cleanup and returns the error.
//!    With a lease and a ledger, the fault is recorded (with its snapshot and fencing token)
//!    before it is injected.
//! 3. Execute: a failure runs Rollback with the snapshot (when the plugin supports it), then
//!    Cleanup, and returns the error. A timed fault (`duration` label) is held, lease renewed,
//!    and reverted with Rollback when its time is up.
//! 4. PostExecute: a failure is logged, not fatal.
//! 5. Cleanup: always (once Validate passed), even after a failed Rollback.
//!
//! A timeout, a cancel, or the loss of the lease cancels the plugin's context; the running
//! hook gets a grace period to return, after which it is abandoned; Rollback and Cleanup
//! then run with a fresh context and their own time limit.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use ire_core::event::event_type;
use ire_core::{
    Attempt, Error, ErrorClass, Event, EventBus, ExecutionResult, ExecutionStatus, FaultEntry,
    FaultKind, FaultLedger, FaultState, Metadata, Plugin, PluginContext, Resource, Result,
    Snapshot,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metric_names;
use crate::security::SecretRedactor;

/// Metadata keys the engine writes into results.
pub mod meta {
    /// The snapshot PreExecute took (JSON), used to revert the step later.
    pub const SNAPSHOT: &str = "snapshot";
    /// The ledger id of the fault the execution injected.
    pub const FAULT_ID: &str = "faultId";
    /// True when the fault was reverted (after a failure or a timed fault's end).
    pub const REVERTED: &str = "reverted";
    /// Why the rollback failed.
    pub const ROLLBACK_ERROR: &str = "rollbackError";
    /// Why PostExecute failed (not fatal).
    pub const POST_EXECUTE_ERROR: &str = "postExecuteError";
    /// Why Cleanup failed.
    pub const CLEANUP_ERROR: &str = "cleanupError";
    /// The fencing token the execution ran under.
    pub const FENCING_TOKEN: &str = "fencingToken";
    /// The strategy that ran it.
    pub const STRATEGY: &str = "strategy";
}

/// The id of the fault an execution's attempt injects: known before PreExecute, so that the
/// plugin names what it leaves in the environment by it and its snapshot (written to the
/// ledger before Execute) holds those names.
pub fn fault_id(execution_id: &str, attempt: u32) -> String {
    format!("{execution_id}-{attempt}")
}

/// Everything one execution's attempts share.
///
/// It lives as long as the execution runs (10,000 may be in flight), so it holds what
/// every attempt needs once, shares the request's resource, and keeps no per-execution
/// channel: attempts in flight are a counter with a [`Notify`].
pub(crate) struct Execution {
    pub plugin: Arc<dyn Plugin>,
    pub plugin_name: String,
    pub resource: Arc<Resource>,
    /// The first attempt's context: its `cancel` is that attempt's token, a child of the
    /// execution's. Later attempts, and the hooks after an attempt's main phase, run with
    /// copies under tokens of their own.
    pub base: PluginContext,
    /// The execution's cancel token (user cancel, engine stop).
    pub cancel: CancellationToken,
    /// Canceled when the resource's lease is lost.
    pub lease_lost: Option<CancellationToken>,
    pub hook_grace: Duration,
    pub cleanup_timeout: Duration,
    pub fault_duration: Option<Duration>,
    pub node: Arc<str>,
    pub ledger: Option<Arc<dyn FaultLedger>>,
    pub fault_watch: Option<crate::monitor::FaultWatch>,
    pub bus: Option<Arc<dyn EventBus>>,
    pub redactor: SecretRedactor,
    pub attempts: AtomicU32,
    /// Attempts running now; `idle` is notified when it drops to zero.
    pub in_flight: AtomicU32,
    pub idle: Notify,
    /// Notes of the latest attempt, merged into the final result.
    pub notes: Mutex<Metadata>,
}

/// Why an attempt was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Timeout,
    Canceled,
    LeaseLost,
}

#[derive(Default, Clone)]
struct Track {
    validated: bool,
    /// Boxed: most of the track's size otherwise, for the whole attempt, snapshot or not.
    snapshot: Option<Box<Snapshot>>,
    fault_id: Option<String>,
    execute_called: bool,
    reverted: bool,
    stage: &'static str,
}

/// Counts an attempt in flight for as long as it lives.
struct InFlight<'a>(&'a Execution);

impl<'a> InFlight<'a> {
    fn enter(exec: &'a Execution) -> Self {
        exec.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(exec)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// An [`Attempt`] over an execution; strategies call `run` once per attempt.
pub(crate) struct LifecycleAttempt(pub Arc<Execution>);

impl Attempt for LifecycleAttempt {
    fn plugin(&self) -> &Arc<dyn Plugin> {
        &self.0.plugin
    }

    fn resource(&self) -> &Resource {
        &self.0.resource
    }

    fn run(&self) -> BoxFuture<'_, Result<ExecutionResult>> {
        Box::pin(self.0.run_once())
    }
}

impl Execution {
    /// The execution's id (its context's).
    pub(crate) fn id(&self) -> &str {
        &self.base.execution_id
    }

    fn lease_lost_error(&self) -> Error {
        Error::other(
            ErrorClass::Fatal,
            format!(
                "lease on {} lost (token {}): execution stopped and its fault reverted",
                self.resource.key,
                self.base.fencing_token.map(|t| t.0).unwrap_or_default()
            ),
            None,
        )
    }

    /// Resolves once no attempt is in flight.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so a drop to zero in between is not missed.
            notified.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Publishes an event of `kind` about this execution. The event is built and handed to
    /// the bus before the only await, so it takes no room in the caller's future.
    pub(crate) async fn publish(&self, kind: &'static str) {
        let Some(bus) = &self.bus else {
            return;
        };
        let published = bus.publish(self.event(kind));
        if let Err(e) = published.await {
            tracing::debug!(component = "engine", execution_id = %self.id(), error = %e, "event not published");
        }
    }

    fn event(&self, kind: &'static str) -> Event {
        let mut event = Event::new(kind, "engine")
            .with_resource((*self.resource).clone())
            .with_metadata("execution_id", self.id().to_owned())
            .with_metadata("plugin", self.plugin_name.clone());
        for (k, v) in &self.base.labels {
            event.metadata.entry(k.clone()).or_insert_with(|| v.clone());
        }
        event
    }

    /// Runs `fut` (a hook after the main phase) within the cleanup time limit.
    async fn bounded<T>(
        &self,
        hook: &str,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.cleanup_timeout, fut).await {
            Ok(r) => r,
            Err(_) => {
                metrics::counter!(metric_names::ENGINE_ABANDONED_HOOKS_TOTAL, "hook" => hook.to_owned()).increment(1);
                Err(Error::Timeout {
                    operation: format!("plugin {} {hook}", self.plugin_name),
                    after: self.cleanup_timeout,
                })
            }
        }
    }

    async fn run_once(&self) -> Result<ExecutionResult> {
        let n = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        let _in_flight = InFlight::enter(self);
        let start = Utc::now();
        if self.cancel.is_cancelled() {
            return Err(Error::Canceled {
                message: format!("execution {}", self.id()),
            });
        }
        if self.lease_lost.as_ref().is_some_and(|l| l.is_cancelled()) {
            return Err(self.lease_lost_error());
        }
        // The first attempt runs with the execution's context itself, whose token is that
        // attempt's; a later one with a copy under a token of its own (boxed: retries are
        // rare, and the copy would otherwise take room in every attempt's future).
        let copy = (n > 1).then(|| {
            let mut ctx = self.base.clone();
            ctx.cancel = self.cancel.child_token();
            ctx.fault_id = fault_id(self.id(), n);
            Box::new(ctx)
        });
        let ctx = copy.as_deref().unwrap_or(&self.base);
        let track = Mutex::new(Track {
            stage: "validate",
            ..Default::default()
        });
        let outcome = self.main_or_stop(ctx, &track).await;
        drop(copy);
        // Boxed: it runs once, at the end, and inline it would enlarge the attempt's future
        // for as long as the main phase runs.
        let t = track.into_inner().expect("track lock");
        Box::pin(self.conclude(t, outcome, start, n)).await
    }

    /// Runs the main phase until it ends or is stopped from outside (timeout, cancel, lost
    /// lease); a stopped hook gets the grace period to return, then is abandoned (never
    /// polled again).
    async fn main_or_stop(&self, ctx: &PluginContext, track: &Mutex<Track>) -> Result<()> {
        let limit = self.base.timeout + self.fault_duration.unwrap_or_default();
        let main = self.main_phase(ctx, track);
        tokio::pin!(main);
        let lost = async {
            match &self.lease_lost {
                Some(l) => l.cancelled().await,
                None => std::future::pending().await,
            }
        };
        // `biased`: the main phase first (a result that is in wins), and no random number
        // drawn at every poll.
        let stopped = tokio::select! {
            biased;
            r = &mut main => Ok(r),
            _ = tokio::time::sleep(limit) => Err(Stop::Timeout),
            _ = self.cancel.cancelled() => Err(Stop::Canceled),
            _ = lost => Err(Stop::LeaseLost),
        };
        let stop = match stopped {
            Ok(r) => return r,
            Err(stop) => stop,
        };
        ctx.cancel.cancel();
        let stage = track.lock().expect("track lock").stage;
        // The hook was told to stop; give it a moment to return cleanly, then leave it.
        if tokio::time::timeout(self.hook_grace, &mut main)
            .await
            .is_err()
        {
            metrics::counter!(metric_names::ENGINE_ABANDONED_HOOKS_TOTAL, "hook" => stage)
                .increment(1);
            tracing::warn!(component = "engine", execution_id = %self.id(), hook = stage,
                "plugin hook ignored cancellation for the grace period; abandoned");
        }
        Err(match stop {
            Stop::Timeout => Error::Timeout {
                operation: format!(
                    "execution {} of plugin {} (during {stage})",
                    self.id(),
                    self.plugin_name
                ),
                after: limit,
            },
            Stop::Canceled => Error::Canceled {
                message: format!("execution {} (during {stage})", self.id()),
            },
            Stop::LeaseLost => self.lease_lost_error(),
        })
    }

    /// After the main phase: PostExecute on success, Rollback on failure (when Execute ran),
    /// Cleanup once Validate passed; the attempt's result with its notes.
    async fn conclude(
        &self,
        t: Track,
        outcome: Result<()>,
        start: chrono::DateTime<Utc>,
        n: u32,
    ) -> Result<ExecutionResult> {
        // Rollback, PostExecute and Cleanup run with a context that is not canceled.
        let mut after = self.base.clone();
        after.cancel = CancellationToken::new();
        let after = &after;
        let mut notes = Metadata::new();
        if let Some(s) = &t.snapshot {
            notes.insert(
                meta::SNAPSHOT.into(),
                serde_json::to_value(s).unwrap_or_default(),
            );
        }
        if let Some(f) = &t.fault_id {
            notes.insert(meta::FAULT_ID.into(), f.clone().into());
        }
        if let Some(tok) = self.base.fencing_token {
            notes.insert(meta::FENCING_TOKEN.into(), tok.0.into());
        }

        let mut outcome = outcome;
        match &outcome {
            Ok(()) => {
                if t.reverted {
                    notes.insert(meta::REVERTED.into(), true.into());
                }
                let provisional = self.result(ExecutionStatus::Success, start, n, &notes);
                if let Err(e) = self
                    .bounded(
                        "post_execute",
                        self.plugin
                            .post_execute(after, &self.resource, &provisional),
                    )
                    .await
                {
                    let msg = self.redactor.redact(&e.chain_message());
                    tracing::warn!(component = "engine", execution_id = %self.id(), resource_id = %self.resource.key, error = %msg, "post-execute failed (not fatal)");
                    notes.insert(meta::POST_EXECUTE_ERROR.into(), msg.into());
                }
            }
            Err(e) => {
                let can_revert = t.execute_called && !t.reverted && self.plugin.supports_rollback();
                if let (true, Some(snapshot)) = (can_revert, &t.snapshot) {
                    // Boxed: a revert is rare, and inline it would enlarge every attempt.
                    match Box::pin(self.revert(after, snapshot, t.fault_id.as_deref())).await {
                        Ok(()) => {
                            notes.insert(meta::REVERTED.into(), true.into());
                        }
                        Err(re) => {
                            let msg = self.redactor.redact(&re.chain_message());
                            notes.insert(meta::ROLLBACK_ERROR.into(), msg.clone().into());
                            let original = self.redactor.redact(&e.to_string());
                            outcome = Err(outcome
                                .unwrap_err()
                                .context(format!("{original}; its rollback failed too ({msg})")));
                        }
                    }
                }
            }
        }
        if t.validated {
            if let Err(e) = self
                .bounded("cleanup", self.plugin.cleanup(after, &self.resource))
                .await
            {
                let msg = self.redactor.redact(&e.chain_message());
                tracing::warn!(component = "engine", execution_id = %self.id(), resource_id = %self.resource.key, error = %msg, "cleanup failed");
                notes.insert(meta::CLEANUP_ERROR.into(), msg.into());
            }
        }
        // What the plugin noted goes into the result (the engine's own notes win).
        for (k, v) in after.notes.snapshot() {
            notes.entry(k).or_insert(v);
        }
        let outcome = outcome.map(|()| self.result(ExecutionStatus::Success, start, n, &notes));
        *self.notes.lock().expect("notes lock") = notes;
        outcome
    }

    fn result(
        &self,
        status: ExecutionStatus,
        start: chrono::DateTime<Utc>,
        n: u32,
        notes: &Metadata,
    ) -> ExecutionResult {
        let mut r = ExecutionResult::finished(self.id(), status, start);
        r.attempts = n;
        r.metadata = notes.clone();
        r
    }

    /// [`Execution::revert`] with a copy of `ctx` under `cancel`. Callers box it: a revert is
    /// rare, and the copy would otherwise take room in every attempt's future.
    pub(crate) async fn revert_under(
        &self,
        ctx: &PluginContext,
        cancel: CancellationToken,
        snapshot: &Snapshot,
        fault_id: Option<&str>,
    ) -> Result<()> {
        let mut after = ctx.clone();
        after.cancel = cancel;
        self.revert(&after, snapshot, fault_id).await
    }

    /// Restores the snapshot and settles the ledger entry.
    pub(crate) async fn revert(
        &self,
        ctx: &PluginContext,
        snapshot: &Snapshot,
        fault_id: Option<&str>,
    ) -> Result<()> {
        let r = self
            .bounded(
                "rollback",
                self.plugin.rollback(ctx, &self.resource, snapshot),
            )
            .await
            .map_err(|e| {
                e.context(format!(
                    "rolling back plugin {} on {}",
                    self.plugin_name, self.resource.key
                ))
            });
        let outcome = if r.is_ok() { "ok" } else { "failed" };
        metrics::counter!(metric_names::ENGINE_ROLLBACKS_TOTAL, "outcome" => outcome).increment(1);
        if let (Some(ledger), Some(id), Some(token)) =
            (&self.ledger, fault_id, self.base.fencing_token)
        {
            // Settled under the lease the fault was recorded with.
            let settled = match &r {
                Ok(()) => ledger.mark_reverted(id, &self.node, token).await,
                Err(e) => {
                    ledger
                        .mark_revert_failed(id, &self.redactor.redact(&e.chain_message()), token)
                        .await
                }
            };
            if let Err(e) = settled {
                tracing::error!(component = "engine", execution_id = %self.id(), fault_id = id, error = %e, "ledger not updated after revert");
            }
        }
        match &r {
            Ok(()) => self.publish(event_type::FAULT_REVERTED).await,
            Err(e) => {
                tracing::error!(component = "engine", execution_id = %self.id(), resource_id = %self.resource.key,
                    error = %self.redactor.redact(&e.chain_message()), "rollback failed; cleanup still runs");
            }
        }
        r
    }

    /// Asks the monitor to watch the fault injected at `at`, for its time to detect and to
    /// recover (keyed by the execution: a retry's injection replaces its watch).
    fn watch(&self, at: chrono::DateTime<Utc>) {
        if let Some(fw) = &self.fault_watch {
            if let Err(e) = fw.fault_injected(self.id(), &self.resource, at) {
                tracing::warn!(component = "engine", execution_id = %self.id(), error = %e,
                    "fault not watched: its record will have no time to detect or recover");
            }
        }
    }

    async fn main_phase(&self, ctx: &PluginContext, track: &Mutex<Track>) -> Result<()> {
        let set = |f: &dyn Fn(&mut Track)| f(&mut track.lock().expect("track lock"));
        let what = |hook: &str| {
            format!(
                "plugin {} {hook} on {}",
                self.plugin_name, self.resource.key
            )
        };

        self.plugin
            .validate(ctx, &self.resource)
            .await
            .map_err(|e| e.context(what("validate")))?;
        set(&|t| {
            t.validated = true;
            t.stage = "pre_execute";
        });

        // The snapshot is kept in the track only (read back when needed), so that it takes
        // no room in this future while Execute runs.
        let has_snapshot = {
            let snapshot = self
                .plugin
                .pre_execute(ctx, &self.resource)
                .await
                .map_err(|e| e.context(what("pre-execute")))?;
            let has = snapshot.is_some();
            track.lock().expect("track lock").snapshot = snapshot.map(Box::new);
            has
        };

        // With a lease and a ledger, the fault is on record (with how to revert it) before it
        // exists, so that another node can revert it if this one dies.
        if let (Some(ledger), Some(token), true, true) = (
            &self.ledger,
            self.base.fencing_token,
            has_snapshot,
            self.plugin.supports_rollback(),
        ) {
            let id = ctx.fault_id.clone();
            let entry = FaultEntry {
                id: id.clone(),
                execution_id: self.id().to_owned(),
                campaign: self.base.labels.get("campaign").cloned(),
                step: self.base.labels.get("step").cloned(),
                resource: self.resource.key.clone(),
                plugin: self.plugin_name.clone(),
                node: self.node.to_string(),
                // Only faults with a snapshot to roll back to are recorded: sustained ones.
                kind: FaultKind::Sustained,
                token,
                snapshot: track
                    .lock()
                    .expect("track lock")
                    .snapshot
                    .as_deref()
                    .cloned(),
                injected_at: Utc::now(),
                duration: self.fault_duration,
                state: FaultState::Injected,
            };
            let recorded = ledger.record_fault(entry);
            recorded.await.map_err(|e| {
                e.context(format!(
                    "recording the fault of execution {} in the ledger",
                    self.id()
                ))
            })?;
            track.lock().expect("track lock").fault_id = Some(id);
        }

        set(&|t| {
            t.execute_called = true;
            t.stage = "execute";
        });
        let injected_at = Utc::now();
        match self.plugin.execute(ctx, &self.resource).await {
            Ok(()) => self.watch(injected_at),
            Err(e) if e.is_ignorable() => {
                tracing::debug!(component = "engine", execution_id = %self.id(), error = %e, "execute: nothing to do");
            }
            Err(e) => return Err(e.context(what("execute"))),
        }
        let recorded = track.lock().expect("track lock").fault_id.is_some();
        if recorded || self.fault_duration.is_some() {
            self.publish(event_type::FAULT_INJECTED).await;
        }

        if let Some(d) = self.fault_duration {
            set(&|t| t.stage = "fault-duration");
            // The lease is renewed meanwhile by the resource-lock actor; a lost lease, a
            // cancel or the timeout stop this wait from outside, and the fault is reverted.
            tokio::time::sleep(d).await;
            let (snapshot, fault_id) = {
                let mut t = track.lock().expect("track lock");
                t.stage = "revert";
                (t.snapshot.clone(), t.fault_id.clone())
            };
            if let (Some(snap), true) = (snapshot, self.plugin.supports_rollback()) {
                let fresh = CancellationToken::new();
                Box::pin(async move {
                    self.revert_under(ctx, fresh, &snap, fault_id.as_deref())
                        .await
                })
                .await?;
                set(&|t| t.reverted = true);
            }
        }
        Ok(())
    }
}
