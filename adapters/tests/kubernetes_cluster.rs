//! The kubernetes adapter against a real cluster, when `KUBECONFIG` names one. Run with
//! `cargo test -p ire-adapters --test kubernetes_cluster -- --ignored`; the namespace is
//! `IRE_TEST_NAMESPACE` (default `default`). The tests only read, except the exec test,
//! which runs `echo` in the first running pod.

use std::time::Duration;

use futures::StreamExt;
use ire_adapters::kubernetes::KubernetesAdapter;
use ire_core::{AdapterConfig, EnvironmentAdapter, ExecOptions, ResourceFilter};
use serde_json::json;

async fn adapter() -> KubernetesAdapter {
    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG names a cluster");
    let ns = std::env::var("IRE_TEST_NAMESPACE").unwrap_or_else(|_| "default".into());
    let mut a = KubernetesAdapter::new();
    a.initialize(AdapterConfig {
        name: "cluster".into(),
        config: json!({"kubeconfig": kubeconfig, "namespace": ns, "page-size": 2})
            .as_object()
            .cloned()
            .unwrap(),
    })
    .await
    .expect("connects to the cluster");
    a
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster"]
async fn real_cluster_lists_pages_and_gets_by_key() {
    let a = adapter().await;
    let mut pages = a
        .list_pages(&ResourceFilter::everything().with_kind("pod"))
        .unwrap();
    let mut all = Vec::new();
    while let Some(p) = pages.next().await {
        let p = p.unwrap();
        assert!(p.len() <= 2);
        all.extend(p);
    }
    for r in all.iter().take(3) {
        assert_eq!(a.get_resource(r.key.as_str()).await.unwrap().id, r.id);
    }
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster"]
async fn real_cluster_watch_starts_and_exec_runs() {
    let a = adapter().await;
    let _watch = a
        .watch_resources(&ResourceFilter::everything())
        .await
        .unwrap();
    let running = a
        .list_resources(
            &ResourceFilter::everything()
                .with_kind("pod")
                .with_status("running")
                .page(0, Some(1)),
        )
        .await
        .unwrap();
    if let Some(pod) = running.first() {
        let opts = ExecOptions {
            timeout: Some(Duration::from_secs(20)),
            ..Default::default()
        };
        let r = a
            .exec_in_resource(pod.key.as_str(), &["echo".into(), "ire".into()], &opts)
            .await
            .unwrap();
        assert_eq!((r.stdout_text().trim(), r.exit_code), ("ire", 0));
    }
    match a
        .get_metrics(running.first().map(|p| p.key.as_str()).unwrap_or("none"))
        .await
    {
        Ok(m) => assert!(m.cpu.usage_cores >= 0.0),
        Err(e) => assert!(
            e.to_string().contains("metrics-server")
                || matches!(e.root(), ire_core::Error::NotFound { .. }),
            "{e}"
        ),
    }
}
