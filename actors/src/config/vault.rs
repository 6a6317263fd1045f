//! Vault KV version 2 over its HTTP API: `GET /v1/<mount>/data/<path>` with an
//! `X-Vault-Token`; the secret's `data` is flattened into config keys. Changes are followed
//! by polling the secret's `metadata.version`.

use std::time::Duration;

use async_trait::async_trait;
use ire_core::{ConfigChangeStream, ConfigMap, ConfigProvider, Error, Result};
use serde_json::Value;
use tokio::sync::mpsc;

use super::providers::{channel_stream, diff, flatten};
use crate::monitor::http_client::{self, HttpUrl};

/// Reads config keys from one Vault KV v2 secret.
#[derive(Clone)]
pub struct VaultConfigProvider {
    address: HttpUrl,
    token: String,
    mount: String,
    path: String,
    poll_interval: Duration,
    name: String,
}

impl std::fmt::Debug for VaultConfigProvider {
    // The token is a secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultConfigProvider")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl VaultConfigProvider {
    /// The secret at `path` of the KV v2 engine mounted at `mount` (usually `secret`).
    pub fn new(address: &str, token: impl Into<String>, mount: &str, path: &str) -> Result<Self> {
        let address = HttpUrl::parse(address, "vault address")?;
        let mount = mount.trim_matches('/').to_owned();
        let path = path.trim_matches('/').to_owned();
        if mount.is_empty() || path.is_empty() {
            return Err(Error::invalid(
                "vault secret",
                "mount and path must not be empty",
            ));
        }
        Ok(VaultConfigProvider {
            name: format!("vault:{mount}/{path}"),
            address,
            token: token.into(),
            mount,
            path,
            poll_interval: Duration::from_secs(30),
        })
    }

    /// How often the secret's version is checked.
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every.max(Duration::from_millis(10));
        self
    }

    async fn fetch(&self) -> Result<(ConfigMap, u64)> {
        let url = self
            .address
            .with_path(&format!("/v1/{}/data/{}", self.mount, self.path));
        let resp = http_client::get(
            &url,
            &[("X-Vault-Token", self.token.as_str())],
            Duration::from_secs(10),
        )
        .await?;
        match resp.status {
            200 => {}
            404 => {
                return Err(Error::not_found(
                    "vault secret",
                    format!("{}/{}", self.mount, self.path),
                ))
            }
            401 | 403 => {
                return Err(Error::Unauthorized {
                    principal: "vault token".into(),
                    action: format!("read {}", self.name),
                })
            }
            s => {
                return Err(Error::Unavailable {
                    message: format!("{} answered {s}", self.name),
                    source: None,
                })
            }
        }
        let body: Value = serde_json::from_slice(&resp.body)
            .map_err(|e| Error::invalid(format!("{} response", self.name), e.to_string()))?;
        let data = body
            .pointer("/data/data")
            .filter(|d| d.is_object())
            .ok_or_else(|| {
                Error::invalid(
                    format!("{} response", self.name),
                    "no data.data object (is this a KV version 2 mount?)",
                )
            })?;
        let version = body
            .pointer("/data/metadata/version")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let mut out = ConfigMap::new();
        flatten(data, "", &mut out);
        Ok((out, version))
    }
}

#[async_trait]
impl ConfigProvider for VaultConfigProvider {
    async fn load(&self) -> Result<ConfigMap> {
        Ok(self.fetch().await?.0)
    }

    async fn watch(&self) -> Result<ConfigChangeStream> {
        let (mut last, mut version) = self.fetch().await?;
        let (tx, rx) = mpsc::channel(64);
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(this.poll_interval).await;
                if tx.is_closed() {
                    return;
                }
                match this.fetch().await {
                    Ok((now, v)) if v != version => {
                        version = v;
                        for change in diff(&last, &now) {
                            if tx.send(change).await.is_err() {
                                return;
                            }
                        }
                        last = now;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(component = "config", provider = %this.name, error = %e, "vault poll failed")
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
