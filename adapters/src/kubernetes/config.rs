//! The kubernetes adapter's settings (the `config` map of its [`AdapterConfig`]).

use std::path::PathBuf;

use ire_core::{AdapterConfig, Error, Result};
use serde::Deserialize;

/// Largest page the adapter asks the API server for.
pub const MAX_PAGE_SIZE: u32 = 5_000;

fn default_page_size() -> u32 {
    500
}

/// Settings of one kubernetes adapter instance.
///
/// ```yaml
/// kubeconfig: /etc/ire/kubeconfig   # default: KUBECONFIG, ~/.kube/config, or in-cluster
/// context: prod-eu                  # default: the kubeconfig's current context
/// namespace: shop                   # default: the context's namespace, else "default"
/// all-namespaces: false             # act on every namespace instead of one
/// page-size: 500                    # items per list request
/// net-fault-image: ire/net-fault:latest   # the network-fault helper (ephemeral containers)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KubernetesConfig {
    /// Path of a kubeconfig file.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[serde(default)]
    pub context: Option<String>,
    /// Use the pod's service account (in-cluster config) and nothing else.
    #[serde(default)]
    pub in_cluster: bool,
    /// The namespace resources are listed and keyed in.
    #[serde(default)]
    pub namespace: Option<String>,
    /// List and act on every namespace.
    #[serde(default)]
    pub all_namespaces: bool,
    /// Items per list request (`limit`); pages are followed with `continue` tokens.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// The network-fault helper image, run as ephemeral containers of faulted pods
    /// (default `ire/net-fault:latest`; the nodes must have it or be able to pull it).
    #[serde(default)]
    pub net_fault_image: Option<String>,
}

impl KubernetesConfig {
    /// Reads the settings from an adapter config, naming the adapter in errors.
    pub fn from_adapter_config(config: &AdapterConfig) -> Result<Self> {
        let field = format!("adapters.{}.config", config.name);
        let parsed: KubernetesConfig =
            serde_json::from_value(serde_json::Value::Object(config.config.clone()))
                .map_err(|e| Error::invalid(field.clone(), e.to_string()))?;
        parsed.validate().map_err(|e| e.context(field))?;
        Ok(parsed)
    }

    /// Checks the settings without any I/O.
    pub fn validate(&self) -> Result<()> {
        if self.page_size == 0 || self.page_size > MAX_PAGE_SIZE {
            return Err(Error::invalid(
                "page-size",
                format!("{} is outside 1..={MAX_PAGE_SIZE}", self.page_size),
            ));
        }
        if self.in_cluster && (self.kubeconfig.is_some() || self.context.is_some()) {
            return Err(Error::invalid(
                "in-cluster",
                "cannot be combined with kubeconfig or context",
            ));
        }
        if self.all_namespaces && self.namespace.is_some() {
            return Err(Error::invalid(
                "all-namespaces",
                "cannot be combined with namespace",
            ));
        }
        if let Some(ns) = &self.namespace {
            if !is_dns_label(ns) {
                return Err(Error::invalid(
                    "namespace",
                    format!("{ns:?} is not a valid namespace name (RFC 1123 label)"),
                ));
            }
        }
        Ok(())
    }
}

/// True for an RFC 1123 label: lower-case alphanumerics and `-`, at most 63 characters.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: serde_json::Value) -> Result<KubernetesConfig> {
        KubernetesConfig::from_adapter_config(&AdapterConfig {
            name: "k8s".into(),
            config: json.as_object().cloned().unwrap_or_default(),
        })
    }

    #[test]
    fn unknown_key_is_rejected_with_adapter_name() {
        let e = cfg(serde_json::json!({"namepsace": "x"})).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("adapters.k8s.config") && msg.contains("namepsace"),
            "{msg}"
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let e = cfg(serde_json::json!({"page-size": 0})).unwrap_err();
        assert!(
            e.chain_message().contains("page-size"),
            "{}",
            e.chain_message()
        );
        let e = cfg(serde_json::json!({"namespace": "Shop_1"})).unwrap_err();
        assert!(e.chain_message().contains("namespace"));
        let e = cfg(serde_json::json!({"in-cluster": true, "kubeconfig": "/x"})).unwrap_err();
        assert!(e.chain_message().contains("in-cluster"));
        assert_eq!(cfg(serde_json::json!({})).unwrap().page_size, 500);
    }
}
