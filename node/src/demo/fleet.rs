//! The demo fleet: four `ire demo-service` processes on free loopback ports, each with an
//! HTTP health check, run by a process adapter named `demo`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ire_core::{Error, ErrorClass, HealthCheckConfig, Result};

use crate::config::AdapterSection;
use crate::wiring::Node;

/// The services: (name, tier).
pub const SERVICES: &[(&str, &str)] = &[
    ("frontend", "frontend"),
    ("api", "api"),
    ("cache", "cache"),
    ("worker", "worker"),
];

/// The fleet's layout.
#[derive(Debug, Clone)]
pub struct DemoFleet {
    program: PathBuf,
    ports: BTreeMap<String, u16>,
}

impl DemoFleet {
    /// A fleet served by `program`, each service on a free port.
    pub fn new(program: &Path) -> Result<Self> {
        let mut ports = BTreeMap::new();
        // Ports are taken from the kernel (bound to port 0) and released for the service
        // to bind; all are held at once so that they are distinct.
        let held: Vec<std::net::TcpListener> = SERVICES
            .iter()
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<_>>()
            .map_err(|e| {
                Error::other(ErrorClass::Fatal, format!("finding free ports: {e}"), None)
            })?;
        for ((name, _), l) in SERVICES.iter().zip(&held) {
            let port = l
                .local_addr()
                .map_err(|e| {
                    Error::other(ErrorClass::Fatal, format!("finding free ports: {e}"), None)
                })?
                .port();
            ports.insert((*name).to_owned(), port);
        }
        drop(held);
        Ok(DemoFleet {
            program: program.to_path_buf(),
            ports,
        })
    }

    /// The port of a service.
    pub fn port_of(&self, name: &str) -> u16 {
        self.ports[name]
    }

    /// The process adapter's section: the services inline, started at once.
    pub fn adapter_section(&self) -> AdapterSection {
        let processes: Vec<serde_json::Value> = SERVICES
            .iter()
            .map(|(name, tier)| {
                let port = self.ports[*name];
                let health = HealthCheckConfig {
                    type_: "http".into(),
                    endpoint: format!("http://127.0.0.1:{port}/"),
                    interval: Duration::from_millis(200),
                    timeout: Duration::from_millis(500),
                    retries: 1,
                };
                serde_json::json!({
                    "name": name,
                    "command": self.program.display().to_string(),
                    "args": ["demo-service", "--name", name, "--port", port.to_string()],
                    "labels": {"app": "demo", "tier": tier},
                    "health-check": health,
                    "autostart": true,
                })
            })
            .collect();
        let mut config = serde_json::Map::new();
        config.insert("processes".into(), processes.into());
        config.insert("stop-grace".into(), "2s".into());
        AdapterSection {
            type_: "process".into(),
            config,
            optional: false,
        }
    }

    /// Waits until every service answers its health check.
    pub async fn wait_healthy(&self, node: &Node, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        while !super::all_healthy(node, "demo").await {
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    operation: "waiting for the demo services to answer".into(),
                    after: within,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

/// The services' current pids, with their names.
pub async fn service_pids(node: &Node) -> Vec<(u32, String)> {
    let Ok(a) = node.adapter("demo") else {
        return Vec::new();
    };
    a.list_resources(&Default::default())
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| r.id.parse().ok().map(|pid| (pid, r.name.clone())))
        .collect()
}

/// Which of these processes still run the demo service (a pid reused by another program
/// does not count; a zombie does not run).
pub fn still_running(pids: &[(u32, String)]) -> Vec<(u32, String)> {
    pids.iter()
        .filter(|(pid, name)| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'));
            cmdline.contains("demo-service") && cmdline.contains(name.as_str()) && !zombie
        })
        .cloned()
        .collect()
}
