//! Time to detect and time to recover, for every fault.
//!
//! The engine tells the [`MonitorActor`] that a fault was injected
//! ([`FaultWatch::fault_injected`]). The actor then probes the resource's health every
//! [`FaultWatchConfig::probe_interval`] (with the strategy the resource configures) and
//! records when it was first seen unhealthy (detected) and then healthy again (recovered),
//! publishing `resource.unhealthy` and `resource.healthy` events and recording the
//! `ire_monitor_time_to_*` histograms. When the execution ends the engine calls
//! [`FaultWatch::finish`] and copies the [`FaultTimings`] into its
//! [`ExecutionRecord`] with [`FaultTimings::apply_to`].
//!
//! Both times are measured from the injection. Their resolution is the probe interval plus
//! the duration of one check. A resource that never recovers is probed until
//! [`FaultWatchConfig::give_up_after`], then its watch ends with no recovery time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ire_core::event::event_type;
use ire_core::{Error, Event, EventBus, ExecutionRecord, Monitor, Resource, ResourceKey, Result};
use ractor::concurrency::JoinHandle;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::metric_names;

/// How faults are watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultWatchConfig {
    /// Time between two health probes of a faulted resource.
    pub probe_interval: Duration,
    /// A resource not healthy again after this long stops being probed.
    pub give_up_after: Duration,
}

impl Default for FaultWatchConfig {
    fn default() -> Self {
        FaultWatchConfig {
            probe_interval: Duration::from_millis(250),
            give_up_after: Duration::from_secs(15 * 60),
        }
    }
}

/// What the monitor saw of one fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultTimings {
    /// The execution that injected the fault.
    pub execution_id: String,
    /// The faulted resource.
    pub resource: ResourceKey,
    /// When the fault was injected.
    pub injected_at: DateTime<Utc>,
    /// When the resource was first seen unhealthy.
    pub detected_at: Option<DateTime<Utc>>,
    /// When it was first seen healthy again after that.
    pub recovered_at: Option<DateTime<Utc>>,
    /// True when probing stopped before a recovery was seen.
    pub gave_up: bool,
}

fn since(from: DateTime<Utc>, to: Option<DateTime<Utc>>) -> Option<Duration> {
    to.map(|t| (t - from).to_std().unwrap_or_default())
}

impl FaultTimings {
    /// Time from injection to the resource being seen unhealthy.
    pub fn time_to_detect(&self) -> Option<Duration> {
        since(self.injected_at, self.detected_at)
    }

    /// Time from injection to the resource being healthy again.
    pub fn time_to_recover(&self) -> Option<Duration> {
        since(self.injected_at, self.recovered_at)
    }

    /// Copies the times into an execution record.
    pub fn apply_to(&self, record: &mut ExecutionRecord) {
        record.time_to_detect = self.time_to_detect();
        record.time_to_recover = self.time_to_recover();
    }

    fn done(&self) -> bool {
        self.recovered_at.is_some() || self.gave_up
    }
}

type Reply = RpcReplyPort<Option<FaultTimings>>;

/// Messages of the [`MonitorActor`].
pub enum MonitorMessage {
    /// A fault was injected on the resource at the given time.
    FaultInjected {
        /// The execution that injected it.
        execution_id: String,
        /// The resource.
        resource: Box<Resource>,
        /// When.
        at: DateTime<Utc>,
    },
    /// A probe's result (sent by the actor's probe tasks).
    Observed {
        /// The execution whose fault is probed.
        execution_id: String,
        /// Healthy or not.
        healthy: bool,
        /// The check's message.
        message: String,
        /// When the result was seen.
        at: DateTime<Utc>,
    },
    /// Probing ran out of time (sent by the probe task).
    GaveUp(String),
    /// The timings so far.
    Timings(String, Reply),
    /// The timings once the resource recovered or probing gave up.
    WaitRecovered(String, Reply),
    /// Stops watching and returns the timings.
    Finish(String, Reply),
}

impl ractor::Message for MonitorMessage {}

/// What the [`MonitorActor`] is started with.
#[derive(Clone)]
pub struct MonitorArgs {
    /// Runs the health checks.
    pub monitor: Arc<dyn Monitor>,
    /// Where detection and recovery events go.
    pub bus: Option<Arc<dyn EventBus>>,
    /// Probe timing.
    pub config: FaultWatchConfig,
    /// The running actor: set by each start, so that [`FaultWatch`] handles follow a
    /// restart (the faults being watched when it stopped are lost).
    pub slot: ActorSlot,
}

/// Where a started [`MonitorActor`] leaves its reference for its handles.
pub type ActorSlot = Arc<std::sync::RwLock<Option<ActorRef<MonitorMessage>>>>;

impl MonitorArgs {
    /// Arguments with a fresh slot.
    pub fn new(
        monitor: Arc<dyn Monitor>,
        bus: Option<Arc<dyn EventBus>>,
        config: FaultWatchConfig,
    ) -> Self {
        MonitorArgs {
            monitor,
            bus,
            config,
            slot: ActorSlot::default(),
        }
    }

    /// The handle on the actor started (and restarted) with these arguments.
    pub fn handle(&self) -> FaultWatch {
        FaultWatch {
            slot: self.slot.clone(),
        }
    }
}

struct Watch {
    timings: FaultTimings,
    resource: Resource,
    cancel: CancellationToken,
    waiters: Vec<Reply>,
}

/// The actor's state: the faults being watched.
pub struct MonitorState {
    args: MonitorArgs,
    watches: BTreeMap<String, Watch>,
}

impl MonitorState {
    fn gauge(&self) {
        let active = self.watches.values().filter(|w| !w.timings.done()).count();
        metrics::gauge!(metric_names::MONITOR_FAULTS_WATCHED).set(active as f64);
    }

    async fn publish(&self, event: Event) {
        if let Some(bus) = &self.args.bus {
            if let Err(e) = bus.publish(event).await {
                tracing::debug!(component = "monitor", error = %e, "event not published");
            }
        }
    }
}

/// Watches faulted resources and measures detection and recovery (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct MonitorActor;

fn spawn_probe(
    myself: ActorRef<MonitorMessage>,
    monitor: Arc<dyn Monitor>,
    config: FaultWatchConfig,
    execution_id: String,
    resource: Resource,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        loop {
            let checked = tokio::select! {
                _ = cancel.cancelled() => return,
                r = monitor.check_health(&resource) => r,
            };
            match checked {
                Ok(s) => {
                    let msg = MonitorMessage::Observed {
                        execution_id: execution_id.clone(),
                        healthy: s.is_healthy(),
                        message: s.message,
                        at: Utc::now(),
                    };
                    if myself.cast(msg).is_err() {
                        return;
                    }
                }
                // Could not check (misconfiguration): not evidence either way.
                Err(e) => tracing::warn!(
                    component = "monitor",
                    execution_id = %execution_id,
                    resource_id = %resource.key,
                    error = %e.chain_message(),
                    "health probe failed"
                ),
            }
            if started.elapsed() >= config.give_up_after {
                let _ = myself.cast(MonitorMessage::GaveUp(execution_id));
                return;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(config.probe_interval) => {}
            }
        }
    });
}

impl Actor for MonitorActor {
    type Msg = MonitorMessage;
    type State = MonitorState;
    type Arguments = MonitorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: MonitorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        *args.slot.write().expect("monitor lock poisoned") = Some(myself);
        Ok(MonitorState {
            args,
            watches: BTreeMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MonitorMessage::FaultInjected {
                execution_id,
                resource,
                at,
            } => {
                if let Some(old) = state.watches.remove(&execution_id) {
                    old.cancel.cancel();
                }
                let cancel = CancellationToken::new();
                spawn_probe(
                    myself,
                    state.args.monitor.clone(),
                    state.args.config,
                    execution_id.clone(),
                    (*resource).clone(),
                    cancel.clone(),
                );
                state.watches.insert(
                    execution_id.clone(),
                    Watch {
                        timings: FaultTimings {
                            execution_id,
                            resource: resource.key.clone(),
                            injected_at: at,
                            detected_at: None,
                            recovered_at: None,
                            gave_up: false,
                        },
                        resource: *resource,
                        cancel,
                        waiters: Vec::new(),
                    },
                );
                state.gauge();
            }
            MonitorMessage::Observed {
                execution_id,
                healthy,
                message,
                at,
            } => {
                let Some(w) = state.watches.get_mut(&execution_id) else {
                    return Ok(());
                };
                let mut event = None;
                if !healthy && w.timings.detected_at.is_none() {
                    w.timings.detected_at = Some(at);
                    let ttd = w.timings.time_to_detect().unwrap_or_default();
                    metrics::histogram!(metric_names::MONITOR_TIME_TO_DETECT_SECONDS)
                        .record(ttd.as_secs_f64());
                    tracing::info!(component = "monitor", execution_id = %execution_id, resource_id = %w.timings.resource, time_to_detect = ?ttd, "fault detected: {message}");
                    event = Some(
                        Event::new(event_type::RESOURCE_UNHEALTHY, "monitor")
                            .with_resource(w.resource.clone())
                            .with_metadata("execution_id", execution_id.clone())
                            .with_data("timeToDetectMs", ttd.as_millis() as u64)
                            .with_data("message", message),
                    );
                } else if healthy
                    && w.timings.detected_at.is_some()
                    && w.timings.recovered_at.is_none()
                {
                    w.timings.recovered_at = Some(at);
                    w.cancel.cancel();
                    let ttr = w.timings.time_to_recover().unwrap_or_default();
                    metrics::histogram!(metric_names::MONITOR_TIME_TO_RECOVER_SECONDS)
                        .record(ttr.as_secs_f64());
                    tracing::info!(component = "monitor", execution_id = %execution_id, resource_id = %w.timings.resource, time_to_recover = ?ttr, "resource recovered");
                    for waiter in w.waiters.drain(..) {
                        let _ = waiter.send(Some(w.timings.clone()));
                    }
                    event = Some(
                        Event::new(event_type::RESOURCE_HEALTHY, "monitor")
                            .with_resource(w.resource.clone())
                            .with_metadata("execution_id", execution_id.clone())
                            .with_data("timeToRecoverMs", ttr.as_millis() as u64),
                    );
                }
                if let Some(e) = event {
                    state.gauge();
                    state.publish(e).await;
                }
            }
            MonitorMessage::GaveUp(execution_id) => {
                if let Some(w) = state.watches.get_mut(&execution_id) {
                    if w.timings.recovered_at.is_none() {
                        w.timings.gave_up = true;
                        for waiter in w.waiters.drain(..) {
                            let _ = waiter.send(Some(w.timings.clone()));
                        }
                    }
                }
                state.gauge();
            }
            MonitorMessage::Timings(id, reply) => {
                let _ = reply.send(state.watches.get(&id).map(|w| w.timings.clone()));
            }
            MonitorMessage::WaitRecovered(id, reply) => match state.watches.get_mut(&id) {
                Some(w) if !w.timings.done() => w.waiters.push(reply),
                Some(w) => {
                    let _ = reply.send(Some(w.timings.clone()));
                }
                None => {
                    let _ = reply.send(None);
                }
            },
            MonitorMessage::Finish(id, reply) => {
                let timings = state.watches.remove(&id).map(|w| {
                    w.cancel.cancel();
                    for waiter in w.waiters {
                        let _ = waiter.send(Some(w.timings.clone()));
                    }
                    w.timings
                });
                state.gauge();
                let _ = reply.send(timings);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for (_, w) in std::mem::take(&mut state.watches) {
            w.cancel.cancel();
            for waiter in w.waiters {
                let _ = waiter.send(Some(w.timings.clone()));
            }
        }
        Ok(())
    }
}

/// The engine's handle on the [`MonitorActor`]. Cheap to clone.
#[derive(Clone)]
pub struct FaultWatch {
    slot: ActorSlot,
}

impl std::fmt::Debug for FaultWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultWatch")
            .field("actor", &self.actor().ok().map(|a| a.get_id()))
            .finish()
    }
}

fn gone(e: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        message: format!("monitor actor: {e}"),
        source: None,
    }
}

impl FaultWatch {
    /// Starts an unsupervised monitor actor.
    pub async fn spawn(args: MonitorArgs) -> Result<(FaultWatch, JoinHandle<()>)> {
        let handle = args.handle();
        let (_actor, join) = Actor::spawn(None, MonitorActor, args).await.map_err(gone)?;
        Ok((handle, join))
    }

    /// The running actor behind this handle.
    pub fn actor(&self) -> Result<ActorRef<MonitorMessage>> {
        self.slot
            .read()
            .expect("monitor lock poisoned")
            .clone()
            .ok_or_else(|| gone("not started"))
    }

    /// Starts measuring a fault injected on `resource` at `at` by `execution_id`.
    pub fn fault_injected(
        &self,
        execution_id: &str,
        resource: &Resource,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.actor()?
            .cast(MonitorMessage::FaultInjected {
                execution_id: execution_id.to_owned(),
                resource: Box::new(resource.clone()),
                at,
            })
            .map_err(gone)
    }

    /// The timings so far (None: not watched).
    pub async fn timings(&self, execution_id: &str) -> Result<Option<FaultTimings>> {
        let id = execution_id.to_owned();
        ractor::call!(self.actor()?, MonitorMessage::Timings, id).map_err(gone)
    }

    /// Waits until the resource recovered (or probing gave up), at most `timeout`.
    pub async fn wait_recovered(
        &self,
        execution_id: &str,
        timeout: Duration,
    ) -> Result<FaultTimings> {
        let id = execution_id.to_owned();
        match self
            .actor()?
            .call(
                |reply| MonitorMessage::WaitRecovered(id, reply),
                Some(timeout),
            )
            .await
            .map_err(gone)?
        {
            CallResult::Success(Some(t)) => Ok(t),
            CallResult::Success(None) => Err(Error::not_found("watched fault", execution_id)),
            CallResult::Timeout => Err(Error::Timeout {
                operation: format!("waiting for the resource of {execution_id} to recover"),
                after: timeout,
            }),
            CallResult::SenderError => Err(gone("stopped")),
        }
    }

    /// Stops watching and returns the timings (None: not watched).
    pub async fn finish(&self, execution_id: &str) -> Result<Option<FaultTimings>> {
        let id = execution_id.to_owned();
        ractor::call!(self.actor()?, MonitorMessage::Finish, id).map_err(gone)
    }
}
