//! What the catalog's tests share: an engine with the whole catalog, a health monitor, and
//! the adapter under test; helpers to run plugins and compare resources.
#![allow(dead_code)]

pub mod docker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ire_actors::engine::{Engine, EngineConfig, EngineDeps, DURATION_LABEL};
use ire_actors::monitor::{Adapters, FaultWatch, FaultWatchConfig, HealthMonitor, MonitorArgs};
use ire_actors::registry::DefaultPluginRegistry;
use ire_core::testsuite::FakeReporter;
use ire_core::{
    EnvironmentAdapter, ExecutionEngine, ExecutionRecord, ExecutionRequest, ExecutionResult,
    Monitor, PluginConfig, PluginContext, Reporter, Resource, Result,
};

/// An engine running the catalog over one adapter, with a health monitor.
pub struct Rig {
    pub engine: Engine,
    pub env: Arc<dyn EnvironmentAdapter>,
    pub monitor: Arc<HealthMonitor>,
    pub reporter: FakeReporter,
    pub fault_watch: FaultWatch,
}

impl Rig {
    pub async fn new(name: &str, env: Arc<dyn EnvironmentAdapter>) -> Rig {
        let registry = Arc::new(DefaultPluginRegistry::new());
        ire_plugins::register_all(registry.as_ref()).await.unwrap();
        let adapters = Adapters::new();
        adapters.insert(name, env.clone());
        let monitor =
            Arc::new(HealthMonitor::new(adapters).with_poll_interval(Duration::from_millis(50)));
        let mut map: BTreeMap<String, Arc<dyn EnvironmentAdapter>> = BTreeMap::new();
        map.insert(name.to_owned(), env.clone());
        let (fault_watch, _) = FaultWatch::spawn(MonitorArgs::new(
            monitor.clone(),
            None,
            FaultWatchConfig {
                probe_interval: Duration::from_millis(50),
                give_up_after: Duration::from_secs(60),
            },
        ))
        .await
        .unwrap();
        let reporter = FakeReporter::default();
        let mut deps = EngineDeps::new(registry, map);
        deps.monitor = Some(monitor.clone() as Arc<dyn Monitor>);
        deps.fault_watch = Some(fault_watch.clone());
        deps.reporter = Some(Arc::new(reporter.clone()) as Arc<dyn Reporter>);
        let engine = Engine::new(
            EngineConfig {
                hook_grace: Duration::from_millis(500),
                cleanup_timeout: Duration::from_secs(30),
                ..EngineConfig::default()
            },
            deps,
        );
        engine.spawn().await.unwrap();
        Rig {
            engine,
            env,
            monitor,
            reporter,
            fault_watch,
        }
    }

    /// The latest record of an execution, once `pred` holds for it (10 s at most).
    pub async fn record(
        &self,
        id: &str,
        pred: impl Fn(&ExecutionRecord) -> bool,
    ) -> ExecutionRecord {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let last = self
                .reporter
                .records()
                .into_iter()
                .rev()
                .find(|r| r.id == id);
            if let Some(r) = &last {
                if pred(r) {
                    return r.clone();
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "record of {id}: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A request for `plugin` on `key` with `config`, lasting `duration` when given.
    pub async fn request(
        &self,
        plugin: &str,
        key: &str,
        config: serde_json::Value,
        duration: Option<&str>,
    ) -> ExecutionRequest {
        let r = self.env.get_resource(key).await.unwrap();
        let mut req = ExecutionRequest::new(plugin, r, "tester").with_config(PluginConfig(config));
        if let Some(d) = duration {
            req.labels.insert(DURATION_LABEL.into(), d.into());
        }
        req
    }

    /// Runs `plugin` on `key` to its end.
    pub async fn run(
        &self,
        plugin: &str,
        key: &str,
        config: serde_json::Value,
        duration: Option<&str>,
    ) -> Result<ExecutionResult> {
        let req = self.request(plugin, key, config, duration).await;
        self.engine.execute(req).await
    }

    /// A plugin context over the rig's adapter and monitor, for calling hooks directly.
    pub fn context(&self, id: &str, config: serde_json::Value) -> PluginContext {
        let mut ctx = PluginContext::new(id, self.env.clone());
        ctx.fault_id = format!("{id}-1");
        ctx.config = PluginConfig(config);
        ctx.monitor = Some(self.monitor.clone() as Arc<dyn Monitor>);
        ctx
    }

    /// Polls the resource until `pred` holds (10 s at most).
    pub async fn wait_for(
        &self,
        key: &str,
        what: &str,
        pred: impl Fn(&Resource) -> bool,
    ) -> Resource {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = self.env.get_resource(key).await {
                if pred(&r) {
                    return r;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{key}: {what} not reached: {r:?}"
                );
            } else {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{key}: {what} not reached (gone)"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What a revert must restore: the resource without what only identifies one run of it
/// (runtime id, pid and start counters in metadata, status message, creation time).
pub fn restorable(r: &Resource) -> serde_json::Value {
    let mut annotations = r.annotations.clone();
    annotations.remove("docker.created");
    serde_json::json!({
        "key": r.key,
        "name": r.name,
        "kind": r.kind,
        "labels": r.labels,
        "annotations": annotations,
        "phase": r.status.phase,
        "reason": r.status.reason,
        "conditions": r.status.conditions.iter().map(|c| (c.type_.clone(), c.status.clone())).collect::<Vec<_>>(),
        "spec": r.spec,
    })
}

/// Asserts two resources are equal in everything a revert restores, naming the field
/// that differs.
pub fn assert_restored(before: &Resource, after: &Resource) {
    let (b, a) = (restorable(before), restorable(after));
    for (field, want) in b.as_object().unwrap() {
        assert_eq!(
            &a[field], want,
            "field {field} not restored: {before:?} -> {after:?}"
        );
    }
}
