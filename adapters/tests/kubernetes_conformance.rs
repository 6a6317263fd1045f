//! ire-core's adapter conformance suite against the kubernetes adapter and the fake API
//! server.

mod kube_support;

use std::time::Duration;

use ire_core::testsuite::{adapter_conformance, AdapterFixture};
use kube_support::{harness, NS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_adapter_passes_the_adapter_conformance_suite() {
    let h = harness().await;
    let cluster = h.server.cluster();
    cluster.add_statefulset(NS, "web", 2, &[("app", "web")]);
    cluster.add_pod(NS, "scratch", &[("app", "scratch")]);
    let fx = AdapterFixture {
        disposable: Some(format!("k8s/{NS}/scratch")),
        settle: Duration::from_secs(10),
        ..AdapterFixture::new(&format!("k8s/{NS}/statefulset/web"))
    };
    adapter_conformance(&h.adapter, &fx).await;
}
