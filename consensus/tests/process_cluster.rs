//! Three `ire-raft-node` processes over the real ractor_cluster transport: SIGKILL the
//! leader, a new leader serves lock writes, and everything acknowledged survives; bad input
//! (wrong token, renew after expiry, unknown node id, corrupted and truncated frames) gets a
//! clear error and changes nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ire_consensus::control::ControlClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::{timeout, Instant};

const COOKIE: &str = "process-test-cookie";
/// The nodes' control credential and admin token.
const CONTROL_TOKEN: &str = "process-test-control";
const ADMIN_TOKEN: &str = "process-test-admin";

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

struct NodeProc {
    id: u64,
    raft: SocketAddr,
    data: PathBuf,
    control: String,
    child: Child,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl NodeProc {
    async fn spawn(id: u64, raft: SocketAddr, data: &Path, extra: &[String]) -> NodeProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ire-raft-node"))
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
            .args(["--election-ms", "500", "--control", "127.0.0.1:0"])
            .env("IRE_RAFT_CONTROL_TOKEN", CONTROL_TOKEN)
            .env("IRE_RAFT_ADMIN_TOKEN", ADMIN_TOKEN)
            .args(extra)
            .stdout(Stdio::piped())
            // Node logs only when asked for: openraft logs every unreachable peer loudly.
            .stderr(if std::env::var_os("IRE_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .expect("spawn ire-raft-node");
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .expect("node did not start in 30 s")
            .unwrap()
            .expect("node exited before READY");
        let control = line.strip_prefix("READY ").expect("READY line").to_string();
        NodeProc {
            id,
            raft,
            data: data.to_owned(),
            control,
            child,
            stdout,
        }
    }

    async fn wait_line(&mut self, want: &str) {
        let line = timeout(Duration::from_secs(60), self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("node {} did not print {want}", self.id))
            .unwrap();
        assert_eq!(line.as_deref(), Some(want), "node {}", self.id);
    }

    async fn client(&self) -> ControlClient {
        ControlClient::connect(&self.control, CONTROL_TOKEN)
            .await
            .unwrap()
    }
}

async fn leader_of(c: &mut ControlClient) -> Option<u64> {
    let status = c.request("status").await.ok()?;
    let json: serde_json::Value = serde_json::from_str(status.strip_prefix("ok ")?).ok()?;
    json["leader"].as_u64()
}

/// Sends `req` until the reply starts with `want` (a new leader may still be elected).
async fn until(c: &mut ControlClient, req: &str, want: &str, within: Duration) -> String {
    let end = Instant::now() + within;
    loop {
        let reply = c.request(req).await.unwrap();
        if reply.starts_with(want) {
            return reply;
        }
        assert!(
            Instant::now() < end,
            "{req:?} never answered {want:?}; last: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_leader_keeps_acknowledged_locks_and_records_and_bad_input_changes_nothing()
{
    let dir = tempfile::tempdir().unwrap();
    let addrs = [free_addr(), free_addr(), free_addr()];
    let seed = format!("1={}", addrs[0]);
    let mut n1 =
        NodeProc::spawn(1, addrs[0], &dir.path().join("n1"), &["--bootstrap".into()]).await;
    let mut n2 = NodeProc::spawn(
        2,
        addrs[1],
        &dir.path().join("n2"),
        &["--join".into(), seed.clone()],
    )
    .await;
    let mut n3 = NodeProc::spawn(
        3,
        addrs[2],
        &dir.path().join("n3"),
        &["--join".into(), seed.clone()],
    )
    .await;
    n2.wait_line("JOINED").await;
    n3.wait_line("JOINED").await;

    // Acknowledged writes, through a follower and through the leader.
    let mut c3 = n3.client().await;
    let mut tokens = Vec::new();
    for i in 0..10 {
        let reply = c3
            .request(&format!("acquire docker/app/svc/{i} exec-{i} 60000"))
            .await
            .unwrap();
        let token: u64 = reply
            .strip_prefix("granted ")
            .unwrap_or_else(|| panic!("{reply}"))
            .parse()
            .unwrap();
        tokens.push(token);
        assert_eq!(
            c3.request(&format!("record rec-{i} 2048")).await.unwrap(),
            "ok"
        );
    }
    let mut c1 = n1.client().await;
    assert_eq!(leader_of(&mut c1).await, Some(1));

    // SIGKILL the leader.
    n1.child.start_kill().unwrap();
    n1.child.wait().await.unwrap();
    let killed_at = Instant::now();

    // A new leader serves lock writes.
    let mut c2 = n2.client().await;
    let reply = until(
        &mut c2,
        "acquire docker/app/after/1 exec-new 60000",
        "granted",
        Duration::from_secs(30),
    )
    .await;
    eprintln!(
        "first lock write after the kill took {:?}",
        killed_at.elapsed()
    );
    let new_token: u64 = reply["granted ".len()..].parse().unwrap();
    assert!(
        new_token > *tokens.iter().max().unwrap(),
        "tokens only grow"
    );
    let leader = leader_of(&mut c2).await.unwrap();
    assert!(leader == 2 || leader == 3, "leader {leader}");

    // Everything acknowledged before the kill is still there.
    for (i, token) in tokens.iter().enumerate() {
        assert_eq!(
            c2.request(&format!("lock docker/app/svc/{i}"))
                .await
                .unwrap(),
            format!("lease exec-{i} {token}")
        );
        assert_eq!(
            c3.request(&format!("execution rec-{i}")).await.unwrap(),
            "ok 2048"
        );
    }
    // ... and another holder is refused.
    assert_eq!(
        c2.request("acquire docker/app/svc/0 intruder 60000")
            .await
            .unwrap(),
        "held exec-0"
    );

    // Bad input: a clear error, state unchanged.
    let reply = c2
        .request(&format!("release docker/app/svc/1 {}", tokens[1] + 1000))
        .await
        .unwrap();
    assert!(
        reply.starts_with("err Conflict retryable") && reply.contains("not the current"),
        "{reply}"
    );
    assert_eq!(
        c2.request("lock docker/app/svc/1").await.unwrap(),
        format!("lease exec-1 {}", tokens[1])
    );

    let reply = c3
        .request("acquire docker/app/short/1 exec-short 300")
        .await
        .unwrap();
    let short: u64 = reply
        .strip_prefix("granted ")
        .unwrap_or_else(|| panic!("{reply}"))
        .parse()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let reply = c3
        .request(&format!("renew docker/app/short/1 {short} 60000"))
        .await
        .unwrap();
    assert!(
        reply.starts_with("err Conflict retryable") && reply.contains("expired"),
        "{reply}"
    );
    assert_eq!(c3.request("lock docker/app/short/1").await.unwrap(), "free");

    let reply = c2.request("remove 99").await.unwrap();
    assert!(
        reply.starts_with("err Invalid fatal") && reply.contains("node 99"),
        "{reply}"
    );
    let reply = c2.request("acquire not-a-key x 1000").await.unwrap();
    assert!(reply.starts_with("err Invalid fatal"), "{reply}");

    // Node 2 sends bad frames to node 3.
    let reply = c2.request("send-bad 3").await.unwrap();
    let answers: Vec<String> = serde_json::from_str(reply.strip_prefix("ok ").unwrap()).unwrap();
    let expect = [
        ("truncated", "truncated request"),
        ("corrupted", "unsupported request frame version"),
        ("unknown-node", "frame for node 4242"),
        ("garbage-payload", "malformed append_entries payload"),
        ("truncated-forward", "malformed forward request payload"),
    ];
    assert_eq!(answers.len(), expect.len(), "{answers:?}");
    for ((name, text), answer) in expect.iter().zip(&answers) {
        assert!(
            answer.starts_with(name) && answer.contains(text),
            "{name}: {answer}"
        );
        assert!(
            answer.contains("Malformed") || answer.contains("UnknownNode"),
            "{answer}"
        );
    }
    // The peer is still a working member and nothing changed.
    let reply = until(
        &mut c3,
        "acquire docker/app/after/2 exec-2b 60000",
        "granted",
        Duration::from_secs(10),
    )
    .await;
    assert!(reply.starts_with("granted"));
    assert_eq!(
        c3.request("lock docker/app/svc/1").await.unwrap(),
        format!("lease exec-1 {}", tokens[1])
    );

    // The killed node restarts from its data directory and catches up.
    let mut n1 = NodeProc::spawn(1, n1.raft, &n1.data.clone(), &[]).await;
    let mut c1 = n1.client().await;
    let reply = until(
        &mut c1,
        "lock docker/app/after/2",
        "lease exec-2b",
        Duration::from_secs(30),
    )
    .await;
    assert!(reply.starts_with("lease"));
    for p in [&mut n1, &mut n2, &mut n3] {
        let _ = p.child.start_kill();
    }
}

async fn peer_connected(c: &mut ControlClient, peer: u64) -> Option<bool> {
    let status = c.request("status").await.ok()?;
    let json: serde_json::Value = serde_json::from_str(status.strip_prefix("ok ")?).ok()?;
    json["peers"]
        .as_array()?
        .iter()
        .find(|p| p["id"].as_u64() == Some(peer))
        .and_then(|p| p["connected"].as_bool())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_dropped_and_reconnected_when_it_answers_again() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = [free_addr(), free_addr()];
    let n1 = NodeProc::spawn(1, addrs[0], &dir.path().join("n1"), &["--bootstrap".into()]).await;
    let seed = format!("1={}", addrs[0]);
    let mut n2 = NodeProc::spawn(
        2,
        addrs[1],
        &dir.path().join("n2"),
        &["--join".into(), seed],
    )
    .await;
    n2.wait_line("JOINED").await;
    let mut c1 = n1.client().await;
    assert_eq!(peer_connected(&mut c1, 2).await, Some(true));

    // SIGSTOP: the TCP session stays open but the peer answers nothing.
    let pid = n2.child.id().unwrap().to_string();
    let stop = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    assert!(stop.success());
    let end = Instant::now() + Duration::from_secs(15);
    while peer_connected(&mut c1, 2).await != Some(false) {
        assert!(Instant::now() < end, "a silent peer was never dropped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let cont = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();
    assert!(cont.success());
    let end = Instant::now() + Duration::from_secs(30);
    while peer_connected(&mut c1, 2).await != Some(true) {
        assert!(Instant::now() < end, "the peer was never reconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c2 = n2.client().await;
    let reply = until(
        &mut c2,
        "acquire docker/app/resumed/1 exec-r 60000",
        "granted",
        Duration::from_secs(15),
    )
    .await;
    assert!(reply.starts_with("granted"));
}

/// The control addresses of a cluster's nodes, by id - 1 (they change when a node restarts).
type Controls = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Writes records `prefix-<n>` through the nodes in turn until `stop`, each retried on the
/// next node until one acknowledges it (a record is an idempotent upsert); returns the ids
/// acknowledged.
async fn write_until(
    controls: Controls,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    prefix: &'static str,
) -> Vec<String> {
    let mut acked = Vec::new();
    let mut conns: std::collections::HashMap<String, ControlClient> = Default::default();
    let mut n = 0u64;
    let mut target = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let addr = controls.lock().unwrap()[target % 3].clone();
        let id = format!("{prefix}-{n}");
        let reply = match conns.remove(&addr) {
            Some(c) => Ok(c),
            None => timeout(
                Duration::from_secs(1),
                ControlClient::connect(&addr, CONTROL_TOKEN),
            )
            .await
            .map_err(|_| ())
            .and_then(|r| r.map_err(|_| ())),
        };
        let ok = match reply {
            Ok(mut c) => {
                match timeout(
                    Duration::from_secs(3),
                    c.request(&format!("record {id} 2048")),
                )
                .await
                {
                    Ok(Ok(r)) if r == "ok" => {
                        conns.insert(addr, c);
                        true
                    }
                    Ok(Ok(_)) => {
                        conns.insert(addr, c);
                        false
                    }
                    _ => false,
                }
            }
            Err(()) => false,
        };
        if ok {
            acked.push(id);
            n += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        target += 1;
    }
    acked
}

/// Every record in `ids` reads back whole through `node` (linearizable reads, served from
/// the node's own state machine once it applied the leader's read index).
async fn check_records(node: &NodeProc, ids: &[String]) {
    let mut c = node.client().await;
    for id in ids {
        let reply = until(
            &mut c,
            &format!("execution {id}"),
            "ok",
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(reply, "ok 2048", "node {}: {id}", node.id);
    }
}

async fn sigkill(n: &mut NodeProc) {
    n.child.start_kill().unwrap();
    n.child.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_followers_and_the_leader_during_writes_and_snapshot_installs_loses_no_acknowledged_write(
) {
    let dir = tempfile::tempdir().unwrap();
    let addrs = [free_addr(), free_addr(), free_addr()];
    let seed = format!("1={}", addrs[0]);
    // Small snapshots, purged soon: a node that was down catches up from a snapshot.
    let policy: Vec<String> = ["--snapshot-every", "300", "--logs-to-keep", "50"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let with = |extra: &[&str]| {
        let mut v = policy.clone();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let mut nodes =
        vec![NodeProc::spawn(1, addrs[0], &dir.path().join("n1"), &with(&["--bootstrap"])).await];
    for id in [2u64, 3] {
        let mut n = NodeProc::spawn(
            id,
            addrs[id as usize - 1],
            &dir.path().join(format!("n{id}")),
            &with(&["--join", &seed]),
        )
        .await;
        n.wait_line("JOINED").await;
        nodes.push(n);
    }
    let controls: Controls = std::sync::Arc::new(std::sync::Mutex::new(
        nodes.iter().map(|n| n.control.clone()).collect(),
    ));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn(write_until(controls.clone(), stop.clone(), "rec"));

    let mut c1 = nodes[0].client().await;
    let leader = leader_of(&mut c1).await.unwrap() as usize;
    let restart = |n: &NodeProc| (n.id, n.raft, n.data.clone());

    // A follower, then the leader, SIGKILLed in the middle of the writes and restarted
    // (the leader once the others have elected a new one).
    for (victim, down_ms) in [(leader % 3, 800), (leader - 1, 2500)] {
        tokio::time::sleep(Duration::from_millis(800)).await;
        sigkill(&mut nodes[victim]).await;
        tokio::time::sleep(Duration::from_millis(down_ms)).await;
        let (id, raft, data) = restart(&nodes[victim]);
        nodes[victim] = NodeProc::spawn(id, raft, &data, &policy).await;
        controls.lock().unwrap()[victim] = nodes[victim].control.clone();
    }

    // A follower down while the others write and purge past it: at restart it is sent a
    // snapshot, and it is SIGKILLed again and again while that install may be under way.
    let mut c = nodes[0].client().await;
    let end = Instant::now() + Duration::from_secs(15);
    let leader = loop {
        if let Some(l) = leader_of(&mut c).await {
            break l as usize - 1;
        }
        assert!(Instant::now() < end, "no leader after the restarts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let f = (leader + 1) % 3;
    let mut cf = nodes[f].client().await;
    let behind = until(&mut cf, "status", "ok", Duration::from_secs(10)).await;
    let behind: serde_json::Value = serde_json::from_str(&behind[3..]).unwrap();
    let behind = behind["last_log_index"].as_u64().unwrap_or(0);
    sigkill(&mut nodes[f]).await;
    // Down until the leader's snapshot (and so its purge) has passed the follower's log.
    let mut cl = nodes[leader].client().await;
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        let s = until(&mut cl, "status", "ok", Duration::from_secs(10)).await;
        let s: serde_json::Value = serde_json::from_str(&s[3..]).unwrap();
        if s["snapshot"].as_u64().unwrap_or(0) > behind + 60 {
            break;
        }
        assert!(
            Instant::now() < end,
            "the leader never snapshotted past the follower"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for delay_ms in [50u64, 150, 300, 500, 800] {
        let (id, raft, data) = restart(&nodes[f]);
        nodes[f] = NodeProc::spawn(id, raft, &data, &policy).await;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        sigkill(&mut nodes[f]).await;
    }
    let (id, raft, data) = restart(&nodes[f]);
    nodes[f] = NodeProc::spawn(id, raft, &data, &policy).await;
    controls.lock().unwrap()[f] = nodes[f].control.clone();
    tokio::time::sleep(Duration::from_millis(500)).await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.await.unwrap();
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    let mut status = nodes[f].client().await;
    let s = until(&mut status, "status", "ok", Duration::from_secs(10)).await;
    let s: serde_json::Value = serde_json::from_str(&s[3..]).unwrap();
    assert!(
        s["snapshot"].as_u64().is_some(),
        "the restarted follower holds no snapshot: {s}"
    );
    eprintln!(
        "{} writes acknowledged; the follower restarted from {s}",
        acked.len()
    );
    // Every acknowledged write, on the follower that was killed during its catch-up and on
    // the node that led at the end.
    check_records(&nodes[f], &acked).await;
    check_records(&nodes[leader], &acked).await;
    for n in &mut nodes {
        let _ = n.child.start_kill();
    }
}
