//! The monitor's health checks and waits, seed properties 28-32, against real local servers.

#[path = "support/http_server.rs"]
mod http_server;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use http_server::TestServer;
use ire_actors::monitor::{Adapters, HealthMonitor, PHASE_CONDITION};
use ire_core::testsuite::{FakeAdapter, ResourceBuilder};
use ire_core::{
    Condition, EnvironmentAdapter, Error, HealthCheckConfig, HealthCheckStrategy, HealthStatus,
    HealthStatusType, Monitor, Resource, Result,
};

fn hc(type_: &str, endpoint: &str) -> HealthCheckConfig {
    HealthCheckConfig {
        type_: type_.into(),
        endpoint: endpoint.into(),
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(2),
        retries: 1,
    }
}

fn resource(name: &str, check: HealthCheckConfig) -> Resource {
    ResourceBuilder::new(name).health_check(check).build()
}

fn monitor_with(fake: &Arc<FakeAdapter>) -> HealthMonitor {
    let adapters = Adapters::new();
    adapters.insert("fake", fake.clone() as Arc<dyn EnvironmentAdapter>);
    HealthMonitor::new(adapters).with_poll_interval(Duration::from_millis(20))
}

fn monitor() -> HealthMonitor {
    monitor_with(&Arc::new(FakeAdapter::new("fake")))
}

#[tokio::test]
async fn http_check_is_healthy_on_an_accepted_status_and_unhealthy_otherwise() {
    let server = TestServer::fixed(200, "status: ok").await;
    let m = monitor();
    let r = resource("web", hc("http", &server.url("/health")));
    assert_eq!(
        m.check_health(&r).await.unwrap().status,
        HealthStatusType::Healthy
    );
    server.set_fixed(503, "draining");
    let s = m.check_health(&r).await.unwrap();
    assert_eq!(s.status, HealthStatusType::Unhealthy);
    assert!(s.message.contains("503"), "{}", s.message);
    // Nothing listening: unhealthy, not an error.
    drop(server);
    let s = m.check_health(&r).await.unwrap();
    assert_eq!(s.status, HealthStatusType::Unhealthy, "{}", s.message);
}

#[tokio::test]
async fn http_check_honours_expected_codes_and_body() {
    let server = TestServer::fixed(204, "").await;
    let m = monitor();
    let mut r = resource("web", hc("http", &server.url("/")));
    r.annotations
        .insert("ire.health/expected-status".into(), "200".into());
    assert!(!m.check_health(&r).await.unwrap().is_healthy());
    r.annotations
        .insert("ire.health/expected-status".into(), "200, 204".into());
    assert!(m.check_health(&r).await.unwrap().is_healthy());

    server.set_fixed(200, "{\"db\":\"down\"}");
    r.annotations.remove("ire.health/expected-status");
    r.annotations
        .insert("ire.health/expected-body".into(), "\"db\":\"up\"".into());
    let s = m.check_health(&r).await.unwrap();
    assert!(!s.is_healthy());
    assert!(s.message.contains("without"), "{}", s.message);
    server.set_fixed(200, "{\"db\":\"up\"}");
    assert!(m.check_health(&r).await.unwrap().is_healthy());

    r.annotations
        .insert("ire.health/expected-status".into(), "ok".into());
    let e = m.check_health(&r).await.unwrap_err();
    assert!(e.to_string().contains("expected-status"), "{e}");
}

#[tokio::test]
async fn http_check_rejects_bad_endpoints_with_the_field_named() {
    let m = monitor();
    let e = m
        .check_health(&resource("web", hc("http", "https://x/")))
        .await
        .unwrap_err();
    assert!(matches!(e.root(), Error::Unsupported { .. }), "{e}");
    let e = m
        .check_health(&resource("web", hc("http", "not a url")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("spec.healthCheck.endpoint"), "{e}");
}

#[tokio::test]
async fn tcp_check_follows_whether_the_port_accepts() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let m = monitor();
    let r = resource("db", hc("tcp", &addr.to_string()));
    assert!(m.check_health(&r).await.unwrap().is_healthy());
    drop(listener);
    let s = m.check_health(&r).await.unwrap();
    assert!(!s.is_healthy());
    assert!(s.message.contains(&addr.to_string()), "{}", s.message);
}

#[tokio::test]
async fn exec_check_runs_the_command_through_the_resources_adapter() {
    let fake = Arc::new(FakeAdapter::new("fake"));
    let m = monitor_with(&fake);
    let ok = fake.insert(resource("worker", hc("exec", "echo ok")));
    assert!(m.check_health(&ok).await.unwrap().is_healthy());
    let calls = fake.calls_to("exec_in_resource");
    assert_eq!(calls.len(), 1, "{calls:?}");

    let failing = fake.insert(resource("worker2", hc("exec", "[\"false\"]")));
    let s = m.check_health(&failing).await.unwrap();
    assert!(!s.is_healthy(), "{}", s.message);

    fake.set_phase(&ok.id, "stopped").unwrap();
    assert!(!m.check_health(&ok).await.unwrap().is_healthy());
}

struct Counting {
    name: String,
    calls: AtomicUsize,
}

#[async_trait]
impl HealthCheckStrategy for Counting {
    async fn check(&self, _r: &Resource) -> Result<HealthStatus> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(HealthStatus::healthy("counted"))
    }
    fn name(&self) -> &str {
        &self.name
    }
}

#[tokio::test]
async fn check_health_uses_the_strategy_the_config_names_including_custom_ones() {
    let m = monitor();
    let custom = Arc::new(Counting {
        name: "grpc".into(),
        calls: AtomicUsize::new(0),
    });
    let r = resource("api", hc("grpc", "127.0.0.1:1"));
    let e = m.check_health(&r).await.unwrap_err();
    assert!(
        e.chain_message()
            .contains("known strategies: exec, http, status, tcp"),
        "{}",
        e.chain_message()
    );
    m.register_health_check_strategy("grpc", custom.clone())
        .unwrap();
    assert_eq!(m.check_health(&r).await.unwrap().message, "counted");
    assert_eq!(custom.calls.load(Ordering::SeqCst), 1);
    // Replacing a built-in by name is allowed.
    let http = Arc::new(Counting {
        name: "http".into(),
        calls: AtomicUsize::new(0),
    });
    m.register_health_check_strategy("http", http.clone())
        .unwrap();
    m.check_health(&resource("web", hc("http", "http://127.0.0.1:1/")))
        .await
        .unwrap();
    assert_eq!(http.calls.load(Ordering::SeqCst), 1);
    assert_eq!(m.health_check_strategy("grpc").unwrap().name(), "grpc");
}

#[tokio::test]
async fn resources_without_a_health_check_use_the_adapters_status() {
    let fake = Arc::new(FakeAdapter::new("fake"));
    let m = monitor_with(&fake);
    let r = fake.insert(ResourceBuilder::new("plain").build());
    assert!(m.check_health(&r).await.unwrap().is_healthy());
    fake.set_phase(&r.id, "failed").unwrap();
    assert!(!m.check_health(&r).await.unwrap().is_healthy());
}

#[tokio::test]
async fn wait_for_healthy_polls_until_healthy_or_the_timeout() {
    let server = TestServer::fixed(503, "starting").await;
    let m = monitor();
    let r = resource("web", hc("http", &server.url("/")));
    let e = m
        .wait_for_healthy(&r, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("503"), "{e}");
    assert!(
        server.request_count() >= 3,
        "polled {} times",
        server.request_count()
    );

    let waiter = m.wait_for_healthy(&r, Duration::from_secs(5));
    let setter = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        server.set_fixed(200, "ok");
    };
    let (waited, ()) = tokio::join!(waiter, setter);
    waited.unwrap();
}

#[tokio::test(start_paused = true)]
async fn wait_for_condition_polls_the_adapter_until_met_or_timeout() {
    let fake = Arc::new(FakeAdapter::new("fake"));
    let m = monitor_with(&fake);
    let r = fake.insert(ResourceBuilder::new("db").phase("pending").build());
    let running = Condition::new(PHASE_CONDITION, "running");
    let e = m
        .wait_for_condition(&r, &running, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("phase pending"), "{e}");

    let f2 = fake.clone();
    let id = r.id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        f2.set_phase(&id, "running").unwrap();
    });
    m.wait_for_condition(&r, &running, Duration::from_secs(10))
        .await
        .unwrap();

    let mut ready = r.clone();
    ready.status.phase = "running".into();
    ready.status.conditions = vec![Condition::new("Ready", "True")];
    fake.insert(ready);
    m.wait_for_condition(&r, &Condition::new("Ready", "True"), Duration::from_secs(1))
        .await
        .unwrap();
}

#[tokio::test]
async fn collect_metrics_delegates_to_the_adapter_and_normalizes() {
    let fake = Arc::new(FakeAdapter::new("fake"));
    let m = monitor_with(&fake);
    let r = fake.insert(ResourceBuilder::new("db").build());
    let metrics = m.collect_metrics(&r).await.unwrap();
    assert_eq!(metrics.resource_id, r.id);
    assert_eq!(fake.calls_to("get_metrics").len(), 1);
    let other = ResourceBuilder::new("x").key("nowhere/x").build();
    let e = m.collect_metrics(&other).await.unwrap_err();
    assert!(
        e.chain_message().contains("nowhere"),
        "{}",
        e.chain_message()
    );
}

#[tokio::test]
async fn watch_events_streams_the_adapters_changes_to_that_resource() {
    let fake = Arc::new(FakeAdapter::new("fake"));
    let m = monitor_with(&fake);
    let r = fake.insert(ResourceBuilder::new("db").build());
    let other = fake.insert(ResourceBuilder::new("cache").build());
    let mut events = m.watch_events(&r).await.unwrap();
    fake.set_phase(&other.id, "stopped").unwrap();
    fake.set_phase(&r.id, "stopped").unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.type_, "resource.changed");
    assert_eq!(e.resource.as_ref().unwrap().key, r.key);
    assert_eq!(e.data["phase"], "stopped");
}
