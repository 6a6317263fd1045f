//! Cluster-wide watches: two nodes' buses bridged through a ractor process group.

use std::time::Duration;

use ire_actors::bus::{BusBridge, BusBridgeArgs, LocalEventBus, ORIGIN_NODE_KEY};
use ire_core::{Event, EventBus, EventFilter};
use ractor::Actor;

async fn bridge(
    bus: &LocalEventBus,
    node: &str,
    cluster: &str,
) -> ractor::ActorRef<ire_actors::bus::BusBridgeMessage> {
    let (actor, _handle) = Actor::spawn(
        None,
        BusBridge,
        BusBridgeArgs {
            bus: bus.clone(),
            node: node.into(),
            cluster: cluster.into(),
            filter: EventFilter::default(),
        },
    )
    .await
    .unwrap();
    actor
}

#[tokio::test]
async fn an_event_published_on_one_node_reaches_watchers_on_the_other_once() {
    let a = LocalEventBus::new();
    let b = LocalEventBus::new();
    let bridge_a = bridge(&a, "node-a", "bridge-test-1").await;
    let bridge_b = bridge(&b, "node-b", "bridge-test-1").await;
    let mut on_a = a.subscribe(EventFilter::default()).await.unwrap();
    let mut on_b = b
        .subscribe(EventFilter {
            types: vec!["fault.*".into()],
            ..Default::default()
        })
        .await
        .unwrap();

    a.publish(Event::new("fault.injected", "engine").with_metadata("campaign", "c1"))
        .await
        .unwrap();
    let got = on_b
        .recv_timeout(Duration::from_secs(5))
        .await
        .expect("node b saw the event");
    assert_eq!(got.type_, "fault.injected");
    assert_eq!(
        got.metadata.get(ORIGIN_NODE_KEY).map(String::as_str),
        Some("node-a")
    );
    assert_eq!(got.metadata.get("campaign").map(String::as_str), Some("c1"));

    // Node a sees its own event once: b does not echo it back.
    assert_eq!(
        on_a.recv_timeout(Duration::from_secs(1))
            .await
            .unwrap()
            .type_,
        "fault.injected"
    );
    assert!(on_a
        .recv_timeout(Duration::from_millis(300))
        .await
        .is_none());

    // And the other way round.
    b.publish(Event::new("fault.reverted", "engine"))
        .await
        .unwrap();
    let back = on_a.recv_timeout(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        back.metadata.get(ORIGIN_NODE_KEY).map(String::as_str),
        Some("node-b")
    );

    bridge_a.stop(None);
    bridge_b.stop(None);
}

#[tokio::test]
async fn bridges_of_other_clusters_do_not_receive() {
    let a = LocalEventBus::new();
    let c = LocalEventBus::new();
    let ba = bridge(&a, "node-a", "bridge-test-2").await;
    let bc = bridge(&c, "node-c", "bridge-test-other").await;
    let mut on_c = c.subscribe(EventFilter::default()).await.unwrap();
    a.publish(Event::new("fault.injected", "engine"))
        .await
        .unwrap();
    assert!(on_c
        .recv_timeout(Duration::from_millis(300))
        .await
        .is_none());
    ba.stop(None);
    bc.stop(None);
}
