//! ire-core's adapter conformance suite against the process adapter and real processes.
#![cfg(feature = "process")]

use std::time::Duration;

use ire_adapters::process::{ProcessAdapter, ProcessConfig, ProcessSpec};
use ire_core::testsuite::{adapter_conformance, AdapterFixture};
use ire_core::EnvironmentAdapter;

#[tokio::test]
async fn process_adapter_passes_the_adapter_conformance_suite() {
    let graceful = "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done";
    let a = ProcessAdapter::start(
        "proc",
        &ProcessConfig {
            processes: vec![
                ProcessSpec::new("target", "/bin/sh", &["-c", graceful]),
                ProcessSpec::new("disposable", "/bin/sleep", &["60"]),
                ProcessSpec::new("bystander", "/bin/sleep", &["60"]),
            ],
            stop_grace: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut fx = AdapterFixture::new("proc/target");
    fx.disposable = Some("proc/disposable".into());
    fx.settle = Duration::from_secs(10);
    adapter_conformance(&a, &fx).await;
    a.close().await.unwrap();
}
