//! Running `tc`, `nft` and `ip`, with their error output in the error.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use ire_core::{Error, ErrorClass, Result};

/// Where the tools are looked for after `PATH` (the helper image puts them in `/sbin`).
const SBIN: [&str; 3] = ["/usr/sbin", "/sbin", "/usr/bin"];

/// The path of a tool, from `PATH` or the sbin directories.
fn locate(tool: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN.iter().map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::other(
                ErrorClass::Fatal,
                format!(
                    "`{tool}` is not installed here (the network-fault helper needs iproute2's \
                     tc and ip, and nftables' nft)"
                ),
                None,
            )
        })
}

/// A failed command: what ran and what it printed.
#[derive(Debug)]
pub struct Failure {
    /// The command line.
    pub command: String,
    /// Its standard error (or output), trimmed.
    pub stderr: String,
}

impl Failure {
    /// True when the command failed because what it was to remove does not exist.
    pub fn is_absent(&self) -> bool {
        let s = &self.stderr;
        s.contains("No such file or directory")
            || s.contains("Cannot find device")
            || s.contains("Invalid handle")
            || s.contains("handle of zero")
            || s.contains("does not exist")
            || s.contains("Cannot delete qdisc with handle of zero")
    }

    /// As an ire error.
    pub fn into_error(self) -> Error {
        Error::other(
            ErrorClass::Fatal,
            format!("`{}` failed: {}", self.command, self.stderr),
            None,
        )
    }
}

/// Runs `tool args...` (with `stdin` when given); its standard output on success.
pub fn run_with(tool: &str, args: &[&str], stdin: Option<&str>) -> Result<Result<String, Failure>> {
    let path = locate(tool)?;
    let command = format!("{tool} {}", args.join(" "));
    let mut child = Command::new(&path)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::other(
                ErrorClass::Fatal,
                format!("cannot run {}", path.display()),
                Some(Box::new(e)),
            )
        })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error shows up as the command's failure below.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| {
        Error::other(
            ErrorClass::Fatal,
            format!("waiting for {command}"),
            Some(Box::new(e)),
        )
    })?;
    if out.status.success() {
        return Ok(Ok(String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if stderr.is_empty() {
        stderr = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    }
    Ok(Err(Failure { command, stderr }))
}

/// Runs a command that must succeed.
pub fn run(tool: &str, args: &[&str]) -> Result<String> {
    run_with(tool, args, None)?.map_err(Failure::into_error)
}

/// Runs a removal: success, or a failure because the thing is already gone, is `Ok`.
pub fn remove(tool: &str, args: &[&str]) -> Result<()> {
    match run_with(tool, args, None)? {
        Ok(_) => Ok(()),
        Err(f) if f.is_absent() => Ok(()),
        Err(f) => Err(f.into_error()),
    }
}
