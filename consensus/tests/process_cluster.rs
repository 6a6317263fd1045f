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
