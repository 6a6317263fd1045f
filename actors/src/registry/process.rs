//! Out-of-process plugins: a manifest plus an executable that speaks JSON lines over
//! stdin/stdout, one process per lifecycle hook (protocol in `docs/engine.md`).
//!
//! One process per hook keeps the plugin stateless from ire's point of view: a plugin that
//! crashes fails one hook, never the node, and the snapshot (what a revert needs) travels
//! through ire, which writes it to the ledger, instead of living in the plugin's memory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ire_core::{
    ConfigSchema, Error, ErrorClass, ExecutionResult, Plugin, PluginConfig, PluginContext,
    PluginLoader, PluginMetadata, Resource, Result, Snapshot,
};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::manifest::{manifest_path, PluginManifest};

/// Loads plugins described by a `plugin.yaml` manifest.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessPluginLoader;

#[async_trait]
impl PluginLoader for ProcessPluginLoader {
    async fn load(&self, path: &Path) -> Result<Arc<dyn Plugin>> {
        Ok(Arc::new(ProcessPlugin::load(path)?))
    }

    async fn unload(&self, _plugin: &Arc<dyn Plugin>) -> Result<()> {
        // Nothing lives between hooks: each hook's process has already exited.
        Ok(())
    }
}

/// A plugin run as an external program.
#[derive(Debug, Clone)]
pub struct ProcessPlugin {
    manifest: PluginManifest,
    /// The manifest's config schema, compiled once.
    schema: Arc<ConfigSchema>,
    metadata: PluginMetadata,
    program: PathBuf,
    dir: PathBuf,
}

/// One line a plugin writes on stdout.
#[derive(Debug, Deserialize)]
struct Reply {
    #[serde(default)]
    ok: Option<bool>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    class: Option<ErrorClass>,
    #[serde(default)]
    snapshot: Option<serde_json::Value>,
    #[serde(default)]
    progress: Option<u8>,
    #[serde(default)]
    message: Option<String>,
}

impl ProcessPlugin {
    /// Loads the plugin from a manifest file or a directory holding `plugin.yaml`.
    pub fn load(path: &Path) -> Result<Self> {
        let manifest_file = manifest_path(path);
        let manifest = PluginManifest::read(&manifest_file)?;
        let dir = manifest_file
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        let program = if manifest.executable.is_absolute() {
            manifest.executable.clone()
        } else {
            dir.join(&manifest.executable)
        };
        check_executable(&program).map_err(|m| {
            Error::invalid(
                format!("plugin manifest {} executable", manifest_file.display()),
                format!("{}: {m}", program.display()),
            )
        })?;
        let schema = ConfigSchema::compile(&manifest.name, &manifest.config_schema)?;
        Ok(ProcessPlugin {
            schema: Arc::new(schema),
            metadata: manifest.metadata(),
            manifest,
            program,
            dir,
        })
    }

    /// The program run for each hook.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Runs one hook: writes the request line, reads progress lines and the reply line.
    async fn call(
        &self,
        hook: &str,
        ctx: Option<&PluginContext>,
        request: serde_json::Value,
    ) -> Result<Reply> {
        let what = format!("plugin {} hook {hook}", self.metadata.name);
        let mut child = Command::new(&self.program)
            .args(&self.manifest.args)
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Error::other(
                    ErrorClass::Fatal,
                    format!("{what}: cannot start {}", self.program.display()),
                    Some(Box::new(e)),
                )
            })?;
        let mut line = serde_json::to_vec(&request)
            .map_err(|e| Error::invalid(format!("{what} request"), e.to_string()))?;
        line.push(b'\n');
        let mut stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");

        let exchange = async {
            // A plugin that exits without reading its request is reported by its reply (or
            // lack of one), not by the broken pipe.
            let _ = stdin.write_all(&line).await;
            drop(stdin);
            let mut lines = BufReader::new(stdout).lines();
            let mut reply = None;
            while let Some(l) = lines.next_line().await.map_err(|e| {
                Error::other(
                    ErrorClass::Retryable,
                    format!("{what}: reading stdout"),
                    Some(Box::new(e)),
                )
            })? {
                if l.trim().is_empty() {
                    continue;
                }
                let r: Reply = serde_json::from_str(&l).map_err(|e| {
                    Error::invalid(
                        format!("{what} reply"),
                        format!("not a protocol line ({e}): {}", truncate(&l, 200)),
                    )
                })?;
                if let (Some(p), None) = (r.progress, r.ok) {
                    if let Some(ctx) = ctx {
                        ctx.report_progress(p, hook, r.message.clone().unwrap_or_default());
                    }
                    continue;
                }
                reply = Some(r);
                break;
            }
            let mut err_text = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut err_text).await;
            let status = child.wait().await.map_err(|e| {
                Error::other(
                    ErrorClass::Retryable,
                    format!("{what}: waiting"),
                    Some(Box::new(e)),
                )
            })?;
            match reply {
                Some(r) => Ok(r),
                None => Err(Error::other(
                    ErrorClass::Fatal,
                    format!(
                        "{what}: exited ({status}) without a reply; stderr: {}",
                        truncate(err_text.trim(), 500)
                    ),
                    None,
                )),
            }
        };
        let cancel = ctx.map(|c| c.cancel.clone()).unwrap_or_default();
        tokio::select! {
            r = tokio::time::timeout(self.manifest.hook_timeout, exchange) => match r {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout { operation: what, after: self.manifest.hook_timeout }),
            },
            // Dropping the exchange kills the child (kill_on_drop).
            _ = cancel.cancelled() => Err(Error::Canceled { message: what }),
        }
    }

    fn request(
        &self,
        hook: &str,
        ctx: &PluginContext,
        resource: &Resource,
        snapshot: Option<&Snapshot>,
    ) -> serde_json::Value {
        json!({
            "hook": hook,
            "plugin": self.metadata.name,
            "execution_id": ctx.execution_id,
            "resource": resource,
            "config": ctx.config.0,
            "snapshot": snapshot.map(|s| &s.state),
            "fencing_token": ctx.fencing_token.map(|t| t.0),
            "timeout_ms": ctx.timeout.as_millis() as u64,
            "labels": ctx.labels,
        })
    }

    async fn hook(
        &self,
        hook: &str,
        ctx: &PluginContext,
        resource: &Resource,
        snapshot: Option<&Snapshot>,
        extra: Option<(&str, serde_json::Value)>,
    ) -> Result<Reply> {
        let mut req = self.request(hook, ctx, resource, snapshot);
        if let Some((k, v)) = extra {
            req[k] = v;
        }
        let reply = self.call(hook, Some(ctx), req).await?;
        if reply.ok == Some(true) {
            return Ok(reply);
        }
        let class = reply.class.unwrap_or(ErrorClass::Fatal);
        let message = reply
            .error
            .unwrap_or_else(|| "failed without an error message".to_owned());
        Err(Error::other(
            class,
            format!("plugin {} hook {hook}: {message}", self.metadata.name),
            None,
        ))
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_owned();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(unix)]
fn check_executable(p: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(p).map_err(|e| format!("cannot read: {e}"))?;
    if !m.is_file() {
        return Err("is not a file".into());
    }
    if m.permissions().mode() & 0o111 == 0 {
        return Err("is not executable (chmod +x)".into());
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_executable(p: &Path) -> std::result::Result<(), String> {
    if p.is_file() {
        Ok(())
    } else {
        Err("is not a file".into())
    }
}

#[async_trait]
impl Plugin for ProcessPlugin {
    fn metadata(&self) -> PluginMetadata {
        self.metadata.clone()
    }

    fn validate_config(&self, config: &PluginConfig) -> Result<()> {
        self.schema.check(&self.metadata.name, &config.0)
    }

    async fn initialize(&self, config: &PluginConfig) -> Result<()> {
        // Prove the program speaks the protocol before it is registered.
        let reply = self
            .call(
                "initialize",
                None,
                json!({"hook": "initialize", "plugin": self.metadata.name, "config": config.0}),
            )
            .await?;
        if reply.ok == Some(true) {
            Ok(())
        } else {
            Err(Error::other(
                reply.class.unwrap_or(ErrorClass::Fatal),
                format!(
                    "plugin {} hook initialize: {}",
                    self.metadata.name,
                    reply.error.unwrap_or_default()
                ),
                None,
            ))
        }
    }

    async fn validate(&self, ctx: &PluginContext, resource: &Resource) -> Result<()> {
        self.hook("validate", ctx, resource, None, None)
            .await
            .map(|_| ())
    }

    async fn pre_execute(
        &self,
        ctx: &PluginContext,
        resource: &Resource,
    ) -> Result<Option<Snapshot>> {
        let reply = self.hook("pre_execute", ctx, resource, None, None).await?;
        match reply.snapshot {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(state) => Ok(Some(Snapshot::new(&self.metadata.name, resource, &state)?)),
        }
    }

    async fn execute(&self, ctx: &PluginContext, resource: &Resource) -> Result<()> {
        self.hook("execute", ctx, resource, None, None)
            .await
            .map(|_| ())
    }

    async fn post_execute(
        &self,
        ctx: &PluginContext,
        resource: &Resource,
        result: &ExecutionResult,
    ) -> Result<()> {
        let r = serde_json::to_value(result).unwrap_or_default();
        self.hook("post_execute", ctx, resource, None, Some(("result", r)))
            .await
            .map(|_| ())
    }

    async fn cleanup(&self, ctx: &PluginContext, resource: &Resource) -> Result<()> {
        self.hook("cleanup", ctx, resource, None, None)
            .await
            .map(|_| ())
    }

    fn supports_rollback(&self) -> bool {
        self.manifest.rollback
    }

    async fn rollback(
        &self,
        ctx: &PluginContext,
        resource: &Resource,
        snapshot: &Snapshot,
    ) -> Result<()> {
        if !self.manifest.rollback {
            return Err(Error::unsupported("rollback", self.metadata.name.clone()));
        }
        self.hook("rollback", ctx, resource, Some(snapshot), None)
            .await
            .map(|_| ())
    }
}

/// How long a hook of this plugin may take.
impl ProcessPlugin {
    /// The manifest's per-hook time limit.
    pub fn hook_timeout(&self) -> Duration {
        self.manifest.hook_timeout
    }
}
