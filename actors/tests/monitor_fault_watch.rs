//! Time to detect and time to recover of a fault, measured against a real HTTP server that
//! is made unhealthy and healthy again.

#[path = "support/http_server.rs"]
mod http_server;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use http_server::TestServer;
use ire_actors::bus::LocalEventBus;
use ire_actors::monitor::{Adapters, FaultWatch, FaultWatchConfig, HealthMonitor, MonitorArgs};
use ire_core::testsuite::ResourceBuilder;
use ire_core::{EventBus, EventFilter, ExecutionRecord, ExecutionStatus, HealthCheckConfig};

fn web(server: &TestServer) -> ire_core::Resource {
    ResourceBuilder::new("web")
        .health_check(HealthCheckConfig {
            type_: "http".into(),
            endpoint: server.url("/health"),
            interval: Duration::from_millis(10),
            timeout: Duration::from_secs(1),
            retries: 1,
        })
        .build()
}

async fn watch(bus: Option<Arc<dyn EventBus>>, give_up: Duration) -> FaultWatch {
    FaultWatch::spawn(MonitorArgs::new(
        Arc::new(HealthMonitor::new(Adapters::new())),
        bus,
        FaultWatchConfig {
            probe_interval: Duration::from_millis(10),
            give_up_after: give_up,
        },
    ))
    .await
    .unwrap()
    .0
}

#[tokio::test]
async fn a_fault_gets_its_time_to_detect_and_time_to_recover() {
    let server = TestServer::fixed(200, "ok").await;
    let bus = LocalEventBus::new();
    let mut events = bus
        .subscribe(EventFilter {
            types: vec!["resource.*".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let fw = watch(Some(Arc::new(bus.clone())), Duration::from_secs(60)).await;
    let r = web(&server);

    let injected = Utc::now();
    fw.fault_injected("exec-1", &r, injected).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.set_fixed(503, "down"); // the fault takes effect
    let detected = Utc::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.set_fixed(200, "ok"); // the resource recovers
    let recovered = Utc::now();

    let t = fw
        .wait_recovered("exec-1", Duration::from_secs(5))
        .await
        .unwrap();
    let ttd = t.time_to_detect().expect("detected");
    let ttr = t.time_to_recover().expect("recovered");
    let lower = |at: chrono::DateTime<Utc>| (at - injected).to_std().unwrap();
    // Not before the change, and within a few probe intervals after it.
    assert!(
        ttd >= lower(detected) && ttd < lower(detected) + Duration::from_millis(750),
        "ttd {ttd:?}"
    );
    assert!(
        ttr >= lower(recovered) && ttr < lower(recovered) + Duration::from_millis(750),
        "ttr {ttr:?}"
    );
    assert!(!t.gave_up);

    let unhealthy = events.recv_timeout(Duration::from_secs(2)).await.unwrap();
    assert_eq!(unhealthy.type_, "resource.unhealthy");
    assert_eq!(unhealthy.metadata["execution_id"], "exec-1");
    let healthy = events.recv_timeout(Duration::from_secs(2)).await.unwrap();
    assert_eq!(healthy.type_, "resource.healthy");
    assert_eq!(healthy.data["timeToRecoverMs"], ttr.as_millis() as u64);

    let mut record = ExecutionRecord {
        id: "exec-1".into(),
        plugin_name: "kill".into(),
        resource_id: r.id.clone(),
        resource_name: r.name.clone(),
        resource_key: Some(r.key.clone()),
        start_time: injected,
        end_time: Utc::now(),
        duration: Duration::from_millis(500),
        status: ExecutionStatus::Success,
        error: String::new(),
        metadata: Default::default(),
        principal: String::new(),
        campaign: None,
        step: None,
        node: None,
        fencing_token: None,
        time_to_detect: None,
        time_to_recover: None,
    };
    let t = fw.finish("exec-1").await.unwrap().unwrap();
    t.apply_to(&mut record);
    assert_eq!(record.time_to_detect, Some(ttd));
    assert_eq!(record.time_to_recover, Some(ttr));
    assert!(fw.timings("exec-1").await.unwrap().is_none());
}

#[tokio::test]
async fn a_resource_that_never_recovers_ends_without_a_recovery_time() {
    let server = TestServer::fixed(503, "down").await;
    let fw = watch(None, Duration::from_millis(150)).await;
    fw.fault_injected("exec-2", &web(&server), Utc::now())
        .unwrap();
    let t = fw
        .wait_recovered("exec-2", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(t.gave_up);
    assert!(t.time_to_detect().is_some());
    assert!(t.time_to_recover().is_none());
}

#[tokio::test]
async fn probing_stops_once_the_execution_finishes() {
    let server = TestServer::fixed(200, "ok").await;
    let fw = watch(None, Duration::from_secs(60)).await;
    fw.fault_injected("exec-3", &web(&server), Utc::now())
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = fw.finish("exec-3").await.unwrap().unwrap();
    assert!(
        t.time_to_detect().is_none(),
        "never unhealthy, never detected"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = server.request_count();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.request_count(), after, "still probing after finish");
    let e = fw
        .wait_recovered("exec-3", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("exec-3"), "{e}");
}
