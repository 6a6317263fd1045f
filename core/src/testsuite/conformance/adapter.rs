//! The EnvironmentAdapter suite (seed properties 7, 9, 17-20, 92).

use std::time::Duration;

use futures::StreamExt;

use super::eventually;
use crate::adapter::EnvironmentAdapter;
use crate::error::Error;
use crate::resource::{phase, DeleteOptions, ExecOptions};
use crate::selector::ResourceFilter;

/// What the suite may act on in the adapter's environment.
#[derive(Debug, Clone)]
pub struct AdapterFixture {
    /// A running resource (id or key) the suite stops, starts and restarts.
    pub target: String,
    /// A command that exits 0 inside the target and prints `exec_ok_stdout`.
    pub exec_ok: Vec<String>,
    /// Text the successful command's stdout contains.
    pub exec_ok_stdout: String,
    /// A command that exits non-zero inside the target.
    pub exec_fail: Vec<String>,
    /// A resource (id or key) the suite may delete; `None` skips the delete check.
    pub disposable: Option<String>,
    /// How long a state change may take to be observed.
    pub settle: Duration,
}

impl AdapterFixture {
    /// A fixture for `target` with POSIX shell commands and a 20 s settle time.
    pub fn new(target: &str) -> Self {
        AdapterFixture {
            target: target.to_owned(),
            exec_ok: vec!["echo".into(), "conformance".into()],
            exec_ok_stdout: "conformance".into(),
            exec_fail: vec!["false".into()],
            disposable: None,
            settle: Duration::from_secs(20),
        }
    }
}

/// Runs every adapter check against `adapter`; panics naming the first that fails.
pub async fn adapter_conformance(adapter: &dyn EnvironmentAdapter, fx: &AdapterFixture) {
    let info = adapter.adapter_info();
    assert!(!info.name.is_empty(), "[p17] adapter_info().name is empty");
    assert!(
        !info.environment.is_empty(),
        "[p17] adapter_info().environment is empty"
    );

    // p7, p9: every listed resource conforms to the unified model.
    let all = adapter
        .list_resources(&ResourceFilter::everything())
        .await
        .unwrap_or_else(|e| panic!("[p17] list_resources failed: {}", e.chain_message()));
    assert!(
        !all.is_empty(),
        "[p7] list_resources returned nothing, fixture target missing"
    );
    for r in &all {
        assert_eq!(
            r.key.adapter(),
            info.name,
            "[p7] {} is keyed under another adapter",
            r.key
        );
        assert!(!r.id.is_empty(), "[p7] {} has an empty id", r.key);
        assert!(!r.name.is_empty(), "[p7] {} has an empty name", r.key);
        assert!(!r.kind.is_empty(), "[p7] {} has an empty kind", r.key);
        assert!(
            !r.status.phase.is_empty(),
            "[p9] {} has an empty phase",
            r.key
        );
    }

    let target = adapter.get_resource(&fx.target).await.unwrap_or_else(|e| {
        panic!(
            "[p17] get_resource({}) failed: {}",
            fx.target,
            e.chain_message()
        )
    });
    assert!(
        all.iter().any(|r| r.key == target.key),
        "[p7] the target {} is not in the full listing",
        target.key
    );
    let by_key = adapter
        .get_resource(target.key.as_str())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "[p17] get_resource by key {} failed: {}",
                target.key,
                e.chain_message()
            )
        });
    assert_eq!(by_key.id, target.id, "[p17] get by key and by id disagree");
    let by_name = adapter
        .list_resources(&ResourceFilter::everything().with_name(target.name.clone()))
        .await
        .expect("[p89] list by name");
    assert!(
        by_name.iter().any(|r| r.key == target.key),
        "[p89] name filter lost the target"
    );
    assert!(
        by_name.iter().all(|r| r.name == target.name),
        "[p89] name filter let others through"
    );

    // p92: a filter that matches nothing is an empty list, not an error.
    let none = adapter
        .list_resources(&ResourceFilter::everything().with_label("ire.conformance/absent", "x"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "[p92] a filter matching nothing failed: {}",
                e.chain_message()
            )
        });
    assert!(
        none.is_empty(),
        "[p92] a filter matching nothing returned {} resources",
        none.len()
    );

    // p94: pages.
    let page = adapter
        .list_resources(&ResourceFilter::everything().page(0, Some(1)))
        .await
        .expect("[p94] list with limit 1");
    assert!(page.len() <= 1, "[p94] limit 1 returned {}", page.len());
    let past = adapter
        .list_resources(&ResourceFilter::everything().page(all.len() + 10, Some(5)))
        .await
        .expect("[p94] list past the end");
    assert!(
        past.is_empty(),
        "[p94] a page past the end returned {}",
        past.len()
    );

    // Missing resources are a fatal NotFound.
    let missing = adapter
        .get_resource("ire-conformance-missing-resource")
        .await;
    match missing {
        Err(e) if matches!(e.root(), Error::NotFound { .. }) => {}
        other => panic!("[p17] get of a missing resource: expected NotFound, got {other:?}"),
    }

    // p18: stopping the target shows on the watch stream.
    let mut watch = adapter
        .watch_resources(&ResourceFilter::everything())
        .await
        .unwrap_or_else(|e| panic!("[p18] watch_resources failed: {}", e.chain_message()));
    adapter
        .stop_resource(&fx.target, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("[p17] stop_resource failed: {}", e.chain_message()));
    let key = target.key.clone();
    let seen = tokio::time::timeout(fx.settle, async {
        while let Some(ev) = watch.next().await {
            if let Ok(ev) = ev {
                if ev.resource.key == key {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert!(
        matches!(seen, Ok(true)),
        "[p18] no watch event for {key} after stopping it"
    );
    drop(watch);
    eventually(fx.settle, "[p17] target not running after stop", || async {
        let r = adapter.get_resource(&fx.target).await.ok()?;
        (!r.is_running()).then_some(())
    })
    .await;

    adapter
        .start_resource(&fx.target)
        .await
        .unwrap_or_else(|e| panic!("[p17] start_resource failed: {}", e.chain_message()));
    eventually(fx.settle, "[p17] target running after start", || async {
        let r = adapter.get_resource(&fx.target).await.ok()?;
        (r.status.phase == phase::RUNNING).then_some(())
    })
    .await;

    adapter
        .restart_resource(&fx.target)
        .await
        .unwrap_or_else(|e| panic!("[p17] restart_resource failed: {}", e.chain_message()));
    eventually(fx.settle, "[p17] target running after restart", || async {
        let r = adapter.get_resource(&fx.target).await.ok()?;
        r.is_running().then_some(())
    })
    .await;

    // p19: exec gives stdout, stderr and the exit code.
    let ok = adapter
        .exec_in_resource(&fx.target, &fx.exec_ok, &ExecOptions::default())
        .await
        .unwrap_or_else(|e| panic!("[p19] exec {:?} failed: {}", fx.exec_ok, e.chain_message()));
    assert_eq!(
        ok.exit_code,
        0,
        "[p19] {:?} exited {}: {}",
        fx.exec_ok,
        ok.exit_code,
        ok.stderr_text()
    );
    assert!(
        ok.stdout_text().contains(&fx.exec_ok_stdout),
        "[p19] stdout {:?} lacks {:?}",
        ok.stdout_text(),
        fx.exec_ok_stdout
    );
    let fail = adapter
        .exec_in_resource(&fx.target, &fx.exec_fail, &ExecOptions::default())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "[p19] exec {:?} failed to run: {}",
                fx.exec_fail,
                e.chain_message()
            )
        });
    assert_ne!(
        fail.exit_code, 0,
        "[p19] {:?} reported exit code 0",
        fx.exec_fail
    );

    // p20: metrics in the normalized shape, for this resource.
    let m = adapter
        .get_metrics(&fx.target)
        .await
        .unwrap_or_else(|e| panic!("[p20] get_metrics failed: {}", e.chain_message()));
    let current = adapter
        .get_resource(&fx.target)
        .await
        .expect("target after restart");
    assert_eq!(
        m.resource_id, current.id,
        "[p20] metrics are for another resource"
    );
    assert!(
        (chrono::Utc::now() - m.timestamp).num_seconds().abs() < 300,
        "[p20] metrics timestamp {} is not current",
        m.timestamp
    );
    assert!(
        m.cpu.usage_percent >= 0.0 && m.memory.usage_percent >= 0.0,
        "[p20] negative usage"
    );

    if let Some(d) = &fx.disposable {
        adapter
            .delete_resource(
                d,
                &DeleteOptions {
                    grace_period: Duration::from_secs(1),
                    force: true,
                },
            )
            .await
            .unwrap_or_else(|e| panic!("[p17] delete_resource failed: {}", e.chain_message()));
        eventually(fx.settle, "[p17] deleted resource gone", || async {
            match adapter.get_resource(d).await {
                Err(e) if matches!(e.root(), Error::NotFound { .. }) => Some(()),
                _ => None,
            }
        })
        .await;
    }
}
