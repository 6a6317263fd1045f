//! A line protocol to drive a [`RaftNode`] from another process: the `ire-raft-node` test
//! program serves it on a loopback port when asked to (`--control`, off by default), and the
//! process tests and the benchmark speak it.
//!
//! Every connection must first present the control credential: `auth <token>`, answered
//! `ok`; anything else is answered `err Unauthorized fatal ...` and the connection closed.
//! The port can change the cluster's membership and read every record, so it is never
//! served without a credential.
//!
//! One request per line, one reply line per request, words separated by spaces (resource
//! keys and holders contain none). A reply is `ok [...]`, `granted <token>`,
//! `held <holder>`, `lease <holder> <token>`, `free`, or `err <kind> <class> <message>`
//! where `kind` is the ire-core error variant and `class` its retry class.
//!
//! | request | reply |
//! |---|---|
//! | `ping` | `ok` |
//! | `acquire <key> <holder> <ttl-ms>` | `granted <token>` or `held <holder>` |
//! | `acquire-wait <key> <holder> <ttl-ms> <wait-ms>` | `granted <token>` or `held <holder>` |
//! | `renew <key> <token> <ttl-ms>` | `ok <token>` |
//! | `release <key> <token>` | `ok` |
//! | `lock <key>` | `lease <holder> <token>` or `free` |
//! | `record <execution-id> <payload-bytes>` | `ok` |
//! | `execution <execution-id>` | `ok <payload-bytes>` |
//! | `status` | `ok <json NodeStatus>` |
//! | `add-learner <id> <addr>` / `promote <id>` / `remove <id>` | `ok` |
//! | `send-bad <peer-id>` | `ok <json list of the peer's answers to bad frames>` |
//! | `rpc-ping <peer-id> <count>` | `ok {"p50_us":..,"p99_us":..}`: transport round trips to the peer |
//! | `bench-locks <count>` | `ok {"pairs":..,"pair":{..},"acquire":{..},"release":{..}}`: acquire + release pairs through this node's client API |

use std::time::{Duration, Instant};

use chrono::Utc;
use ire_core::{
    Error, ExecutionRecord, ExecutionStatus, FaultLedger as _, FencingToken, LockOutcome,
    LockService, ResourceKey,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::client::ConsensusClient;
use crate::node::RaftNode;
use crate::transport::frame::{RequestFrame, FRAME_VERSION};
use crate::transport::{same_secret, NodeId, RaftTransport as _, RpcKind};

/// How long a new connection may take to present its credential.
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the control protocol on `listener` until the task is dropped. Each connection must
/// first send `auth <token>` with this `token` (see the module docs).
pub async fn serve(listener: TcpListener, node: RaftNode, token: String) {
    let client = ConsensusClient::new(node);
    let token = std::sync::Arc::new(token);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            let first = tokio::time::timeout(AUTH_TIMEOUT, lines.next_line()).await;
            let presented = match &first {
                Ok(Ok(Some(line))) => line.strip_prefix("auth ").map(str::trim),
                _ => None,
            };
            if !presented.is_some_and(|p| same_secret(p, &token)) {
                let _ = write
                    .write_all(
                        b"err Unauthorized fatal the control port needs \"auth <token>\" with \
                          the node's control token first\n",
                    )
                    .await;
                return;
            }
            if write.write_all(b"ok\n").await.is_err() {
                return;
            }
            while let Ok(Some(line)) = lines.next_line().await {
                let mut reply = handle(&client, &line).await;
                reply.push('\n');
                if write.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

fn err_line(e: &Error) -> String {
    let kind = format!("{:?}", e.root());
    let kind = kind
        .split([' ', '{', '('])
        .next()
        .unwrap_or("Other")
        .to_string();
    let class = format!("{:?}", e.class()).to_lowercase();
    format!(
        "err {kind} {class} {}",
        e.chain_message().replace('\n', " ")
    )
}

fn arg<'a>(words: &[&'a str], i: usize, what: &str) -> Result<&'a str, Error> {
    words
        .get(i)
        .copied()
        .ok_or_else(|| Error::invalid(what, "missing"))
}

fn num(words: &[&str], i: usize, what: &str) -> Result<u64, Error> {
    arg(words, i, what)?
        .parse()
        .map_err(|e| Error::invalid(what, format!("not a number: {e}")))
}

fn key(words: &[&str], i: usize) -> Result<ResourceKey, Error> {
    arg(words, i, "key")?
        .parse()
        .map_err(|e: ire_core::Error| Error::invalid("key", e.to_string()))
}

async fn handle(client: &ConsensusClient, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    match run(client, &words).await {
        Ok(reply) => reply,
        Err(e) => err_line(&e),
    }
}

async fn run(client: &ConsensusClient, w: &[&str]) -> Result<String, Error> {
    match w.first().copied().unwrap_or("") {
        "ping" => Ok("ok".into()),
        "acquire" => {
            let ttl = Duration::from_millis(num(w, 3, "ttl")?);
            match client
                .acquire(&key(w, 1)?, arg(w, 2, "holder")?, ttl)
                .await?
            {
                LockOutcome::Granted(g) => Ok(format!("granted {}", g.token)),
                LockOutcome::Held { holder, .. } => {
                    Ok(format!("held {}", holder.replace(' ', "_")))
                }
            }
        }
        "acquire-wait" => {
            let ttl = Duration::from_millis(num(w, 3, "ttl")?);
            let wait = Duration::from_millis(num(w, 4, "wait")?);
            match client
                .acquire_wait(
                    &key(w, 1)?,
                    arg(w, 2, "holder")?,
                    ttl,
                    wait,
                    &tokio_util::sync::CancellationToken::new(),
                )
                .await?
            {
                LockOutcome::Granted(g) => Ok(format!("granted {}", g.token)),
                LockOutcome::Held { holder, .. } => {
                    Ok(format!("held {}", holder.replace(' ', "_")))
                }
            }
        }
        "renew" => {
            let ttl = Duration::from_millis(num(w, 3, "ttl")?);
            let g = client
                .renew(&key(w, 1)?, FencingToken(num(w, 2, "token")?), ttl)
                .await?;
            Ok(format!("ok {}", g.token))
        }
        "release" => {
            client
                .release(&key(w, 1)?, FencingToken(num(w, 2, "token")?))
                .await?;
            Ok("ok".into())
        }
        "lock" => {
            let info = client.lock_info(&key(w, 1)?).await?;
            Ok(match info.lease {
                Some(l) => format!("lease {} {}", l.holder, l.token),
                None => "free".into(),
            })
        }
        "record" => {
            let id = arg(w, 1, "execution id")?;
            let size = num(w, 2, "payload size")? as usize;
            let now = Utc::now();
            client
                .record_execution(ExecutionRecord {
                    id: id.into(),
                    plugin_name: "bench".into(),
                    resource_id: format!("rid-{id}"),
                    resource_name: "bench".into(),
                    resource_key: None,
                    start_time: now,
                    end_time: now,
                    duration: Duration::ZERO,
                    status: ExecutionStatus::Success,
                    error: "x".repeat(size),
                    metadata: Default::default(),
                    principal: "bench".into(),
                    campaign: Some("bench".into()),
                    step: None,
                    node: None,
                    fencing_token: None,
                    time_to_detect: None,
                    time_to_recover: None,
                })
                .await?;
            Ok("ok".into())
        }
        "execution" => {
            let r = client.execution(arg(w, 1, "execution id")?).await?;
            Ok(format!("ok {}", r.error.len()))
        }
        "fault" => {
            let f = client.fault(arg(w, 1, "fault id")?).await?;
            Ok(format!("ok {}", f.state.name()))
        }
        "status" => {
            let s = client.status().await;
            Ok(format!(
                "ok {}",
                serde_json::to_string(&s).unwrap_or_default()
            ))
        }
        "add-learner" => {
            client
                .add_learner(num(w, 1, "node id")?, arg(w, 2, "addr")?, None)
                .await?;
            Ok("ok".into())
        }
        "promote" => {
            client.promote(num(w, 1, "node id")?).await?;
            Ok("ok".into())
        }
        "remove" => {
            client.remove_node(num(w, 1, "node id")?).await?;
            Ok("ok".into())
        }
        "rpc-ping" => {
            let peer: NodeId = num(w, 1, "peer id")?;
            let count = num(w, 2, "count")?.clamp(1, 1_000_000);
            let mut took = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let t = Instant::now();
                client
                    .node()
                    .transport()
                    .call(peer, RpcKind::Ping, Vec::new(), Duration::from_secs(1))
                    .await
                    .map_err(|e| Error::unavailable(format!("ping of node {peer}"), e))?;
                took.push(t.elapsed());
            }
            Ok(format!(
                "ok {}",
                serde_json::json!(Percentiles::of(&mut took))
            ))
        }
        "bench-locks" => {
            let count = num(w, 1, "count")?.clamp(1, 1_000_000);
            let figures = bench_locks(client, count).await?;
            Ok(format!("ok {}", serde_json::json!(figures)))
        }
        "send-bad" => {
            let peer: NodeId = num(w, 1, "peer id")?;
            let answers = send_bad_frames(client.node(), peer).await;
            Ok(format!(
                "ok {}",
                serde_json::to_string(&answers).unwrap_or_default()
            ))
        }
        other => Err(Error::invalid(
            "command",
            format!("unknown command {other:?}"),
        )),
    }
}

/// Sends a truncated frame, a corrupted header, a frame for an unknown node id and a
/// garbage raft payload to `peer`, and returns what the peer answered to each.
async fn send_bad_frames(node: &RaftNode, peer: NodeId) -> Vec<String> {
    let me = node.id();
    let t = node.transport();
    let timeout = Duration::from_secs(2);
    let token = t.session_token(peer);
    let good = |kind, to, payload: Vec<u8>| {
        RequestFrame {
            kind,
            from: me,
            to,
            token,
            payload,
        }
        .encode()
    };
    let mut corrupted = good(RpcKind::AppendEntries, peer, vec![]);
    corrupted[0] = FRAME_VERSION.wrapping_add(0x40);
    let cases = [
        (
            "truncated",
            RpcKind::AppendEntries,
            vec![FRAME_VERSION, RpcKind::AppendEntries as u8, 0, 1],
        ),
        ("corrupted", RpcKind::AppendEntries, corrupted),
        (
            "unknown-node",
            RpcKind::Vote,
            good(RpcKind::Vote, 4242, vec![0]),
        ),
        (
            "garbage-payload",
            RpcKind::AppendEntries,
            good(RpcKind::AppendEntries, peer, vec![0xff; 7]),
        ),
        (
            "truncated-forward",
            RpcKind::Forward,
            good(RpcKind::Forward, peer, vec![0]),
        ),
    ];
    let mut out = Vec::new();
    for (name, kind, frame) in cases {
        let answer = match t.call_raw(peer, kind, frame, timeout).await {
            Ok(Ok(_)) => "accepted".to_string(),
            Ok(Err(e)) => format!("{e}"),
            Err(e) => format!("transport: {e}"),
        };
        out.push(format!("{name}: {answer}"));
    }
    out
}

/// The 50th and 99th percentiles of some durations, in microseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Percentiles {
    p50_us: u64,
    p99_us: u64,
}

impl Percentiles {
    fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1));
            samples.get(i).map_or(0, |d| d.as_micros() as u64)
        };
        Self {
            p50_us: at(0.50),
            p99_us: at(0.99),
        }
    }
}

/// What `bench-locks` measures: acquire + release pairs through this node's client API, and
/// each of the two operations alone.
#[derive(Debug, serde::Serialize)]
struct LockFigures {
    pairs: u64,
    pair: Percentiles,
    acquire: Percentiles,
    release: Percentiles,
}

/// `count` acquire + release pairs on 64 keys, one at a time, through the same client API the
/// node's actors use (forwarded to the leader when this node follows).
async fn bench_locks(client: &ConsensusClient, count: u64) -> Result<LockFigures, Error> {
    let (mut pair, mut acquire, mut release) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..count {
        let key: ResourceKey = format!("bench/locks/{}", i % 64).parse()?;
        let start = Instant::now();
        let grant = match client
            .acquire(&key, "bench-locks", Duration::from_secs(60))
            .await?
        {
            LockOutcome::Granted(g) => g,
            LockOutcome::Held { holder, .. } => {
                return Err(Error::invalid("key", format!("{key} is held by {holder}")))
            }
        };
        let acquired = Instant::now();
        client.release(&key, grant.token).await?;
        let done = Instant::now();
        acquire.push(acquired - start);
        release.push(done - acquired);
        pair.push(done - start);
    }
    Ok(LockFigures {
        pairs: count,
        pair: Percentiles::of(&mut pair),
        acquire: Percentiles::of(&mut acquire),
        release: Percentiles::of(&mut release),
    })
}

/// A connection to a node's control port.
#[derive(Debug)]
pub struct ControlClient {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl ControlClient {
    /// Connects to a control port and presents `token`; an unauthorized connection is an
    /// error of kind `PermissionDenied` carrying the node's answer.
    pub async fn connect(addr: &str, token: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let mut client = Self {
            lines: BufReader::new(read).lines(),
            write,
        };
        let answer = client.request(&format!("auth {token}")).await?;
        if answer != "ok" {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                answer,
            ));
        }
        Ok(client)
    }

    /// Sends one request and returns the reply line.
    pub async fn request(&mut self, line: &str) -> std::io::Result<String> {
        self.write.write_all(format!("{line}\n").as_bytes()).await?;
        self.lines.next_line().await?.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "control connection closed",
            )
        })
    }
}
