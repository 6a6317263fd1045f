//! What the node's benchmark programs share.

use std::path::Path;
use std::time::{Duration, Instant};

use ire_consensus::node::{RaftNode, RaftNodeConfig};

/// A one-node cluster in `dir`, bootstrapped and leading, with production settings (default
/// store options: flush before acknowledging an append; default raft timings).
pub async fn single_node(dir: &Path) -> RaftNode {
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port");
    let config = RaftNodeConfig::new(1, listen, dir.join("raft"), "bench-cookie");
    let node = RaftNode::start(config).await.expect("start the raft node");
    node.bootstrap().await.expect("bootstrap");
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.leader() != Some(1) {
        assert!(Instant::now() < deadline, "no leader within 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node
}
