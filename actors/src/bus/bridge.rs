//! Cluster-wide event watches: a [`BusBridge`] actor per node forwards the node's own events
//! to the bridges of the other nodes, which publish them on their local bus.
//!
//! Bridges find each other through a ractor process group (scope [`BRIDGE_SCOPE`], group
//! named after the cluster). With `ractor_cluster` connecting the nodes, the group spans the
//! cluster: remote members are reached through their node session, which is why
//! [`BusBridgeMessage`] is serializable (JSON, since event payloads are free-form JSON).
//!
//! An event received from another node carries [`ORIGIN_NODE_KEY`] in its metadata; bridges
//! never forward such events again, so an event crosses the network once per peer and never
//! loops. Subscribers can filter on that key to watch one node's events or only local ones.

use ractor::concurrency::JoinHandle;
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{pg, Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};

use ire_core::{Event, EventBus, EventFilter};

use super::LocalEventBus;
use crate::metric_names;

/// Metadata key naming the node an event was first published on (set only on forwarded
/// events).
pub const ORIGIN_NODE_KEY: &str = "ire.origin-node";

/// The process-group scope bridges join.
pub const BRIDGE_SCOPE: &str = "ire.bus";

/// An event on its way from one node to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForwardedEvent {
    /// The node that published it.
    pub origin: String,
    /// The event.
    pub event: Event,
}

/// Messages of the [`BusBridge`] actor.
#[derive(Debug)]
pub enum BusBridgeMessage {
    /// An event published on another node.
    Forward(ForwardedEvent),
}

const FORWARD_VARIANT: &str = "forward";

impl ractor::Message for BusBridgeMessage {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            BusBridgeMessage::Forward(f) => Ok(SerializedMessage::Cast {
                variant: FORWARD_VARIANT.to_owned(),
                args: serde_json::to_vec(&f).map_err(|_| BoxedDowncastErr)?,
                metadata: None,
            }),
        }
    }

    fn deserialize(bytes: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        match bytes {
            SerializedMessage::Cast { variant, args, .. } if variant == FORWARD_VARIANT => {
                serde_json::from_slice(&args)
                    .map(BusBridgeMessage::Forward)
                    .map_err(|_| BoxedDowncastErr)
            }
            _ => Err(BoxedDowncastErr),
        }
    }
}

/// What a bridge needs.
#[derive(Debug, Clone)]
pub struct BusBridgeArgs {
    /// The local bus.
    pub bus: LocalEventBus,
    /// This node's name (stamped as the origin of forwarded events).
    pub node: String,
    /// The cluster's name: bridges of one cluster join the group of that name.
    pub cluster: String,
    /// Which local events are forwarded (default: all).
    pub filter: EventFilter,
}

/// The state of a running bridge.
pub struct BusBridgeState {
    args: BusBridgeArgs,
    pump: JoinHandle<()>,
}

/// Forwards this node's events to the other nodes' bridges and publishes theirs locally.
#[derive(Debug, Clone, Copy, Default)]
pub struct BusBridge;

impl BusBridge {
    /// The process group of a cluster's bridges.
    pub fn group(cluster: &str) -> String {
        format!("bridge.{cluster}")
    }
}

impl Actor for BusBridge {
    type Msg = BusBridgeMessage;
    type State = BusBridgeState;
    type Arguments = BusBridgeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: BusBridgeArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let group = BusBridge::group(&args.cluster);
        pg::join_scoped(
            BRIDGE_SCOPE.to_owned(),
            group.clone(),
            vec![myself.get_cell()],
        );
        let mut sub = args.bus.subscribe(args.filter.clone()).await?;
        let me = myself.get_id();
        let node = args.node.clone();
        let sent = metrics::counter!(metric_names::BUS_EVENTS_FORWARDED_TOTAL);
        // The pump reads local events and sends them to every peer bridge.
        let pump = tokio::spawn(async move {
            while let Some(event) = sub.recv().await {
                if event.metadata.contains_key(ORIGIN_NODE_KEY) {
                    continue; // came from another node: never forwarded again
                }
                let forwarded = ForwardedEvent {
                    origin: node.clone(),
                    event: Event::clone(&event),
                };
                for peer in pg::get_scoped_members(&BRIDGE_SCOPE.to_owned(), &group) {
                    if peer.get_id() == me {
                        continue;
                    }
                    match peer.send_message(BusBridgeMessage::Forward(forwarded.clone())) {
                        Ok(()) => sent.increment(1),
                        Err(e) => tracing::warn!(
                            component = "bus",
                            peer = %peer.get_id(),
                            error = %e,
                            "could not forward an event to a peer bridge"
                        ),
                    }
                }
            }
        });
        Ok(BusBridgeState { args, pump })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BusBridgeMessage::Forward(ForwardedEvent { origin, mut event }) => {
                if origin == state.args.node {
                    return Ok(());
                }
                metrics::counter!(metric_names::BUS_EVENTS_RECEIVED_TOTAL).increment(1);
                event.metadata.insert(ORIGIN_NODE_KEY.to_owned(), origin);
                // A closed local bus means the node is shutting down: drop quietly.
                let _ = state.args.bus.publish(event).await;
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.pump.abort();
        Ok(())
    }
}
