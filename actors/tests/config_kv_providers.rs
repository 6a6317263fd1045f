//! The Consul KV and Vault KV v2 providers, against local servers that speak the documented
//! subset of those APIs (see `support/fake_kv.rs`).

#[path = "support/fake_kv.rs"]
mod fake_kv;

use std::sync::Arc;
use std::time::Duration;

use fake_kv::{FakeConsul, FakeVault};
use ire_actors::config::{priority, ConsulConfigProvider, LayeredConfig, VaultConfigProvider};
use ire_core::{Config, ConfigProvider, Error};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn consul_keys_under_the_prefix_become_dotted_keys() {
    let consul = FakeConsul::start().await;
    consul.put("ire/engine/concurrency", "8");
    consul.put("ire/monitor/interval", "2s");
    consul.put("other/engine/concurrency", "99");
    let p = ConsulConfigProvider::new(&consul.url(), "ire").unwrap();
    let map = p.load().await.unwrap();
    assert_eq!(map.len(), 2, "{map:?}");
    assert_eq!(map["engine.concurrency"], json!("8"));
    assert_eq!(map["monitor.interval"], json!("2s"));
}

#[tokio::test]
async fn consul_changes_arrive_through_blocking_queries() {
    let consul = FakeConsul::start().await;
    consul.put("ire/engine/concurrency", "8");
    let config = LayeredConfig::new();
    config
        .add_provider(
            Arc::new(
                ConsulConfigProvider::new(&consul.url(), "ire")
                    .unwrap()
                    .with_wait(Duration::from_secs(30)),
            ),
            priority::CONSUL,
        )
        .await
        .unwrap();
    assert_eq!(config.get_int("engine.concurrency").unwrap(), 8);
    let mut watch = config.watch("engine.concurrency").unwrap();
    // Let the watcher park in a blocking query; the change must wake it, not a poll.
    let started = tokio::time::Instant::now();
    while consul.blocking_queries() == 0 {
        assert!(started.elapsed() < DEADLINE, "no blocking query was made");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    consul.put("ire/engine/concurrency", "16");
    let v = tokio::time::timeout(DEADLINE, watch.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, json!("16"));
    // Well under the 30 s wait: the blocking query returned on the change.
    assert!(started.elapsed() < Duration::from_secs(5));
    consul.delete("ire/engine/concurrency");
    tokio::time::timeout(DEADLINE, async {
        while config.get("engine.concurrency").is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a deleted key disappears");
}

#[tokio::test]
async fn vault_secret_data_becomes_keys_and_new_versions_are_picked_up() {
    let vault = FakeVault::start("s.root", "secret").await;
    vault.put(
        "ire/prod",
        json!({"api": {"token": "t-1"}, "reporter": {"batch_size": 256}}),
    );
    let p = VaultConfigProvider::new(&vault.url(), "s.root", "secret", "ire/prod")
        .unwrap()
        .with_poll_interval(Duration::from_millis(20));
    let config = LayeredConfig::new();
    config
        .add_provider(Arc::new(p), priority::VAULT)
        .await
        .unwrap();
    assert_eq!(config.get_string("api.token").unwrap(), "t-1");
    assert_eq!(config.get_int("reporter.batch_size").unwrap(), 256);
    let mut watch = config.watch("api.token").unwrap();
    vault.put(
        "ire/prod",
        json!({"api": {"token": "t-2"}, "reporter": {"batch_size": 256}}),
    );
    let v = tokio::time::timeout(DEADLINE, watch.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, json!("t-2"));
}

#[tokio::test]
async fn vault_errors_say_what_is_wrong_without_the_token() {
    let vault = FakeVault::start("s.root", "secret").await;
    let wrong =
        VaultConfigProvider::new(&vault.url(), "s.wrong-token", "secret", "ire/prod").unwrap();
    let e = wrong.load().await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
    assert!(!e.to_string().contains("s.wrong-token"));
    assert!(!format!("{wrong:?}").contains("s.wrong-token"));
    let missing = VaultConfigProvider::new(&vault.url(), "s.root", "secret", "ire/none").unwrap();
    let e = missing.load().await.unwrap_err();
    assert!(e.to_string().contains("ire/none"), "{e}");
}

#[tokio::test]
async fn every_kind_of_provider_works_at_once() {
    use ire_actors::config::{ArgsConfigProvider, EnvConfigProvider, FileConfigProvider};
    let consul = FakeConsul::start().await;
    consul.put("ire/a", "consul");
    consul.put("ire/b", "consul");
    let vault = FakeVault::start("t", "secret").await;
    vault.put("ire", json!({"b": "vault", "c": "vault"}));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ire.yaml");
    std::fs::write(&file, "a: file\nf: file\n").unwrap();
    let config = LayeredConfig::new();
    config
        .add_provider(Arc::new(FileConfigProvider::new(&file)), priority::FILE)
        .await
        .unwrap();
    config
        .add_provider(
            Arc::new(ConsulConfigProvider::new(&consul.url(), "ire").unwrap()),
            priority::CONSUL,
        )
        .await
        .unwrap();
    config
        .add_provider(
            Arc::new(VaultConfigProvider::new(&vault.url(), "t", "secret", "ire").unwrap()),
            priority::VAULT,
        )
        .await
        .unwrap();
    config
        .add_provider(
            Arc::new(EnvConfigProvider::from_vars(
                "IRE",
                vec![
                    ("IRE_C".into(), "env".into()),
                    ("IRE_D".into(), "env".into()),
                ],
            )),
            priority::ENV,
        )
        .await
        .unwrap();
    config
        .add_provider(
            Arc::new(ArgsConfigProvider::parse(["d=args"]).unwrap()),
            priority::ARGS,
        )
        .await
        .unwrap();
    let got: Vec<String> = ["f", "a", "b", "c", "d"]
        .iter()
        .map(|k| config.get_string(k).unwrap())
        .collect();
    assert_eq!(got, ["file", "consul", "vault", "env", "args"]);
}
