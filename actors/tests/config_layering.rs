//! Seed properties 43-47: several providers at once, precedence, typed getters, watches
//! (with hot reload of the file) and custom providers.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use ire_actors::config::{
    priority, ArgsConfigProvider, EnvConfigProvider, FileConfigProvider, LayeredConfig,
    MapConfigProvider,
};
use ire_core::{
    Config, ConfigChange, ConfigChangeStream, ConfigMap, ConfigProvider, Error, Result,
};
use proptest::prelude::*;
use serde_json::{json, Value};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(5);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    /// Property 44: a key's value comes from the provider with the highest priority that
    /// sets it (the later added on a tie).
    #[test]
    fn get_returns_the_highest_priority_providers_value(
        layers in prop::collection::vec(
            (-5i32..5, prop::collection::btree_map(prop::sample::select(vec!["a", "b.c", "b.d", "e"]), 0u32..100, 0..4)),
            1..6,
        )
    ) {
        rt().block_on(async {
            let config = LayeredConfig::new();
            for (i, (prio, values)) in layers.iter().enumerate() {
                let v: serde_json::Map<String, Value> = values.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
                let nested = {
                    let mut flat = ConfigMap::new();
                    for (k, v) in v { flat.insert(k, v); }
                    flat
                };
                config.add_provider(Arc::new(FlatProvider(format!("p{i}"), nested)), *prio).await.unwrap();
            }
            for key in ["a", "b.c", "b.d", "e"] {
                // Naive: the last of the layers with the maximal priority among those that set it.
                let want = layers
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, vals))| vals.contains_key(key))
                    .max_by_key(|(i, (p, _))| (*p, *i))
                    .map(|(_, (_, vals))| json!(vals[key]));
                prop_assert_eq!(config.get(key).ok(), want);
            }
            Ok(())
        })?;
    }
}

/// A custom provider over a flat map, whose changes the test pushes (property 47).
struct FlatProvider(String, ConfigMap);

#[async_trait]
impl ConfigProvider for FlatProvider {
    async fn load(&self) -> Result<ConfigMap> {
        Ok(self.1.clone())
    }
    async fn watch(&self) -> Result<ConfigChangeStream> {
        Ok(futures::stream::empty().boxed())
    }
    fn name(&self) -> &str {
        &self.0
    }
}

struct PushProvider {
    rx: std::sync::Mutex<Option<mpsc::Receiver<ConfigChange>>>,
}

#[async_trait]
impl ConfigProvider for PushProvider {
    async fn load(&self) -> Result<ConfigMap> {
        Ok([("feature.enabled".to_owned(), json!(false))].into())
    }
    async fn watch(&self) -> Result<ConfigChangeStream> {
        let rx = self.rx.lock().unwrap().take().expect("watched once");
        Ok(
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
                .boxed(),
        )
    }
    fn name(&self) -> &str {
        "push"
    }
}

#[tokio::test]
async fn a_custom_providers_changes_reach_watchers() {
    let (tx, rx) = mpsc::channel(4);
    let config = LayeredConfig::new();
    config
        .add_provider(
            Arc::new(PushProvider {
                rx: std::sync::Mutex::new(Some(rx)),
            }),
            5,
        )
        .await
        .unwrap();
    assert!(!config.get_bool("feature.enabled").unwrap());
    let mut w = config.watch("feature.enabled").unwrap();
    tx.send(ConfigChange {
        key: "feature.enabled".into(),
        old_value: Some(json!(false)),
        new_value: Some(json!(true)),
    })
    .await
    .unwrap();
    assert_eq!(
        tokio::time::timeout(DEADLINE, w.recv())
            .await
            .unwrap()
            .unwrap(),
        json!(true)
    );
    assert!(config.get_bool("feature.enabled").unwrap());
}

#[tokio::test]
async fn file_env_and_args_layer_in_priority_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ire.yaml");
    std::fs::write(
        &file,
        "engine:\n  concurrency: 4\n  default-timeout: 30s\nreporter:\n  format: html\nnode:\n  name: file-node\n",
    )
    .unwrap();
    let config = LayeredConfig::new();
    config
        .add_provider(
            Arc::new(MapConfigProvider::new(
                "defaults",
                &json!({"engine": {"concurrency": 1, "retries": 3}}),
            )),
            priority::DEFAULTS,
        )
        .await
        .unwrap();
    config
        .add_provider(Arc::new(FileConfigProvider::new(&file)), priority::FILE)
        .await
        .unwrap();
    config
        .add_provider(
            Arc::new(EnvConfigProvider::from_vars(
                "IRE",
                vec![
                    ("IRE_ENGINE__CONCURRENCY".into(), "8".into()),
                    ("IRE_NODE__NAME".into(), "env-node".into()),
                    ("OTHER_NODE__NAME".into(), "ignored".into()),
                ],
            )),
            priority::ENV,
        )
        .await
        .unwrap();
    config
        .add_provider(
            Arc::new(ArgsConfigProvider::parse(["node.name=cli-node"]).unwrap()),
            priority::ARGS,
        )
        .await
        .unwrap();

    assert_eq!(config.get_int("engine.concurrency").unwrap(), 8); // env over file over defaults
    assert_eq!(
        config.source_of("engine.concurrency").as_deref(),
        Some("env")
    );
    assert_eq!(config.get_int("engine.retries").unwrap(), 3); // only the defaults have it
    assert_eq!(config.get_string("node.name").unwrap(), "cli-node"); // args over env
    assert_eq!(
        config.get_duration("engine.default-timeout").unwrap(),
        Duration::from_secs(30)
    );
    // A prefix is the merged subtree.
    assert_eq!(
        config.get("engine").unwrap(),
        json!({"concurrency": "8", "retries": 3, "default-timeout": "30s"})
    );
    config.set("node.name", json!("set-node")).unwrap();
    assert_eq!(config.get_string("node.name").unwrap(), "set-node");
}

#[tokio::test]
async fn typed_getters_convert_or_fail_naming_the_key() {
    let config = LayeredConfig::new();
    config
        .add_provider(
            Arc::new(MapConfigProvider::new(
                "m",
                &json!({"n": "42", "b": "yes", "d": "1m 30s", "bad": "many", "list": [1]}),
            )),
            0,
        )
        .await
        .unwrap();
    assert_eq!(config.get_int("n").unwrap(), 42);
    assert!(config.get_bool("b").unwrap());
    assert_eq!(config.get_duration("d").unwrap(), Duration::from_secs(90));
    let e = config.get_int("bad").unwrap_err();
    assert!(
        e.to_string().contains("\"bad\"") && e.to_string().contains("integer"),
        "{e}"
    );
    assert!(config.get_string("list").is_err());
    let e = config.get_int("missing.key").unwrap_err();
    assert!(matches!(e.root(), Error::NotFound { .. }), "{e}");
    assert!(
        e.chain_message().contains("missing.key") && e.chain_message().contains("m@0"),
        "{}",
        e.chain_message()
    );
}

#[tokio::test]
async fn watching_a_key_delivers_each_new_value() {
    let config = LayeredConfig::new();
    let mut w = config.watch("engine.concurrency").unwrap();
    config.set("engine.concurrency", json!(2)).unwrap();
    config.set("engine.other", json!(1)).unwrap(); // another key: nothing for this watcher
    config.set("engine.concurrency", json!(3)).unwrap();
    assert_eq!(w.recv().await.unwrap(), json!(2));
    assert_eq!(w.recv().await.unwrap(), json!(3));
    assert!(w.try_recv().is_err());
}

#[tokio::test]
async fn editing_the_file_hot_reloads_watched_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ire.yaml");
    std::fs::write(&file, "monitor:\n  interval: 5s\n").unwrap();
    let config = LayeredConfig::new();
    config
        .add_provider(
            Arc::new(
                FileConfigProvider::new(&file).with_reload_interval(Duration::from_millis(20)),
            ),
            priority::FILE,
        )
        .await
        .unwrap();
    let mut w = config.watch("monitor.interval").unwrap();
    // A half-written file is ignored, keeping the previous values.
    std::fs::write(&file, "monitor: [interval\n").unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        config.get_duration("monitor.interval").unwrap(),
        Duration::from_secs(5)
    );
    std::fs::write(&file, "monitor:\n  interval: 2s\n").unwrap();
    let v = tokio::time::timeout(DEADLINE, w.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, json!("2s"));
    assert_eq!(
        config.get_duration("monitor.interval").unwrap(),
        Duration::from_secs(2)
    );
}

#[tokio::test]
async fn bad_sources_fail_with_where_and_what() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ire.yaml");
    std::fs::write(&file, "engine:\n  concurrency: 4\n   bad: indent\n").unwrap();
    let e = FileConfigProvider::new(&file).load().await.unwrap_err();
    assert!(
        e.to_string().contains("ire.yaml") && e.to_string().contains("line"),
        "{e}"
    );
    let e = LayeredConfig::new()
        .add_provider(
            Arc::new(FileConfigProvider::new(dir.path().join("nope.yaml"))),
            1,
        )
        .await
        .unwrap_err();
    assert!(
        e.chain_message().contains("nope.yaml"),
        "{}",
        e.chain_message()
    );
    let e = ArgsConfigProvider::parse(["ok=1", "broken"]).unwrap_err();
    assert!(
        e.to_string().contains("#2") && e.to_string().contains("broken"),
        "{e}"
    );
    assert_eq!(
        EnvConfigProvider::new("IRE")
            .key_of("IRE_REPORTER__BATCH_SIZE")
            .as_deref(),
        Some("reporter.batch_size")
    );
    assert_eq!(EnvConfigProvider::new("IRE").key_of("IRELAND"), None);
}
