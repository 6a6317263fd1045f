//! NecroOps: a continuous reconcile loop that heals the unhealthy resources of a selector,
//! modelled on kube-runtime's controller.
//!
//! - **Triggers.** The adapter's watch stream (a resource changed) and a periodic resync
//!   (every `interval`, the selector is listed again) put resource keys on a queue.
//! - **Queue.** Each key is scheduled at most once (the earliest due time wins), so a burst
//!   of events for one resource is one reconcile. A key being reconciled is never
//!   reconciled concurrently; a trigger meanwhile schedules it again after.
//! - **Reconcile.** The resource's health is checked. Healthy: nothing to do (a resource
//!   that was unhealthy is reported recovered, with its time to recover). Unhealthy: the
//!   healing plugin (`restart-unhealthy` by default) runs through the engine, under the
//!   resource's lease like any execution; it waits the `unhealthy-for` threshold, restarts
//!   with backoff and gives up after `max-restarts`. A resource leased by someone else (a
//!   campaign's fault in progress) is left alone until the lease is gone.
//! - **Error policy.** A failed heal is tried again after an exponential backoff per
//!   resource (`backoff-initial` doubling up to `backoff-max`), reset once it is healthy.
//! - **Concurrency.** At most `concurrency` reconciles run at once.
//!
//! Stopping (the token, or Ctrl-C in `ire heal`) waits for the heals in flight to end.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ire_core::{
    EnvironmentAdapter, Error, ExecutionEngine, ExecutionRequest, LockService, Monitor,
    PluginConfig, Resource, Result,
};
use serde::Serialize;
use tokio::sync::{mpsc, Mutex, Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::campaign::model::Selector;
use crate::wiring::Node;

/// What NecroOps heals and how.
#[derive(Debug, Clone)]
pub struct HealPolicy {
    /// The adapter instance.
    pub adapter: String,
    /// Which of its resources.
    pub selector: Selector,
    /// The healing plugin.
    pub plugin: String,
    /// Unhealthy this long before a restart (passed to the plugin as `unhealthy-for`).
    pub unhealthy_for: Duration,
    /// Restarts per heal before it fails (`max-restarts`).
    pub max_restarts: u32,
    /// A restarted resource must be healthy within this (`healthy-within`).
    pub healthy_within: Duration,
    /// Backoff between restarts within a heal, and between failed heals: the first wait.
    pub backoff_initial: Duration,
    /// The longest wait.
    pub backoff_max: Duration,
    /// Resync period and health-check interval.
    pub interval: Duration,
    /// Reconciles at once.
    pub concurrency: usize,
    /// Who heals (recorded with each execution).
    pub principal: String,
}

impl HealPolicy {
    /// A policy over `selector` on `adapter` with the defaults.
    pub fn new(adapter: impl Into<String>, selector: Selector) -> Self {
        HealPolicy {
            adapter: adapter.into(),
            selector,
            plugin: "restart-unhealthy".into(),
            unhealthy_for: Duration::from_secs(5),
            max_restarts: 3,
            healthy_within: Duration::from_secs(30),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            interval: Duration::from_secs(2),
            concurrency: 4,
            principal: "necroops".into(),
        }
    }

    /// The plugin config the policy stands for.
    pub fn plugin_config(&self) -> serde_json::Value {
        let h = |d: Duration| humantime::format_duration(d).to_string();
        serde_json::json!({
            "unhealthy-for": h(self.unhealthy_for),
            "interval": h(self.interval.min(Duration::from_secs(1))),
            "healthy-within": h(self.healthy_within),
            "max-restarts": self.max_restarts,
            "backoff-initial": h(self.backoff_initial),
            "backoff-max": h(self.backoff_max),
        })
    }
}

/// What NecroOps saw and did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
pub enum HealEvent {
    /// A resource was seen unhealthy.
    Unhealthy {
        /// The resource.
        resource: String,
        /// What the check said.
        message: String,
    },
    /// A heal started.
    Healing {
        /// The resource.
        resource: String,
    },
    /// A heal ended with the resource healthy.
    Healed {
        /// The resource.
        resource: String,
        /// From first seen unhealthy to healthy again.
        #[serde(with = "humantime_serde")]
        time_to_recover: Duration,
        /// Restarts it took.
        restarts: u64,
    },
    /// It became healthy without a restart.
    Recovered {
        /// The resource.
        resource: String,
        /// From first seen unhealthy to healthy again.
        #[serde(with = "humantime_serde")]
        time_to_recover: Duration,
    },
    /// The heal failed; it is tried again after the backoff.
    HealFailed {
        /// The resource.
        resource: String,
        /// Why.
        error: String,
        /// When the next try is.
        #[serde(with = "humantime_serde")]
        retry_in: Duration,
    },
    /// Left alone: someone else holds its lease.
    Leased {
        /// The resource.
        resource: String,
        /// The holder.
        holder: String,
    },
}

impl std::fmt::Display for HealEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::campaign::report::human;
        match self {
            HealEvent::Unhealthy { resource, message } => {
                write!(f, "unhealthy  {resource}: {message}")
            }
            HealEvent::Healing { resource } => write!(f, "healing    {resource}"),
            HealEvent::Healed {
                resource,
                time_to_recover,
                restarts,
            } => write!(
                f,
                "healed     {resource} after {restarts} restart(s), {} after it was seen unhealthy",
                human(*time_to_recover)
            ),
            HealEvent::Recovered {
                resource,
                time_to_recover,
            } => write!(
                f,
                "recovered  {resource} by itself in {}",
                human(*time_to_recover)
            ),
            HealEvent::HealFailed {
                resource,
                error,
                retry_in,
            } => write!(
                f,
                "failed     {resource}: {error}; next try in {}",
                human(*retry_in)
            ),
            HealEvent::Leased { resource, holder } => {
                write!(f, "leased     {resource} by {holder}: left alone")
            }
        }
    }
}

/// Per resource, across reconciles.
#[derive(Debug, Default, Clone)]
struct KeyState {
    unhealthy_since: Option<Instant>,
    failures: u32,
    leased_by: Option<String>,
    heals: u32,
}

/// Totals of a NecroOps run.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct HealSummary {
    /// Reconciles run.
    pub reconciles: u64,
    /// Resources seen unhealthy.
    pub unhealthy: u64,
    /// Heals that ended healthy.
    pub healed: u64,
    /// Recoveries without a restart.
    pub recovered: u64,
    /// Heals that failed.
    pub failed: u64,
    /// Times to recover, per resource.
    pub times_to_recover: BTreeMap<String, Vec<String>>,
}

/// The controller.
pub struct NecroOps {
    node: Arc<Node>,
    policy: HealPolicy,
    adapter: Arc<dyn EnvironmentAdapter>,
    queue: Mutex<BTreeMap<String, Instant>>,
    wake: Notify,
    running: Mutex<BTreeSet<String>>,
    again: Mutex<BTreeSet<String>>,
    state: Mutex<BTreeMap<String, KeyState>>,
    summary: Mutex<HealSummary>,
    events: Option<mpsc::UnboundedSender<HealEvent>>,
}

impl NecroOps {
    /// A controller on `node`; `events` receives what it sees and does.
    pub fn new(
        node: Arc<Node>,
        policy: HealPolicy,
        events: Option<mpsc::UnboundedSender<HealEvent>>,
    ) -> Result<Arc<Self>> {
        let adapter = node.adapter(&policy.adapter)?.clone();
        if ire_core::PluginRegistry::get(node.registry.as_ref(), &policy.plugin).is_err() {
            return Err(Error::not_found("plugin", policy.plugin.clone())
                .context("the healing plugin of NecroOps"));
        }
        Ok(Arc::new(NecroOps {
            node,
            policy,
            adapter,
            queue: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
            running: Mutex::new(BTreeSet::new()),
            again: Mutex::new(BTreeSet::new()),
            state: Mutex::new(BTreeMap::new()),
            summary: Mutex::new(HealSummary::default()),
            events,
        }))
    }

    fn emit(&self, e: HealEvent) {
        tracing::info!(component = "necroops", event = ?e, "necroops");
        if let Some(tx) = &self.events {
            let _ = tx.send(e);
        }
    }

    async fn schedule(&self, key: String, at: Instant) {
        let mut q = self.queue.lock().await;
        let due = q.entry(key).or_insert(at);
        if at < *due {
            *due = at;
        }
        drop(q);
        self.wake.notify_one();
    }

    /// Runs until `stop` is canceled; returns the totals.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) -> Result<HealSummary> {
        let filter = self.policy.selector.to_filter();
        let mut tasks = tokio::task::JoinSet::new();
        // Resync: list the selector every interval.
        {
            let me = self.clone();
            let stop = stop.clone();
            let filter = filter.clone();
            tasks.spawn(async move {
                loop {
                    match me.adapter.list_resources(&filter).await {
                        Ok(list) => {
                            for r in list {
                                me.schedule(r.key.to_string(), Instant::now()).await;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(component = "necroops", error = %e, "resync failed")
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(me.policy.interval) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            });
        }
        // Watch: a change schedules its resource at once.
        if let Ok(mut stream) = self.adapter.watch_resources(&filter).await {
            let me = self.clone();
            let stop = stop.clone();
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        item = stream.next() => match item {
                            Some(Ok(ev)) => me.schedule(ev.resource.key.to_string(), Instant::now()).await,
                            Some(Err(e)) => tracing::debug!(component = "necroops", error = %e, "watch item"),
                            None => return,
                        },
                        _ = stop.cancelled() => return,
                    }
                }
            });
        }
        let limit = Arc::new(Semaphore::new(self.policy.concurrency.max(1)));
        let mut reconciles = tokio::task::JoinSet::new();
        loop {
            let next = self.queue.lock().await.values().min().copied();
            let wait = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.wake.notified() => continue,
                _ = wait => {}
                Some(_) = reconciles.join_next(), if !reconciles.is_empty() => continue,
            }
            let now = Instant::now();
            let due: Vec<String> = {
                let mut q = self.queue.lock().await;
                let keys: Vec<String> = q
                    .iter()
                    .filter(|(_, t)| **t <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in &keys {
                    q.remove(k);
                }
                keys
            };
            for key in due {
                if !self.running.lock().await.insert(key.clone()) {
                    self.again.lock().await.insert(key);
                    continue;
                }
                let me = self.clone();
                let permit = limit.clone().acquire_owned().await.expect("semaphore open");
                let stop = stop.clone();
                reconciles.spawn(async move {
                    let requeue = me.reconcile(&key, &stop).await;
                    drop(permit);
                    me.running.lock().await.remove(&key);
                    let again = me.again.lock().await.remove(&key);
                    if let Some(after) = requeue {
                        me.schedule(key.clone(), Instant::now() + after).await;
                    } else if again {
                        me.schedule(key, Instant::now()).await;
                    }
                });
            }
        }
        tasks.abort_all();
        // Heals in flight end (their executions are canceled by the engine at shutdown,
        // or finish); their results are still counted.
        while reconciles.join_next().await.is_some() {}
        Ok(self.summary.lock().await.clone())
    }

    /// One reconcile; returns when to look at the resource again (None: at the next resync
    /// or change).
    async fn reconcile(&self, key: &str, stop: &CancellationToken) -> Option<Duration> {
        self.summary.lock().await.reconciles += 1;
        let resource = match self.adapter.get_resource(key).await {
            Ok(r) => r,
            Err(_) => {
                self.state.lock().await.remove(key);
                return None;
            }
        };
        let health = self.node.monitor.check_health(&resource).await;
        let (healthy, message) = match health {
            Ok(h) => (h.is_healthy(), h.message),
            Err(e) => (false, e.to_string()),
        };
        let mut st = self
            .state
            .lock()
            .await
            .get(key)
            .cloned()
            .unwrap_or_default();
        if healthy {
            if let Some(since) = st.unhealthy_since.take() {
                if st.heals == 0 {
                    self.summary.lock().await.recovered += 1;
                    self.emit(HealEvent::Recovered {
                        resource: key.into(),
                        time_to_recover: since.elapsed(),
                    });
                }
            }
            self.state.lock().await.remove(key);
            return None;
        }
        if st.unhealthy_since.is_none() {
            st.unhealthy_since = Some(Instant::now());
            self.summary.lock().await.unhealthy += 1;
            self.emit(HealEvent::Unhealthy {
                resource: key.into(),
                message,
            });
        }
        // A campaign's fault holds the lease: the resource is unhealthy on purpose.
        match self.node.store.lock_info(&resource.key).await {
            Ok(info) => {
                let holder = info
                    .hold
                    .map(|h| format!("operator hold by {}", h.by))
                    .or(info.lease.map(|l| l.holder));
                if let Some(h) = holder {
                    if st.leased_by.as_deref() != Some(h.as_str()) {
                        self.emit(HealEvent::Leased {
                            resource: key.into(),
                            holder: h.clone(),
                        });
                    }
                    st.leased_by = Some(h);
                    self.state.lock().await.insert(key.into(), st);
                    return Some(self.policy.interval.min(Duration::from_millis(500)));
                }
                st.leased_by = None;
            }
            Err(e) => tracing::warn!(component = "necroops", error = %e, "lease lookup failed"),
        }
        self.state.lock().await.insert(key.into(), st.clone());
        if stop.is_cancelled() {
            return None;
        }
        self.emit(HealEvent::Healing {
            resource: key.into(),
        });
        let result = self.heal(resource).await;
        let mut st = self
            .state
            .lock()
            .await
            .get(key)
            .cloned()
            .unwrap_or_default();
        let requeue = match result {
            Ok(r) if r.is_success() => {
                let healed = r.metadata.get("healed").and_then(|v| v.as_bool()) != Some(false);
                let restarts = r
                    .metadata
                    .get("restarts")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0);
                let ttr = st.unhealthy_since.map(|s| s.elapsed()).unwrap_or_default();
                let mut summary = self.summary.lock().await;
                if healed && restarts > 0 {
                    summary.healed += 1;
                    summary
                        .times_to_recover
                        .entry(key.into())
                        .or_default()
                        .push(crate::campaign::report::human(ttr));
                    drop(summary);
                    st.heals += 1;
                    self.emit(HealEvent::Healed {
                        resource: key.into(),
                        time_to_recover: ttr,
                        restarts,
                    });
                } else {
                    summary.recovered += 1;
                    drop(summary);
                    self.emit(HealEvent::Recovered {
                        resource: key.into(),
                        time_to_recover: ttr,
                    });
                }
                self.state.lock().await.remove(key);
                return None;
            }
            Ok(r) => r.error.unwrap_or_else(|| format!("{:?}", r.status)),
            Err(e) => e.chain_message(),
        };
        st.failures += 1;
        let backoff = self
            .policy
            .backoff_initial
            .saturating_mul(1 << (st.failures - 1).min(20))
            .min(self.policy.backoff_max);
        self.summary.lock().await.failed += 1;
        self.emit(HealEvent::HealFailed {
            resource: key.into(),
            error: requeue,
            retry_in: backoff,
        });
        self.state.lock().await.insert(key.into(), st);
        Some(backoff)
    }

    async fn heal(&self, resource: Resource) -> Result<ire_core::ExecutionResult> {
        let mut request = ExecutionRequest::new(
            self.policy.plugin.clone(),
            resource,
            self.policy.principal.clone(),
        )
        .with_config(PluginConfig(self.policy.plugin_config()));
        request.labels.insert("app".into(), "necroops".into());
        request.labels.insert("node".into(), self.node.name.clone());
        self.node.engine.execute(request).await
    }
}
