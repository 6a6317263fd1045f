//! Layered configuration contracts (the seed's Config and ConfigProvider).
//!
//! Keys are dotted paths (`engine.concurrency`); values are JSON values so that every
//! source (a file, environment variables, a KV store) maps onto one shape.

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// A flat map from dotted keys to values, as one provider sees it.
pub type ConfigMap = std::collections::BTreeMap<String, serde_json::Value>;

/// A change one provider observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigChange {
    /// The dotted key.
    pub key: String,
    /// The value before (None: absent).
    pub old_value: Option<serde_json::Value>,
    /// The value after (None: removed).
    pub new_value: Option<serde_json::Value>,
}

/// A stream of changes from one provider.
pub type ConfigChangeStream = BoxStream<'static, ConfigChange>;

/// One source of configuration.
#[async_trait]
pub trait ConfigProvider: Send + Sync + 'static {
    /// Reads every key the source has.
    async fn load(&self) -> Result<ConfigMap>;
    /// Streams changes; sources that cannot change return an empty stream.
    async fn watch(&self) -> Result<ConfigChangeStream>;
    /// The provider's name, for errors and listings.
    fn name(&self) -> &str;
}

/// Layered configuration: the value of the highest-priority provider wins.
#[async_trait]
pub trait Config: Send + Sync + 'static {
    /// The raw value of a key.
    fn get(&self, key: &str) -> Result<serde_json::Value>;
    /// Overrides a key at the highest priority.
    fn set(&self, key: &str, value: serde_json::Value) -> Result<()>;
    /// Receives the key's new value each time it changes.
    fn watch(&self, key: &str) -> Result<mpsc::Receiver<serde_json::Value>>;
    /// Adds a provider; larger priorities win.
    async fn add_provider(
        &self,
        provider: std::sync::Arc<dyn ConfigProvider>,
        priority: i32,
    ) -> Result<()>;

    /// The key as a string (numbers and booleans are converted).
    fn get_string(&self, key: &str) -> Result<String> {
        value_as_string(key, &self.get(key)?)
    }
    /// The key as an integer (numeric strings are converted).
    fn get_int(&self, key: &str) -> Result<i64> {
        value_as_int(key, &self.get(key)?)
    }
    /// The key as a boolean (true/false/yes/no/1/0 strings are converted).
    fn get_bool(&self, key: &str) -> Result<bool> {
        value_as_bool(key, &self.get(key)?)
    }
    /// The key as a duration (`30s`, `1m 30s`, or a number of seconds).
    fn get_duration(&self, key: &str) -> Result<Duration> {
        value_as_duration(key, &self.get(key)?)
    }
}

fn type_error(key: &str, want: &str, v: &serde_json::Value) -> Error {
    Error::invalid(
        format!("config key {key:?}"),
        format!("expected {want}, found {v}"),
    )
}

/// Converts a value to a string.
pub fn value_as_string(key: &str, v: &serde_json::Value) -> Result<String> {
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        other => Err(type_error(key, "a string", other)),
    }
}

/// Converts a value to an integer.
pub fn value_as_int(key: &str, v: &serde_json::Value) -> Result<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64().ok_or_else(|| type_error(key, "an integer", v)),
        serde_json::Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| type_error(key, "an integer", v)),
        other => Err(type_error(key, "an integer", other)),
    }
}

/// Converts a value to a boolean.
pub fn value_as_bool(key: &str, v: &serde_json::Value) -> Result<bool> {
    match v {
        serde_json::Value::Bool(b) => Ok(*b),
        serde_json::Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(type_error(key, "a boolean", v)),
        },
        serde_json::Value::Number(n) if n.as_i64() == Some(0) => Ok(false),
        serde_json::Value::Number(n) if n.as_i64() == Some(1) => Ok(true),
        other => Err(type_error(key, "a boolean", other)),
    }
}

/// Converts a value to a duration.
pub fn value_as_duration(key: &str, v: &serde_json::Value) -> Result<Duration> {
    match v {
        serde_json::Value::String(s) => humantime::parse_duration(s.trim())
            .map_err(|_| type_error(key, "a duration like 30s", v)),
        serde_json::Value::Number(n) => n
            .as_f64()
            .filter(|f| *f >= 0.0 && f.is_finite())
            .map(Duration::from_secs_f64)
            .ok_or_else(|| type_error(key, "a non-negative number of seconds", v)),
        other => Err(type_error(key, "a duration", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conversions() {
        assert_eq!(value_as_int("k", &json!("42")).unwrap(), 42);
        assert!(value_as_bool("k", &json!("yes")).unwrap());
        assert_eq!(
            value_as_duration("k", &json!("1m 30s")).unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            value_as_duration("k", &json!(2)).unwrap(),
            Duration::from_secs(2)
        );
        let e = value_as_int("engine.concurrency", &json!("many")).unwrap_err();
        assert!(e.to_string().contains("engine.concurrency"), "{e}");
        assert!(value_as_string("k", &json!([1])).is_err());
    }
}
