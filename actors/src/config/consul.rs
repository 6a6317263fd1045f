//! Consul KV over its HTTP API: `GET /v1/kv/<prefix>?recurse` (values base64-encoded), and
//! blocking queries (`?index=<X-Consul-Index>&wait=<s>`) to follow changes without polling.
//!
//! The key `<prefix>/engine/concurrency` is the config key `engine.concurrency`.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use ire_core::{ConfigChangeStream, ConfigMap, ConfigProvider, Error, Result};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::providers::{channel_stream, diff};
use crate::monitor::http_client::{self, HttpUrl};

/// Reads config keys under a prefix of Consul's KV store.
#[derive(Debug, Clone)]
pub struct ConsulConfigProvider {
    address: HttpUrl,
    prefix: String,
    token: Option<String>,
    wait: Duration,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KvPair {
    key: String,
    value: Option<String>,
}

impl ConsulConfigProvider {
    /// Keys under `prefix` of the Consul agent at `address` (`http://127.0.0.1:8500`).
    pub fn new(address: &str, prefix: &str) -> Result<Self> {
        let address = HttpUrl::parse(address, "consul address")?;
        let prefix = prefix.trim_matches('/').to_owned();
        Ok(ConsulConfigProvider {
            name: format!(
                "consul:{}/{prefix}",
                address.as_string().trim_end_matches('/')
            ),
            address,
            prefix,
            token: None,
            wait: Duration::from_secs(30),
        })
    }

    /// Sends an ACL token (`X-Consul-Token`).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How long one blocking query waits for a change (Consul caps it at 10 minutes).
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait.max(Duration::from_secs(1));
        self
    }

    /// One read; with `index`, a blocking query. Returns the keys and the new index.
    async fn fetch(&self, index: Option<u64>) -> Result<(ConfigMap, u64)> {
        let mut path = format!("/v1/kv/{}?recurse", self.prefix);
        if let Some(i) = index {
            path.push_str(&format!("&index={i}&wait={}s", self.wait.as_secs()));
        }
        let url = self.address.with_path(&path);
        let headers: Vec<(&str, &str)> = self
            .token
            .as_deref()
            .map(|t| vec![("X-Consul-Token", t)])
            .unwrap_or_default();
        // A blocking query may take `wait` plus Consul's jitter (wait/16).
        let timeout = self.wait + self.wait / 16 + Duration::from_secs(5);
        let resp = http_client::get(&url, &headers, timeout).await?;
        let new_index = resp
            .header("X-Consul-Index")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let map = match resp.status {
            200 => self.decode(&resp.body)?,
            404 => ConfigMap::new(), // nothing under the prefix (yet)
            403 => {
                return Err(Error::Unauthorized {
                    principal: "consul token".into(),
                    action: format!("read {}", self.name),
                })
            }
            s => {
                return Err(Error::Unavailable {
                    message: format!(
                        "{} answered {s}: {}",
                        self.name,
                        String::from_utf8_lossy(&resp.body)
                    ),
                    source: None,
                })
            }
        };
        Ok((map, new_index))
    }

    fn decode(&self, body: &[u8]) -> Result<ConfigMap> {
        let pairs: Vec<KvPair> = serde_json::from_slice(body)
            .map_err(|e| Error::invalid(format!("{} response", self.name), e.to_string()))?;
        let mut out = ConfigMap::new();
        for p in pairs {
            let Some(encoded) = p.value else { continue }; // a folder
            let rest = p
                .key
                .strip_prefix(&self.prefix)
                .unwrap_or(&p.key)
                .trim_matches('/');
            if rest.is_empty() {
                continue;
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|e| Error::invalid(format!("consul key {}", p.key), e.to_string()))?;
            let text = String::from_utf8(bytes).map_err(|_| {
                Error::invalid(format!("consul key {}", p.key), "value is not UTF-8")
            })?;
            out.insert(rest.replace('/', "."), Value::String(text));
        }
        Ok(out)
    }
}

#[async_trait]
impl ConfigProvider for ConsulConfigProvider {
    async fn load(&self) -> Result<ConfigMap> {
        Ok(self.fetch(None).await?.0)
    }

    async fn watch(&self) -> Result<ConfigChangeStream> {
        let (mut last, mut index) = self.fetch(None).await?;
        let (tx, rx) = mpsc::channel(64);
        let this = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                if tx.is_closed() {
                    return;
                }
                match this.fetch(Some(index)).await {
                    Ok((now, new_index)) => {
                        backoff = Duration::from_millis(200);
                        // Consul's rule: an index that goes backwards means reset.
                        index = if new_index < index { 0 } else { new_index };
                        for change in diff(&last, &now) {
                            if tx.send(change).await.is_err() {
                                return;
                            }
                        }
                        last = now;
                    }
                    Err(e) => {
                        tracing::warn!(component = "config", provider = %this.name, error = %e.chain_message(), "consul watch failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
        Ok(channel_stream(rx))
    }

    fn name(&self) -> &str {
        &self.name
    }
}
