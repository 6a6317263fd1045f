//! Steady-state probes (http, tcp, exec) and the abort conditions over their history.
//!
//! Probes run once before the first step (a failure means no fault is injected), in rounds
//! every `settings.probe-interval` while the campaign runs, and once after it. The
//! [`AbortTracker`] keeps, per probe, since when it has been failing without a pass, and
//! says when an `abort-when` condition holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use ire_actors::monitor::http_client::{self, HttpUrl};
use ire_core::{EnvironmentAdapter, ExecOptions};
use serde::Serialize;

use super::model::{AbortCondition, Campaign, ExecProbe, HttpProbe, Probe, TcpProbe};

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeResult {
    /// The probe.
    pub name: String,
    /// True when it passed.
    pub ok: bool,
    /// What was seen.
    pub message: String,
}

/// Checks an `http://` URL for a probe; the error says what is wrong.
pub fn parse_http_url(url: &str) -> Result<HttpUrl, String> {
    if url.starts_with("https://") {
        return Err(format!(
            "{url:?}: https probes are not supported yet; probe the service over http"
        ));
    }
    HttpUrl::parse(url, "probe url").map_err(|e| e.to_string())
}

/// Splits `host:port` (`[::1]:80` included).
pub fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), port.parse().ok()?))
}

/// An exec probe's target: its adapter and selector.
type ProbeTarget = (Arc<dyn EnvironmentAdapter>, ire_core::ResourceFilter);

/// Runs the probes of a campaign against the node's adapters.
#[derive(Clone)]
pub struct Prober {
    probes: Arc<Vec<Probe>>,
    /// For exec probes with a target: the target's adapter and the keys of its resources.
    targets: Arc<BTreeMap<String, ProbeTarget>>,
}

impl Prober {
    /// A prober of the campaign's probes; `adapter` finds an adapter instance by name.
    pub fn new(
        campaign: &Campaign,
        adapter: impl Fn(&str) -> Option<Arc<dyn EnvironmentAdapter>>,
    ) -> Self {
        let mut targets = BTreeMap::new();
        for p in &campaign.steady_state {
            if let Some(t) = p.exec.as_ref().and_then(|e| e.target.as_ref()) {
                if let Some(def) = campaign.targets.get(t) {
                    if let Some(a) = adapter(&def.adapter) {
                        targets.insert(t.clone(), (a, def.selector.to_filter()));
                    }
                }
            }
        }
        Prober {
            probes: Arc::new(campaign.steady_state.clone()),
            targets: Arc::new(targets),
        }
    }

    /// True when there is nothing to probe.
    pub fn is_empty(&self) -> bool {
        self.probes.is_empty()
    }

    /// Runs every probe once, concurrently.
    pub async fn round(&self) -> Vec<ProbeResult> {
        join_all(self.probes.iter().map(|p| self.run(p))).await
    }

    async fn run(&self, p: &Probe) -> ProbeResult {
        let outcome = if let Some(h) = &p.http {
            http(h).await
        } else if let Some(t) = &p.tcp {
            tcp(t).await
        } else if let Some(e) = &p.exec {
            self.exec(e).await
        } else {
            Err("the probe has no http, tcp or exec".into())
        };
        match outcome {
            Ok(message) => ProbeResult {
                name: p.name.clone(),
                ok: true,
                message,
            },
            Err(message) => ProbeResult {
                name: p.name.clone(),
                ok: false,
                message,
            },
        }
    }

    async fn exec(&self, e: &ExecProbe) -> Result<String, String> {
        let argv = e.command.argv();
        match &e.target {
            None => local_exec(&argv, e.exit_code, e.timeout.get()).await,
            Some(t) => {
                let (adapter, filter) = self
                    .targets
                    .get(t)
                    .ok_or_else(|| format!("target {t:?} has no adapter on this node"))?;
                let resources = adapter
                    .list_resources(filter)
                    .await
                    .map_err(|e| format!("listing target {t}: {e}"))?;
                if resources.is_empty() {
                    return Err(format!("target {t} matches no resource"));
                }
                let opts = ExecOptions {
                    timeout: Some(e.timeout.get()),
                    ..ExecOptions::default()
                };
                let runs = resources
                    .iter()
                    .map(|r| adapter.exec_in_resource(r.key.as_str(), &argv, &opts));
                for (r, out) in resources.iter().zip(join_all(runs).await) {
                    match out {
                        Ok(o) if o.exit_code == i64::from(e.exit_code) => {}
                        Ok(o) => {
                            return Err(format!(
                                "{}: exit code {} (expected {})",
                                r.key, o.exit_code, e.exit_code
                            ))
                        }
                        Err(err) => return Err(format!("{}: {err}", r.key)),
                    }
                }
                Ok(format!(
                    "exit code {} in {} resources",
                    e.exit_code,
                    resources.len()
                ))
            }
        }
    }
}

async fn http(h: &HttpProbe) -> Result<String, String> {
    let url = parse_http_url(&h.url)?;
    let resp = http_client::get(&url, &[], h.timeout.get())
        .await
        .map_err(|e| e.to_string())?;
    let ok = match &h.status {
        Some(s) => s.accepts(resp.status),
        None => (200..400).contains(&resp.status),
    };
    if !ok {
        return Err(format!("{} answered {}", h.url, resp.status));
    }
    if let Some(want) = &h.body_contains {
        if !String::from_utf8_lossy(&resp.body).contains(want.as_str()) {
            return Err(format!("{} answered without {want:?}", h.url));
        }
    }
    Ok(format!("{} answered {}", h.url, resp.status))
}

async fn tcp(t: &TcpProbe) -> Result<String, String> {
    let (host, port) =
        split_host_port(&t.address).ok_or_else(|| format!("{:?} is not host:port", t.address))?;
    match tokio::time::timeout(
        t.timeout.get(),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(format!("{} accepts connections", t.address)),
        Ok(Err(e)) => Err(format!("{}: {e}", t.address)),
        Err(_) => Err(format!(
            "{}: no connection within {:?}",
            t.address,
            t.timeout.get()
        )),
    }
}

async fn local_exec(argv: &[String], want: i32, timeout: Duration) -> Result<String, String> {
    let (prog, args) = argv.split_first().ok_or("empty command")?;
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| format!("{prog}: {e}"))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            let code = out.status.code().unwrap_or(-1);
            if code == want {
                Ok(format!("{prog} exited {code}"))
            } else {
                let err = String::from_utf8_lossy(&out.stderr);
                Err(format!(
                    "{prog} exited {code} (expected {want}){}",
                    if err.trim().is_empty() {
                        String::new()
                    } else {
                        format!(": {}", err.trim())
                    }
                ))
            }
        }
        Ok(Err(e)) => Err(format!("{prog}: {e}")),
        Err(_) => Err(format!("{prog} did not exit within {timeout:?}")),
    }
}

/// Why the campaign must stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbortReason(pub String);

/// Follows probe results and task failures against the abort conditions.
#[derive(Debug)]
pub struct AbortTracker {
    conditions: Vec<AbortCondition>,
    /// Per probe: since when it has failed without a pass, and its last message.
    failing_since: BTreeMap<String, (Instant, String)>,
    failed_tasks: u32,
}

impl AbortTracker {
    /// A tracker of these conditions.
    pub fn new(conditions: &[AbortCondition]) -> Self {
        AbortTracker {
            conditions: conditions.to_vec(),
            failing_since: BTreeMap::new(),
            failed_tasks: 0,
        }
    }

    /// Takes a round of results seen at `now`; returns the reason to abort, if any.
    pub fn observe(&mut self, results: &[ProbeResult], now: Instant) -> Option<AbortReason> {
        for r in results {
            if r.ok {
                self.failing_since.remove(&r.name);
            } else {
                self.failing_since
                    .entry(r.name.clone())
                    .and_modify(|e| e.1 = r.message.clone())
                    .or_insert((now, r.message.clone()));
            }
        }
        self.check(now)
    }

    /// Counts a failed task; returns the reason to abort, if any.
    pub fn task_failed(&mut self, now: Instant) -> Option<AbortReason> {
        self.failed_tasks += 1;
        self.check(now)
    }

    fn check(&self, now: Instant) -> Option<AbortReason> {
        for c in &self.conditions {
            match c {
                AbortCondition::SteadyStateFailsFor(d) => {
                    for (name, (since, msg)) in &self.failing_since {
                        if now.duration_since(*since) >= d.get() {
                            return Some(AbortReason(format!(
                                "steady state: probe {name} has failed for {} ({msg}); abort-when steady-state-fails-for {d}",
                                human(now.duration_since(*since))
                            )));
                        }
                    }
                }
                AbortCondition::ProbeFails(p) => {
                    if let Some((since, msg)) = self.failing_since.get(&p.probe) {
                        if now.duration_since(*since) >= p.for_.get() {
                            return Some(AbortReason(format!(
                                "probe {} has failed for {} ({msg}); abort-when probe-fails for {}",
                                p.probe,
                                human(now.duration_since(*since)),
                                p.for_
                            )));
                        }
                    }
                }
                AbortCondition::FailedTasksOver(n) => {
                    if self.failed_tasks > *n {
                        return Some(AbortReason(format!(
                            "{} tasks failed; abort-when failed-tasks-over {n}",
                            self.failed_tasks
                        )));
                    }
                }
            }
        }
        None
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::model::{Dur, ProbeFails};

    fn r(name: &str, ok: bool) -> ProbeResult {
        ProbeResult {
            name: name.into(),
            ok,
            message: if ok { "fine".into() } else { "refused".into() },
        }
    }

    #[test]
    fn a_failure_must_last_its_window_and_a_pass_resets_it() {
        let mut t = AbortTracker::new(&[AbortCondition::SteadyStateFailsFor(Dur(
            Duration::from_secs(10),
        ))]);
        let t0 = Instant::now();
        assert!(t.observe(&[r("api", false)], t0).is_none());
        assert!(t
            .observe(&[r("api", false)], t0 + Duration::from_secs(5))
            .is_none());
        assert!(t
            .observe(&[r("api", true)], t0 + Duration::from_secs(6))
            .is_none());
        assert!(t
            .observe(&[r("api", false)], t0 + Duration::from_secs(12))
            .is_none());
        let why = t
            .observe(&[r("api", false)], t0 + Duration::from_secs(22))
            .expect("failing for 10 s");
        assert!(why.0.contains("probe api has failed for 10s"), "{}", why.0);
    }

    #[test]
    fn probe_fails_names_one_probe_and_failed_tasks_count() {
        let mut t = AbortTracker::new(&[
            AbortCondition::ProbeFails(ProbeFails {
                probe: "db".into(),
                for_: Dur(Duration::ZERO),
            }),
            AbortCondition::FailedTasksOver(1),
        ]);
        let now = Instant::now();
        assert!(t.observe(&[r("api", false)], now).is_none());
        assert!(t.observe(&[r("db", false)], now).is_some());
        let mut t = AbortTracker::new(&[AbortCondition::FailedTasksOver(1)]);
        assert!(t.task_failed(now).is_none());
        assert!(t.task_failed(now).is_some());
    }

    #[test]
    fn host_port_split() {
        assert_eq!(
            split_host_port("127.0.0.1:80"),
            Some(("127.0.0.1".into(), 80))
        );
        assert_eq!(split_host_port("[::1]:8080"), Some(("::1".into(), 8080)));
        assert_eq!(split_host_port("nohost"), None);
        assert_eq!(split_host_port(":80"), None);
    }
}
