//! Layered configuration (the seed's Config): providers with priorities, typed getters
//! (from core's [`Config`] trait), watches on keys, and hot reload.
//!
//! Keys are dotted paths (`engine.concurrency`). Each provider flattens its source into
//! such keys; for a key, the value of the provider with the highest priority wins (the later
//! added wins a tie), and [`Config::set`] overrides them all. Asking for a key that is a
//! prefix of others (`engine`) returns the merged object of everything below it.
//!
//! Providers: [`FileConfigProvider`] (YAML or JSON, reloaded when the file changes),
//! [`EnvConfigProvider`] (`IRE_ENGINE__CONCURRENCY=8` -> `engine.concurrency`),
//! [`ArgsConfigProvider`] (`--set engine.concurrency=8`), [`ConsulConfigProvider`] (Consul
//! KV, with blocking queries) and [`VaultConfigProvider`] (Vault KV v2). The [`priority`]
//! module has the customary priorities.

mod consul;
mod providers;
mod vault;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use futures::StreamExt;
use ire_core::{Config, ConfigChange, ConfigMap, ConfigProvider, Error, Result};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use consul::ConsulConfigProvider;
pub use providers::{
    flatten, ArgsConfigProvider, EnvConfigProvider, FileConfigProvider, MapConfigProvider,
};
pub use vault::VaultConfigProvider;

/// Customary priorities: later sources override earlier ones.
pub mod priority {
    /// Built-in defaults.
    pub const DEFAULTS: i32 = 0;
    /// The configuration file.
    pub const FILE: i32 = 10;
    /// Consul KV.
    pub const CONSUL: i32 = 20;
    /// Vault KV.
    pub const VAULT: i32 = 30;
    /// `IRE_*` environment variables.
    pub const ENV: i32 = 40;
    /// Command-line overrides.
    pub const ARGS: i32 = 50;
}

/// Values buffered per watcher; when a watcher does not read, older changes are not
/// queued forever: the newest value is what matters, and it is sent once there is room.
const WATCH_BUFFER: usize = 16;

struct Layer {
    name: String,
    priority: i32,
    seq: u64,
    values: ConfigMap,
}

struct Watcher {
    key: String,
    last: Option<Value>,
    tx: mpsc::Sender<Value>,
}

struct Inner {
    /// Highest priority first; among equal priorities, the latest added first.
    layers: RwLock<Vec<Layer>>,
    overrides: RwLock<ConfigMap>,
    watchers: Mutex<Vec<Watcher>>,
    seq: AtomicU64,
    cancel: CancellationToken,
}

impl Inner {
    fn lookup(&self, key: &str) -> Option<Value> {
        if let Some(v) = self
            .overrides
            .read()
            .expect("config lock poisoned")
            .get(key)
        {
            return Some(v.clone());
        }
        let layers = self.layers.read().expect("config lock poisoned");
        if let Some(v) = layers.iter().find_map(|l| l.values.get(key)) {
            return Some(v.clone());
        }
        // A prefix: merge everything below it, lowest priority first so higher ones win.
        let prefix = format!("{key}.");
        let mut merged = ConfigMap::new();
        for l in layers.iter().rev() {
            for (k, v) in l.values.range(prefix.clone()..) {
                let Some(rest) = k.strip_prefix(&prefix) else {
                    break;
                };
                merged.insert(rest.to_owned(), v.clone());
            }
        }
        for (k, v) in self
            .overrides
            .read()
            .expect("config lock poisoned")
            .range(prefix.clone()..)
        {
            let Some(rest) = k.strip_prefix(&prefix) else {
                break;
            };
            merged.insert(rest.to_owned(), v.clone());
        }
        (!merged.is_empty()).then(|| unflatten(&merged))
    }

    /// Sends every watcher whose key's value changed its new value.
    fn notify(&self) {
        let mut watchers = self.watchers.lock().expect("config lock poisoned");
        watchers.retain(|w| !w.tx.is_closed());
        for w in watchers.iter_mut() {
            let now = self.lookup(&w.key);
            if now != w.last {
                if let Some(v) = &now {
                    if w.tx.try_send(v.clone()).is_err() {
                        // Full: keep the old `last` so the change is sent on the next one.
                        continue;
                    }
                }
                w.last = now;
            }
        }
    }

    fn apply(&self, seq: u64, change: ConfigChange) {
        {
            let mut layers = self.layers.write().expect("config lock poisoned");
            let Some(layer) = layers.iter_mut().find(|l| l.seq == seq) else {
                return;
            };
            tracing::debug!(component = "config", provider = %layer.name, key = %change.key, "config changed");
            match change.new_value {
                Some(v) => layer.values.insert(change.key, v),
                None => layer.values.remove(&change.key),
            };
        }
        self.notify();
    }
}

/// Rebuilds a nested object from dotted keys.
fn unflatten(flat: &ConfigMap) -> Value {
    let mut root = serde_json::Map::new();
    for (k, v) in flat {
        let mut cur = &mut root;
        let parts: Vec<&str> = k.split('.').collect();
        for (i, p) in parts.iter().enumerate() {
            if i + 1 == parts.len() {
                cur.insert((*p).to_owned(), v.clone());
            } else {
                let e = cur
                    .entry((*p).to_owned())
                    .or_insert_with(|| Value::Object(Default::default()));
                if !e.is_object() {
                    *e = Value::Object(Default::default());
                }
                cur = e.as_object_mut().expect("just made an object");
            }
        }
    }
    Value::Object(root)
}

/// Configuration layered from providers (see the module docs). Cheap to clone.
///
/// Providers' changes are followed by background tasks, which end when the last clone is
/// dropped or [`LayeredConfig::shutdown`] is called.
#[derive(Clone)]
pub struct LayeredConfig {
    inner: Arc<Inner>,
    _guard: Arc<DropGuard>,
}

struct DropGuard(CancellationToken);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl std::fmt::Debug for LayeredConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayeredConfig")
            .field("providers", &self.providers())
            .finish()
    }
}

impl Default for LayeredConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl LayeredConfig {
    /// A configuration with no providers.
    pub fn new() -> Self {
        let cancel = CancellationToken::new();
        LayeredConfig {
            inner: Arc::new(Inner {
                layers: RwLock::new(Vec::new()),
                overrides: RwLock::new(ConfigMap::new()),
                watchers: Mutex::new(Vec::new()),
                seq: AtomicU64::new(0),
                cancel: cancel.clone(),
            }),
            _guard: Arc::new(DropGuard(cancel)),
        }
    }

    /// The providers, highest priority first, as (name, priority).
    pub fn providers(&self) -> Vec<(String, i32)> {
        self.inner
            .layers
            .read()
            .expect("config lock poisoned")
            .iter()
            .map(|l| (l.name.clone(), l.priority))
            .collect()
    }

    /// The provider a key's value comes from (`set` for overrides), or None when unset.
    pub fn source_of(&self, key: &str) -> Option<String> {
        if self
            .inner
            .overrides
            .read()
            .expect("config lock poisoned")
            .contains_key(key)
        {
            return Some("set".into());
        }
        self.inner
            .layers
            .read()
            .expect("config lock poisoned")
            .iter()
            .find(|l| l.values.contains_key(key))
            .map(|l| l.name.clone())
    }

    /// Stops following the providers' changes.
    pub fn shutdown(&self) {
        self.inner.cancel.cancel();
    }

    /// Deserializes the subtree under `key` (or everything, for `""`) into a typed config.
    pub fn get_as<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T> {
        let v = if key.is_empty() {
            let layers = self.inner.layers.read().expect("config lock poisoned");
            let mut all = ConfigMap::new();
            for l in layers.iter().rev() {
                all.extend(l.values.clone());
            }
            all.extend(
                self.inner
                    .overrides
                    .read()
                    .expect("config lock poisoned")
                    .clone(),
            );
            unflatten(&all)
        } else {
            self.get(key)?
        };
        serde_json::from_value(v)
            .map_err(|e| Error::invalid(format!("config key {key:?}"), e.to_string()))
    }
}

#[async_trait]
impl Config for LayeredConfig {
    fn get(&self, key: &str) -> Result<Value> {
        self.inner.lookup(key).ok_or_else(|| {
            Error::not_found("config key", key).context(format!(
                "not set by any provider ({})",
                self.providers()
                    .iter()
                    .map(|(n, p)| format!("{n}@{p}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    fn set(&self, key: &str, value: Value) -> Result<()> {
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(Error::invalid(
                "config key",
                format!("{key:?} is not a dotted key"),
            ));
        }
        self.inner
            .overrides
            .write()
            .expect("config lock poisoned")
            .insert(key.to_owned(), value);
        self.inner.notify();
        Ok(())
    }

    fn watch(&self, key: &str) -> Result<mpsc::Receiver<Value>> {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        self.inner
            .watchers
            .lock()
            .expect("config lock poisoned")
            .push(Watcher {
                key: key.to_owned(),
                last: self.inner.lookup(key),
                tx,
            });
        Ok(rx)
    }

    async fn add_provider(&self, provider: Arc<dyn ConfigProvider>, priority: i32) -> Result<()> {
        let name = provider.name().to_owned();
        let values = provider
            .load()
            .await
            .map_err(|e| e.context(format!("loading config provider {name}")))?;
        let changes = provider
            .watch()
            .await
            .map_err(|e| e.context(format!("watching config provider {name}")))?;
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        {
            let mut layers = self.inner.layers.write().expect("config lock poisoned");
            layers.push(Layer {
                name: name.clone(),
                priority,
                seq,
                values,
            });
            layers.sort_by(|a, b| b.priority.cmp(&a.priority).then(b.seq.cmp(&a.seq)));
        }
        self.inner.notify();
        // Follow the provider's changes; holding only a weak reference, so that dropping
        // the config ends the task.
        let weak = Arc::downgrade(&self.inner);
        let cancel = self.inner.cancel.clone();
        tokio::spawn(async move {
            let mut changes = changes;
            loop {
                let change = tokio::select! {
                    _ = cancel.cancelled() => return,
                    c = changes.next() => c,
                };
                let (Some(change), Some(inner)) = (change, weak.upgrade()) else {
                    return;
                };
                inner.apply(seq, change);
            }
        });
        Ok(())
    }
}
