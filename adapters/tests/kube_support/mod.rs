//! Shared setup for the kubernetes adapter's tests: a fake API server and an adapter
//! initialized from a kubeconfig that points at it.

#![allow(dead_code)]

use ire_adapters::kubernetes::fake_api::FakeApiServer;
use ire_adapters::kubernetes::KubernetesAdapter;
use ire_core::{AdapterConfig, EnvironmentAdapter};
use serde_json::json;

/// A fake API server, the adapter connected to it, and the kubeconfig's directory.
pub struct Harness {
    pub server: FakeApiServer,
    pub adapter: KubernetesAdapter,
    pub dir: tempfile::TempDir,
}

/// The adapter's instance name in these tests.
pub const ADAPTER: &str = "k8s";
/// The namespace the tests work in.
pub const NS: &str = "shop";

/// Starts a fake server and an adapter with the given extra settings.
pub async fn harness_with(settings: serde_json::Value) -> Harness {
    let server = FakeApiServer::start()
        .await
        .expect("fake API server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    server
        .write_kubeconfig(&path, NS)
        .expect("kubeconfig written");
    let mut config = json!({"kubeconfig": path});
    if let (Some(c), Some(extra)) = (config.as_object_mut(), settings.as_object()) {
        c.extend(extra.clone());
    }
    let mut adapter = KubernetesAdapter::new();
    adapter
        .initialize(AdapterConfig {
            name: ADAPTER.into(),
            config: config.as_object().cloned().unwrap_or_default(),
        })
        .await
        .expect("adapter initializes against the fake API server");
    Harness {
        server,
        adapter,
        dir,
    }
}

/// Starts a fake server and an adapter with default settings.
pub async fn harness() -> Harness {
    harness_with(json!({})).await
}
