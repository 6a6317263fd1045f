//! The monitor contract: health checks, condition waits, metrics, event watches.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::event::Event;
use crate::resource::{Condition, Metrics, Resource};

/// Overall health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatusType {
    /// Healthy.
    Healthy,
    /// Unhealthy.
    Unhealthy,
    /// Could not be determined.
    Unknown,
}

/// One named check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Check name.
    pub name: String,
    /// Its outcome.
    pub status: HealthStatusType,
    /// Details.
    #[serde(default)]
    pub message: String,
}

/// The outcome of checking a resource's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// Overall status.
    pub status: HealthStatusType,
    /// Details.
    #[serde(default)]
    pub message: String,
    /// Individual checks.
    #[serde(default)]
    pub checks: Vec<HealthCheck>,
}

impl HealthStatus {
    /// A healthy status with a message.
    pub fn healthy(message: impl Into<String>) -> Self {
        HealthStatus {
            status: HealthStatusType::Healthy,
            message: message.into(),
            checks: Vec::new(),
        }
    }

    /// An unhealthy status with a message.
    pub fn unhealthy(message: impl Into<String>) -> Self {
        HealthStatus {
            status: HealthStatusType::Unhealthy,
            message: message.into(),
            checks: Vec::new(),
        }
    }

    /// True when healthy.
    pub fn is_healthy(&self) -> bool {
        self.status == HealthStatusType::Healthy
    }
}

/// One way of checking health (http, tcp, exec, or custom).
#[async_trait]
pub trait HealthCheckStrategy: Send + Sync + 'static {
    /// Checks the resource.
    async fn check(&self, resource: &Resource) -> Result<HealthStatus>;
    /// The name a [`crate::HealthCheckConfig::type_`] refers to.
    fn name(&self) -> &str;
}

/// A stream of events about one resource.
pub type EventStream = BoxStream<'static, Event>;

/// Health checking and metrics collection with pluggable strategies (the seed's Monitor).
#[async_trait]
pub trait Monitor: Send + Sync + 'static {
    /// Checks health with the strategy the resource's health check config names.
    async fn check_health(&self, resource: &Resource) -> Result<HealthStatus>;
    /// Polls the resource until it reports the condition, or the timeout passes.
    async fn wait_for_condition(
        &self,
        resource: &Resource,
        condition: &Condition,
        timeout: Duration,
    ) -> Result<()>;
    /// Polls health until healthy, or the timeout passes.
    async fn wait_for_healthy(&self, resource: &Resource, timeout: Duration) -> Result<()>;
    /// Reads metrics through the resource's adapter.
    async fn collect_metrics(&self, resource: &Resource) -> Result<Metrics>;
    /// Streams events about the resource.
    async fn watch_events(&self, resource: &Resource) -> Result<EventStream>;
    /// Registers a strategy under a name, replacing any of the same name.
    fn register_health_check_strategy(
        &self,
        name: &str,
        strategy: Arc<dyn HealthCheckStrategy>,
    ) -> Result<()>;
    /// The strategy registered under a name.
    fn health_check_strategy(&self, name: &str) -> Result<Arc<dyn HealthCheckStrategy>>;
}
