//! `ire demo`: everything on one machine with nothing installed but ire.
//!
//! 1. An embedded node in a temporary directory (single-node raft: leases, ledger, store).
//! 2. A fleet of four local HTTP services (`frontend`, `api`, `cache`, `worker`) started
//!    through the process adapter; the `ire` binary serves them (`ire demo-service`).
//! 3. NecroOps heals the fleet: a service unhealthy for a second is restarted.
//! 4. A GrimOps campaign: SIGKILL the cache (NecroOps brings it back), then pause the api
//!    for a few seconds (a sustained fault: it holds the api's lease, so NecroOps leaves it
//!    alone, and the engine reverts it at the end of its duration). The frontend must keep
//!    answering throughout (the steady state).
//! 5. The report: per step and resource, time to detect and time to recover (MTTR), and the
//!    HTML report's path. Every process is stopped, and that is checked.

pub mod fleet;
pub mod service;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ire_core::{Error, Monitor, Result};

use crate::apps::grimops::{self, Presentation};
use crate::apps::necroops::{HealEvent, HealPolicy, HealSummary, NecroOps};
use crate::campaign::model::Selector;
use crate::campaign::{CampaignReport, Executor, RunOptions, Source};
use crate::config::NodeConfig;
use crate::wiring::Node;

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The `ire` program that serves the demo services (the running binary by default).
    pub program: PathBuf,
    /// Progress bars on stderr.
    pub progress: bool,
    /// Where the HTML report goes (default: the reports directory).
    pub report: Option<PathBuf>,
    /// The reports directory.
    pub report_dir: PathBuf,
    /// Seed of the campaign's random choices.
    pub seed: Option<u64>,
    /// How long the api stays paused.
    pub pause_for: Duration,
    /// Print what NecroOps does as it happens.
    pub heal_log: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            program: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("ire")),
            progress: false,
            report: None,
            report_dir: std::env::temp_dir().join("ire-reports"),
            seed: None,
            pause_for: Duration::from_secs(4),
            heal_log: false,
        }
    }
}

/// What the demo did.
#[derive(Debug)]
pub struct DemoOutcome {
    /// The campaign's report.
    pub report: CampaignReport,
    /// Where the HTML report was written.
    pub html: Option<PathBuf>,
    /// What NecroOps did.
    pub heal: HealSummary,
    /// NecroOps' events, in order.
    pub heal_events: Vec<HealEvent>,
    /// Demo services still running after the end (must be empty), as (pid, name).
    pub leftovers: Vec<(u32, String)>,
    /// The services' last pids, with their names (all stopped at the end).
    pub services: Vec<(u32, String)>,
    /// From start to end.
    pub wall: Duration,
}

/// The demo campaign (the frontend's port is filled in).
pub fn campaign_text(frontend_port: u16, pause_for: Duration) -> String {
    format!(
        r#"name: demo-resilience
description: >
  Kill the cache and pause the api while NecroOps heals; the frontend must keep
  answering throughout.
targets:
  cache:
    adapter: demo
    selector: {{labels: {{app: demo, tier: cache}}}}
    mode: one
  api:
    adapter: demo
    selector: {{labels: {{app: demo, tier: api}}}}
    mode: one
steady-state:
  - name: frontend-answers
    http: {{url: "http://127.0.0.1:{frontend_port}/", status: 200, timeout: 1s}}
abort-when:
  - steady-state-fails-for: 5s
steps:
  - name: kill-cache
    plugin: kill
    target: cache
    config: {{signal: SIGKILL}}
  - name: cache-recovers
    plugin: wait-healthy
    target: cache
    config: {{timeout: 20s}}
  - name: pause-api
    plugin: pause
    target: api
    duration: {pause}
  - name: api-recovers
    plugin: wait-healthy
    target: api
    config: {{timeout: 20s}}
settings:
  probe-interval: 500ms
  recovery-timeout: 20s
"#,
        pause = humantime::format_duration(pause_for)
    )
}

/// Runs the demo (see the module docs).
pub async fn run(options: DemoOptions) -> Result<DemoOutcome> {
    let started = Instant::now();
    let fleet = fleet::DemoFleet::new(&options.program)?;
    let mut config = NodeConfig::defaults();
    config.node.name = "demo".into();
    config.adapters.clear();
    config
        .adapters
        .insert("demo".into(), fleet.adapter_section());
    config.monitor.probe_interval = Duration::from_millis(200);
    config.lease.ttl = Duration::from_secs(5);
    let node = Arc::new(Node::start(config).await?);
    let outcome = run_on(&node, &fleet, &options).await;
    // Stop NecroOps first (in run_on), then the node: the adapter stops every service.
    let pids = fleet::service_pids(&node).await;
    node.shutdown().await?;
    let leftovers = fleet::still_running(&pids);
    let (report, html, heal, heal_events) = outcome?;
    Ok(DemoOutcome {
        report,
        html,
        heal,
        heal_events,
        services: pids,
        leftovers,
        wall: started.elapsed(),
    })
}

type RunOn = (CampaignReport, Option<PathBuf>, HealSummary, Vec<HealEvent>);

async fn run_on(
    node: &Arc<Node>,
    fleet: &fleet::DemoFleet,
    options: &DemoOptions,
) -> Result<RunOn> {
    fleet.wait_healthy(node, Duration::from_secs(20)).await?;

    let mut policy = HealPolicy::new(
        "demo",
        Selector {
            labels: [("app".to_owned(), "demo".to_owned())].into(),
            ..Selector::default()
        },
    );
    policy.unhealthy_for = Duration::from_secs(1);
    policy.interval = Duration::from_millis(500);
    policy.healthy_within = Duration::from_secs(10);
    policy.backoff_initial = Duration::from_millis(500);
    policy.backoff_max = Duration::from_secs(5);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let necro = NecroOps::new(node.clone(), policy, Some(tx))?;
    let stop = tokio_util::sync::CancellationToken::new();
    let healing = tokio::spawn(necro.run(stop.clone()));
    let log = options.heal_log;
    let collected = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(e) = rx.recv().await {
            if log {
                eprintln!("necroops: {e}");
            }
            all.push(e);
        }
        all
    });

    let executor = Executor::new(node.clone());
    let source = Source::new(
        "demo-campaign.yaml",
        campaign_text(fleet.port_of("frontend"), options.pause_for),
    );
    let prepared = executor
        .prepare(source)
        .map_err(|d| Error::invalid("the demo campaign", d.to_string()))?;
    let presentation = Presentation {
        progress: options.progress,
        report: options.report.clone(),
        report_dir: options.report_dir.clone(),
        handle_ctrl_c: true,
    };
    let run = grimops::run(
        &executor,
        prepared,
        RunOptions {
            principal: "demo".into(),
            seed: options.seed,
            id: None,
        },
        &presentation,
    )
    .await;

    stop.cancel();
    let heal = healing
        .await
        .map_err(|e| Error::other(ire_core::ErrorClass::Fatal, format!("NecroOps: {e}"), None))??;
    let heal_events = collected.await.unwrap_or_default();
    let outcome = run?;
    Ok((outcome.report, outcome.html, heal, heal_events))
}

/// True when every service of the fleet is healthy.
pub async fn all_healthy(node: &Node, adapter: &str) -> bool {
    let Ok(a) = node.adapter(adapter) else {
        return false;
    };
    let Ok(list) = a.list_resources(&Default::default()).await else {
        return false;
    };
    for r in &list {
        match node.monitor.check_health(r).await {
            Ok(h) if h.is_healthy() => {}
            _ => return false,
        }
    }
    !list.is_empty()
}
