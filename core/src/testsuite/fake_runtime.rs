//! Fakes of the node runtime's contracts: event bus, monitor, reporter, formatter, health
//! check, strategy, engine, registry, loader and config. They are simple on purpose: tests
//! of one component use them in place of the others.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::mpsc;

use crate::config::{Config, ConfigProvider};
use crate::error::{Error, Result};
use crate::event::{Event, EventBus, EventFilter, SharedEvent, Subscription};
use crate::execution::{
    Attempt, ExecutionEngine, ExecutionHandle, ExecutionRequest, ExecutionStrategy, Workflow,
    WorkflowResult,
};
use crate::monitor::{EventStream, HealthCheckStrategy, HealthStatus, Monitor};
use crate::page::paginate;
use crate::plugin::{ExecutionResult, ExecutionStatus, Plugin, PluginFilter, PluginMetadata};
use crate::registry::{PluginLoader, PluginRegistry};
use crate::report::{
    EventQuery, ExecutionQuery, ExecutionRecord, Report, ReportFilter, ReportFormatter, Reporter,
    Statistics, StatisticsFilter, StorageBackend,
};
use crate::resource::{Condition, Metrics, Resource};

type Subscribers = Arc<Mutex<BTreeMap<u64, (EventFilter, mpsc::Sender<SharedEvent>)>>>;

/// An in-process [`EventBus`] with bounded buffers that drops events a full subscriber
/// cannot take.
#[derive(Clone, Default)]
pub struct FakeEventBus {
    subs: Subscribers,
    next: Arc<Mutex<u64>>,
    closed: Arc<Mutex<bool>>,
    published: Arc<Mutex<Vec<Event>>>,
}

impl FakeEventBus {
    /// An open bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every event published so far.
    pub fn published(&self) -> Vec<Event> {
        self.published.lock().unwrap().clone()
    }
}

#[async_trait]
impl EventBus for FakeEventBus {
    async fn publish(&self, event: Event) -> Result<()> {
        if *self.closed.lock().unwrap() {
            return Err(Error::unavailable(
                "event bus",
                std::io::Error::other("closed"),
            ));
        }
        let event = Arc::new(event);
        self.published.lock().unwrap().push(Event::clone(&event));
        for (f, tx) in self.subs.lock().unwrap().values() {
            if f.matches(&event) {
                let _ = tx.try_send(Arc::clone(&event));
            }
        }
        Ok(())
    }

    async fn publish_async(&self, event: Event) -> Result<()> {
        self.publish(event).await
    }

    async fn subscribe(&self, filter: EventFilter) -> Result<Subscription> {
        let (tx, rx) = mpsc::channel(1024);
        let id = {
            let mut n = self.next.lock().unwrap();
            *n += 1;
            *n
        };
        self.subs.lock().unwrap().insert(id, (filter, tx));
        let subs = Arc::clone(&self.subs);
        Ok(Subscription::new(id.to_string(), rx, move || {
            subs.lock().unwrap().remove(&id);
        }))
    }

    async fn close(&self) -> Result<()> {
        *self.closed.lock().unwrap() = true;
        self.subs.lock().unwrap().clear();
        Ok(())
    }
}

/// A [`HealthCheckStrategy`] whose answer tests set.
#[derive(Clone)]
pub struct FakeHealthCheck {
    name: String,
    healthy: Arc<Mutex<bool>>,
    checks: Arc<AtomicU32>,
}

impl FakeHealthCheck {
    /// A strategy named `name`, healthy at first.
    pub fn new(name: &str) -> Self {
        FakeHealthCheck {
            name: name.to_owned(),
            healthy: Arc::new(Mutex::new(true)),
            checks: Arc::default(),
        }
    }

    /// Sets the answer.
    pub fn set_healthy(&self, healthy: bool) {
        *self.healthy.lock().unwrap() = healthy;
    }

    /// How many checks ran.
    pub fn checks(&self) -> u32 {
        self.checks.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl HealthCheckStrategy for FakeHealthCheck {
    async fn check(&self, resource: &Resource) -> Result<HealthStatus> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        Ok(if *self.healthy.lock().unwrap() {
            HealthStatus::healthy(format!("{} healthy", resource.name))
        } else {
            HealthStatus::unhealthy(format!("{} unhealthy", resource.name))
        })
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// A [`Monitor`] that answers from registered strategies (the `fake` one by default).
#[derive(Clone)]
pub struct FakeMonitor {
    strategies: Arc<Mutex<BTreeMap<String, Arc<dyn HealthCheckStrategy>>>>,
}

impl Default for FakeMonitor {
    fn default() -> Self {
        let m = FakeMonitor {
            strategies: Arc::default(),
        };
        m.strategies
            .lock()
            .unwrap()
            .insert("fake".into(), Arc::new(FakeHealthCheck::new("fake")));
        m
    }
}

#[async_trait]
impl Monitor for FakeMonitor {
    async fn check_health(&self, resource: &Resource) -> Result<HealthStatus> {
        let name = resource
            .spec
            .health_check
            .as_ref()
            .map_or("fake", |h| h.type_.as_str());
        self.health_check_strategy(name)?.check(resource).await
    }

    async fn wait_for_condition(
        &self,
        resource: &Resource,
        condition: &Condition,
        timeout: Duration,
    ) -> Result<()> {
        match resource.condition(&condition.type_) {
            Some(c) if c.status == condition.status => Ok(()),
            _ => Err(Error::Timeout {
                operation: format!("waiting for {} on {}", condition.type_, resource.key),
                after: timeout,
            }),
        }
    }

    async fn wait_for_healthy(&self, resource: &Resource, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.check_health(resource).await?.is_healthy() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    operation: format!("waiting for {} to be healthy", resource.key),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn collect_metrics(&self, resource: &Resource) -> Result<Metrics> {
        Ok(Metrics {
            timestamp: Utc::now(),
            resource_id: resource.id.clone(),
            ..Default::default()
        })
    }

    async fn watch_events(&self, _resource: &Resource) -> Result<EventStream> {
        Ok(Box::pin(futures::stream::empty()))
    }

    fn register_health_check_strategy(
        &self,
        name: &str,
        strategy: Arc<dyn HealthCheckStrategy>,
    ) -> Result<()> {
        self.strategies
            .lock()
            .unwrap()
            .insert(name.to_owned(), strategy);
        Ok(())
    }

    fn health_check_strategy(&self, name: &str) -> Result<Arc<dyn HealthCheckStrategy>> {
        self.strategies
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found("health check strategy", name))
    }
}

/// A [`ReportFormatter`] rendering JSON.
#[derive(Debug, Clone, Default)]
pub struct FakeFormatter;

#[async_trait]
impl ReportFormatter for FakeFormatter {
    async fn format(&self, report: &Report) -> Result<Vec<u8>> {
        serde_json::to_vec(report).map_err(|e| Error::invalid("report", e.to_string()))
    }
    fn content_type(&self) -> &str {
        "application/json"
    }
    fn name(&self) -> &str {
        "json"
    }
}

/// A [`Reporter`] keeping records in memory, with counts-only statistics.
#[derive(Clone, Default)]
pub struct FakeReporter {
    events: Arc<Mutex<Vec<Event>>>,
    records: Arc<Mutex<Vec<ExecutionRecord>>>,
    formatters: Arc<Mutex<BTreeMap<String, Arc<dyn ReportFormatter>>>>,
}

impl FakeReporter {
    /// Every record so far.
    pub fn records(&self) -> Vec<ExecutionRecord> {
        self.records.lock().unwrap().clone()
    }
}

#[async_trait]
impl Reporter for FakeReporter {
    async fn record_event(&self, event: Event) -> Result<()> {
        self.events.lock().unwrap().push(event);
        Ok(())
    }

    async fn record_execution(&self, record: ExecutionRecord) -> Result<()> {
        self.records.lock().unwrap().push(record);
        Ok(())
    }

    async fn query_events(&self, query: &EventQuery) -> Result<Vec<Event>> {
        let e = self.events.lock().unwrap();
        let it = e.iter().filter(|x| query.matches(x)).cloned();
        Ok(paginate(it, query.offset, query.limit))
    }

    async fn query_executions(&self, query: &ExecutionQuery) -> Result<Vec<ExecutionRecord>> {
        let r = self.records.lock().unwrap();
        let it = r.iter().filter(|x| query.matches(x)).cloned();
        Ok(paginate(it, query.offset, query.limit))
    }

    async fn compute_statistics(&self, filter: &StatisticsFilter) -> Result<Statistics> {
        let recs = self.query_executions(&filter.to_query()).await?;
        let count = |s: ExecutionStatus| recs.iter().filter(|r| r.status == s).count();
        let total = recs.len();
        let success = count(ExecutionStatus::Success);
        Ok(Statistics {
            total_executions: total,
            success_count: success,
            failure_count: count(ExecutionStatus::Failed),
            timeout_count: count(ExecutionStatus::Timeout),
            canceled_count: count(ExecutionStatus::Canceled),
            success_rate: if total == 0 {
                0.0
            } else {
                success as f64 / total as f64
            },
            ..Default::default()
        })
    }

    async fn generate_report(&self, format: &str, filter: &ReportFilter) -> Result<Vec<u8>> {
        let f = self
            .formatters
            .lock()
            .unwrap()
            .get(format)
            .cloned()
            .ok_or_else(|| Error::not_found("report format", format))?;
        let report = Report {
            title: "report".into(),
            generated_at: Utc::now(),
            filter: filter.clone(),
            statistics: self.compute_statistics(filter).await?,
            executions: self.query_executions(&filter.to_query()).await?,
            events: self.query_events(&EventQuery::default()).await?,
        };
        f.format(&report).await
    }

    async fn set_storage(&self, _storage: Arc<dyn StorageBackend>) -> Result<()> {
        Ok(())
    }

    fn register_formatter(&self, formatter: Arc<dyn ReportFormatter>) -> Result<()> {
        self.formatters
            .lock()
            .unwrap()
            .insert(formatter.name().to_owned(), formatter);
        Ok(())
    }
}

/// An [`ExecutionStrategy`] that runs the attempt once and counts how often it was used.
#[derive(Clone, Default)]
pub struct CountingStrategy {
    uses: Arc<AtomicU32>,
}

impl CountingStrategy {
    /// How many executions used it.
    pub fn uses(&self) -> u32 {
        self.uses.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ExecutionStrategy for CountingStrategy {
    async fn execute(&self, attempt: &dyn Attempt) -> Result<ExecutionResult> {
        self.uses.fetch_add(1, Ordering::SeqCst);
        attempt.run().await
    }
    fn name(&self) -> &str {
        "counting"
    }
}

/// An [`ExecutionEngine`] that runs nothing: it records requests and answers success.
#[derive(Clone, Default)]
pub struct FakeEngine {
    plugins: Arc<Mutex<BTreeMap<String, Arc<dyn Plugin>>>>,
    requests: Arc<Mutex<Vec<ExecutionRequest>>>,
}

impl FakeEngine {
    /// The requests received.
    pub fn requests(&self) -> Vec<ExecutionRequest> {
        self.requests.lock().unwrap().clone()
    }

    fn result(id: &str) -> ExecutionResult {
        ExecutionResult::finished(id, ExecutionStatus::Success, Utc::now())
    }
}

#[async_trait]
impl ExecutionEngine for FakeEngine {
    async fn register_plugin(&self, plugin: Arc<dyn Plugin>) -> Result<()> {
        let name = plugin.metadata().name;
        self.plugins.lock().unwrap().insert(name, plugin);
        Ok(())
    }
    async fn unregister_plugin(&self, name: &str) -> Result<()> {
        self.plugins
            .lock()
            .unwrap()
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| Error::not_found("plugin", name))
    }
    async fn get_plugin(&self, name: &str) -> Result<Arc<dyn Plugin>> {
        self.plugins
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found("plugin", name))
    }
    async fn list_plugins(&self, filter: &PluginFilter) -> Result<Vec<PluginMetadata>> {
        Ok(self
            .plugins
            .lock()
            .unwrap()
            .values()
            .map(|p| p.metadata())
            .filter(|m| filter.matches(m))
            .collect())
    }
    async fn execute(&self, request: ExecutionRequest) -> Result<ExecutionResult> {
        let id = request.execution_id.clone();
        self.requests.lock().unwrap().push(request);
        Ok(Self::result(&id))
    }
    async fn execute_async(&self, request: ExecutionRequest) -> Result<ExecutionHandle> {
        let id = request.execution_id.clone();
        let result = self.execute(request).await?;
        let (tx, handle) = ExecutionHandle::with_sender(id, Default::default());
        tx.send(result);
        Ok(handle)
    }
    async fn execute_workflow(&self, workflow: Workflow) -> Result<WorkflowResult> {
        let start = Utc::now();
        let mut step_results = BTreeMap::new();
        for s in workflow.steps {
            step_results.insert(s.name.clone(), self.execute(s.request).await?);
        }
        Ok(WorkflowResult {
            status: ExecutionStatus::Success,
            step_results,
            start_time: start,
            end_time: Utc::now(),
            duration: Duration::ZERO,
        })
    }
    async fn cancel(&self, _execution_id: &str) -> Result<()> {
        Ok(())
    }
    async fn status(&self, execution_id: &str) -> Result<ExecutionStatus> {
        if self
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.execution_id == execution_id)
        {
            Ok(ExecutionStatus::Success)
        } else {
            Err(Error::not_found("execution", execution_id))
        }
    }
    async fn set_concurrency_limit(&self, _limit: usize) -> Result<()> {
        Ok(())
    }
    async fn set_default_timeout(&self, _timeout: Duration) -> Result<()> {
        Ok(())
    }
}

/// A [`PluginRegistry`] that keeps plugins in a map and checks only metadata.
#[derive(Clone, Default)]
pub struct FakeRegistry {
    plugins: Arc<Mutex<BTreeMap<String, Arc<dyn Plugin>>>>,
    loader: Arc<Mutex<Option<Arc<dyn PluginLoader>>>>,
}

#[async_trait]
impl PluginRegistry for FakeRegistry {
    async fn register(&self, plugin: Arc<dyn Plugin>) -> Result<()> {
        self.validate(plugin.as_ref())?;
        let name = plugin.metadata().name;
        self.plugins.lock().unwrap().insert(name, plugin);
        Ok(())
    }
    async fn unregister(&self, name: &str) -> Result<()> {
        self.plugins
            .lock()
            .unwrap()
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| Error::not_found("plugin", name))
    }
    async fn discover(&self, path: &Path) -> Result<PluginMetadata> {
        let loader = self
            .loader
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| Error::invalid("plugin loader", "none set"))?;
        let p = loader.load(path).await?;
        let m = p.metadata();
        self.register(p).await?;
        Ok(m)
    }
    async fn discover_from_directory(&self, dir: &Path) -> Result<Vec<PluginMetadata>> {
        Ok(vec![self.discover(dir).await?])
    }
    fn get(&self, name: &str) -> Result<Arc<dyn Plugin>> {
        self.plugins
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found("plugin", name))
    }
    fn list(&self, filter: &PluginFilter) -> Result<Vec<PluginMetadata>> {
        Ok(self
            .plugins
            .lock()
            .unwrap()
            .values()
            .map(|p| p.metadata())
            .filter(|m| filter.matches(m))
            .collect())
    }
    fn validate(&self, plugin: &dyn Plugin) -> Result<()> {
        plugin.metadata().validate()
    }
    fn validate_dependencies(&self, _plugin: &dyn Plugin) -> Result<()> {
        Ok(())
    }
    async fn reload(&self, name: &str) -> Result<PluginMetadata> {
        Ok(self.get(name)?.metadata())
    }
    fn set_loader(&self, loader: Arc<dyn PluginLoader>) -> Result<()> {
        *self.loader.lock().unwrap() = Some(loader);
        Ok(())
    }
}

/// A [`PluginLoader`] that hands out [`super::FakePlugin`]s named after the path's file stem.
#[derive(Clone, Default)]
pub struct FakeLoader;

#[async_trait]
impl PluginLoader for FakeLoader {
    async fn load(&self, path: &Path) -> Result<Arc<dyn Plugin>> {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| Error::invalid("plugin path", format!("{}", path.display())))?;
        Ok(Arc::new(super::FakePlugin::new(name)))
    }
    async fn unload(&self, _plugin: &Arc<dyn Plugin>) -> Result<()> {
        Ok(())
    }
}

/// A [`Config`] over one map, taking providers in priority order.
#[derive(Clone, Default)]
pub struct FakeConfig {
    layers: Arc<Mutex<Vec<(i32, crate::config::ConfigMap)>>>,
    overrides: Arc<Mutex<crate::config::ConfigMap>>,
}

#[async_trait]
impl Config for FakeConfig {
    fn get(&self, key: &str) -> Result<serde_json::Value> {
        if let Some(v) = self.overrides.lock().unwrap().get(key) {
            return Ok(v.clone());
        }
        let layers = self.layers.lock().unwrap();
        layers
            .iter()
            .rev()
            .find_map(|(_, m)| m.get(key).cloned())
            .ok_or_else(|| Error::not_found("config key", key))
    }
    fn set(&self, key: &str, value: serde_json::Value) -> Result<()> {
        self.overrides.lock().unwrap().insert(key.to_owned(), value);
        Ok(())
    }
    fn watch(&self, _key: &str) -> Result<mpsc::Receiver<serde_json::Value>> {
        Ok(mpsc::channel(1).1)
    }
    async fn add_provider(&self, provider: Arc<dyn ConfigProvider>, priority: i32) -> Result<()> {
        let map = provider.load().await?;
        let mut layers = self.layers.lock().unwrap();
        layers.push((priority, map));
        layers.sort_by_key(|(p, _)| *p);
        Ok(())
    }
}
