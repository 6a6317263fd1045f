//! Secret storage and redaction.
//!
//! [`ire_core::Secret`] never formats its value, but a plugin must expose the value to use it
//! (a password sent to a database), and an error message built from that call may carry it.
//! The engine therefore hands each execution a [`RecordingSecretProvider`] that remembers
//! every secret value it gave out, and scrubs those values with a [`SecretRedactor`] from the
//! execution's error, result, record, events, audit entries and log lines.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use ire_core::{
    Error, Event, EventBus, EventFilter, ExecutionResult, Result, Secret, SecretProvider,
    Subscription,
};

/// The text that replaces a secret value.
pub const REDACTED: &str = "[REDACTED]";

/// Secrets held in memory (tests, the embedded demo, secrets loaded from the node's config).
#[derive(Default)]
pub struct MemorySecretProvider {
    secrets: RwLock<BTreeMap<String, Secret>>,
}

impl std::fmt::Debug for MemorySecretProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self
            .secrets
            .read()
            .expect("secrets lock")
            .keys()
            .cloned()
            .collect();
        f.debug_struct("MemorySecretProvider")
            .field("keys", &keys)
            .finish()
    }
}

impl MemorySecretProvider {
    /// An empty provider.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SecretProvider for MemorySecretProvider {
    async fn get_secret(&self, key: &str) -> Result<Secret> {
        self.secrets
            .read()
            .expect("secrets lock")
            .get(key)
            .cloned()
            .ok_or_else(|| Error::not_found("secret", key))
    }

    async fn set_secret(&self, key: &str, value: Secret) -> Result<()> {
        if key.is_empty() {
            return Err(Error::invalid("secret key", "must not be empty"));
        }
        self.secrets
            .write()
            .expect("secrets lock")
            .insert(key.to_owned(), value);
        Ok(())
    }

    async fn delete_secret(&self, key: &str) -> Result<()> {
        self.secrets
            .write()
            .expect("secrets lock")
            .remove(key)
            .map(|_| ())
            .ok_or_else(|| Error::not_found("secret", key))
    }
}

/// Replaces known secret values with `[REDACTED]` in text and JSON.
#[derive(Clone, Default)]
pub struct SecretRedactor {
    values: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for SecretRedactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRedactor")
            .field("known", &self.values.lock().expect("redactor lock").len())
            .finish()
    }
}

impl SecretRedactor {
    /// A redactor that knows no secret yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Learns a value to scrub. Very short values are scrubbed too: a leaked short secret is
    /// still a leak, and a false positive only costs readability.
    pub fn learn(&self, value: &str) {
        if value.is_empty() {
            return;
        }
        let mut v = self.values.lock().expect("redactor lock");
        if !v.iter().any(|x| x == value) {
            v.push(value.to_owned());
            // Longest first, so a secret that contains another is scrubbed whole.
            v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// True when no value is known (nothing to scrub).
    pub fn is_empty(&self) -> bool {
        self.values.lock().expect("redactor lock").is_empty()
    }

    /// The text with every known value replaced.
    pub fn redact(&self, text: &str) -> String {
        let v = self.values.lock().expect("redactor lock");
        let mut out = text.to_owned();
        for s in v.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        out
    }

    /// Scrubs every string (keys included) in a JSON value.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        if self.is_empty() {
            return;
        }
        match value {
            serde_json::Value::String(s) => *s = self.redact(s),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|i| self.redact_json(i)),
            serde_json::Value::Object(map) => {
                let entries = std::mem::take(map);
                for (k, mut v) in entries {
                    self.redact_json(&mut v);
                    map.insert(self.redact(&k), v);
                }
            }
            _ => {}
        }
    }

    /// Scrubs an execution result's error and metadata.
    pub fn redact_result(&self, result: &mut ExecutionResult) {
        if self.is_empty() {
            return;
        }
        if let Some(e) = &mut result.error {
            *e = self.redact(e);
        }
        let mut meta =
            serde_json::Value::Object(std::mem::take(&mut result.metadata).into_iter().collect());
        self.redact_json(&mut meta);
        if let serde_json::Value::Object(m) = meta {
            result.metadata = m.into_iter().collect();
        }
    }
}

/// The event bus a plugin is given: it scrubs known secret values from each event before
/// passing it on.
pub struct RedactingEventBus {
    inner: Arc<dyn EventBus>,
    redactor: SecretRedactor,
}

impl RedactingEventBus {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn EventBus>, redactor: SecretRedactor) -> Self {
        RedactingEventBus { inner, redactor }
    }

    fn scrub(&self, mut event: Event) -> Event {
        if self.redactor.is_empty() {
            return event;
        }
        let mut v = serde_json::to_value(&event).unwrap_or_default();
        self.redactor.redact_json(&mut v);
        if let Ok(e) = serde_json::from_value::<Event>(v) {
            event = e;
        }
        event
    }
}

#[async_trait]
impl EventBus for RedactingEventBus {
    async fn publish(&self, event: Event) -> Result<()> {
        self.inner.publish(self.scrub(event)).await
    }

    async fn publish_async(&self, event: Event) -> Result<()> {
        self.inner.publish_async(self.scrub(event)).await
    }

    async fn subscribe(&self, filter: EventFilter) -> Result<Subscription> {
        self.inner.subscribe(filter).await
    }

    async fn close(&self) -> Result<()> {
        // The bus belongs to the node: a plugin cannot close it.
        Err(Error::unsupported(
            "closing the node's event bus",
            "a plugin",
        ))
    }
}

/// A [`SecretProvider`] that teaches a [`SecretRedactor`] every value it hands out.
pub struct RecordingSecretProvider {
    inner: Arc<dyn SecretProvider>,
    redactor: SecretRedactor,
}

impl RecordingSecretProvider {
    /// Wraps `inner`; values read through it are learnt by `redactor`.
    pub fn new(inner: Arc<dyn SecretProvider>, redactor: SecretRedactor) -> Self {
        RecordingSecretProvider { inner, redactor }
    }
}

#[async_trait]
impl SecretProvider for RecordingSecretProvider {
    async fn get_secret(&self, key: &str) -> Result<Secret> {
        let s = self.inner.get_secret(key).await?;
        self.redactor.learn(s.expose());
        Ok(s)
    }

    async fn set_secret(&self, key: &str, value: Secret) -> Result<()> {
        self.redactor.learn(value.expose());
        self.inner.set_secret(key, value).await
    }

    async fn delete_secret(&self, key: &str) -> Result<()> {
        self.inner.delete_secret(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recorded_secrets_are_scrubbed_from_text_and_json() {
        let store = Arc::new(MemorySecretProvider::new());
        store
            .set_secret("db", Secret::new("hunter2"))
            .await
            .unwrap();
        let r = SecretRedactor::new();
        let p = RecordingSecretProvider::new(store, r.clone());
        assert_eq!(r.redact("pw hunter2"), "pw hunter2");
        let s = p.get_secret("db").await.unwrap();
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(r.redact("pw hunter2!"), "pw [REDACTED]!");
        let mut j = serde_json::json!({"a": ["x hunter2"], "hunter2": 1});
        r.redact_json(&mut j);
        assert!(!j.to_string().contains("hunter2"), "{j}");
    }
}
