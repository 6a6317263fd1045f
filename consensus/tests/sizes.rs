//! Sizes: a command over the size cap is refused with a clear error, wherever it is sent,
//! and replication goes on; one just under the cap reaches every node; an oversized frame is
//! refused by the sender, never sent to close the peer's session.

use std::time::Duration;

use ire_consensus::client::ConsensusClient;
use ire_consensus::node::RaftNode;
use ire_consensus::proposer::MAX_COMMAND_BYTES;
use ire_consensus::transport::frame::{FrameError, MAX_PAYLOAD_BYTES};
use ire_consensus::transport::{RaftTransport, RpcKind, TransportError};
use ire_core::{Error, StorageBackend};
use serde_json::json;

mod support;
use support::{config, wait_leader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mib_value_is_refused_and_replication_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let c1 = config(31, &dir);
    let seed = (31, c1.listen.to_string());
    let n1 = RaftNode::start(c1).await.unwrap();
    n1.bootstrap().await.unwrap();
    wait_leader(&n1, Duration::from_secs(10)).await;
    let n2 = RaftNode::start(config(32, &dir)).await.unwrap();
    let n3 = RaftNode::start(config(33, &dir)).await.unwrap();
    n2.join(std::slice::from_ref(&seed)).await.unwrap();
    n3.join(std::slice::from_ref(&seed)).await.unwrap();
    let (leader, follower) = (
        ConsensusClient::new(n1.clone()),
        ConsensusClient::new(n3.clone()),
    );

    // 20 MiB, through the leader and through a follower: refused at once, saying why.
    let huge = json!("x".repeat(20 << 20));
    for client in [&leader, &follower] {
        let started = tokio::time::Instant::now();
        let err = client.save("big", "huge", huge.clone()).await.unwrap_err();
        assert!(matches!(err.root(), Error::Invalid { .. }), "{err}");
        let text = err.chain_message();
        assert!(
            text.contains("over the limit") && text.contains(&MAX_COMMAND_BYTES.to_string()),
            "{text}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "refused late");
    }
    assert!(matches!(
        leader.load("big", "huge").await.unwrap_err().root(),
        Error::NotFound { .. }
    ));

    // Replication goes on: a value just under the cap is committed and read on every node.
    let big = json!("y".repeat(MAX_COMMAND_BYTES - 4096));
    follower.save("big", "fits", big.clone()).await.unwrap();
    for node in [&n1, &n2, &n3] {
        assert_eq!(
            ConsensusClient::new(node.clone())
                .load("big", "fits")
                .await
                .unwrap(),
            big
        );
    }

    // A frame over the transport's limit is refused by the sender; the link stays up.
    let err = n3
        .transport()
        .call(
            31,
            RpcKind::Forward,
            vec![0; MAX_PAYLOAD_BYTES + 1],
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Frame {
                error: FrameError::TooLarge { .. },
                ..
            }
        ),
        "{err}"
    );
    follower.save("small", "after", json!(1)).await.unwrap();
    assert!(
        n3.status().await.peers.iter().all(|p| p.connected),
        "a session was dropped"
    );

    for n in [n2, n3, n1] {
        n.shutdown().await;
    }
}
