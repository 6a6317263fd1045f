//! Shared set-up for the engine's tests: an engine over core's fakes and in-memory services.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ire_actors::engine::{Engine, EngineConfig, EngineDeps};
use ire_actors::lock::{LockConfig, LockManager};
use ire_actors::registry::DefaultPluginRegistry;
use ire_core::testsuite::{
    FakeAdapter, FakeEventBus, FakeReporter, MemoryAuditLog, MemoryLedger, MemoryLockService,
    ResourceBuilder,
};
use ire_core::{
    EnvironmentAdapter, Error, ExecutionRequest, Plugin, PluginContext, PluginMetadata,
    PluginRegistry, Resource, Result, Snapshot,
};

/// An engine and everything it reports to.
pub struct Rig {
    pub engine: Engine,
    pub adapter: FakeAdapter,
    pub registry: Arc<DefaultPluginRegistry>,
    pub bus: FakeEventBus,
    pub reporter: FakeReporter,
    pub audit: Arc<MemoryAuditLog>,
    pub ledger: MemoryLedger,
    pub locks: Option<LockManager>,
}

/// Options of a rig.
pub struct RigOptions {
    pub config: EngineConfig,
    pub lock_service: Option<Arc<MemoryLockService>>,
    pub lock_config: LockConfig,
    pub spawn: bool,
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions {
            config: EngineConfig {
                hook_grace: Duration::from_millis(200),
                cleanup_timeout: Duration::from_secs(5),
                ..EngineConfig::default()
            },
            lock_service: None,
            lock_config: LockConfig::default(),
            spawn: true,
        }
    }
}

impl Rig {
    pub async fn new() -> Rig {
        Rig::with(RigOptions::default()).await
    }

    pub async fn with(opts: RigOptions) -> Rig {
        let adapter = FakeAdapter::new("fake");
        let registry = Arc::new(DefaultPluginRegistry::new());
        let bus = FakeEventBus::new();
        let reporter = FakeReporter::default();
        let audit = Arc::new(MemoryAuditLog::default());
        // The ledger checks tokens against the lock service's leases.
        let ledger = match &opts.lock_service {
            Some(s) => MemoryLedger::new(s),
            None => MemoryLedger::new(&MemoryLockService::new()),
        };
        let mut adapters: BTreeMap<String, Arc<dyn EnvironmentAdapter>> = BTreeMap::new();
        adapters.insert("fake".into(), Arc::new(adapter.clone()));
        let mut deps = EngineDeps::new(registry.clone(), adapters);
        deps.event_bus = Some(Arc::new(bus.clone()));
        deps.reporter = Some(Arc::new(reporter.clone()));
        deps.audit = audit.clone();
        let locks = opts
            .lock_service
            .map(|s| LockManager::new(s, opts.lock_config.clone()));
        if let Some(l) = &locks {
            if opts.spawn {
                l.spawn().await.unwrap();
            }
            deps.locks = Some(l.clone());
            deps.ledger = Some(Arc::new(ledger.clone()));
        }
        let engine = Engine::new(opts.config, deps);
        if opts.spawn {
            engine.spawn().await.unwrap();
        }
        Rig {
            engine,
            adapter,
            registry,
            bus,
            reporter,
            audit,
            ledger,
            locks,
        }
    }

    /// A running container resource registered with the adapter.
    pub fn resource(&self, name: &str) -> Resource {
        self.adapter.insert(ResourceBuilder::new(name).build())
    }

    pub async fn register(&self, plugin: Arc<dyn Plugin>) {
        self.registry.register(plugin).await.unwrap();
    }

    pub fn request(&self, plugin: &str, resource: &Resource) -> ExecutionRequest {
        ExecutionRequest::new(plugin, resource.clone(), "tester")
    }
}

/// A plugin that records how many of its executions run at once, and the fencing tokens
/// it was given.
#[derive(Clone)]
pub struct Probe {
    pub name: String,
    pub hold: Duration,
    pub running: Arc<AtomicUsize>,
    pub max_running: Arc<AtomicUsize>,
    pub tokens: Arc<Mutex<Vec<u64>>>,
    pub rollbacks: Arc<AtomicUsize>,
}

impl Probe {
    pub fn new(name: &str, hold: Duration) -> Self {
        Probe {
            name: name.into(),
            hold,
            running: Arc::default(),
            max_running: Arc::default(),
            tokens: Arc::default(),
            rollbacks: Arc::default(),
        }
    }

    pub fn max(&self) -> usize {
        self.max_running.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Plugin for Probe {
    fn metadata(&self) -> PluginMetadata {
        PluginMetadata::new(
            &self.name,
            semver::Version::new(1, 0, 0),
            "concurrency probe",
            ire_core::FaultKind::Action,
        )
    }
    async fn validate(&self, _: &PluginContext, _: &Resource) -> Result<()> {
        Ok(())
    }
    async fn pre_execute(&self, _: &PluginContext, r: &Resource) -> Result<Option<Snapshot>> {
        Snapshot::new(&self.name, r, &"before").map(Some)
    }
    async fn execute(&self, ctx: &PluginContext, _: &Resource) -> Result<()> {
        if let Some(t) = ctx.fencing_token {
            self.tokens.lock().unwrap().push(t.0);
        }
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        let r = tokio::select! {
            _ = tokio::time::sleep(self.hold) => Ok(()),
            _ = ctx.cancel.cancelled() => Err(Error::Canceled { message: "probe".into() }),
        };
        self.running.fetch_sub(1, Ordering::SeqCst);
        r
    }
    fn supports_rollback(&self) -> bool {
        true
    }
    async fn rollback(&self, _: &PluginContext, _: &Resource, _: &Snapshot) -> Result<()> {
        self.rollbacks.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}
