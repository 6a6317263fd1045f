//! Providers over local sources: a map, a file, the environment, the command line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use ire_core::{ConfigChange, ConfigChangeStream, ConfigMap, ConfigProvider, Error, Result};
use serde_json::Value;
use tokio::sync::mpsc;

/// Flattens nested objects into dotted keys under `prefix`; arrays and scalars are leaves.
pub fn flatten(value: &Value, prefix: &str, out: &mut ConfigMap) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(v, &key, out);
            }
        }
        leaf if !prefix.is_empty() => {
            out.insert(prefix.to_owned(), leaf.clone());
        }
        _ => {}
    }
}

/// The changes that turn `old` into `new`.
pub(crate) fn diff(old: &ConfigMap, new: &ConfigMap) -> Vec<ConfigChange> {
    let mut out = Vec::new();
    for (k, v) in new {
        if old.get(k) != Some(v) {
            out.push(ConfigChange {
                key: k.clone(),
                old_value: old.get(k).cloned(),
                new_value: Some(v.clone()),
            });
        }
    }
    for (k, v) in old {
        if !new.contains_key(k) {
            out.push(ConfigChange {
                key: k.clone(),
                old_value: Some(v.clone()),
                new_value: None,
            });
        }
    }
    out
}

/// A stream over a channel; the producer stops when the stream is dropped.
pub(crate) fn channel_stream(rx: mpsc::Receiver<ConfigChange>) -> ConfigChangeStream {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }).boxed()
}

/// A fixed map (built-in defaults, tests).
#[derive(Debug, Clone)]
pub struct MapConfigProvider {
    name: String,
    values: ConfigMap,
}

impl MapConfigProvider {
    /// A provider named `name` over nested JSON (flattened).
    pub fn new(name: impl Into<String>, values: &Value) -> Self {
        let mut flat = ConfigMap::new();
        flatten(values, "", &mut flat);
        MapConfigProvider {
            name: name.into(),
            values: flat,
        }
    }
}

#[async_trait]
impl ConfigProvider for MapConfigProvider {
    async fn load(&self) -> Result<ConfigMap> {
        Ok(self.values.clone())
    }
    async fn watch(&self) -> Result<ConfigChangeStream> {
        Ok(futures::stream::empty().boxed())
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// A YAML (or JSON) file, reloaded when its content changes.
///
/// The file is re-read every [`FileConfigProvider::with_reload_interval`] (1 s by default)
/// and compared with what was last loaded: polling a small file is cheaper and more reliable
/// than filesystem notifications across editors' rename-and-replace saves, container bind
/// mounts and network filesystems. A file that fails to parse while being edited keeps the
/// previous values and logs a warning.
#[derive(Debug, Clone)]
pub struct FileConfigProvider {
    path: PathBuf,
    name: String,
    reload_interval: Duration,
}

impl FileConfigProvider {
    /// A provider over the file at `path`.
    pub fn new(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_path_buf();
        FileConfigProvider {
            name: format!("file:{}", path.display()),
            path,
            reload_interval: Duration::from_secs(1),
        }
    }

    /// Sets how often the file is checked for changes.
    pub fn with_reload_interval(mut self, interval: Duration) -> Self {
        self.reload_interval = interval.max(Duration::from_millis(10));
        self
    }

    async fn read(path: &Path) -> Result<ConfigMap> {
        let text = tokio::fs::read_to_string(path).await.map_err(|e| {
            Error::invalid(
                format!("config file {}", path.display()),
                format!("cannot be read: {e}"),
            )
        })?;
        parse_yaml(&text, &path.display().to_string())
    }
}

/// Parses YAML (a superset of JSON) into flat keys; errors name the file, line and column.
pub(crate) fn parse_yaml(text: &str, origin: &str) -> Result<ConfigMap> {
    let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" at line {}, column {}", l.line(), l.column()))
            .unwrap_or_default();
        Error::invalid(format!("config file {origin}{at}"), e.to_string())
    })?;
    match &doc {
        Value::Object(_) => {
            let mut out = ConfigMap::new();
            flatten(&doc, "", &mut out);
            Ok(out)
        }
        Value::Null => Ok(ConfigMap::new()),
        other => Err(Error::invalid(
            format!("config file {origin}"),
            format!("the top level must be a mapping, found {other}"),
        )),
    }
}

#[async_trait]
impl ConfigProvider for FileConfigProvider {
    async fn load(&self) -> Result<ConfigMap> {
        Self::read(&self.path).await
    }

    async fn watch(&self) -> Result<ConfigChangeStream> {
        let (tx, rx) = mpsc::channel(64);
        let path = self.path.clone();
        let every = self.reload_interval;
        let mut last = Self::read(&path).await.unwrap_or_default();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if tx.is_closed() {
                    return;
                }
                match Self::read(&path).await {
                    Ok(now) => {
                        for change in diff(&last, &now) {
                            if tx.send(change).await.is_err() {
                                return;
                            }
                        }
                        last = now;
                    }
                    Err(e) => tracing::warn!(
                        component = "config",
                        error = %e,
                        "config file not reloaded; keeping the previous values"
                    ),
                }
            }
        });
        Ok(channel_stream(rx))
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Environment variables with a prefix: `IRE_ENGINE__CONCURRENCY=8` is `engine.concurrency`
/// (the prefix and its `_` removed, lower-cased, `__` separating levels). Values are strings;
/// the typed getters convert them.
#[derive(Debug, Clone)]
pub struct EnvConfigProvider {
    prefix: String,
    vars: Option<Vec<(String, String)>>,
}

impl EnvConfigProvider {
    /// Reads the process environment's variables that start with `prefix` (e.g. `IRE`).
    pub fn new(prefix: impl Into<String>) -> Self {
        EnvConfigProvider {
            prefix: prefix.into(),
            vars: None,
        }
    }

    /// Reads the given variables instead of the process environment (tests, embedding).
    pub fn from_vars(prefix: impl Into<String>, vars: Vec<(String, String)>) -> Self {
        EnvConfigProvider {
            prefix: prefix.into(),
            vars: Some(vars),
        }
    }

    /// The dotted key of a variable name, if it has the prefix.
    pub fn key_of(&self, var: &str) -> Option<String> {
        let rest = var.strip_prefix(&self.prefix)?.strip_prefix('_')?;
        if rest.is_empty() || rest.split("__").any(str::is_empty) {
            return None;
        }
        Some(
            rest.split("__")
                .map(str::to_ascii_lowercase)
                .collect::<Vec<_>>()
                .join("."),
        )
    }
}

#[async_trait]
impl ConfigProvider for EnvConfigProvider {
    async fn load(&self) -> Result<ConfigMap> {
        let vars: Vec<(String, String)> = match &self.vars {
            Some(v) => v.clone(),
            None => std::env::vars().collect(),
        };
        Ok(vars
            .into_iter()
            .filter_map(|(k, v)| self.key_of(&k).map(|key| (key, Value::String(v))))
            .collect())
    }
    async fn watch(&self) -> Result<ConfigChangeStream> {
        Ok(futures::stream::empty().boxed())
    }
    fn name(&self) -> &str {
        "env"
    }
}

/// Command-line overrides, each `key=value` (as given to `--set`).
#[derive(Debug, Clone)]
pub struct ArgsConfigProvider {
    values: ConfigMap,
}

impl ArgsConfigProvider {
    /// Parses `key=value` pairs; an argument without `=` or with an empty key is an error
    /// naming it.
    pub fn parse<I, S>(args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut values = ConfigMap::new();
        for (i, a) in args.into_iter().enumerate() {
            let a = a.as_ref();
            let (k, v) = a.split_once('=').ok_or_else(|| {
                Error::invalid(
                    format!("command-line override #{}", i + 1),
                    format!("{a:?} is not key=value"),
                )
            })?;
            let k = k.trim();
            if k.is_empty() || k.split('.').any(str::is_empty) {
                return Err(Error::invalid(
                    format!("command-line override #{}", i + 1),
                    format!("{a:?} has no valid dotted key"),
                ));
            }
            values.insert(k.to_owned(), Value::String(v.to_owned()));
        }
        Ok(ArgsConfigProvider { values })
    }
}

#[async_trait]
impl ConfigProvider for ArgsConfigProvider {
    async fn load(&self) -> Result<ConfigMap> {
        Ok(self.values.clone())
    }
    async fn watch(&self) -> Result<ConfigChangeStream> {
        Ok(futures::stream::empty().boxed())
    }
    fn name(&self) -> &str {
        "args"
    }
}
