//! Running a command in a container and collecting its output and exit code.

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::Docker;
use futures::StreamExt;
use ire_core::{Error, ExecOptions, ExecResult, OutputBuffer, Result};
use tokio::io::AsyncWriteExt;

use super::error::from_bollard;

/// Runs `cmd` in container `r` (`id` is how the caller named it, for errors).
pub(crate) async fn exec(
    docker: &Docker,
    r: &str,
    id: &str,
    cmd: &[String],
    options: &ExecOptions,
) -> Result<ExecResult> {
    if cmd.is_empty() {
        return Err(Error::invalid("command", "is empty"));
    }
    let run = run(docker, r, id, cmd, options);
    match options.timeout {
        Some(t) => tokio::time::timeout(t, run)
            .await
            .map_err(|_| Error::Timeout {
                operation: format!("exec {:?} in {id}", cmd.join(" ")),
                after: t,
            })?,
        None => run.await,
    }
}

async fn run(
    docker: &Docker,
    r: &str,
    id: &str,
    cmd: &[String],
    options: &ExecOptions,
) -> Result<ExecResult> {
    let env: Vec<String> = options
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let created = docker
        .create_exec(
            r,
            CreateExecOptions {
                attach_stdin: Some(options.stdin.is_some()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(options.tty),
                env: (!env.is_empty()).then_some(env),
                cmd: Some(cmd.to_vec()),
                working_dir: options.working_dir.clone(),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| from_bollard(e, "resource", id))?;
    let started = docker
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: false,
                tty: options.tty,
                output_capacity: None,
            }),
        )
        .await
        .map_err(|e| from_bollard(e, "resource", id))?;
    let StartExecResults::Attached {
        mut output,
        mut input,
    } = started
    else {
        return Err(Error::invalid("exec", "Docker started it detached"));
    };
    if let Some(bytes) = &options.stdin {
        input
            .write_all(bytes)
            .await
            .map_err(|e| Error::unavailable(format!("writing stdin of exec in {id}"), e))?;
    }
    // Closing our side tells the command its stdin ended.
    let _ = input.shutdown().await;
    drop(input);

    // Past the output limit chunks are still read (the command must not block on a full
    // pipe) but dropped.
    let mut stdout = OutputBuffer::new(options.output_limit());
    let mut stderr = OutputBuffer::new(options.output_limit());
    while let Some(chunk) = output.next().await {
        match chunk.map_err(|e| from_bollard(e, "resource", id))? {
            LogOutput::StdErr { message } => stderr.push(&message),
            LogOutput::StdOut { message } | LogOutput::Console { message } => stdout.push(&message),
            LogOutput::StdIn { .. } => {}
        }
    }
    // The output ends when the process does; Docker records the exit code a moment later.
    let mut exit_code = None;
    for _ in 0..200 {
        let inspect = docker
            .inspect_exec(&created.id)
            .await
            .map_err(|e| from_bollard(e, "exec", &created.id))?;
        if inspect.running != Some(true) {
            exit_code = inspect.exit_code;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let exit_code = exit_code.ok_or_else(|| Error::Timeout {
        operation: format!("reading the exit code of exec {:?} in {id}", cmd.join(" ")),
        after: Duration::from_secs(2),
    })?;
    Ok(ExecResult::from_output(stdout, stderr, exit_code))
}
