//! Fixtures shared by the in-process raft node tests: node configs on free loopback ports
//! and a bounded wait for a leader.

use std::net::SocketAddr;
use std::time::Duration;

use ire_consensus::node::{RaftNode, RaftNodeConfig, RaftTimings};

/// A loopback address whose port was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A node config under `dir` with timings generous enough for debug builds on a shared
/// 2-core machine.
pub fn config(id: u64, dir: &tempfile::TempDir) -> RaftNodeConfig {
    let mut c = RaftNodeConfig::new(
        id,
        free_addr(),
        dir.path().join(format!("n{id}")),
        "test-cookie",
    );
    c.timings = RaftTimings {
        heartbeat_interval: Duration::from_millis(100),
        election_timeout_min: Duration::from_millis(600),
        election_timeout_max: Duration::from_millis(1200),
        ..RaftTimings::default()
    };
    c.request_timeout = Duration::from_secs(10);
    c.admin_token = Some(ADMIN_TOKEN.into());
    c
}

/// The admin token of the nodes [`config`] makes (joins need it).
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// The leader's id once `node` knows one; panics after `deadline`.
pub async fn wait_leader(node: &RaftNode, deadline: Duration) -> u64 {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(l) = node.leader() {
            return l;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "no leader elected in {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
