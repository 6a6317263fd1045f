//! Spawning, signalling and reaping the fleet's processes.
//!
//! State lives under one mutex that is never held across an await. Each run of a process
//! has a generation number; the task that awaits the child's exit updates the state only
//! if its generation is still current, so a late exit of an old run cannot overwrite a
//! newer one.

use std::collections::{BTreeMap, VecDeque};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ire_core::resource::phase;
use ire_core::{
    CpuMetrics, DiskMetrics, Error, ExecOptions, ExecResult, MemoryMetrics, Metrics, Resource,
    ResourceEvent, ResourceEventType, ResourceKey, ResourceSpec, ResourceStatus, Result, Signal,
};
use nix::sys::signal::{killpg, Signal as NixSignal};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::config::ProcessConfig;
use super::fleet::ProcessSpec;
use super::netns::{ProcessNetns, Switch};
use super::procfs::{self, Sample};
use super::KIND_PROCESS;

/// The annotation naming a process's network namespace.
pub const ANNOTATION_NETNS: &str = "network.namespace";
/// The annotation with a process's address in its namespace.
pub const ANNOTATION_ADDRESS: &str = "network.address";

/// A command that runs `program` in the namespace, if any (nsenter execs it: same pid).
fn in_netns(netns: Option<&ProcessNetns>, program: &str) -> tokio::process::Command {
    match netns {
        Some(n) => {
            let mut c = tokio::process::Command::new("nsenter");
            c.arg(format!("--net={}", n.path().display()))
                .arg("--")
                .arg(program);
            c
        }
        None => tokio::process::Command::new(program),
    }
}

/// Pids remembered per process, so an id recorded before a restart still finds it.
const PID_HISTORY: usize = 16;
/// How long a stop waits for the exit after SIGKILL before reporting a failure.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How a run of a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExitInfo {
    code: Option<i32>,
    signal: Option<i32>,
    at: DateTime<Utc>,
}

impl ExitInfo {
    fn from_status(s: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        ExitInfo {
            code: s.code(),
            signal: s.signal(),
            at: Utc::now(),
        }
    }

    fn reason(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("ExitCode{c}"),
            (None, Some(s)) => format!("Signal{}", signal_name(s)),
            _ => "Exited".into(),
        }
    }
}

fn signal_name(n: i32) -> String {
    NixSignal::try_from(n)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| n.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Stopped,
    Running { pid: u32 },
    Paused { pid: u32 },
}

struct Managed {
    spec: ProcessSpec,
    run: Run,
    generation: u64,
    pids: VecDeque<u32>,
    last_exit: Option<ExitInfo>,
    /// Becomes true when the current run has ended.
    exited: Option<watch::Receiver<bool>>,
    started_at: Option<DateTime<Utc>>,
    starts: u64,
    last_sample: Option<Sample>,
    /// Its own network namespace, when it has one.
    netns: Option<ProcessNetns>,
}

impl Managed {
    fn pid(&self) -> Option<u32> {
        match self.run {
            Run::Running { pid } | Run::Paused { pid } => Some(pid),
            Run::Stopped => None,
        }
    }
}

/// The fleet's processes and the event channel the watches read.
pub(crate) struct Supervisor {
    name: String,
    config: ProcessConfig,
    procs: Mutex<BTreeMap<String, Managed>>,
    events: broadcast::Sender<ResourceEvent>,
    closed: CancellationToken,
    ticks_per_sec: u64,
    switch: Switch,
}

impl Supervisor {
    pub fn new(name: &str, config: ProcessConfig) -> Self {
        Supervisor {
            name: name.to_owned(),
            procs: Mutex::new(BTreeMap::new()),
            events: broadcast::channel(1024).0,
            closed: CancellationToken::new(),
            ticks_per_sec: procfs::clock_ticks_per_sec(),
            switch: Switch::new(name, config.network.clone()),
            config,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &ProcessConfig {
        &self.config
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ResourceEvent> {
        self.events.subscribe()
    }

    pub fn closed(&self) -> CancellationToken {
        self.closed.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Managed>> {
        // A panic while holding the lock leaves consistent data (every update is one
        // assignment), so a poisoned lock is still usable.
        self.procs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The process name `id` names: a key of this adapter, a name, or a pid it had.
    pub fn resolve(&self, id: &str) -> Result<String> {
        let procs = self.lock();
        let as_name = id
            .strip_prefix(self.name.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(id);
        if procs.contains_key(as_name) {
            return Ok(as_name.to_owned());
        }
        if let Ok(pid) = id.parse::<u32>() {
            // The current pid first: an old pid may have been reused by a newer run.
            if let Some((n, _)) = procs.iter().find(|(_, m)| m.pid() == Some(pid)) {
                return Ok(n.clone());
            }
            if let Some((n, _)) = procs.iter().find(|(_, m)| m.pids.contains(&pid)) {
                return Ok(n.clone());
            }
        }
        Err(Error::not_found("resource", id))
    }

    /// Adds a process (not started); one that asks for a network namespace gets it now.
    pub fn add(&self, spec: ProcessSpec) -> Result<()> {
        spec.validate(&format!("process {:?}", spec.name))?;
        let netns = if spec.has_namespace() {
            let address = match spec.network.as_ref().and_then(|n| n.address) {
                Some(a) => a,
                None => {
                    let used: Vec<_> = self
                        .lock()
                        .values()
                        .filter_map(|m| m.netns.as_ref().map(|n| n.address))
                        .collect();
                    self.switch.config().allocate(&used).ok_or_else(|| {
                        Error::invalid(
                            format!("process {:?} network", spec.name),
                            format!("no free address left in {}", self.switch.config().subnet),
                        )
                    })?
                }
            };
            if let Some((other, _)) = self
                .lock()
                .iter()
                .find(|(_, m)| m.netns.as_ref().is_some_and(|n| n.address == address))
            {
                return Err(Error::invalid(
                    format!("process {:?} network.address", spec.name),
                    format!("{address} is process {other:?}'s"),
                ));
            }
            Some(self.switch.attach(&spec.name, address)?)
        } else {
            None
        };
        let mut procs = self.lock();
        if procs.contains_key(&spec.name) {
            drop(procs);
            if let Some(n) = &netns {
                let _ = self.switch.detach(n);
            }
            return Err(Error::Conflict {
                message: format!("a process named {:?} already exists", spec.name),
            });
        }
        let name = spec.name.clone();
        procs.insert(
            name.clone(),
            Managed {
                spec,
                run: Run::Stopped,
                generation: 0,
                pids: VecDeque::new(),
                last_exit: None,
                exited: None,
                started_at: None,
                starts: 0,
                last_sample: None,
                netns,
            },
        );
        let r = self.to_resource(&name, &procs[&name]);
        drop(procs);
        self.emit(ResourceEventType::Added, r);
        Ok(())
    }

    /// The network namespace of process `name`, if it has one.
    pub fn netns(&self, name: &str) -> Result<Option<ProcessNetns>> {
        let procs = self.lock();
        let m = procs
            .get(name)
            .ok_or_else(|| Error::not_found("resource", name))?;
        Ok(m.netns.clone())
    }

    /// Removes a stopped process from the fleet.
    pub fn remove(&self, name: &str) -> Result<()> {
        let mut procs = self.lock();
        let Some(m) = procs.get(name) else {
            return Err(Error::not_found("resource", name));
        };
        if m.pid().is_some() {
            return Err(Error::Conflict {
                message: format!("process {name:?} is running"),
            });
        }
        let mut r = self.to_resource(name, m);
        let netns = procs.remove(name).and_then(|m| m.netns);
        drop(procs);
        if let Some(n) = netns {
            self.switch.detach(&n)?;
        }
        r.status.phase = phase::DELETED.into();
        self.emit(ResourceEventType::Deleted, r);
        Ok(())
    }

    /// Starts a process; starting a running one is a no-op. Returns its pid.
    pub fn start(self: &std::sync::Arc<Self>, name: &str) -> Result<u32> {
        let mut procs = self.lock();
        let m = procs
            .get_mut(name)
            .ok_or_else(|| Error::not_found("resource", name))?;
        if let Some(pid) = m.pid() {
            return Ok(pid);
        }
        let mut cmd = in_netns(m.netns.as_ref(), &m.spec.command);
        cmd.args(&m.spec.args)
            .envs(&m.spec.env)
            .stdin(Stdio::null())
            // Its own process group: signals reach what it forks, and a terminal's
            // Ctrl-C aimed at ire does not.
            .process_group(0)
            // If the adapter is dropped without `close`, the runtime drops the reaper and
            // the child is killed rather than left behind.
            .kill_on_drop(true);
        if let Some(dir) = &m.spec.working_dir {
            cmd.current_dir(dir);
        }
        let (out, err) = self.output_for(name)?;
        cmd.stdout(out).stderr(err);
        let mut child = cmd.spawn().map_err(|e| {
            Error::invalid(
                format!("process {name:?} command"),
                format!(
                    "cannot start {:?}{}: {e}",
                    m.spec.command,
                    m.spec
                        .working_dir
                        .as_ref()
                        .map(|d| format!(" in {}", d.display()))
                        .unwrap_or_default()
                ),
            )
        })?;
        let pid = child.id().unwrap_or(0);
        m.generation += 1;
        m.starts += 1;
        m.run = Run::Running { pid };
        m.started_at = Some(Utc::now());
        m.last_sample = None;
        m.pids.push_back(pid);
        if m.pids.len() > PID_HISTORY {
            m.pids.pop_front();
        }
        let (tx, rx) = watch::channel(false);
        m.exited = Some(rx);
        let generation = m.generation;
        let r = self.to_resource(name, m);
        drop(procs);
        tracing::info!(component = "process-adapter", resource_id = %name, pid, "started");
        self.emit(ResourceEventType::Modified, r);

        let sup = std::sync::Arc::clone(self);
        let name = name.to_owned();
        tokio::spawn(async move {
            let status = child.wait().await;
            let exit = match status {
                Ok(s) => ExitInfo::from_status(s),
                Err(e) => {
                    tracing::warn!(component = "process-adapter", resource_id = %name, error = %e, "waiting for the process failed");
                    ExitInfo {
                        code: None,
                        signal: None,
                        at: Utc::now(),
                    }
                }
            };
            sup.on_exit(&name, generation, exit);
            let _ = tx.send(true);
        });
        Ok(pid)
    }

    fn output_for(&self, name: &str) -> Result<(Stdio, Stdio)> {
        let Some(dir) = &self.config.log_dir else {
            return Ok((Stdio::null(), Stdio::null()));
        };
        let path = dir.join(format!("{name}.log"));
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
        };
        let f = open().map_err(|e| {
            Error::invalid("log-dir", format!("cannot open {}: {e}", path.display()))
        })?;
        let f2 = f.try_clone().map_err(|e| {
            Error::invalid("log-dir", format!("cannot open {}: {e}", path.display()))
        })?;
        Ok((Stdio::from(f), Stdio::from(f2)))
    }

    fn on_exit(&self, name: &str, generation: u64, exit: ExitInfo) {
        let mut procs = self.lock();
        let Some(m) = procs.get_mut(name) else {
            return;
        };
        if m.generation != generation {
            return;
        }
        m.run = Run::Stopped;
        tracing::info!(component = "process-adapter", resource_id = %name, reason = %exit.reason(), "exited");
        m.last_exit = Some(exit);
        let r = self.to_resource(name, m);
        drop(procs);
        self.emit(ResourceEventType::Modified, r);
    }

    /// Sends SIGTERM to the process group, then SIGKILL after `grace`; returns once it
    /// exited. Stopping a stopped process is a no-op.
    pub async fn stop(&self, name: &str, grace: Duration) -> Result<()> {
        let (pid, paused, mut exited) = {
            let procs = self.lock();
            let m = procs
                .get(name)
                .ok_or_else(|| Error::not_found("resource", name))?;
            match (m.pid(), m.exited.clone()) {
                (Some(pid), Some(rx)) => (pid, matches!(m.run, Run::Paused { .. }), rx),
                _ => return Ok(()),
            }
        };
        let ended = |rx: &mut watch::Receiver<bool>| {
            let mut rx = rx.clone();
            async move { rx.wait_for(|e| *e).await.map(|_| ()) }
        };
        if !grace.is_zero() {
            send_group(pid, NixSignal::SIGTERM);
            if paused {
                // A stopped process acts on SIGTERM only once continued.
                send_group(pid, NixSignal::SIGCONT);
            }
            if tokio::time::timeout(grace, ended(&mut exited))
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        send_group(pid, NixSignal::SIGKILL);
        tokio::time::timeout(KILL_WAIT, ended(&mut exited))
            .await
            .map_err(|_| Error::Timeout {
                operation: format!("waiting for process {name:?} (pid {pid}) to die after SIGKILL"),
                after: KILL_WAIT,
            })?
            .map_err(|_| Error::other(ire_core::ErrorClass::Fatal, "process reaper vanished", None))
    }

    /// Stops every process.
    pub async fn stop_all(&self, grace: Duration) -> Result<()> {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        let results = futures::future::join_all(names.iter().map(|n| self.stop(n, grace))).await;
        results.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
    }

    /// Ends the watches and, unless configured otherwise, stops every process.
    pub async fn close(&self) -> Result<()> {
        self.closed.cancel();
        if self.config.stop_on_close {
            self.stop_all(self.config.stop_grace).await?;
            self.release_networks()?;
        }
        Ok(())
    }

    /// Removes the processes' network namespaces and the switch.
    pub fn release_networks(&self) -> Result<()> {
        let namespaces: Vec<ProcessNetns> = self
            .lock()
            .values()
            .filter_map(|m| m.netns.clone())
            .collect();
        for n in &namespaces {
            self.switch.detach(n)?;
        }
        self.switch.remove()
    }

    /// Sends a signal to the process group; SIGSTOP/SIGTSTP pause it, SIGCONT resumes it.
    pub fn signal(&self, name: &str, signal: &Signal) -> Result<()> {
        let sig = NixSignal::try_from(signal.number())
            .map_err(|_| Error::invalid("signal", format!("{signal} is not a signal here")))?;
        let mut procs = self.lock();
        let m = procs
            .get_mut(name)
            .ok_or_else(|| Error::not_found("resource", name))?;
        let Some(pid) = m.pid() else {
            return Err(Error::Conflict {
                message: format!("process {name:?} is not running"),
            });
        };
        killpg(Pid::from_raw(pid as i32), sig).map_err(|e| {
            Error::other(
                ire_core::ErrorClass::Fatal,
                format!("sending {signal} to process {name:?} (pid {pid})"),
                Some(Box::new(e)),
            )
        })?;
        let new_run = match sig {
            NixSignal::SIGSTOP | NixSignal::SIGTSTP => Some(Run::Paused { pid }),
            NixSignal::SIGCONT => Some(Run::Running { pid }),
            _ => None,
        };
        if let Some(run) = new_run {
            if m.run != run {
                m.run = run;
                let r = self.to_resource(name, m);
                drop(procs);
                self.emit(ResourceEventType::Modified, r);
            }
        }
        Ok(())
    }

    /// Every process as a resource, ordered by name.
    pub fn resources(&self) -> Vec<Resource> {
        let procs = self.lock();
        procs.iter().map(|(n, m)| self.to_resource(n, m)).collect()
    }

    pub fn resource(&self, name: &str) -> Result<Resource> {
        let procs = self.lock();
        let m = procs
            .get(name)
            .ok_or_else(|| Error::not_found("resource", name))?;
        Ok(self.to_resource(name, m))
    }

    fn to_resource(&self, name: &str, m: &Managed) -> Resource {
        let (phase, reason, message) = match (m.run, &m.last_exit) {
            (Run::Running { pid }, _) => (
                phase::RUNNING,
                String::new(),
                format!("running as pid {pid}"),
            ),
            (Run::Paused { pid }, _) => (
                phase::PAUSED,
                "Stopped".into(),
                format!("pid {pid} is stopped (SIGSTOP)"),
            ),
            (Run::Stopped, Some(e)) => (
                phase::STOPPED,
                e.reason(),
                format!("exited at {}", e.at.to_rfc3339()),
            ),
            (Run::Stopped, None) => (phase::STOPPED, "NotStarted".into(), "never started".into()),
        };
        let id = m
            .pid()
            .or_else(|| m.pids.back().copied())
            .map(|p| p.to_string())
            .unwrap_or_else(|| name.to_owned());
        let mut annotations = ire_core::Labels::new();
        annotations.insert(
            "process.command".into(),
            std::iter::once(m.spec.command.as_str())
                .chain(m.spec.args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" "),
        );
        if let Some(d) = &m.spec.working_dir {
            annotations.insert("process.working-dir".into(), d.display().to_string());
        }
        if let Some(n) = &m.netns {
            annotations.insert(ANNOTATION_NETNS.into(), n.name.clone());
            annotations.insert(ANNOTATION_ADDRESS.into(), n.address.to_string());
        }
        let mut metadata = ire_core::Metadata::new();
        if let Some(pid) = m.pid() {
            metadata.insert("pid".into(), pid.into());
        }
        metadata.insert("starts".into(), m.starts.into());
        if let Some(t) = m.started_at {
            metadata.insert("startedAt".into(), t.to_rfc3339().into());
        }
        Resource {
            key: ResourceKey::new(&self.name, [name]).expect("names are validated key segments"),
            id,
            name: name.to_owned(),
            kind: KIND_PROCESS.into(),
            labels: m.spec.labels.clone(),
            annotations,
            status: ResourceStatus {
                phase: phase.into(),
                conditions: Vec::new(),
                message,
                reason,
            },
            spec: ResourceSpec {
                command: vec![m.spec.command.clone()],
                args: m.spec.args.clone(),
                environment: m.spec.env.clone(),
                health_check: m.spec.health_check.clone(),
                ..Default::default()
            },
            metadata,
        }
    }

    fn emit(&self, type_: ResourceEventType, resource: Resource) {
        // No watcher is fine.
        let _ = self.events.send(ResourceEvent {
            type_,
            resource,
            observed_at: Utc::now(),
        });
    }

    /// A process spec from a generic resource spec (`command[0]` is the program).
    pub fn spec_from_resource_spec(&self, spec: &ResourceSpec) -> Result<ProcessSpec> {
        let mut words = spec.command.iter().chain(spec.args.iter());
        let program = words
            .next()
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| Error::invalid("spec.command", "a process needs a command"))?
            .clone();
        let base: String = std::path::Path::new(&program)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "process".into())
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let procs = self.lock();
        let name = (1..)
            .map(|n| format!("{base}-{n}"))
            .find(|n| !procs.contains_key(n))
            .expect("an unused name exists");
        Ok(ProcessSpec {
            name,
            command: program,
            args: words.cloned().collect(),
            env: spec.environment.clone(),
            working_dir: None,
            labels: Default::default(),
            health_check: spec.health_check.clone(),
            autostart: true,
            network: None,
        })
    }

    /// Overlays the non-empty parts of `spec`; returns whether the process is running
    /// (and so needs a restart for them to apply).
    pub fn update_spec(&self, name: &str, spec: &ResourceSpec) -> Result<bool> {
        let mut procs = self.lock();
        let m = procs
            .get_mut(name)
            .ok_or_else(|| Error::not_found("resource", name))?;
        let mut p = m.spec.clone();
        if let Some((program, rest)) = spec.command.split_first() {
            p.command = program.clone();
            p.args = rest.to_vec();
        }
        if !spec.args.is_empty() {
            if spec.command.is_empty() {
                p.args = spec.args.clone();
            } else {
                p.args.extend(spec.args.iter().cloned());
            }
        }
        p.env.extend(spec.environment.clone());
        if spec.health_check.is_some() {
            p.health_check = spec.health_check.clone();
        }
        p.validate(&format!("process {name:?}"))?;
        let changed = p != m.spec;
        m.spec = p;
        Ok(changed && m.pid().is_some())
    }

    /// Runs `cmd` with the process's environment and working directory.
    pub async fn exec(
        &self,
        name: &str,
        cmd: &[String],
        options: &ExecOptions,
    ) -> Result<ExecResult> {
        let (spec, running, netns) = {
            let procs = self.lock();
            let m = procs
                .get(name)
                .ok_or_else(|| Error::not_found("resource", name))?;
            (m.spec.clone(), m.pid().is_some(), m.netns.clone())
        };
        if !running {
            return Err(Error::Conflict {
                message: format!("process {name:?} is not running"),
            });
        }
        let (program, args) = cmd
            .split_first()
            .ok_or_else(|| Error::invalid("command", "is empty"))?;
        let mut c = in_netns(netns.as_ref(), program);
        c.args(args)
            .envs(&spec.env)
            .envs(&options.env)
            .stdin(if options.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match (&options.working_dir, &spec.working_dir) {
            (Some(d), _) => {
                c.current_dir(d);
            }
            (None, Some(d)) => {
                c.current_dir(d);
            }
            (None, None) => {}
        }
        let mut child = c.spawn().map_err(|e| {
            Error::invalid(
                "command",
                format!("cannot run {program:?} for process {name:?}: {e}"),
            )
        })?;
        let stdin = child.stdin.take();
        let input = options.stdin.clone();
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let limit = options.output_limit();
        let run = async move {
            let feed = async move {
                if let (Some(mut s), Some(bytes)) = (stdin, input) {
                    let _ = s.write_all(&bytes).await;
                    let _ = s.shutdown().await;
                }
            };
            let (_, o, e) = tokio::join!(
                feed,
                crate::output::read_capped(&mut out, limit),
                crate::output::read_capped(&mut err, limit)
            );
            let (o, e) = (o?, e?);
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, o, e))
        };
        let result = match options.timeout {
            Some(t) => tokio::time::timeout(t, run)
                .await
                .map_err(|_| Error::Timeout {
                    operation: format!("exec {:?} for process {name:?}", cmd.join(" ")),
                    after: t,
                })?,
            None => run.await,
        };
        let (status, o, e) =
            result.map_err(|e| Error::unavailable(format!("exec for process {name:?}"), e))?;
        let exit = ExitInfo::from_status(status);
        let exit_code = match (exit.code, exit.signal) {
            (Some(c), _) => i64::from(c),
            (None, Some(s)) => 128 + i64::from(s),
            _ => -1,
        };
        Ok(ExecResult::from_output(o, e, exit_code))
    }

    /// Usage of the process group from `/proc`; CPU over the time since the previous
    /// reading, or over a short fresh interval when there is none.
    pub async fn metrics(&self, name: &str) -> Result<Metrics> {
        let (pid, previous) = {
            let procs = self.lock();
            let m = procs
                .get(name)
                .ok_or_else(|| Error::not_found("resource", name))?;
            (m.pid(), m.last_sample)
        };
        let Some(pid) = pid else {
            return Ok(Metrics {
                timestamp: Utc::now(),
                resource_id: name.to_owned(),
                ..Default::default()
            });
        };
        let read = move || Sample {
            at: Instant::now(),
            usage: procfs::group_usage(i64::from(pid)),
        };
        let fresh_enough = |s: &Sample| {
            s.at.elapsed() >= Duration::from_millis(100)
                && s.at.elapsed() <= Duration::from_secs(60)
        };
        let before = match previous.filter(fresh_enough) {
            Some(s) => s,
            None => {
                let s = tokio::task::spawn_blocking(read)
                    .await
                    .map_err(join_error)?;
                tokio::time::sleep(Duration::from_millis(250)).await;
                s
            }
        };
        let now = tokio::task::spawn_blocking(read)
            .await
            .map_err(join_error)?;
        {
            let mut procs = self.lock();
            if let Some(m) = procs.get_mut(name) {
                if m.pid() == Some(pid) {
                    m.last_sample = Some(now);
                }
            }
        }
        let cores = procfs::cores_between(&before, &now, self.ticks_per_sec);
        let u = now.usage;
        Ok(Metrics {
            timestamp: Utc::now(),
            resource_id: pid.to_string(),
            cpu: CpuMetrics {
                usage_percent: cores * 100.0,
                usage_cores: cores,
            },
            memory: MemoryMetrics {
                usage_bytes: u.rss_bytes,
                limit_bytes: 0,
                usage_percent: 0.0,
            },
            // Processes share the host's network namespace: there are no per-process
            // network counters to report.
            network: Default::default(),
            disk: DiskMetrics {
                read_bytes: u.read_bytes,
                write_bytes: u.write_bytes,
                read_ops: u.read_ops,
                write_ops: u.write_ops,
            },
        })
    }
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::other(
        ire_core::ErrorClass::Retryable,
        format!("reading /proc: {e}"),
        None,
    )
}

/// Signals a process group; a group that is already gone is fine.
fn send_group(pid: u32, sig: NixSignal) {
    if let Err(e) = killpg(Pid::from_raw(pid as i32), sig) {
        if e != nix::errno::Errno::ESRCH {
            tracing::warn!(component = "process-adapter", pid, signal = %sig, error = %e, "signal failed");
        }
    }
}
