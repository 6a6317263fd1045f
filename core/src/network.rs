//! Network faults: what a fault does to a resource's traffic, and the capability adapters
//! offer to apply and revert it.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A network fault to apply to a resource's traffic.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkFault {
    /// Added latency.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub latency: Option<Duration>,
    /// Random variation of the latency.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub jitter: Option<Duration>,
    /// Percent of packets dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_percent: Option<f64>,
    /// Bandwidth limit, bits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_bps: Option<u64>,
    /// Cut all traffic.
    #[serde(default)]
    pub partition: bool,
    /// The interface to act on (adapter default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

/// What an adapter needs to take a network fault back, recorded in the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkFaultHandle {
    /// The resource's id when the fault was applied.
    pub resource_id: String,
    /// The fault that was applied.
    pub fault: NetworkFault,
    /// Adapter-specific data needed to revert it.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// Applying and reverting network faults.
#[async_trait]
pub trait NetworkFaults: Send + Sync {
    /// Applies the fault; the handle is what [`NetworkFaults::revert`] needs.
    async fn apply(&self, id: &str, fault: &NetworkFault) -> Result<NetworkFaultHandle>;
    /// Reverts a fault; reverting one that is already gone is `Ok`.
    async fn revert(&self, handle: &NetworkFaultHandle) -> Result<()>;
}
