//! `ire resources`: what an adapter sees, with health, for writing selectors.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::join_all;
use ire_core::Monitor;
use serde::Serialize;

use super::output::{self, Format};
use super::{exit, load_config};
use crate::campaign::model::Selector;
use crate::config::ConfigSources;
use crate::wiring::Node;

/// `ire resources`.
#[derive(Debug, clap::Args)]
pub struct ResourcesArgs {
    /// The adapter instance (default: every adapter).
    #[arg(long)]
    pub adapter: Option<String>,
    /// Label selectors `key=value`; repeatable.
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Name patterns (`redis-*`); repeatable.
    #[arg(long = "name")]
    pub names: Vec<String>,
    /// A process fleet file for the `local` adapter (started to be listed, then stopped).
    #[arg(long)]
    pub fleet: Option<PathBuf>,
}

#[derive(Serialize)]
struct Row {
    key: String,
    name: String,
    kind: String,
    phase: String,
    healthy: bool,
    labels: ire_core::Labels,
}

/// Parses `key=value` selectors.
pub fn parse_labels(labels: &[String]) -> Result<ire_core::Labels, String> {
    labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("{l:?} is not key=value"))
        })
        .collect()
}

/// Runs `ire resources`.
pub async fn run(args: ResourcesArgs, sources: &ConfigSources, out: Format) -> u8 {
    let mut config = match load_config(sources).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(f) = &args.fleet {
        config = config.with_fleet(f);
    }
    let labels = match parse_labels(&args.labels) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: --label {e}");
            return exit::INVALID;
        }
    };
    let selector = Selector {
        labels,
        names: args.names.clone(),
        ..Selector::default()
    };
    let node = match Node::start(config.with_detected_docker()).await {
        Ok(n) => Arc::new(n),
        Err(e) => return super::fail("starting the embedded node", e.chain_message()),
    };
    let mut rows = Vec::new();
    let mut code = exit::OK;
    for (name, adapter) in &node.adapters {
        if args.adapter.as_ref().is_some_and(|a| a != name) {
            continue;
        }
        match adapter.list_resources(&selector.to_filter()).await {
            Err(e) => {
                eprintln!("error: adapter {name}: {e}");
                code = exit::ERROR;
            }
            Ok(list) => {
                let health = join_all(list.iter().map(|r| node.monitor.check_health(r))).await;
                for (r, h) in list.into_iter().zip(health) {
                    rows.push(Row {
                        key: r.key.to_string(),
                        name: r.name.clone(),
                        kind: r.kind.clone(),
                        phase: r.status.phase.clone(),
                        healthy: h.map(|h| h.is_healthy()).unwrap_or(false),
                        labels: r.labels.clone(),
                    });
                }
            }
        }
    }
    if let Some(a) = &args.adapter {
        if !node.adapters.contains_key(a) {
            eprintln!("error: no adapter named {a:?}");
            code = exit::INVALID;
        }
    }
    output::print(out, &rows, || {
        output::table(
            &["key", "kind", "phase", "healthy", "labels"],
            rows.iter()
                .map(|r| {
                    vec![
                        r.key.clone(),
                        r.kind.clone(),
                        r.phase.clone(),
                        r.healthy.to_string(),
                        r.labels
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(","),
                    ]
                })
                .collect(),
        )
    });
    if let Err(e) = node.shutdown().await {
        eprintln!("warning: shutting the node down: {e}");
    }
    code
}
