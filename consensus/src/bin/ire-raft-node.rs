//! One consensus node, for the process tests and the benchmark.
//!
//! ```text
//! ire-raft-node --id 1 --listen 127.0.0.1:7101 --data /tmp/n1 --cookie secret \
//!     [--bootstrap | --join 2=127.0.0.1:7102,3=127.0.0.1:7103] [--control 127.0.0.1:0]
//!     [--election-ms 300] [--heartbeat-ms 100]
//! ```
//!
//! It prints `READY <control-addr>` once its control port (see `ire_consensus::control`)
//! listens, and `JOINED` once a `--join` completed. Logs go to stderr (`RUST_LOG`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ire_consensus::node::{RaftNode, RaftNodeConfig};
use ire_consensus::transport::NodeId;

struct Args {
    id: NodeId,
    listen: SocketAddr,
    data: PathBuf,
    cookie: String,
    bootstrap: bool,
    join: Vec<(NodeId, String)>,
    control: SocketAddr,
    election_ms: Option<u64>,
    heartbeat_ms: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut id, mut listen, mut data, mut cookie) = (None, None, None, None);
    let mut args = Args {
        id: 0,
        listen: "127.0.0.1:0".parse().expect("literal"),
        data: PathBuf::new(),
        cookie: String::new(),
        bootstrap: false,
        join: Vec::new(),
        control: "127.0.0.1:0".parse().expect("literal"),
        election_ms: None,
        heartbeat_ms: None,
    };
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--id" => id = Some(value("--id")?.parse().map_err(|e| format!("--id: {e}"))?),
            "--listen" => {
                listen = Some(
                    value("--listen")?
                        .parse()
                        .map_err(|e| format!("--listen: {e}"))?,
                )
            }
            "--data" => data = Some(PathBuf::from(value("--data")?)),
            "--cookie" => cookie = Some(value("--cookie")?),
            "--bootstrap" => args.bootstrap = true,
            "--control" => {
                args.control = value("--control")?
                    .parse()
                    .map_err(|e| format!("--control: {e}"))?
            }
            "--election-ms" => {
                args.election_ms = Some(
                    value("--election-ms")?
                        .parse()
                        .map_err(|e| format!("--election-ms: {e}"))?,
                )
            }
            "--heartbeat-ms" => {
                args.heartbeat_ms = Some(
                    value("--heartbeat-ms")?
                        .parse()
                        .map_err(|e| format!("--heartbeat-ms: {e}"))?,
                )
            }
            "--join" => {
                for seed in value("--join")?.split(',') {
                    let (id, addr) = seed
                        .split_once('=')
                        .ok_or_else(|| format!("--join: {seed:?} is not id=addr"))?;
                    args.join.push((
                        id.parse().map_err(|e| format!("--join {seed:?}: {e}"))?,
                        addr.to_string(),
                    ));
                }
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    args.id = id.ok_or("--id is required")?;
    args.listen = listen.ok_or("--listen is required")?;
    args.data = data.ok_or("--data is required")?;
    args.cookie = cookie.ok_or("--cookie is required")?;
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ire-raft-node: {e}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("ire-raft-node: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let mut config = RaftNodeConfig::new(args.id, args.listen, &args.data, args.cookie);
    if let Some(ms) = args.election_ms {
        config.timings.election_timeout_min = Duration::from_millis(ms);
        config.timings.election_timeout_max = Duration::from_millis(ms * 2);
    }
    if let Some(ms) = args.heartbeat_ms {
        config.timings.heartbeat_interval = Duration::from_millis(ms);
    }
    let node = RaftNode::start(config).await.map_err(|e| e.to_string())?;
    if args.bootstrap {
        node.bootstrap().await.map_err(|e| e.to_string())?;
    }
    let control = tokio::net::TcpListener::bind(args.control)
        .await
        .map_err(|e| format!("control port {}: {e}", args.control))?;
    let control_addr = control.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(ire_consensus::control::serve(control, node.clone()));
    println!("READY {control_addr}");
    if !args.join.is_empty() {
        node.join(&args.join)
            .await
            .map_err(|e| format!("join: {e}"))?;
        println!("JOINED");
    }
    // Run until killed; SIGTERM/SIGINT end the process through the default handlers.
    std::future::pending::<()>().await;
    Ok(())
}
