//! ire-core's adapter conformance suite against the docker adapter and this machine's
//! Docker Engine.
#![cfg(feature = "docker")]

mod docker_support;

use std::time::Duration;

use docker_support::{DockerTest, GRACEFUL};
use ire_core::testsuite::{adapter_conformance, AdapterFixture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_adapter_passes_the_adapter_conformance_suite() {
    let t = DockerTest::new("dk").await;
    let target = t.spawn("conf-target", GRACEFUL, &[]).await;
    let disposable = t.spawn("conf-disposable", GRACEFUL, &[]).await;
    let mut fx = AdapterFixture::new(target.key.as_str());
    fx.disposable = Some(disposable.key.to_string());
    fx.settle = Duration::from_secs(20);
    adapter_conformance(&t.adapter, &fx).await;
}
