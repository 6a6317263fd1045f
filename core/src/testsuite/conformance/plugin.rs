//! The Plugin suite (seed properties 11, 79, 80, 83): metadata, and one full lifecycle.

use crate::plugin::{
    ExecutionResult, ExecutionStatus, Plugin, PluginConfig, PluginContext, Snapshot,
};
use crate::resource::Resource;

/// Checks the plugin's metadata, runs its lifecycle on `resource` in `ctx` (whose adapter
/// reaches the resource), and when it supports rollback, restores the snapshot it took.
/// Returns the snapshot, so callers can assert the resource's state after the rollback.
pub async fn plugin_conformance(
    plugin: &dyn Plugin,
    ctx: &PluginContext,
    resource: &Resource,
) -> Option<Snapshot> {
    let m = plugin.metadata();
    m.validate()
        .unwrap_or_else(|e| panic!("[p11] metadata of {} invalid: {e}", m.name));
    assert!(
        m.config_schema.is_null() || m.config_schema.is_object(),
        "[p11] {}'s config schema is not a JSON schema object",
        m.name
    );
    assert!(
        m.supports_kind(&resource.kind),
        "{} does not support kind {}",
        m.name,
        resource.kind
    );
    plugin
        .validate_config(&ctx.config)
        .unwrap_or_else(|e| panic!("{} rejects the suite's config: {e}", m.name));
    if m.config_schema.is_object() {
        let bad = PluginConfig(serde_json::json!({"ire-conformance-unknown-field": 1}));
        assert!(
            plugin.validate_config(&bad).is_err(),
            "{} accepts a config with an unknown field",
            m.name
        );
    }

    let start = chrono::Utc::now();
    plugin
        .validate(ctx, resource)
        .await
        .unwrap_or_else(|e| panic!("{} validate: {}", m.name, e.chain_message()));
    let snapshot = plugin
        .pre_execute(ctx, resource)
        .await
        .unwrap_or_else(|e| panic!("[p79] {} pre_execute: {}", m.name, e.chain_message()));
    if let Some(s) = &snapshot {
        assert_eq!(
            s.resource, resource.key,
            "[p79] snapshot of another resource"
        );
        let round = Snapshot::from_bytes(&s.to_bytes().expect("[p83] serialize"))
            .expect("[p83] deserialize");
        assert_eq!(&round, s, "[p83] snapshot changed through bytes");
    }
    plugin
        .execute(ctx, resource)
        .await
        .unwrap_or_else(|e| panic!("{} execute: {}", m.name, e.chain_message()));
    let result = ExecutionResult::finished(&ctx.execution_id, ExecutionStatus::Success, start);
    plugin
        .post_execute(ctx, resource, &result)
        .await
        .unwrap_or_else(|e| panic!("{} post_execute: {}", m.name, e.chain_message()));
    if plugin.supports_rollback() {
        let s = snapshot
            .as_ref()
            .unwrap_or_else(|| panic!("[p79] {} supports rollback but took no snapshot", m.name));
        plugin
            .rollback(ctx, resource, s)
            .await
            .unwrap_or_else(|e| panic!("[p80] {} rollback: {}", m.name, e.chain_message()));
    }
    plugin
        .cleanup(ctx, resource)
        .await
        .unwrap_or_else(|e| panic!("{} cleanup: {}", m.name, e.chain_message()));
    snapshot
}
