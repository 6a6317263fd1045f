//! The node's supervisor tree.
//!
//! ractor's default stops a supervisor when a child stops. [`NodeSupervisor`] states its
//! policy instead, per child ([`RestartPolicy`]): which exits lead to a restart, the backoff
//! between restarts, and a restart budget within a window, beyond which the supervisor gives
//! up and stops (escalating to whoever watches it). Children that hang are found by a
//! heartbeat (a dead-man's switch: a ping the child must answer in time) and replaced.
//! [`SupervisorHandle::shutdown`] stops every child, newest first, within a deadline.
//!
//! Children are added through [`ChildSpec`]: a name, a policy and a spawn function, so any
//! actor (engine, resource-lock, monitor, reporter) joins the tree the same way.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use ire_core::{Error, Result};
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, Message, SpawnErr, SupervisionEvent};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::metric_names;

/// Where the current incarnation of a supervised actor is; the supervisor fills it on every
/// (re)start, and handles read it for each message.
pub struct ActorSlot<M: Message> {
    name: Arc<str>,
    inner: Arc<RwLock<Option<ActorRef<M>>>>,
}

impl<M: Message> Clone for ActorSlot<M> {
    fn clone(&self) -> Self {
        ActorSlot {
            name: self.name.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<M: Message> std::fmt::Debug for ActorSlot<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorSlot")
            .field("name", &self.name)
            .field(
                "actor",
                &self
                    .inner
                    .read()
                    .expect("slot lock")
                    .as_ref()
                    .map(|a| a.get_id()),
            )
            .finish()
    }
}

impl<M: Message> ActorSlot<M> {
    /// An empty slot for the actor called `name`.
    pub fn new(name: &str) -> Self {
        ActorSlot {
            name: name.into(),
            inner: Arc::new(RwLock::new(None)),
        }
    }

    /// The running actor, or `Unavailable` while it is (re)starting or stopped.
    pub fn get(&self) -> Result<ActorRef<M>> {
        let guard = self.inner.read().expect("slot lock");
        match guard.as_ref() {
            Some(a)
                if matches!(
                    a.get_status(),
                    ractor::ActorStatus::Running
                        | ractor::ActorStatus::Starting
                        | ractor::ActorStatus::Upgrading
                ) =>
            {
                Ok(a.clone())
            }
            _ => Err(Error::Unavailable {
                message: format!(
                    "the {} actor is not running (restarting or stopped)",
                    self.name
                ),
                source: None,
            }),
        }
    }

    /// Puts a new incarnation in the slot.
    pub fn set(&self, actor: ActorRef<M>) {
        *self.inner.write().expect("slot lock") = Some(actor);
    }

    /// Empties the slot.
    pub fn clear(&self) {
        *self.inner.write().expect("slot lock") = None;
    }
}

/// Which exits lead to a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartKind {
    /// Restarted after any exit (the node's core actors).
    Permanent,
    /// Restarted after a failure (panic, error, kill), not after a clean stop.
    Transient,
    /// Never restarted.
    Temporary,
}

/// How a child is restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Which exits lead to a restart.
    pub kind: RestartKind,
    /// The delay before the first restart within the window; doubles for each further one.
    pub initial_backoff: Duration,
    /// The largest delay.
    pub max_backoff: Duration,
    /// Restarts allowed within `window`; one more and the supervisor stops.
    pub max_restarts: u32,
    /// The window the budget counts over.
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            kind: RestartKind::Permanent,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// The delay before restart number `n` within the window (1 is the first).
    pub fn backoff(&self, n: u32) -> Duration {
        let shift = n.saturating_sub(1).min(20);
        self.initial_backoff
            .saturating_mul(1u32 << shift)
            .min(self.max_backoff)
    }
}

/// The dead-man's switch of a child: it must answer a ping within `timeout`, every `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// How often to ping.
    pub interval: Duration,
    /// How long the child has to answer before it is declared stuck and replaced.
    pub timeout: Duration,
}

/// Pings a child; resolves true when it answered.
pub type PingFn = Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// Spawns a child linked to the given supervisor.
pub type SpawnFn = Arc<
    dyn Fn(ActorCell) -> BoxFuture<'static, std::result::Result<SpawnedChild, SpawnErr>>
        + Send
        + Sync,
>;

/// A child the spawn function started.
pub struct SpawnedChild {
    /// The child.
    pub cell: ActorCell,
    /// How to ping it, for the heartbeat.
    pub ping: Option<PingFn>,
}

/// A child of the supervisor.
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique name (engine, resource-lock, monitor, reporter).
    pub name: String,
    /// How it is restarted.
    pub policy: RestartPolicy,
    /// Its dead-man's switch, if it has one.
    pub heartbeat: Option<Heartbeat>,
    /// How to start it.
    pub spawn: SpawnFn,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("heartbeat", &self.heartbeat)
            .finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// A child with the default policy and no heartbeat.
    pub fn new(name: impl Into<String>, spawn: SpawnFn) -> Self {
        ChildSpec {
            name: name.into(),
            policy: RestartPolicy::default(),
            heartbeat: None,
            spawn,
        }
    }

    /// Sets the policy.
    pub fn with_policy(mut self, policy: RestartPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the heartbeat.
    pub fn with_heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }
}

/// What the supervisor knows about a child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildStatus {
    /// Its name.
    pub name: String,
    /// True while an incarnation runs.
    pub alive: bool,
    /// Restarts since the supervisor started.
    pub restarts: u64,
    /// Times it was found stuck and replaced.
    pub stuck: u64,
}

/// How one child ended during shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildShutdown {
    /// It stopped within the deadline.
    Stopped,
    /// It did not; it was killed.
    Killed,
    /// It was not running.
    NotRunning,
}

/// The outcome of a graceful shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Each child, in the order they were stopped.
    pub children: Vec<(String, ChildShutdown)>,
    /// True when every child stopped within the deadline.
    pub clean: bool,
}

/// Messages of the supervisor.
pub enum SupervisorMessage {
    /// Starts a child again (sent after its backoff).
    Restart(String),
    /// Time to ping children whose heartbeat is due.
    HeartbeatTick,
    /// A ping's outcome.
    HeartbeatResult {
        /// The child.
        name: String,
        /// The incarnation pinged.
        actor: ractor::ActorId,
        /// True when it answered in time.
        answered: bool,
    },
    /// The children's status.
    Status(oneshot::Sender<Vec<ChildStatus>>),
    /// Stops every child, newest first, within the deadline, then the supervisor.
    Shutdown {
        /// The time everything must have stopped by.
        deadline: Instant,
        /// Where the report goes.
        reply: oneshot::Sender<ShutdownReport>,
    },
}

impl Message for SupervisorMessage {}

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    ping: Option<PingFn>,
    recent_restarts: VecDeque<Instant>,
    restarts: u64,
    stuck: u64,
    last_ping: Option<Instant>,
    ping_in_flight: bool,
}

/// The supervisor's state.
pub struct SupervisorState {
    children: Vec<Child>,
    shutting_down: bool,
}

/// The node's supervisor actor.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeSupervisor;

impl NodeSupervisor {
    /// Starts a supervisor with these children (started in order) and returns its handle.
    pub async fn start(name: Option<String>, children: Vec<ChildSpec>) -> Result<SupervisorHandle> {
        let mut seen = std::collections::BTreeSet::new();
        for c in &children {
            if !seen.insert(c.name.clone()) {
                return Err(Error::invalid(
                    "supervisor children",
                    format!("{} appears twice", c.name),
                ));
            }
        }
        let (actor, join) = Actor::spawn(name, NodeSupervisor, children)
            .await
            .map_err(|e| {
                Error::other(
                    ire_core::ErrorClass::Fatal,
                    format!("starting the supervisor: {e}"),
                    None,
                )
            })?;
        Ok(SupervisorHandle {
            actor,
            join: Arc::new(tokio::sync::Mutex::new(Some(join))),
        })
    }
}

fn find<'a>(children: &'a mut [Child], cell: &ActorCell) -> Option<&'a mut Child> {
    children
        .iter_mut()
        .find(|c| c.cell.as_ref().is_some_and(|x| x.get_id() == cell.get_id()))
}

impl NodeSupervisor {
    /// Decides about a child that exited; `failed` is false for a clean stop.
    fn on_child_exit(
        myself: &ActorRef<SupervisorMessage>,
        state: &mut SupervisorState,
        cell: &ActorCell,
        failed: bool,
        why: String,
    ) {
        let shutting_down = state.shutting_down;
        let Some(child) = find(&mut state.children, cell) else {
            return;
        };
        child.cell = None;
        child.ping = None;
        child.ping_in_flight = false;
        if shutting_down {
            return;
        }
        let restart = match child.spec.policy.kind {
            RestartKind::Permanent => true,
            RestartKind::Transient => failed,
            RestartKind::Temporary => false,
        };
        tracing::warn!(component = "supervisor", child = %child.spec.name, failed, reason = %why, restart, "child exited");
        if !restart {
            return;
        }
        Self::schedule_restart(myself, child);
    }

    fn schedule_restart(myself: &ActorRef<SupervisorMessage>, child: &mut Child) {
        let now = Instant::now();
        let window = child.spec.policy.window;
        while child
            .recent_restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            child.recent_restarts.pop_front();
        }
        if child.recent_restarts.len() as u32 >= child.spec.policy.max_restarts {
            let reason = format!(
                "restart budget of child {} exhausted ({} restarts within {})",
                child.spec.name,
                child.spec.policy.max_restarts,
                humantime::format_duration(window)
            );
            tracing::error!(component = "supervisor", child = %child.spec.name, "{reason}; stopping the supervisor");
            myself.stop(Some(reason));
            return;
        }
        child.recent_restarts.push_back(now);
        let delay = child
            .spec
            .policy
            .backoff(child.recent_restarts.len() as u32);
        let name = child.spec.name.clone();
        tracing::info!(component = "supervisor", child = %name, delay_ms = delay.as_millis() as u64, "restarting child after backoff");
        myself.send_after(delay, move || SupervisorMessage::Restart(name));
    }
}

impl Actor for NodeSupervisor {
    type Msg = SupervisorMessage;
    type State = SupervisorState;
    type Arguments = Vec<ChildSpec>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        specs: Vec<ChildSpec>,
    ) -> std::result::Result<Self::State, ActorProcessingErr> {
        let mut children = Vec::with_capacity(specs.len());
        for spec in specs {
            let spawned = (spec.spawn)(myself.get_cell())
                .await
                .map_err(|e| format!("starting child {}: {e}", spec.name))?;
            children.push(Child {
                spec,
                cell: Some(spawned.cell),
                ping: spawned.ping,
                recent_restarts: VecDeque::new(),
                restarts: 0,
                stuck: 0,
                last_ping: None,
                ping_in_flight: false,
            });
        }
        let tick = children
            .iter()
            .filter_map(|c| c.spec.heartbeat.map(|h| h.interval))
            .min();
        if let Some(tick) = tick {
            // Tick at a fraction of the shortest interval so each child is pinged close to
            // its own interval.
            let period = (tick / 2).max(Duration::from_millis(10));
            myself.send_interval(period, || SupervisorMessage::HeartbeatTick);
        }
        Ok(SupervisorState {
            children,
            shutting_down: false,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        // When the supervisor gives up (budget exhausted), its children go with it.
        state.shutting_down = true;
        myself
            .get_cell()
            .stop_children_and_wait(
                Some("supervisor stopped".into()),
                Some(Duration::from_secs(10)),
            )
            .await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match message {
            SupervisorMessage::Restart(name) => {
                if state.shutting_down {
                    return Ok(());
                }
                let Some(child) = state.children.iter_mut().find(|c| c.spec.name == name) else {
                    return Ok(());
                };
                if child.cell.is_some() {
                    return Ok(());
                }
                match (child.spec.spawn)(myself.get_cell()).await {
                    Ok(s) => {
                        child.cell = Some(s.cell);
                        child.ping = s.ping;
                        child.last_ping = None;
                        child.restarts += 1;
                        metrics::counter!(metric_names::SUPERVISOR_RESTARTS_TOTAL, "child" => name.clone())
                            .increment(1);
                        tracing::info!(component = "supervisor", child = %name, restarts = child.restarts, "child restarted");
                    }
                    Err(e) => {
                        tracing::error!(component = "supervisor", child = %name, error = %e, "restart failed");
                        Self::schedule_restart(&myself, child);
                    }
                }
            }
            SupervisorMessage::HeartbeatTick => {
                if state.shutting_down {
                    return Ok(());
                }
                let now = Instant::now();
                for child in &mut state.children {
                    let (Some(hb), Some(ping), Some(cell)) =
                        (child.spec.heartbeat, child.ping.clone(), child.cell.clone())
                    else {
                        continue;
                    };
                    if child.ping_in_flight
                        || child
                            .last_ping
                            .is_some_and(|t| now.duration_since(t) < hb.interval)
                    {
                        continue;
                    }
                    child.ping_in_flight = true;
                    child.last_ping = Some(now);
                    let me = myself.clone();
                    let name = child.spec.name.clone();
                    tokio::spawn(async move {
                        let answered = tokio::time::timeout(hb.timeout, ping())
                            .await
                            .unwrap_or(false);
                        let _ = me.cast(SupervisorMessage::HeartbeatResult {
                            name,
                            actor: cell.get_id(),
                            answered,
                        });
                    });
                }
            }
            SupervisorMessage::HeartbeatResult {
                name,
                actor,
                answered,
            } => {
                let Some(child) = state.children.iter_mut().find(|c| c.spec.name == name) else {
                    return Ok(());
                };
                child.ping_in_flight = false;
                let current = child.cell.as_ref().filter(|c| c.get_id() == actor);
                if let (false, Some(cell), false) = (answered, current, state.shutting_down) {
                    child.stuck += 1;
                    metrics::counter!(metric_names::SUPERVISOR_STUCK_TOTAL, "child" => name.clone()).increment(1);
                    tracing::error!(component = "supervisor", child = %name, "child missed its heartbeat: killing and replacing it");
                    // The kill arrives as a termination event, which restarts it per policy.
                    cell.kill();
                }
            }
            SupervisorMessage::Status(reply) => {
                let _ = reply.send(
                    state
                        .children
                        .iter()
                        .map(|c| ChildStatus {
                            name: c.spec.name.clone(),
                            alive: c.cell.is_some(),
                            restarts: c.restarts,
                            stuck: c.stuck,
                        })
                        .collect(),
                );
            }
            SupervisorMessage::Shutdown { deadline, reply } => {
                state.shutting_down = true;
                let mut report = ShutdownReport {
                    children: Vec::new(),
                    clean: true,
                };
                for child in state.children.iter_mut().rev() {
                    let outcome = match child.cell.take() {
                        None => ChildShutdown::NotRunning,
                        Some(cell) => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            match cell
                                .stop_and_wait(
                                    Some("node shutdown".into()),
                                    Some(left.max(Duration::from_millis(1))),
                                )
                                .await
                            {
                                Ok(()) => ChildShutdown::Stopped,
                                Err(_) => {
                                    report.clean = false;
                                    tracing::error!(component = "supervisor", child = %child.spec.name, "did not stop by the deadline: killed");
                                    let _ = cell.kill_and_wait(Some(Duration::from_secs(1))).await;
                                    ChildShutdown::Killed
                                }
                            }
                        }
                    };
                    report.children.push((child.spec.name.clone(), outcome));
                }
                let _ = reply.send(report);
                myself.stop(Some("node shutdown".into()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                Self::on_child_exit(&myself, state, &cell, true, err.to_string());
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                // A kill (stuck child, or someone's kill) is a failure; a stop is clean.
                let failed = reason.as_deref() == Some("killed");
                Self::on_child_exit(&myself, state, &cell, failed, reason.unwrap_or_default());
            }
            _ => {}
        }
        Ok(())
    }
}

/// A handle on a running supervisor.
#[derive(Clone)]
pub struct SupervisorHandle {
    actor: ActorRef<SupervisorMessage>,
    join: Arc<tokio::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for SupervisorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorHandle")
            .field("actor", &self.actor.get_id())
            .finish()
    }
}

impl SupervisorHandle {
    /// The supervisor actor.
    pub fn actor(&self) -> &ActorRef<SupervisorMessage> {
        &self.actor
    }

    /// The children's status.
    pub async fn status(&self) -> Result<Vec<ChildStatus>> {
        let (tx, rx) = oneshot::channel();
        self.actor
            .cast(SupervisorMessage::Status(tx))
            .map_err(|_| unavailable())?;
        rx.await.map_err(|_| unavailable())
    }

    /// True while the supervisor runs.
    pub fn is_running(&self) -> bool {
        matches!(self.actor.get_status(), ractor::ActorStatus::Running)
    }

    /// Stops every child (newest first) and the supervisor within `timeout`. Children that
    /// do not stop in time are killed; the report says which.
    pub async fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport> {
        let deadline = Instant::now() + timeout;
        let (tx, rx) = oneshot::channel();
        self.actor
            .cast(SupervisorMessage::Shutdown {
                deadline,
                reply: tx,
            })
            .map_err(|_| unavailable())?;
        let report = rx.await.map_err(|_| unavailable())?;
        if let Some(join) = self.join.lock().await.take() {
            let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
            let _ = tokio::time::timeout(left, join).await;
        }
        Ok(report)
    }

    /// Waits until the supervisor has stopped (after a shutdown or an exhausted budget).
    pub async fn wait(&self) {
        if let Some(join) = self.join.lock().await.take() {
            let _ = join.await;
        }
    }
}

fn unavailable() -> Error {
    Error::Unavailable {
        message: "the supervisor is not running".into(),
        source: None,
    }
}
