//! The monitor (the seed's Monitor): health checks with pluggable strategies, condition
//! waits, metrics and event watches through the adapters ([`HealthMonitor`]), and the
//! [`MonitorActor`] that measures, for every fault, the time to detect (fault injected ->
//! resource seen unhealthy) and the time to recover (-> healthy again), through [`FaultWatch`].

pub mod fault_watch;
pub mod http_client;
pub mod strategies;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use ire_core::event::event_type;
use ire_core::{
    Condition, Error, Event, EventStream, HealthCheckStrategy, HealthStatus, HealthStatusType,
    Metrics, Monitor, Resource, ResourceEventType, ResourceFilter, Result,
};

use crate::metric_names;

pub use fault_watch::{
    ActorSlot, FaultTimings, FaultWatch, FaultWatchConfig, MonitorActor, MonitorArgs,
    MonitorMessage,
};
pub use strategies::{
    Adapters, ExecHealthCheck, HttpHealthCheck, StatusHealthCheck, TcpHealthCheck,
};

/// The strategy used for resources that configure no health check.
pub const DEFAULT_STRATEGY: &str = "status";

/// Condition type that [`Monitor::wait_for_condition`] compares with the resource's phase.
pub const PHASE_CONDITION: &str = "Phase";

/// Health checks, condition waits, metrics and watches over the node's adapters.
pub struct HealthMonitor {
    adapters: Adapters,
    strategies: RwLock<BTreeMap<String, Arc<dyn HealthCheckStrategy>>>,
    poll_interval: Duration,
}

impl std::fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("adapters", &self.adapters)
            .field("strategies", &self.strategy_names())
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

impl HealthMonitor {
    /// A monitor over `adapters` with the http, tcp, exec and status strategies.
    pub fn new(adapters: Adapters) -> Self {
        let mut strategies: BTreeMap<String, Arc<dyn HealthCheckStrategy>> = BTreeMap::new();
        for s in [
            Arc::new(HttpHealthCheck::default()) as Arc<dyn HealthCheckStrategy>,
            Arc::new(TcpHealthCheck::default()),
            Arc::new(ExecHealthCheck::new(adapters.clone())),
            Arc::new(StatusHealthCheck::new(adapters.clone())),
        ] {
            strategies.insert(s.name().to_owned(), s);
        }
        HealthMonitor {
            adapters,
            strategies: RwLock::new(strategies),
            poll_interval: Duration::from_millis(500),
        }
    }

    /// Sets how often condition waits poll (health waits use the resource's interval when
    /// it is shorter).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The adapters the monitor reaches resources through.
    pub fn adapters(&self) -> &Adapters {
        &self.adapters
    }

    /// The registered strategy names.
    pub fn strategy_names(&self) -> Vec<String> {
        self.strategies
            .read()
            .expect("monitor lock poisoned")
            .keys()
            .cloned()
            .collect()
    }

    fn strategy_for(
        &self,
        resource: &Resource,
    ) -> Result<(Arc<dyn HealthCheckStrategy>, Duration)> {
        let (name, timeout) = match &resource.spec.health_check {
            Some(c) => (c.type_.as_str(), c.timeout),
            None => (DEFAULT_STRATEGY, Duration::from_secs(5)),
        };
        let s = self
            .health_check_strategy(name)
            .map_err(|e| e.context(format!("resource {} spec.healthCheck.type", resource.key)))?;
        Ok((s, timeout))
    }

    fn poll_every(&self, resource: &Resource) -> Duration {
        resource
            .spec
            .health_check
            .as_ref()
            .map(|c| c.interval.min(self.poll_interval))
            .unwrap_or(self.poll_interval)
            .max(Duration::from_millis(1))
    }
}

#[async_trait]
impl Monitor for HealthMonitor {
    async fn check_health(&self, resource: &Resource) -> Result<HealthStatus> {
        let (strategy, timeout) = self.strategy_for(resource)?;
        let name = strategy.name().to_owned();
        let started = Instant::now();
        // A strategy that hangs past the check's timeout counts as unhealthy.
        let result = match tokio::time::timeout(
            timeout + Duration::from_millis(100),
            strategy.check(resource),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Ok(HealthStatus::unhealthy(format!(
                "{name} check of {} timed out after {}",
                resource.key,
                humantime::format_duration(timeout)
            ))),
        };
        let outcome = match &result {
            Ok(s) if s.status == HealthStatusType::Healthy => "healthy",
            Ok(s) if s.status == HealthStatusType::Unhealthy => "unhealthy",
            Ok(_) => "unknown",
            Err(_) => "error",
        };
        metrics::counter!(metric_names::MONITOR_HEALTH_CHECKS_TOTAL, "strategy" => name.clone(), "outcome" => outcome)
            .increment(1);
        metrics::histogram!(metric_names::MONITOR_HEALTH_CHECK_SECONDS, "strategy" => name)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn wait_for_condition(
        &self,
        resource: &Resource,
        condition: &Condition,
        timeout: Duration,
    ) -> Result<()> {
        let adapter = self.adapters.for_resource(resource)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last;
        loop {
            match adapter.get_resource(resource.key.as_str()).await {
                Ok(current) => {
                    if condition_met(&current, condition) {
                        return Ok(());
                    }
                    last = describe(&current, condition);
                }
                Err(e) => last = e.chain_message(),
            }
            if tokio::time::Instant::now() + self.poll_interval > deadline {
                return Err(Error::Timeout {
                    operation: format!(
                        "waiting for {} {}={} (last seen: {last})",
                        resource.key, condition.type_, condition.status
                    ),
                    after: timeout,
                });
            }
            tokio::time::sleep(self.poll_interval).await;
        }
    }

    async fn wait_for_healthy(&self, resource: &Resource, timeout: Duration) -> Result<()> {
        let every = self.poll_every(resource);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last;
        loop {
            match self.check_health(resource).await {
                Ok(s) if s.is_healthy() => return Ok(()),
                Ok(s) => last = s.message,
                // A misconfigured check will not get better by waiting.
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => last = e.chain_message(),
            }
            if tokio::time::Instant::now() + every > deadline {
                return Err(Error::Timeout {
                    operation: format!("waiting for {} to be healthy (last: {last})", resource.key),
                    after: timeout,
                });
            }
            tokio::time::sleep(every).await;
        }
    }

    async fn collect_metrics(&self, resource: &Resource) -> Result<Metrics> {
        let adapter = self.adapters.for_resource(resource)?;
        let id = if resource.id.is_empty() {
            resource.key.as_str()
        } else {
            resource.id.as_str()
        };
        let mut m = adapter
            .get_metrics(id)
            .await
            .map_err(|e| e.context(format!("collecting metrics of {}", resource.key)))?;
        normalize(&mut m, resource);
        Ok(m)
    }

    async fn watch_events(&self, resource: &Resource) -> Result<EventStream> {
        let adapter = self.adapters.for_resource(resource)?;
        let filter = ResourceFilter {
            names: vec![resource.name.clone()],
            kinds: vec![resource.kind.clone()],
            ..Default::default()
        };
        let stream = adapter
            .watch_resources(&filter)
            .await
            .map_err(|e| e.context(format!("watching {}", resource.key)))?;
        let key = resource.key.clone();
        Ok(stream
            .filter_map(move |item| {
                let out = match item {
                    Ok(ev) if ev.resource.key == key => {
                        let change = match ev.type_ {
                            ResourceEventType::Added => "added",
                            ResourceEventType::Modified => "modified",
                            ResourceEventType::Deleted => "deleted",
                        };
                        let phase = ev.resource.status.phase.clone();
                        let mut e = Event::new(event_type::RESOURCE_CHANGED, "monitor")
                            .with_data("change", change)
                            .with_data("phase", phase)
                            .with_metadata("resource", key.as_str())
                            .with_resource(ev.resource);
                        e.timestamp = ev.observed_at;
                        Some(e)
                    }
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(component = "monitor", resource_id = %key, error = %e.chain_message(), "watch error");
                        None
                    }
                };
                futures::future::ready(out)
            })
            .boxed())
    }

    fn register_health_check_strategy(
        &self,
        name: &str,
        strategy: Arc<dyn HealthCheckStrategy>,
    ) -> Result<()> {
        if name.trim().is_empty() {
            return Err(Error::invalid(
                "health check strategy name",
                "must not be empty",
            ));
        }
        self.strategies
            .write()
            .expect("monitor lock poisoned")
            .insert(name.to_owned(), strategy);
        Ok(())
    }

    fn health_check_strategy(&self, name: &str) -> Result<Arc<dyn HealthCheckStrategy>> {
        let strategies = self.strategies.read().expect("monitor lock poisoned");
        strategies.get(name).cloned().ok_or_else(|| {
            Error::not_found("health check strategy", name).context(format!(
                "known strategies: {}",
                strategies.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

fn condition_met(r: &Resource, c: &Condition) -> bool {
    if c.type_ == PHASE_CONDITION {
        return r.status.phase.eq_ignore_ascii_case(&c.status);
    }
    r.condition(&c.type_).is_some_and(|have| {
        have.status.eq_ignore_ascii_case(&c.status)
            && (c.reason.is_empty() || have.reason == c.reason)
    })
}

fn describe(r: &Resource, c: &Condition) -> String {
    if c.type_ == PHASE_CONDITION {
        return format!("phase {}", r.status.phase);
    }
    match r.condition(&c.type_) {
        Some(have) => format!("{}={} ({})", have.type_, have.status, have.reason),
        None => format!("no {} condition", c.type_),
    }
}

/// Fills what adapters may leave out: the resource id, the time, and the memory percent.
fn normalize(m: &mut Metrics, resource: &Resource) {
    if m.resource_id.is_empty() {
        m.resource_id = resource.id.clone();
    }
    if m.timestamp.timestamp() == 0 {
        m.timestamp = chrono::Utc::now();
    }
    if m.memory.usage_percent == 0.0 && m.memory.limit_bytes > 0 {
        m.memory.usage_percent = m.memory.usage_bytes as f64 * 100.0 / m.memory.limit_bytes as f64;
    }
    if m.cpu.usage_cores == 0.0 && m.cpu.usage_percent > 0.0 {
        m.cpu.usage_cores = m.cpu.usage_percent / 100.0;
    }
}
