//! The conformance suites run against ire-core's own fakes: the suites themselves are
//! exercised here, and every core trait has a fake (seed property 58).

use std::sync::Arc;
use std::time::Duration;

use ire_core::testsuite::*;
use ire_core::*;

fn fake_fleet() -> FakeAdapter {
    let a = FakeAdapter::new("fake");
    a.insert(
        ResourceBuilder::new("redis-1")
            .label("app", "redis")
            .build(),
    );
    a.insert(ResourceBuilder::new("api-1").label("app", "api").build());
    a.insert(ResourceBuilder::new("scratch").build());
    a
}

#[tokio::test]
async fn fake_adapter_passes_the_adapter_suite() {
    let a = fake_fleet();
    let mut fx = AdapterFixture::new("id-redis-1");
    fx.disposable = Some("fake/scratch".into());
    fx.settle = Duration::from_secs(2);
    adapter_conformance(&a, &fx).await;
}

#[tokio::test]
async fn memory_storage_passes_the_storage_suite() {
    storage_conformance(&MemoryStorage::new(), "suite").await;
}

#[tokio::test]
async fn memory_locks_pass_the_lock_suite() {
    lock_conformance(
        &MemoryLockService::new(),
        "fake",
        Duration::from_millis(100),
    )
    .await;
}

#[tokio::test]
async fn memory_ledger_passes_the_ledger_suite() {
    let locks = MemoryLockService::new();
    ledger_conformance(
        &MemoryLedger::new(&locks),
        &locks,
        "fake",
        Duration::from_millis(100),
    )
    .await;
}

#[tokio::test]
async fn fake_plugin_passes_the_plugin_suite_and_restores_its_snapshot() {
    let a = fake_fleet();
    let r = a.resource("id-redis-1").unwrap();
    let p = FakePlugin::new("noop");
    let ctx = PluginContext::new("e1", Arc::new(a));
    let snap = plugin_conformance(&p, &ctx, &r).await.expect("a snapshot");
    assert_eq!(p.restored(), vec![snap]);
    assert_eq!(
        p.hooks(),
        [
            Hook::Validate,
            Hook::PreExecute,
            Hook::Execute,
            Hook::PostExecute,
            Hook::Rollback,
            Hook::Cleanup
        ]
    );
}

#[tokio::test]
async fn suites_catch_a_broken_implementation() {
    // A lock service that grants everyone must fail the lock suite.
    struct GrantsEveryone(MemoryLockService);
    #[async_trait::async_trait]
    impl LockService for GrantsEveryone {
        async fn acquire(
            &self,
            key: &ResourceKey,
            _holder: &str,
            ttl: Duration,
        ) -> Result<LockOutcome> {
            // Every caller is treated as the same holder, so nobody is ever refused.
            self.0.acquire(key, "everyone", ttl).await
        }
        async fn acquire_wait(
            &self,
            key: &ResourceKey,
            holder: &str,
            ttl: Duration,
            _wait: Duration,
            _cancel: &tokio_util::sync::CancellationToken,
        ) -> Result<LockOutcome> {
            self.acquire(key, holder, ttl).await
        }
        async fn renew(
            &self,
            k: &ResourceKey,
            t: FencingToken,
            ttl: Duration,
        ) -> Result<LeaseGrant> {
            self.0.renew(k, t, ttl).await
        }
        async fn release(&self, k: &ResourceKey, t: FencingToken) -> Result<()> {
            self.0.release(k, t).await
        }
        async fn hold(&self, k: &ResourceKey, by: &str, why: &str) -> Result<()> {
            self.0.hold(k, by, why).await
        }
        async fn unhold(&self, k: &ResourceKey) -> Result<()> {
            self.0.unhold(k).await
        }
        async fn lock_info(&self, k: &ResourceKey) -> Result<LockInfo> {
            self.0.lock_info(k).await
        }
    }
    let broken = GrantsEveryone(MemoryLockService::new());
    let outcome = tokio::spawn(async move {
        lock_conformance(&broken, "fake", Duration::from_millis(50)).await;
    })
    .await;
    assert!(
        outcome.is_err(),
        "the lock suite passed a lock that grants everyone"
    );
}

#[test]
fn every_core_trait_has_a_fake() {
    // Compile-time: each fake is usable as the trait object the runtime holds (p58).
    let _: Arc<dyn EnvironmentAdapter> = Arc::new(FakeAdapter::new("f"));
    let _: Arc<dyn Plugin> = Arc::new(FakePlugin::new("p"));
    let _: Arc<dyn LockService> = Arc::new(MemoryLockService::new());
    let _: Arc<dyn FaultLedger> = Arc::new(MemoryLedger::new(&MemoryLockService::new()));
    let _: Arc<dyn StorageBackend> = Arc::new(MemoryStorage::new());
    let _: Arc<dyn SecretProvider> = Arc::new(MemorySecrets::default());
    let _: Arc<dyn AuditLogger> = Arc::new(MemoryAuditLog::default());
    let _: Arc<dyn AuthorizationProvider> = Arc::new(StaticAuthorizer::allowing(["a"]));
    let _: Arc<dyn ConfigProvider> = Arc::new(StaticConfigProvider::new("s", Default::default()));
    let _: Arc<dyn Config> = Arc::new(FakeConfig::default());
    let _: Arc<dyn EventBus> = Arc::new(FakeEventBus::new());
    let _: Arc<dyn Monitor> = Arc::new(FakeMonitor::default());
    let _: Arc<dyn HealthCheckStrategy> = Arc::new(FakeHealthCheck::new("h"));
    let _: Arc<dyn Reporter> = Arc::new(FakeReporter::default());
    let _: Arc<dyn ReportFormatter> = Arc::new(FakeFormatter);
    let _: Arc<dyn ExecutionStrategy> = Arc::new(CountingStrategy::default());
    let _: Arc<dyn BackoffStrategy> = Arc::new(ExponentialBackoff::default());
    let _: Arc<dyn ErrorHandler> = Arc::new(FixedErrorHandler {
        action: ErrorAction::Abort,
        max_retries: 0,
    });
    let _: Arc<dyn ExecutionEngine> = Arc::new(FakeEngine::default());
    let _: Arc<dyn PluginRegistry> = Arc::new(FakeRegistry::default());
    let _: Arc<dyn PluginLoader> = Arc::new(FakeLoader);
}

#[tokio::test]
async fn adapter_without_a_capability_says_so() {
    // An adapter that offers no optional capability: plugins get a clear Unsupported error.
    struct Bare(FakeAdapter);
    #[async_trait::async_trait]
    impl EnvironmentAdapter for Bare {
        async fn initialize(&mut self, c: AdapterConfig) -> Result<()> {
            self.0.initialize(c).await
        }
        async fn close(&self) -> Result<()> {
            self.0.close().await
        }
        async fn list_resources(&self, f: &ResourceFilter) -> Result<Vec<Resource>> {
            self.0.list_resources(f).await
        }
        async fn get_resource(&self, id: &str) -> Result<Resource> {
            self.0.get_resource(id).await
        }
        async fn start_resource(&self, id: &str) -> Result<()> {
            self.0.start_resource(id).await
        }
        async fn stop_resource(&self, id: &str, g: Duration) -> Result<()> {
            self.0.stop_resource(id, g).await
        }
        async fn restart_resource(&self, id: &str) -> Result<()> {
            self.0.restart_resource(id).await
        }
        async fn delete_resource(&self, id: &str, o: &DeleteOptions) -> Result<()> {
            self.0.delete_resource(id, o).await
        }
        async fn create_resource(&self, s: &ResourceSpec) -> Result<Resource> {
            self.0.create_resource(s).await
        }
        async fn update_resource(&self, id: &str, s: &ResourceSpec) -> Result<Resource> {
            self.0.update_resource(id, s).await
        }
        async fn watch_resources(&self, f: &ResourceFilter) -> Result<ResourceEventStream> {
            self.0.watch_resources(f).await
        }
        async fn exec_in_resource(
            &self,
            id: &str,
            c: &[String],
            o: &ExecOptions,
        ) -> Result<ExecResult> {
            self.0.exec_in_resource(id, c, o).await
        }
        async fn get_metrics(&self, id: &str) -> Result<Metrics> {
            self.0.get_metrics(id).await
        }
        fn adapter_info(&self) -> AdapterInfo {
            AdapterInfo {
                name: "bare".into(),
                ..self.0.adapter_info()
            }
        }
    }
    let bare: Arc<dyn EnvironmentAdapter> = Arc::new(Bare(FakeAdapter::new("bare")));
    let e = bare
        .require_network_faults()
        .err()
        .expect("no network capability");
    assert!(e.is_fatal());
    assert_eq!(e.to_string(), "network faults is not supported by bare");
    assert!(bare.require_signals().is_err());
    assert!(bare.require_scaling().is_err());
}
