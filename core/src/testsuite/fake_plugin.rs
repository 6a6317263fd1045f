//! A scriptable plugin that records the hooks it was called with.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, ErrorClass, Result};
use crate::event::Event;
use crate::plugin::{ExecutionResult, Plugin, PluginContext, PluginMetadata, Snapshot};
use crate::resource::Resource;

/// A lifecycle hook of [`Plugin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// `validate`.
    Validate,
    /// `pre_execute`.
    PreExecute,
    /// `execute`.
    Execute,
    /// `post_execute`.
    PostExecute,
    /// `cleanup`.
    Cleanup,
    /// `rollback`.
    Rollback,
}

#[derive(Default)]
struct Script {
    calls: Vec<(Hook, String)>,
    failures: BTreeMap<Hook, (ErrorClass, String, u32)>,
    snapshots_restored: Vec<Snapshot>,
}

/// A plugin whose hooks succeed unless told to fail, and which records every call.
///
/// `execute` sleeps for the configured time (stopping early when canceled), reports
/// progress, and publishes a `fake.executed` event.
#[derive(Clone)]
pub struct FakePlugin {
    meta: PluginMetadata,
    script: Arc<Mutex<Script>>,
    execute_time: Duration,
    rollback: bool,
}

impl std::fmt::Debug for FakePlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakePlugin")
            .field("name", &self.meta.name)
            .finish()
    }
}

impl FakePlugin {
    /// A plugin named `name` (version 1.0.0) that supports rollback.
    pub fn new(name: &str) -> Self {
        Self::with_metadata(super::PluginMetadataBuilder::new(name).build())
    }

    /// A plugin with the given metadata.
    pub fn with_metadata(meta: PluginMetadata) -> Self {
        FakePlugin {
            meta,
            script: Arc::default(),
            execute_time: Duration::ZERO,
            rollback: true,
        }
    }

    /// `execute` takes this long.
    pub fn execute_time(mut self, d: Duration) -> Self {
        self.execute_time = d;
        self
    }

    /// Whether the plugin supports rollback.
    pub fn rollback_support(mut self, yes: bool) -> Self {
        self.rollback = yes;
        self
    }

    /// Makes `hook` fail with an error of `class` the next `times` calls.
    pub fn fail(&self, hook: Hook, class: ErrorClass, times: u32) -> &Self {
        self.script
            .lock()
            .unwrap()
            .failures
            .insert(hook, (class, format!("{hook:?} failed on purpose"), times));
        self
    }

    /// The hooks called so far, in order.
    pub fn hooks(&self) -> Vec<Hook> {
        self.script
            .lock()
            .unwrap()
            .calls
            .iter()
            .map(|(h, _)| *h)
            .collect()
    }

    /// The hooks called for one execution, in order.
    pub fn hooks_of(&self, execution_id: &str) -> Vec<Hook> {
        self.script
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(_, id)| id == execution_id)
            .map(|(h, _)| *h)
            .collect()
    }

    /// How many times a hook was called.
    pub fn count(&self, hook: Hook) -> usize {
        self.hooks().into_iter().filter(|h| *h == hook).count()
    }

    /// Snapshots passed to `rollback`.
    pub fn restored(&self) -> Vec<Snapshot> {
        self.script.lock().unwrap().snapshots_restored.clone()
    }

    fn enter(&self, hook: Hook, ctx: &PluginContext) -> Result<()> {
        let mut s = self.script.lock().unwrap();
        s.calls.push((hook, ctx.execution_id.clone()));
        if let Some((class, msg, times)) = s.failures.get_mut(&hook) {
            if *times > 0 {
                *times -= 1;
                return Err(Error::other(*class, msg.clone(), None));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Plugin for FakePlugin {
    fn metadata(&self) -> PluginMetadata {
        self.meta.clone()
    }

    async fn validate(&self, ctx: &PluginContext, _resource: &Resource) -> Result<()> {
        self.enter(Hook::Validate, ctx)
    }

    async fn pre_execute(
        &self,
        ctx: &PluginContext,
        resource: &Resource,
    ) -> Result<Option<Snapshot>> {
        self.enter(Hook::PreExecute, ctx)?;
        Snapshot::new(&self.meta.name, resource, &resource.status).map(Some)
    }

    async fn execute(&self, ctx: &PluginContext, resource: &Resource) -> Result<()> {
        self.enter(Hook::Execute, ctx)?;
        ctx.report_progress(0, "execute", "starting");
        if !self.execute_time.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(self.execute_time) => {}
                _ = ctx.cancel.cancelled() => return ctx.check_canceled(),
            }
        }
        ctx.publish(Event::new("fake.executed", &self.meta.name).with_resource(resource.clone()))
            .await?;
        ctx.report_progress(100, "execute", "done");
        Ok(())
    }

    async fn post_execute(
        &self,
        ctx: &PluginContext,
        _resource: &Resource,
        _result: &ExecutionResult,
    ) -> Result<()> {
        self.enter(Hook::PostExecute, ctx)
    }

    async fn cleanup(&self, ctx: &PluginContext, _resource: &Resource) -> Result<()> {
        self.enter(Hook::Cleanup, ctx)
    }

    fn supports_rollback(&self) -> bool {
        self.rollback
    }

    async fn rollback(
        &self,
        ctx: &PluginContext,
        _resource: &Resource,
        snapshot: &Snapshot,
    ) -> Result<()> {
        if !self.rollback {
            return Err(Error::unsupported("rollback", &self.meta.name));
        }
        self.enter(Hook::Rollback, ctx)?;
        self.script
            .lock()
            .unwrap()
            .snapshots_restored
            .push(snapshot.clone());
        Ok(())
    }
}
