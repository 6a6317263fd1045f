//! Authorization, audit and secrets in the engine (seed properties 48-52).

mod engine_common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use engine_common::{Rig, RigOptions};
use ire_actors::engine::{Engine, EngineDeps};
use ire_actors::security::{MemorySecretProvider, RoleBasedAuthorizer};
use ire_core::testsuite::{FakePlugin, PluginMetadataBuilder, StaticAuthorizer};
use ire_core::{
    Error, ErrorClass, Event, ExecutionEngine, ExecutionStatus, Plugin, PluginContext,
    PluginMetadata, PluginRegistry, Resource, Result, Secret, SecretProvider, Snapshot,
};

const RBAC: &str = r#"
principals:
  alice: [admin]
  olga: [operator]
  vic: [viewer]
"#;

async fn rig_with_rbac() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rbac.yaml");
    std::fs::write(&path, RBAC).unwrap();
    let authz = Arc::new(RoleBasedAuthorizer::from_file(&path).unwrap());
    let rig = Rig::with(RigOptions {
        spawn: false,
        ..RigOptions::default()
    })
    .await;
    // Rebuild the engine with the authorizer (the rig's other services are kept).
    let mut adapters = std::collections::BTreeMap::new();
    adapters.insert(
        "fake".to_owned(),
        Arc::new(rig.adapter.clone()) as Arc<dyn ire_core::EnvironmentAdapter>,
    );
    let mut deps = EngineDeps::new(rig.registry.clone(), adapters);
    deps.auth = authz;
    deps.audit = rig.audit.clone();
    deps.reporter = Some(Arc::new(rig.reporter.clone()));
    let engine = Engine::new(RigOptions::default().config, deps);
    engine.spawn().await.unwrap();
    Rig { engine, ..rig }
}

#[tokio::test]
async fn denied_principal_gets_an_error_and_the_plugin_is_never_called() {
    let rig = rig_with_rbac().await;
    let p = FakePlugin::new("kill");
    rig.register(Arc::new(p.clone())).await;
    let r = rig.resource("db");
    let mut req = rig.request("kill", &r);
    req.principal = "vic".into();
    let e = rig.engine.execute(req).await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
    assert!(p.hooks().is_empty(), "plugin was called: {:?}", p.hooks());
    let mut req = rig.request("kill", &r);
    req.principal = "mallory".into();
    assert!(rig.engine.execute(req).await.is_err());
    assert!(p.hooks().is_empty());
    // The denial is audited.
    let denied: Vec<_> = rig
        .audit
        .entries()
        .into_iter()
        .filter(|e| !e.result.success)
        .collect();
    assert_eq!(denied.len(), 2);
    assert_eq!(denied[0].principal, "vic");
    assert_eq!(denied[0].action.verb, "execute");
    assert!(denied[0].result.error.contains("not allowed"));
}

#[tokio::test]
async fn operator_may_execute_but_admin_plugins_need_admin() {
    let rig = rig_with_rbac().await;
    rig.register(Arc::new(FakePlugin::new("kill"))).await;
    let admin_only =
        FakePlugin::with_metadata(PluginMetadataBuilder::new("wipe").requires("admin").build());
    rig.register(Arc::new(admin_only.clone())).await;
    let r = rig.resource("db");
    let mut req = rig.request("kill", &r);
    req.principal = "olga".into();
    assert!(rig.engine.execute(req).await.unwrap().is_success());
    let mut req = rig.request("wipe", &r);
    req.principal = "olga".into();
    assert!(matches!(
        rig.engine.execute(req).await,
        Err(Error::Unauthorized { .. })
    ));
    assert!(admin_only.hooks().is_empty());
    let mut req = rig.request("wipe", &r);
    req.principal = "alice".into();
    assert!(rig.engine.execute(req).await.unwrap().is_success());
}

#[tokio::test]
async fn every_action_is_audited_with_principal_action_resource_time_and_result() {
    let rig = Rig::new().await;
    let p = FakePlugin::new("kill");
    p.fail(ire_core::testsuite::Hook::Execute, ErrorClass::Fatal, 1);
    rig.engine
        .register_plugin(Arc::new(p.clone()))
        .await
        .unwrap();
    let r = rig.resource("db");
    let before = chrono::Utc::now();
    let failed = rig.engine.execute(rig.request("kill", &r)).await.unwrap();
    let ok = rig.engine.execute(rig.request("kill", &r)).await.unwrap();
    rig.engine.cancel(&ok.execution_id).await.unwrap();
    rig.engine.unregister_plugin("kill").await.unwrap();
    let entries = rig.audit.entries();
    let verbs: Vec<&str> = entries.iter().map(|e| e.action.verb.as_str()).collect();
    assert_eq!(verbs, ["create", "execute", "execute", "cancel", "delete"]);
    let exec: Vec<_> = entries
        .iter()
        .filter(|e| e.action.verb == "execute")
        .collect();
    for (e, res) in exec.iter().zip([&failed, &ok]) {
        assert_eq!(e.principal, "tester");
        assert_eq!(e.action.resource, "kill");
        assert_eq!(e.resource.as_ref().map(|x| &x.key), Some(&r.key));
        assert!(e.timestamp >= before);
        assert_eq!(e.result.success, res.is_success());
        assert_eq!(
            e.metadata["execution_id"],
            serde_json::json!(res.execution_id)
        );
    }
    assert!(!exec[0].result.error.is_empty());
}

#[tokio::test]
async fn custom_authorization_providers_are_used() {
    let authz = Arc::new(StaticAuthorizer::allowing(["bot"]));
    let rig = Rig::with(RigOptions {
        spawn: false,
        ..RigOptions::default()
    })
    .await;
    let mut adapters = std::collections::BTreeMap::new();
    adapters.insert(
        "fake".to_owned(),
        Arc::new(rig.adapter.clone()) as Arc<dyn ire_core::EnvironmentAdapter>,
    );
    let mut deps = EngineDeps::new(rig.registry.clone(), adapters);
    deps.auth = authz.clone();
    let engine = Engine::new(RigOptions::default().config, deps);
    engine.spawn().await.unwrap();
    rig.registry
        .register(Arc::new(FakePlugin::new("kill")))
        .await
        .unwrap();
    let r = rig.resource("db");
    let mut req = ire_core::ExecutionRequest::new("kill", r.clone(), "bot");
    assert!(engine.execute(req.clone()).await.unwrap().is_success());
    req.principal = "eve".into();
    assert!(engine.execute(req).await.is_err());
    assert_eq!(authz.asked().len(), 2);
}

/// A plugin that reads a secret and then leaks it every way a careless plugin could:
/// in an error message, in a progress message, in an event, and in a log line through the
/// `Secret` type.
struct Leaky;

const PASSWORD: &str = "correct-horse-battery-staple";

#[async_trait]
impl Plugin for Leaky {
    fn metadata(&self) -> PluginMetadata {
        PluginMetadata::new(
            "leaky",
            semver::Version::new(1, 0, 0),
            "leaks secrets",
            ire_core::FaultKind::Action,
        )
    }
    async fn validate(&self, _: &PluginContext, _: &Resource) -> Result<()> {
        Ok(())
    }
    async fn pre_execute(&self, _: &PluginContext, _: &Resource) -> Result<Option<Snapshot>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &PluginContext, _: &Resource) -> Result<()> {
        let s = ctx
            .secrets
            .as_ref()
            .unwrap()
            .get_secret("db-password")
            .await?;
        tracing::info!(secret = ?s, shown = %s, "connecting");
        ctx.report_progress(50, "execute", format!("logging in with {}", s.expose()));
        let _ = ctx
            .publish(
                Event::new("leaky.note", "leaky").with_data("note", format!("pw={}", s.expose())),
            )
            .await;
        Err(Error::other(
            ErrorClass::Fatal,
            format!("login refused for password {}", s.expose()),
            None,
        ))
    }
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_appear_in_logs_records_events_audit_or_results() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let secrets = Arc::new(MemorySecretProvider::new());
    secrets
        .set_secret("db-password", Secret::new(PASSWORD))
        .await
        .unwrap();
    let rig = Rig::with(RigOptions {
        spawn: false,
        ..RigOptions::default()
    })
    .await;
    let mut adapters = std::collections::BTreeMap::new();
    adapters.insert(
        "fake".to_owned(),
        Arc::new(rig.adapter.clone()) as Arc<dyn ire_core::EnvironmentAdapter>,
    );
    let mut deps = EngineDeps::new(rig.registry.clone(), adapters);
    deps.secrets = Some(secrets);
    deps.audit = rig.audit.clone();
    deps.reporter = Some(Arc::new(rig.reporter.clone()));
    deps.event_bus = Some(Arc::new(rig.bus.clone()));
    let engine = Engine::new(RigOptions::default().config, deps);
    engine.spawn().await.unwrap();
    rig.registry.register(Arc::new(Leaky)).await.unwrap();
    let r = rig.resource("db");
    let res = engine
        .execute(ire_core::ExecutionRequest::new("leaky", r, "tester"))
        .await
        .unwrap();
    assert_eq!(res.status, ExecutionStatus::Failed);
    // The failure is still explained, with the value scrubbed.
    assert!(
        res.error
            .as_deref()
            .unwrap()
            .contains("login refused for password [REDACTED]"),
        "{res:?}"
    );
    ire_core::testsuite::eventually(Duration::from_secs(5), "progress forwarded", || async {
        engine.progress(&res.execution_id).unwrap().map(|_| ())
    })
    .await;

    let everything = format!(
        "{}\n{}\n{}\n{}\n{}",
        String::from_utf8_lossy(&logs.0.lock().unwrap()),
        serde_json::to_string(&res).unwrap(),
        serde_json::to_string(&rig.reporter.records()).unwrap(),
        serde_json::to_string(&rig.audit.entries()).unwrap(),
        serde_json::to_string(&rig.bus.published()).unwrap(),
    );
    assert!(
        everything.contains("execution finished"),
        "logs were not captured"
    );
    assert!(
        everything.contains("leaky.note"),
        "the plugin's event was not published"
    );
    assert!(everything.contains("[REDACTED]"));
    assert!(
        !everything.contains(PASSWORD),
        "secret leaked:\n{}",
        everything
            .lines()
            .filter(|l| l.contains(PASSWORD))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let progress = engine.progress(&res.execution_id).unwrap().unwrap();
    assert_eq!(progress.message, "logging in with [REDACTED]");
}
