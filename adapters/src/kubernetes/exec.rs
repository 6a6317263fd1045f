//! Running commands in pods through the API server's `pods/exec` websocket.

use ire_core::{Error, ErrorClass, ExecOptions, ExecResult, OutputBuffer, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::AttachParams;
use tokio::io::AsyncWriteExt;

use super::error::{from_kube, Target};
use super::Inner;

/// The argv actually sent: Kubernetes exec has no environment or working directory, so
/// when either is asked for the command runs through `/bin/sh` (the image needs one).
pub(crate) fn wrap_command(cmd: &[String], options: &ExecOptions) -> Vec<String> {
    if options.env.is_empty() && options.working_dir.is_none() {
        return cmd.to_vec();
    }
    let mut argv = vec!["/bin/sh".to_owned(), "-c".to_owned()];
    // $1 is the directory (or "."), the rest is `env K=V ... cmd args`.
    argv.push(r#"cd -- "$1" && shift && exec "$@""#.to_owned());
    argv.push("sh".to_owned());
    argv.push(options.working_dir.clone().unwrap_or_else(|| ".".into()));
    if !options.env.is_empty() {
        argv.push("env".to_owned());
        argv.extend(options.env.iter().map(|(k, v)| format!("{k}={v}")));
    }
    argv.extend(cmd.iter().cloned());
    argv
}

/// The exit code in the exec's final `Status`: 0 on Success, the `ExitCode` cause on
/// `NonZeroExitCode`, an error when the command could not run at all.
pub(crate) fn exit_code(
    status: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
) -> Result<i64> {
    let Some(status) = status else {
        return Err(Error::unavailable(
            "exec",
            std::io::Error::other("the connection closed before the command's status arrived"),
        ));
    };
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    if status.reason.as_deref() == Some("NonZeroExitCode") {
        let code = status
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.reason.as_deref() == Some("ExitCode"))
            .and_then(|c| c.message.as_ref()?.parse::<i64>().ok());
        if let Some(code) = code {
            return Ok(code);
        }
    }
    Err(Error::other(
        ErrorClass::Fatal,
        format!(
            "the command could not run: {}",
            status.message.unwrap_or_else(|| "no message".into())
        ),
        None,
    ))
}

impl Inner {
    /// Runs `cmd` in the pod's first container and collects its output and exit code.
    pub(crate) async fn exec(
        &self,
        ns: &str,
        name: &str,
        cmd: &[String],
        options: &ExecOptions,
    ) -> Result<ExecResult> {
        self.exec_in(ns, name, None, cmd, options).await
    }

    /// Runs `cmd` in one of the pod's containers (its first when `None`).
    pub(crate) async fn exec_in(
        &self,
        ns: &str,
        name: &str,
        container: Option<&str>,
        cmd: &[String],
        options: &ExecOptions,
    ) -> Result<ExecResult> {
        if cmd.is_empty() {
            return Err(Error::invalid("command", "must not be empty"));
        }
        let api = self.api::<Pod>(Some(ns));
        let target = || Target { kind: "pod", name };
        let container = match container {
            Some(c) => c.to_owned(),
            None => {
                let pod = api.get(name).await.map_err(|e| from_kube(e, target()))?;
                pod.spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .map(|c| c.name.clone())
                    .ok_or_else(|| Error::invalid("pod", format!("{ns}/{name} has no container")))?
            }
        };
        let params = AttachParams::default()
            .container(container)
            .stdin(options.stdin.is_some())
            .stdout(true)
            .stderr(!options.tty)
            .tty(options.tty);
        let argv = wrap_command(cmd, options);
        let run = async {
            let mut proc = api
                .exec(name, argv, &params)
                .await
                .map_err(|e| from_kube(e, target()))?;
            let mut stdout = proc.stdout();
            let mut stderr = proc.stderr();
            let status = proc.take_status();
            if let (Some(input), Some(mut w)) = (options.stdin.as_ref(), proc.stdin()) {
                w.write_all(input)
                    .await
                    .map_err(|e| Error::unavailable("exec stdin", e))?;
                // Shutting the writer down ends the stream: the client tells the server that
                // stdin is closed (a v5 CLOSE frame). Dropping it alone would not.
                w.shutdown()
                    .await
                    .map_err(|e| Error::unavailable("exec stdin", e))?;
            }
            let limit = options.output_limit();
            let read = |r: Option<tokio::io::ReadHalf<tokio::io::SimplexStream>>| async move {
                match r {
                    Some(r) => crate::output::read_capped(r, limit)
                        .await
                        .map_err(|e| Error::unavailable("exec output", e)),
                    None => Ok(OutputBuffer::new(limit)),
                }
            };
            let (out, err) = tokio::try_join!(read(stdout.take()), read(stderr.take()))?;
            let status = match status {
                Some(s) => s.await,
                None => None,
            };
            let code = exit_code(status)?;
            let _ = proc.join().await;
            Ok(ExecResult::from_output(out, err, code))
        };
        match options.timeout {
            Some(after) => tokio::time::timeout(after, run)
                .await
                .map_err(|_| Error::Timeout {
                    operation: format!("exec {cmd:?} in pod {ns}/{name}"),
                    after,
                })?,
            None => run.await,
        }
    }
}
