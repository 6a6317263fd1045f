//! Consensus benchmark: three `ire-raft-node` processes on loopback over the real
//! ractor_cluster transport, sled flushing every log append as in production.
//!
//! ```text
//! cargo build --release -p ire-consensus --bin ire-raft-node --example bench_consensus
//! target/release/examples/bench_consensus [--dir target/bench-consensus] [--secs 5] [--records 100000]
//! ```
//!
//! Clients speak the control line protocol to the leader's process (one TCP connection per
//! client, one request in flight per connection), so every figure includes a loopback round
//! trip and the line protocol; the single-client loop is also run inside the leader's and a
//! follower's node (`bench-locks`), through the client API the node's actors use. Prints an
//! fsync calibration (4 KiB write + fdatasync) and a transport calibration (an empty
//! ractor_cluster call) beside the table: a commit is bounded by two serialized flushes and
//! one round trip, and this machine's disk speed varies from run to run.
//!
//! With `BENCH_NODE_LOGS=<dir>` the nodes' logs go to `<dir>/n<id>.log` (filtered by
//! `RUST_LOG`, which the nodes inherit) instead of being discarded.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ire_consensus::control::ControlClient;
use ire_core::testsuite::process_stats::load_average;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const COOKIE: &str = "bench-cookie";
/// The nodes' control credential and admin token.
const CONTROL_TOKEN: &str = "bench-control";
const ADMIN_TOKEN: &str = "bench-admin";

struct Options {
    dir: PathBuf,
    secs: u64,
    records: u64,
    durability: String,
}

const USAGE: &str = "\
bench_consensus: three ire-raft-node processes on loopback; prints latency, throughput,
failover and memory figures (see docs/benchmarks.md, section Consensus)

USAGE:
    bench_consensus [--dir <DIR>] [--secs <N>] [--records <N>] [--durability <sync|relaxed>]

OPTIONS:
    --dir <DIR>            where the nodes keep their data (default target/bench-consensus;
                           emptied first)
    --secs <N>             seconds per throughput run (default 5)
    --records <N>          ledger records written in the ingest run (default 100000)
    --durability <MODE>    the nodes' durability (default sync: fdatasync before every
                           acknowledgement; relaxed: sled's flush only)
    -h, --help             print this help

Build first: cargo build --release -p ire-consensus --bin ire-raft-node --example bench_consensus
";

/// The command line, or the reason it is refused.
fn parse_options(args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut o = Options {
        dir: PathBuf::from("target/bench-consensus"),
        secs: 5,
        records: 100_000,
        durability: "sync".into(),
    };
    let mut it = args;
    while let Some(a) = it.next() {
        if a == "-h" || a == "--help" {
            return Ok(None);
        }
        let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        let number = |v: &str| v.parse().map_err(|e| format!("{a} {v:?}: {e}"));
        match a.as_str() {
            "--dir" => o.dir = PathBuf::from(v),
            "--secs" => o.secs = number(&v)?,
            "--records" => o.records = number(&v)?,
            "--durability" if v == "sync" || v == "relaxed" => o.durability = v,
            "--durability" => return Err(format!("--durability {v:?}: expected sync or relaxed")),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(o))
}

fn options() -> Options {
    match parse_options(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{USAGE}");
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("bench_consensus: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// `n` operations in `took`, as a rate.
fn per_sec(n: u64, took: Duration) -> String {
    format!("{:.0}/s", n as f64 / took.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn fsync_calibration(dir: &Path) -> (Duration, Duration) {
    let path = dir.join("fsync-calibration");
    let mut f = std::fs::File::create(&path).expect("calibration file");
    let block = vec![0xa5u8; 4096];
    let mut samples = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        f.write_all(&block).unwrap();
        f.sync_data().unwrap();
        samples.push(t.elapsed());
    }
    drop(f);
    let _ = std::fs::remove_file(path);
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|n| n.parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

struct Node {
    id: u64,
    raft: SocketAddr,
    data: PathBuf,
    control: String,
    child: Child,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

fn node_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("ire-raft-node"))
        .unwrap();
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release -p ire-consensus --bin ire-raft-node",
        bin.display()
    );
    bin
}

async fn spawn(id: u64, raft: SocketAddr, data: &Path, extra: &[String]) -> Node {
    let mut child = Command::new(node_binary())
        .args([
            "--id",
            &id.to_string(),
            "--listen",
            &raft.to_string(),
            "--cookie",
            COOKIE,
        ])
        .arg("--data")
        .arg(data)
        .args(["--control", "127.0.0.1:0"])
        .args([
            "--durability",
            DURABILITY.get().map_or("sync", String::as_str),
        ])
        .env("IRE_RAFT_CONTROL_TOKEN", CONTROL_TOKEN)
        .env("IRE_RAFT_ADMIN_TOKEN", ADMIN_TOKEN)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(match std::env::var("BENCH_NODE_LOGS") {
            Ok(d) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(format!("{d}/n{id}.log"))
                    .unwrap(),
            ),
            Err(_) => Stdio::null(),
        })
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ire-raft-node");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = stdout.next_line().await.unwrap().expect("READY");
    Node {
        id,
        raft,
        data: data.to_owned(),
        control: line.trim_start_matches("READY ").to_string(),
        child,
        stdout,
    }
}

async fn status(node: &Node) -> serde_json::Value {
    let mut c = ControlClient::connect(&node.control, CONTROL_TOKEN)
        .await
        .unwrap();
    let s = c.request("status").await.unwrap();
    serde_json::from_str(s.trim_start_matches("ok ")).unwrap_or_default()
}

/// Sends one control request and parses the JSON after its `ok`.
async fn control_json(addr: &str, request: &str) -> serde_json::Value {
    let mut c = ControlClient::connect(addr, CONTROL_TOKEN).await.unwrap();
    let reply = c.request(request).await.unwrap();
    let json = reply
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("{request}: {reply}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{request}: {e}: {reply}"))
}

/// Runs `clients` loops of `op` for `secs`, returning the number of successful operations.
async fn run_clients<F, Fut>(addr: &str, clients: usize, secs: u64, op: F) -> (u64, Duration)
where
    F: Fn(usize, u64, ControlClient) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = (ControlClient, bool)> + Send,
{
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let addr = addr.to_string();
        let count = count.clone();
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = ControlClient::connect(&addr, CONTROL_TOKEN).await.unwrap();
            let mut i = 0u64;
            while Instant::now() < end {
                let (back, ok) = op(c, i, client).await;
                client = back;
                if ok {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (count.load(Ordering::Relaxed), start.elapsed())
}

fn granted_token(reply: &str) -> Option<u64> {
    reply.strip_prefix("granted ").and_then(|t| t.parse().ok())
}

/// One contended round: `acquire` (a control command on `key`), then the release of what it
/// granted; true when a lease changed hands.
async fn hand_off(
    mut cl: ControlClient,
    acquire: String,
    key: &'static str,
) -> (ControlClient, bool) {
    let r = cl.request(&acquire).await.unwrap();
    match granted_token(&r) {
        Some(token) => {
            let r = cl.request(&format!("release {key} {token}")).await.unwrap();
            (cl, r == "ok")
        }
        None => (cl, false),
    }
}

/// The nodes' `--durability`, from the command line.
static DURABILITY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = options();
    DURABILITY.set(o.durability.clone()).expect("set once");
    println!("durability: {}", o.durability);
    let _ = std::fs::remove_dir_all(&o.dir);
    std::fs::create_dir_all(&o.dir).unwrap();
    let (fsync_p50, fsync_p99) = fsync_calibration(&o.dir);

    let addrs = [free_addr(), free_addr(), free_addr()];
    let seed = format!("1={}", addrs[0]);
    let mut nodes = vec![spawn(1, addrs[0], &o.dir.join("n1"), &["--bootstrap".into()]).await];
    for id in [2u64, 3] {
        let mut n = spawn(
            id,
            addrs[id as usize - 1],
            &o.dir.join(format!("n{id}")),
            &["--join".into(), seed.clone()],
        )
        .await;
        let line = n.stdout.next_line().await.unwrap();
        assert_eq!(line.as_deref(), Some("JOINED"));
        nodes.push(n);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss: Vec<u64> = nodes
        .iter()
        .map(|n| rss_kib(n.child.id().unwrap()))
        .collect();
    let leader = &nodes[0];
    assert_eq!(status(leader).await["leader"].as_u64(), Some(1));
    let laddr = leader.control.clone();
    let rtt = control_json(&laddr, "rpc-ping 2 2000").await;

    let mut rows: Vec<(String, String, String)> = Vec::new();
    let mut row =
        |what: &str, figure: String, target: &str| rows.push((what.into(), figure, target.into()));

    // 1. One client: acquire + release latency, over the control protocol from this process.
    let mut c = ControlClient::connect(&laddr, CONTROL_TOKEN).await.unwrap();
    let (mut pairs, mut acquires, mut releases) = (Vec::new(), Vec::new(), Vec::new());
    let lat_end = Instant::now() + Duration::from_secs(o.secs);
    let mut i = 0u64;
    while Instant::now() < lat_end {
        let t = Instant::now();
        let r = c
            .request(&format!("acquire bench/lat/{} one 60000", i % 64))
            .await
            .unwrap();
        let token = granted_token(&r).unwrap_or_else(|| panic!("{r}"));
        let acquired = Instant::now();
        let r = c
            .request(&format!("release bench/lat/{} {token}", i % 64))
            .await
            .unwrap();
        assert_eq!(r, "ok");
        let done = Instant::now();
        pairs.push(done - t);
        acquires.push(acquired - t);
        releases.push(done - acquired);
        i += 1;
    }
    for v in [&mut pairs, &mut acquires, &mut releases] {
        v.sort();
    }
    let p50_p99 =
        |v: &[Duration]| format!("{} / {}", ms(percentile(v, 0.5)), ms(percentile(v, 0.99)));
    row(
        "acquire+release, 1 client: p50",
        ms(percentile(&pairs, 0.5)),
        "<= 1 ms",
    );
    row(
        "acquire+release, 1 client: p99",
        ms(percentile(&pairs, 0.99)),
        "<= 5 ms",
    );
    row("  acquire alone: p50 / p99", p50_p99(&acquires), "report");
    row("  release alone: p50 / p99", p50_p99(&releases), "report");
    // The same loop inside a node, through the client API the node's actors use: on the
    // leader, and on a follower (each write forwarded to the leader).
    let pairs_in_node = (o.secs * 400).max(200);
    for (who, node) in [("leader", &nodes[0]), ("follower", &nodes[1])] {
        let f = control_json(&node.control, &format!("bench-locks {pairs_in_node}")).await;
        let us =
            |part: &str, q: &str| format!("{:.3} ms", f[part][q].as_f64().unwrap_or(0.0) / 1000.0);
        row(
            &format!("acquire+release in the {who}'s node: p50 / p99"),
            format!("{} / {}", us("pair", "p50_us"), us("pair", "p99_us")),
            "report",
        );
        row(
            &format!("  acquire / release alone in the {who}'s node: p50"),
            format!("{} / {}", us("acquire", "p50_us"), us("release", "p50_us")),
            "report",
        );
    }

    // 2. 64 clients, distinct keys.
    let (n, took) = run_clients(&laddr, 64, o.secs, |c, i, mut cl| async move {
        let r = cl
            .request(&format!("acquire bench/distinct/{c}-{i} c{c} 60000"))
            .await
            .unwrap();
        let ok = granted_token(&r).is_some();
        (cl, ok)
    })
    .await;
    row(
        "acquisitions/s, 64 clients, distinct keys",
        per_sec(n, took),
        ">= 5,000/s",
    );

    // 3. 16 clients, one key: acquire (waiting in the key's queue), release on grant. The
    //    release hands the lease to the next waiter in the same commit.
    let (n, took) = run_clients(&laddr, 16, o.secs, |c, _i, cl| {
        let key = "bench/contended/1";
        hand_off(cl, format!("acquire-wait {key} c{c} 60000 5000"), key)
    })
    .await;
    row(
        "contended hand-offs/s, 16 clients, 1 key (queued)",
        per_sec(n, took),
        ">= 500/s",
    );

    // 3b. The same with plain acquires: refused callers ask again at once (polling).
    let (n, took) = run_clients(&laddr, 16, o.secs, |c, _i, cl| {
        let key = "bench/contended/2";
        hand_off(cl, format!("acquire {key} c{c} 60000"), key)
    })
    .await;
    row(
        "contended hand-offs/s, 16 clients, 1 key (polling)",
        per_sec(n, took),
        "report",
    );

    // 4. Ledger: 64 writers, 2 KiB records, until `records` are committed.
    let next = Arc::new(AtomicU64::new(0));
    let total = o.records;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let next = next.clone();
        let addr = laddr.clone();
        tasks.push(tokio::spawn(async move {
            let mut cl = ControlClient::connect(&addr, CONTROL_TOKEN).await.unwrap();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let r = cl.request(&format!("record rec-{i} 2048")).await.unwrap();
                assert_eq!(r, "ok", "record {i}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = start.elapsed();
    row(
        "ledger commits/s, 64 writers, 2 KiB records",
        format!(
            "{} ({total} records in {:.1} s)",
            per_sec(total, took),
            took.as_secs_f64()
        ),
        ">= 2,000/s",
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded: Vec<(u64, u64)> = nodes
        .iter()
        .map(|n| (rss_kib(n.child.id().unwrap()), dir_size(&n.data)))
        .collect();
    let st = status(leader).await;

    // 5. Failover: SIGKILL the leader, time to the next committed lock write (3 rounds).
    let mut failovers = Vec::new();
    for round in 0..3 {
        let mut leader_idx = None;
        for (i, n) in nodes.iter().enumerate() {
            if status(n).await["state"].as_str() == Some("Leader") {
                leader_idx = Some(i);
            }
        }
        let li = leader_idx.expect("a leader");
        let survivor = nodes
            .iter()
            .find(|n| n.id != nodes[li].id)
            .unwrap()
            .control
            .clone();
        let mut cl = ControlClient::connect(&survivor, CONTROL_TOKEN)
            .await
            .unwrap();
        nodes[li].child.start_kill().unwrap();
        nodes[li].child.wait().await.unwrap();
        let t = Instant::now();
        loop {
            let r = cl
                .request(&format!("acquire bench/failover/{round} f 60000"))
                .await
                .unwrap();
            if granted_token(&r).is_some() {
                break;
            }
        }
        failovers.push(t.elapsed());
        // Restart the killed node from its data directory before the next round.
        let (id, raft, data) = (nodes[li].id, nodes[li].raft, nodes[li].data.clone());
        nodes[li] = spawn(id, raft, &data, &[]).await;
        let want = status(&nodes[(li + 1) % 3]).await["last_applied"]
            .as_u64()
            .unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while status(&nodes[li]).await["last_applied"]
            .as_u64()
            .unwrap_or(0)
            < want
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let worst = failovers.iter().max().copied().unwrap_or_default();
    row(
        "leader SIGKILL -> next committed lock write",
        format!(
            "{} (rounds: {})",
            ms(worst),
            failovers
                .iter()
                .map(|d| ms(*d))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "<= 1 s",
    );
    let idle_max = idle_rss.iter().max().copied().unwrap_or(0);
    row(
        "idle RSS per node (max of 3)",
        format!("{:.1} MB", idle_max as f64 / 1024.0),
        "<= 50 MB",
    );
    for (i, (rss, size)) in loaded.iter().enumerate() {
        row(
            &format!("node {} after {} records: RSS, data dir", i + 1, total),
            format!(
                "{:.1} MB, {:.1} MB",
                *rss as f64 / 1024.0,
                *size as f64 / 1_048_576.0
            ),
            "report",
        );
    }

    println!("load average (1, 5, 15 min) at the end: {}", load_average());
    println!(
        "fsync calibration (4 KiB write + fdatasync): p50 {}, p99 {}",
        ms(fsync_p50),
        ms(fsync_p99)
    );
    println!(
        "transport calibration (empty ractor_cluster call, leader -> node 2, idle cluster): p50 {:.3} ms, p99 {:.3} ms",
        rtt["p50_us"].as_f64().unwrap_or(0.0) / 1000.0,
        rtt["p99_us"].as_f64().unwrap_or(0.0) / 1000.0
    );
    println!(
        "leader log after the ledger run: {} entries, snapshot at {}, last applied {}",
        st["log_entries"], st["snapshot"], st["last_applied"]
    );
    println!();
    println!(
        "| {:<56} | {:<44} | {:<10} |",
        "measure", "result", "target"
    );
    println!("|{}|{}|{}|", "-".repeat(58), "-".repeat(46), "-".repeat(12));
    for (w, f, t) in &rows {
        println!("| {w:<56} | {f:<44} | {t:<10} |");
    }
    for n in nodes.iter_mut() {
        let _ = n.child.start_kill();
    }
}
