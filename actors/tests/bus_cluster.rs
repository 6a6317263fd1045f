//! Cluster-wide watches across two real nodes: two processes, each with a ractor_cluster
//! `NodeServer` on loopback, a bus and a `BusBridge`, connected with `client_connect`.
//!
//! The second node is this test binary run again with `IRE_BUS_PEER` set: it runs the
//! ignored `second_node_process` test, answers every `ping` it sees from the first node with a
//! `pong`, and exits.

use std::time::Duration;

use ire_actors::bus::{BusBridge, BusBridgeArgs, LocalEventBus, ORIGIN_NODE_KEY};
use ire_core::{Event, EventBus, EventFilter};
use ractor::Actor;
use ractor_cluster::NodeServer;

const COOKIE: &str = "bus-cluster-test";
const CLUSTER: &str = "bus-cluster-test";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_node(
    name: &str,
    port: u16,
) -> (
    ractor::ActorRef<ractor_cluster::NodeServerMessage>,
    LocalEventBus,
) {
    let server = NodeServer::new(
        port,
        COOKIE.into(),
        name.into(),
        "127.0.0.1".into(),
        None,
        None,
    )
    .with_listen_addr("127.0.0.1".parse().unwrap());
    let (server, _) = Actor::spawn(None, server, ()).await.unwrap();
    let bus = LocalEventBus::new();
    Actor::spawn(
        None,
        BusBridge,
        BusBridgeArgs {
            bus: bus.clone(),
            node: name.into(),
            cluster: CLUSTER.into(),
            filter: EventFilter::default(),
        },
    )
    .await
    .unwrap();
    (server, bus)
}

#[tokio::test]
async fn events_cross_between_two_node_processes() {
    let port = free_port();
    let (_server, bus) = start_node("node-a", port).await;
    let mut pongs = bus
        .subscribe(EventFilter {
            types: vec!["pong".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "second_node_process", "--ignored", "--nocapture"])
        .env("IRE_BUS_PEER", format!("127.0.0.1:{port}"))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The peer joins the group once its session is up: ping until it answers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let pong = loop {
        bus.publish(Event::new("ping", "node-a")).await.unwrap();
        if let Some(p) = pongs.recv_timeout(Duration::from_millis(200)).await {
            break p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pong from the second node"
        );
    };
    assert_eq!(
        pong.metadata.get(ORIGIN_NODE_KEY).map(String::as_str),
        Some("node-b")
    );
    assert_eq!(pong.data["answering"], "node-a");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "second node failed: {status}");
}

#[tokio::test]
#[ignore = "the second node of events_cross_between_two_node_processes, run by it"]
async fn second_node_process() {
    let peer =
        std::env::var("IRE_BUS_PEER").expect("run by events_cross_between_two_node_processes");
    let (server, bus) = start_node("node-b", free_port()).await;
    let mut pings = bus
        .subscribe(EventFilter {
            types: vec!["ping".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    ractor_cluster::client_connect(&server, peer.as_str())
        .await
        .unwrap();
    let ping = tokio::time::timeout(Duration::from_secs(20), pings.recv())
        .await
        .expect("a ping from node-a")
        .unwrap();
    let origin = ping.metadata[ORIGIN_NODE_KEY].clone();
    // Answer a few times: the first may race the peer's view of the group.
    for _ in 0..10 {
        bus.publish(Event::new("pong", "node-b").with_data("answering", origin.clone()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
