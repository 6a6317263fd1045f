//! Builders for model objects in tests.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::plugin::{ExecutionStatus, FaultKind, PluginDependency, PluginMetadata};
use crate::report::ExecutionRecord;
use crate::resource::{
    phase, HealthCheckConfig, Resource, ResourceKey, ResourceSpec, ResourceStatus,
};
use crate::security::{Action, ActionResult, AuditEntry};

/// Builds a [`Resource`]; defaults to a running `container` under the `fake` adapter.
#[derive(Debug, Clone)]
pub struct ResourceBuilder {
    resource: Resource,
}

impl ResourceBuilder {
    /// A resource named `name`, keyed `fake/<name>`.
    pub fn new(name: &str) -> Self {
        ResourceBuilder {
            resource: Resource {
                key: ResourceKey::new("fake", [name]).expect("valid test key"),
                id: format!("id-{name}"),
                name: name.to_owned(),
                kind: "container".into(),
                labels: Default::default(),
                annotations: Default::default(),
                status: ResourceStatus {
                    phase: phase::RUNNING.into(),
                    ..Default::default()
                },
                spec: ResourceSpec::default(),
                metadata: Default::default(),
            },
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: &str) -> Self {
        self.resource.key = key.parse().expect("valid test key");
        self
    }

    /// Sets the runtime id.
    pub fn id(mut self, id: &str) -> Self {
        self.resource.id = id.to_owned();
        self
    }

    /// Sets the kind.
    pub fn kind(mut self, kind: &str) -> Self {
        self.resource.kind = kind.to_owned();
        self
    }

    /// Sets the phase.
    pub fn phase(mut self, phase: &str) -> Self {
        self.resource.status.phase = phase.to_owned();
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.resource
            .labels
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds an annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.resource
            .annotations
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds a metadata entry.
    pub fn metadata(mut self, key: &str, value: serde_json::Value) -> Self {
        self.resource.metadata.insert(key.to_owned(), value);
        self
    }

    /// Sets the image.
    pub fn image(mut self, image: &str) -> Self {
        self.resource.spec.image = image.to_owned();
        self
    }

    /// Sets the health check.
    pub fn health_check(mut self, hc: HealthCheckConfig) -> Self {
        self.resource.spec.health_check = Some(hc);
        self
    }

    /// The resource.
    pub fn build(self) -> Resource {
        self.resource
    }
}

/// Builds [`PluginMetadata`].
#[derive(Debug, Clone)]
pub struct PluginMetadataBuilder {
    meta: PluginMetadata,
}

impl PluginMetadataBuilder {
    /// Metadata for `name` at version 1.0.0, an action.
    pub fn new(name: &str) -> Self {
        PluginMetadataBuilder {
            meta: PluginMetadata::new(
                name,
                semver::Version::new(1, 0, 0),
                format!("test plugin {name}"),
                FaultKind::Action,
            ),
        }
    }

    /// Makes it a sustained fault (active until reverted).
    pub fn sustained(mut self) -> Self {
        self.meta.fault_kind = FaultKind::Sustained;
        self
    }

    /// Sets the config schema.
    pub fn config_schema(mut self, schema: serde_json::Value) -> Self {
        self.meta.config_schema = schema;
        self
    }

    /// Sets the version.
    pub fn version(mut self, v: &str) -> Self {
        self.meta.version = v.parse().expect("valid test version");
        self
    }

    /// Adds a dependency.
    pub fn depends_on(mut self, name: &str, req: &str) -> Self {
        self.meta.dependencies.push(PluginDependency {
            plugin_name: name.to_owned(),
            version: req.parse().expect("valid test version requirement"),
        });
        self
    }

    /// Adds a supported kind.
    pub fn kind(mut self, kind: &str) -> Self {
        self.meta.supported_kinds.push(kind.to_owned());
        self
    }

    /// Adds a required capability.
    pub fn requires(mut self, capability: &str) -> Self {
        self.meta.required_capabilities.push(capability.to_owned());
        self
    }

    /// The metadata.
    pub fn build(self) -> PluginMetadata {
        self.meta
    }
}

/// The `i`-th of a deterministic series of execution records over 50 resources and three
/// plugins (one in ten failed, one in ten timed out), for benchmarks and volume tests.
pub fn sample_execution_record(i: usize) -> ExecutionRecord {
    let start = Utc::now();
    let status = match i % 10 {
        0 => ExecutionStatus::Failed,
        1 => ExecutionStatus::Timeout,
        _ => ExecutionStatus::Success,
    };
    ExecutionRecord {
        id: format!("exec-{i:08}"),
        plugin_name: ["kill", "network-delay", "cpu-stress"][i % 3].into(),
        resource_id: format!("id-{}", i % 50),
        resource_name: format!("web-{}", i % 50),
        resource_key: Some(
            format!("compose/shop/web/{}", i % 50)
                .parse()
                .expect("valid key"),
        ),
        start_time: start,
        end_time: start,
        duration: Duration::from_millis((i % 5000) as u64),
        status,
        error: if status == ExecutionStatus::Failed {
            "container did not stop".into()
        } else {
            String::new()
        },
        metadata: Default::default(),
        principal: "bench".into(),
        campaign: Some("bench".into()),
        step: Some("kill-web".into()),
        node: Some("node-1".into()),
        fencing_token: None,
        time_to_detect: Some(Duration::from_millis(300)),
        time_to_recover: Some(Duration::from_millis(1000 + (i % 3000) as u64)),
    }
}

/// A successful audited action: `principal` placed a hold on the `compose/api` resource at
/// `timestamp`.
pub fn sample_audit_entry(principal: &str, timestamp: DateTime<Utc>) -> AuditEntry {
    AuditEntry {
        timestamp,
        principal: principal.into(),
        action: Action::new("hold", "compose/api"),
        resource: None,
        result: ActionResult {
            success: true,
            error: String::new(),
            duration: Duration::from_millis(1),
        },
        metadata: Default::default(),
    }
}
