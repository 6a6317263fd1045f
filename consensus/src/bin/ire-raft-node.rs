//! One consensus node, for the process tests and the benchmark. `--help` prints the usage.
//!
//! It prints `READY <control-addr>` (or `READY -` without a control port) once it serves,
//! and `JOINED` once a `--join` completed. Logs go to stderr (`RUST_LOG`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ire_consensus::node::{RaftNode, RaftNodeConfig};
use ire_consensus::store::Durability;
use ire_consensus::transport::{NodeId, TlsConfig};

const USAGE: &str = "\
ire-raft-node: one ire consensus node (for tests and benchmarks)

USAGE:
    ire-raft-node --id <ID> --listen <ADDR> --data <DIR> --cookie <SECRET> [OPTIONS]

OPTIONS:
    --id <ID>                 the node's stable raft id
    --listen <ADDR>           where the raft transport listens (host:port)
    --data <DIR>              the node's data directory
    --cookie <SECRET>         the cluster's shared secret
    --bootstrap               make a one-member cluster (a restarted node keeps its membership)
    --join <ID=ADDR,...>      join a running cluster through these seeds (needs the admin token)
    --control <ADDR>          serve the control protocol on ADDR (off by default; needs
                              IRE_RAFT_CONTROL_TOKEN, which clients present with `auth <token>`)
    --durability <MODE>       sync (default: fdatasync, survives a power loss) or relaxed
                              (sled flush only: survives a process crash, not a power loss)
    --tls-ca <FILE>           TLS between nodes: the cluster CA (PEM); with --tls-cert,
    --tls-cert <FILE>         this node's certificate chain (PEM),
    --tls-key <FILE>          its private key (PEM),
    --tls-name <NAME>         and the name every node's certificate carries
    --snapshot-every <N>      build a snapshot every N log entries (default 20000)
    --logs-to-keep <N>        entries kept behind a snapshot (default 1000)
    --election-ms <MS>        shortest election timeout (the longest is twice it)
    --heartbeat-ms <MS>       leader heartbeat interval
    -h, --help                print this help

ENVIRONMENT:
    IRE_RAFT_CONTROL_TOKEN    the control port's credential (required with --control)
    IRE_RAFT_ADMIN_TOKEN      the cluster's admin token: membership changes forwarded to the
                              leader (join, add-learner, promote, remove) must carry it
    RUST_LOG                  log filter (default: warn)

OUTPUT:
    READY <control-addr>      (or `READY -`) once the node serves; JOINED after a --join
";

struct Args {
    id: NodeId,
    listen: SocketAddr,
    data: PathBuf,
    cookie: String,
    bootstrap: bool,
    join: Vec<(NodeId, String)>,
    control: Option<SocketAddr>,
    durability: Durability,
    tls: [Option<String>; 4],
    election_ms: Option<u64>,
    heartbeat_ms: Option<u64>,
    snapshot_every: Option<u64>,
    logs_to_keep: Option<u64>,
}

enum Parsed {
    Run(Box<Args>),
    Help,
}

fn number<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.parse().map_err(|e| format!("{flag} {v:?}: {e}"))
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let mut it = args;
    let (mut id, mut listen, mut data, mut cookie) = (None, None, None, None);
    let mut a = Args {
        id: 0,
        listen: "127.0.0.1:0".parse().expect("literal"),
        data: PathBuf::new(),
        cookie: String::new(),
        bootstrap: false,
        join: Vec::new(),
        control: None,
        durability: Durability::Sync,
        tls: Default::default(),
        election_ms: None,
        heartbeat_ms: None,
        snapshot_every: None,
        logs_to_keep: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--id" => id = Some(number(&flag, value()?)?),
            "--listen" => listen = Some(number(&flag, value()?)?),
            "--data" => data = Some(PathBuf::from(value()?)),
            "--cookie" => cookie = Some(value()?),
            "--bootstrap" => a.bootstrap = true,
            "--control" => a.control = Some(number(&flag, value()?)?),
            "--durability" => {
                a.durability = match value()?.as_str() {
                    "sync" => Durability::Sync,
                    "relaxed" => Durability::Relaxed,
                    other => {
                        return Err(format!(
                            "--durability {other:?}: expected `sync` or `relaxed`"
                        ))
                    }
                }
            }
            "--tls-ca" => a.tls[0] = Some(value()?),
            "--tls-cert" => a.tls[1] = Some(value()?),
            "--tls-key" => a.tls[2] = Some(value()?),
            "--tls-name" => a.tls[3] = Some(value()?),
            "--election-ms" => a.election_ms = Some(number(&flag, value()?)?),
            "--heartbeat-ms" => a.heartbeat_ms = Some(number(&flag, value()?)?),
            "--snapshot-every" => a.snapshot_every = Some(number(&flag, value()?)?),
            "--logs-to-keep" => a.logs_to_keep = Some(number(&flag, value()?)?),
            "--join" => {
                for seed in value()?.split(',') {
                    let (id, addr) = seed
                        .split_once('=')
                        .ok_or_else(|| format!("--join: {seed:?} is not id=addr"))?;
                    a.join
                        .push((number("--join", id.to_string())?, addr.to_string()));
                }
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    a.id = id.ok_or("--id is required (see --help)")?;
    a.listen = listen.ok_or("--listen is required (see --help)")?;
    a.data = data.ok_or("--data is required (see --help)")?;
    a.cookie = cookie.ok_or("--cookie is required (see --help)")?;
    if a.tls.iter().any(Option::is_some) && a.tls.iter().any(Option::is_none) {
        return Err("TLS needs all of --tls-ca, --tls-cert, --tls-key and --tls-name".into());
    }
    Ok(Parsed::Run(Box::new(a)))
}

fn secret(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Run(a)) => a,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return;
        }
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
    if let Err(e) = runtime.block_on(run(*args)) {
        eprintln!("ire-raft-node: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let control_token = match args.control {
        Some(_) => Some(secret("IRE_RAFT_CONTROL_TOKEN").ok_or(
            "--control needs a credential: set IRE_RAFT_CONTROL_TOKEN (clients send `auth <token>`)",
        )?),
        None => None,
    };
    let mut config = RaftNodeConfig::new(args.id, args.listen, &args.data, args.cookie);
    config.admin_token = secret("IRE_RAFT_ADMIN_TOKEN");
    config.store = config.store.durability(args.durability);
    if let [Some(ca), Some(cert), Some(key), Some(name)] = &args.tls {
        config.tls = Some(
            TlsConfig::from_pem_files(ca.as_ref(), cert.as_ref(), key.as_ref(), name)
                .map_err(|e| e.to_string())?,
        );
    }
    if let Some(ms) = args.election_ms {
        config.timings.election_timeout_min = Duration::from_millis(ms);
        config.timings.election_timeout_max = Duration::from_millis(ms * 2);
    }
    if let Some(ms) = args.heartbeat_ms {
        config.timings.heartbeat_interval = Duration::from_millis(ms);
    }
    if let Some(n) = args.snapshot_every {
        config.timings.snapshot_every = n;
    }
    if let Some(n) = args.logs_to_keep {
        config.timings.logs_to_keep = n;
    }
    let node = RaftNode::start(config).await.map_err(|e| e.to_string())?;
    if args.bootstrap {
        node.bootstrap().await.map_err(|e| e.to_string())?;
    }
    match (args.control, control_token) {
        (Some(addr), Some(token)) => {
            let control = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("control port {addr}: {e}"))?;
            let control_addr = control.local_addr().map_err(|e| e.to_string())?;
            tokio::spawn(ire_consensus::control::serve(control, node.clone(), token));
            println!("READY {control_addr}");
        }
        _ => println!("READY -"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn help_and_bad_arguments_are_answered_clearly() {
        assert!(matches!(parse(&["--help"]), Ok(Parsed::Help)));
        assert!(matches!(parse(&["--id", "1", "-h"]), Ok(Parsed::Help)));
        let e = parse(&["--id", "x"]).err().unwrap();
        assert!(e.contains("--id \"x\""), "{e}");
        let e = parse(&["--id", "1", "--listen", "127.0.0.1:1", "--data", "d"])
            .err()
            .unwrap();
        assert!(e.contains("--cookie is required"), "{e}");
        let e = parse(&["--durability", "fast"]).err().unwrap();
        assert!(e.contains("sync") && e.contains("relaxed"), "{e}");
        let base = [
            "--id",
            "1",
            "--listen",
            "127.0.0.1:1",
            "--data",
            "d",
            "--cookie",
            "c",
        ];
        let Ok(Parsed::Run(a)) = parse(&base) else {
            panic!("the minimal arguments parse")
        };
        assert!(a.control.is_none(), "the control port is off by default");
        let mut tls = base.to_vec();
        tls.extend(["--tls-ca", "ca.pem"]);
        assert!(parse(&tls).err().unwrap().contains("--tls-cert"));
    }
}
