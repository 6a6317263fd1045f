//! [`ClusterTransport`]: raft RPCs as `RactorClusterMessage` calls over ractor_cluster.
//!
//! Every node runs a ractor_cluster `NodeServer` (magic-cookie authentication, TLS when
//! configured) named `ire-<id>`, and one `RaftRpcActor` named `ire-raft-rpc-<id>` that
//! joins the process group [`PG_GROUP`] in scope [`PG_SCOPE`]. When two nodes' sessions
//! authenticate, ractor_cluster mirrors each side's group members on the other as remote
//! actors; the connection manager picks the remote actor whose name carries the peer's raft id
//! and publishes it in a shared table that [`ClusterTransport::call`] reads.
//!
//! **Who sent a frame.** ractor_cluster delivers a remote call without saying which session
//! it came through, and every authenticated peer can reach every node's endpoint, so the
//! `from` a frame declares proves nothing by itself. Each node therefore issues every peer a
//! random token when that peer's session comes up, and sends it *to the peer's endpoint
//! through that session* (a `Bind` call): only the node that authenticated as that peer
//! receives it. A frame is served only if its token is the one issued to the node it names
//! as `from` (otherwise it is refused as not ready, and retried); a new session gets a new
//! token. Pings need none. A forged `Bind` can only make its target present a wrong token
//! (refused, then replaced at the next binding), never speak for another node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::{IncomingEncryptionMode, NodeServer, NodeServerMessage, RactorClusterMessage};
use tokio_rustls::rustls::pki_types::ServerName;

use super::connections::{ConnectionManager, ConnectionManagerArgs, ConnectionManagerMessage};
use super::frame::{self, RequestFrame};
use super::{
    NodeId, PeerStatus, RaftTransport, RemoteError, RemoteErrorKind, RpcHandler, RpcKind,
    TransportError,
};

/// The process-group scope of ire's cluster actors.
pub const PG_SCOPE: &str = "ire";
/// The process group every node's raft RPC endpoint joins.
pub const PG_GROUP: &str = "raft-rpc";

/// The ractor_cluster node name of a raft node.
pub fn node_name(id: NodeId) -> String {
    format!("ire-{id}")
}

/// The raft node id in a ractor_cluster peer name (`ire-<id>@<host>`), if it is one of ours.
pub fn parse_node_name(name: &str) -> Option<NodeId> {
    let base = name.split('@').next()?;
    base.strip_prefix("ire-")?.parse().ok()
}

/// The name of a node's raft RPC endpoint actor.
pub fn rpc_actor_name(id: NodeId) -> String {
    format!("ire-raft-rpc-{id}")
}

/// The raft node id in an RPC endpoint's actor name, if it is one.
pub fn parse_rpc_actor_name(name: &str) -> Option<NodeId> {
    name.strip_prefix("ire-raft-rpc-")?.parse().ok()
}

/// TLS for the links between nodes (both directions).
#[derive(Clone)]
pub struct TlsConfig {
    /// Accepts incoming links.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Opens outgoing links.
    pub connector: tokio_rustls::TlsConnector,
    /// The name peers' certificates are checked against.
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// How a [`ClusterTransport`] listens, authenticates and watches its peers.
#[derive(Debug, Clone)]
pub struct ClusterTransportConfig {
    /// This node's raft id.
    pub node_id: NodeId,
    /// Where to listen for other nodes.
    pub listen: SocketAddr,
    /// The shared secret every node of the cluster must present.
    pub cookie: String,
    /// TLS for links; `None` sends raw TCP (cookie-authenticated only).
    pub tls: Option<TlsConfig>,
    /// How often each connected peer is pinged.
    pub heartbeat_interval: Duration,
    /// How long a ping may take before it counts as missed.
    pub heartbeat_timeout: Duration,
    /// Missed pings in a row after which the session is dropped and redialed.
    pub max_missed_heartbeats: u32,
    /// First delay before redialing a peer; doubles on each failure.
    pub reconnect_min: Duration,
    /// Longest delay between dials.
    pub reconnect_max: Duration,
    /// How long a session (dialed or accepted) may take to authenticate and publish its
    /// endpoint before it is closed.
    pub handshake_timeout: Duration,
    /// The most sessions waiting to authenticate at once; more are closed as they open.
    pub max_pending_sessions: usize,
}

impl ClusterTransportConfig {
    /// A config with the default timings.
    pub fn new(node_id: NodeId, listen: SocketAddr, cookie: impl Into<String>) -> Self {
        Self {
            node_id,
            listen,
            cookie: cookie.into(),
            tls: None,
            heartbeat_interval: Duration::from_millis(250),
            heartbeat_timeout: Duration::from_millis(500),
            max_missed_heartbeats: 4,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(3),
            max_pending_sessions: 64,
        }
    }
}

/// The raft RPCs between nodes. Each carries a [`RequestFrame`] and answers with a reply
/// frame; the bytes are decoded by this crate (never by ractor's `BytesConvertable`, which
/// may panic), so a corrupted frame is a clear error.
#[derive(RactorClusterMessage)]
pub enum RaftRpcMessage {
    /// openraft append-entries.
    #[rpc]
    AppendEntries(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// openraft vote.
    #[rpc]
    Vote(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// openraft install-snapshot (one chunk).
    #[rpc]
    InstallSnapshot(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// A client request forwarded to the leader.
    #[rpc]
    Forward(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// A liveness probe.
    #[rpc]
    Ping(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// A session token issued to the receiver (see the module docs).
    #[rpc]
    Bind(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

impl RaftRpcMessage {
    /// Builds the message for an RPC kind.
    pub fn new(kind: RpcKind, frame: Vec<u8>, reply: RpcReplyPort<Vec<u8>>) -> Self {
        match kind {
            RpcKind::AppendEntries => Self::AppendEntries(frame, reply),
            RpcKind::Vote => Self::Vote(frame, reply),
            RpcKind::InstallSnapshot => Self::InstallSnapshot(frame, reply),
            RpcKind::Forward => Self::Forward(frame, reply),
            RpcKind::Ping => Self::Ping(frame, reply),
            RpcKind::Bind => Self::Bind(frame, reply),
        }
    }

    fn into_parts(self) -> (RpcKind, Vec<u8>, RpcReplyPort<Vec<u8>>) {
        match self {
            Self::AppendEntries(f, r) => (RpcKind::AppendEntries, f, r),
            Self::Vote(f, r) => (RpcKind::Vote, f, r),
            Self::InstallSnapshot(f, r) => (RpcKind::InstallSnapshot, f, r),
            Self::Forward(f, r) => (RpcKind::Forward, f, r),
            Self::Ping(f, r) => (RpcKind::Ping, f, r),
            Self::Bind(f, r) => (RpcKind::Bind, f, r),
        }
    }
}

/// State shared by the transport handle, its RPC endpoint and its connection manager.
pub(crate) struct Shared {
    pub(crate) id: NodeId,
    pub(crate) handler: RwLock<Option<Arc<dyn RpcHandler>>>,
    /// Peer id -> its RPC endpoint, published by the connection manager.
    pub(crate) links: RwLock<HashMap<NodeId, ActorRef<RaftRpcMessage>>>,
    /// Peer id -> the token this node issued it for its current session.
    pub(crate) issued: RwLock<HashMap<NodeId, u64>>,
    /// Peer id -> the token that peer issued this node.
    pub(crate) held: RwLock<HashMap<NodeId, u64>>,
}

impl Shared {
    /// The token to present to `peer` (0 until it bound this node's session).
    pub(crate) fn token_for(&self, peer: NodeId) -> u64 {
        self.held
            .read()
            .expect("tokens lock poisoned")
            .get(&peer)
            .copied()
            .unwrap_or(0)
    }
}

/// Checks a request frame and runs it through the handler; every failure becomes a reply.
pub(crate) async fn serve_frame(shared: &Shared, variant: RpcKind, bytes: Vec<u8>) -> Vec<u8> {
    let reply = async {
        let frame = RequestFrame::decode(bytes)
            .map_err(|e| RemoteError::new(RemoteErrorKind::Malformed, e.to_string()))?;
        if frame.kind != variant {
            return Err(RemoteError::new(
                RemoteErrorKind::Malformed,
                format!(
                    "frame says {} but arrived as {}",
                    frame.kind.name(),
                    variant.name()
                ),
            ));
        }
        if frame.to != shared.id {
            return Err(RemoteError::new(
                RemoteErrorKind::UnknownNode,
                format!(
                    "frame for node {} reached node {}: no such node here",
                    frame.to, shared.id
                ),
            ));
        }
        match frame.kind {
            RpcKind::Ping => return Ok(Vec::new()),
            RpcKind::Bind => {
                let token: [u8; 8] = frame.payload.as_slice().try_into().map_err(|_| {
                    RemoteError::new(RemoteErrorKind::Malformed, "a bind carries 8 bytes")
                })?;
                shared
                    .held
                    .write()
                    .expect("tokens lock poisoned")
                    .insert(frame.from, u64::from_be_bytes(token));
                return Ok(Vec::new());
            }
            _ => {}
        }
        let issued = shared
            .issued
            .read()
            .expect("tokens lock poisoned")
            .get(&frame.from)
            .copied();
        if issued.is_none_or(|t| t != frame.token) {
            return Err(RemoteError::new(
                RemoteErrorKind::NotReady,
                format!(
                    "node {} has no session of node {} that this frame belongs to: a frame \
                     is served only with the token issued to the session its sender \
                     authenticated (a new session is bound within a round trip)",
                    shared.id, frame.from
                ),
            ));
        }
        let handler = shared
            .handler
            .read()
            .expect("handler lock poisoned")
            .clone()
            .ok_or_else(|| {
                RemoteError::new(
                    RemoteErrorKind::NotReady,
                    format!("node {} is starting", shared.id),
                )
            })?;
        handler.handle(frame.from, frame.kind, frame.payload).await
    }
    .await;
    if let Err(e) = &reply {
        tracing::debug!(component = "raft-transport", error = %e, kind = variant.name(), "refused an rpc");
    }
    frame::encode_reply(&reply)
}

/// The endpoint that receives raft RPCs from other nodes.
pub(crate) struct RaftRpcActor;

impl Actor for RaftRpcActor {
    type Msg = RaftRpcMessage;
    type State = Arc<Shared>;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join_scoped(
            PG_SCOPE.to_string(),
            PG_GROUP.to_string(),
            vec![myself.get_cell()],
        );
        Ok(shared)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (kind, bytes, reply) = message.into_parts();
        match kind {
            // A ping needs no handler: answered here, it measures the link, not the node.
            // A binding only records a token.
            RpcKind::Ping | RpcKind::Bind => {
                let out = serve_frame(shared, kind, bytes).await;
                let _ = reply.send(out);
            }
            // Everything else may wait for raft's core (an append waits for the follower's
            // flush, and for a snapshot install the core is busy with): each runs in its own
            // task, so that pings are never held up behind them and the connection manager
            // does not take a busy peer for a silent one. openraft orders what needs ordering
            // per peer.
            RpcKind::AppendEntries
            | RpcKind::Vote
            | RpcKind::InstallSnapshot
            | RpcKind::Forward => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let out = serve_frame(&shared, kind, bytes).await;
                    let _ = reply.send(out);
                });
            }
        }
        Ok(())
    }
}

/// The ractor_cluster transport (see the module docs).
#[derive(Clone)]
pub struct ClusterTransport {
    shared: Arc<Shared>,
    node_server: ActorRef<NodeServerMessage>,
    rpc_actor: ActorRef<RaftRpcMessage>,
    manager: ActorRef<ConnectionManagerMessage>,
}

impl std::fmt::Debug for ClusterTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTransport")
            .field("node_id", &self.shared.id)
            .finish_non_exhaustive()
    }
}

/// A transport that could not start.
#[derive(Debug, thiserror::Error)]
#[error("starting the raft transport of node {node_id} on {listen}: {reason}")]
pub struct StartError {
    /// The node.
    pub node_id: NodeId,
    /// Where it meant to listen.
    pub listen: SocketAddr,
    /// What failed.
    pub reason: String,
}

impl ClusterTransport {
    /// Starts listening and the connection manager; peers are added with
    /// [`RaftTransport::set_peer`].
    pub async fn start(config: ClusterTransportConfig) -> Result<Self, StartError> {
        let fail = |reason: String| StartError {
            node_id: config.node_id,
            listen: config.listen,
            reason,
        };
        let shared = Arc::new(Shared {
            id: config.node_id,
            handler: RwLock::new(None),
            links: RwLock::new(HashMap::new()),
            issued: RwLock::new(HashMap::new()),
            held: RwLock::new(HashMap::new()),
        });
        let (rpc_actor, _) = Actor::spawn(
            Some(rpc_actor_name(config.node_id)),
            RaftRpcActor,
            shared.clone(),
        )
        .await
        .map_err(|e| fail(format!("rpc endpoint: {e}")))?;
        let encryption = match &config.tls {
            Some(tls) => IncomingEncryptionMode::Tls(tls.acceptor.clone()),
            None => IncomingEncryptionMode::Raw,
        };
        let server = NodeServer::new(
            config.listen.port(),
            config.cookie.clone(),
            node_name(config.node_id),
            config.listen.ip().to_string(),
            Some(encryption),
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        )
        .with_listen_addr(config.listen.ip())
        // The same limit the frames are decoded with (and the sender checks).
        .with_max_inbound_frame_size(frame::MAX_FRAME_BYTES as u64);
        let node_server = match Actor::spawn(
            Some(format!("ire-node-server-{}", config.node_id)),
            server,
            (),
        )
        .await
        {
            Ok((actor, _)) => actor,
            Err(e) => {
                rpc_actor.stop(None);
                return Err(fail(format!("listener: {e}")));
            }
        };
        let (manager, _) = Actor::spawn(
            Some(format!("ire-connections-{}", config.node_id)),
            ConnectionManager,
            ConnectionManagerArgs {
                config: config.clone(),
                node_server: node_server.clone(),
                shared: shared.clone(),
            },
        )
        .await
        .map_err(|e| fail(format!("connection manager: {e}")))?;
        tracing::info!(component = "raft-transport", node_id = config.node_id, listen = %config.listen, tls = config.tls.is_some(), "raft transport listening");
        Ok(Self {
            shared,
            node_server,
            rpc_actor,
            manager,
        })
    }

    /// The session token `peer` issued this node (what [`RaftTransport::call`] presents);
    /// tests use it to build frames by hand.
    pub fn session_token(&self, peer: NodeId) -> u64 {
        self.shared.token_for(peer)
    }

    /// Sends a raw frame as the given RPC variant; tests use it to send corrupted frames.
    pub async fn call_raw(
        &self,
        target: NodeId,
        kind: RpcKind,
        frame: Vec<u8>,
        timeout: Duration,
    ) -> Result<Result<Vec<u8>, RemoteError>, TransportError> {
        // Sent anyway, an oversized message would close the session, heartbeats included.
        if frame.len() > frame::MAX_PAYLOAD_BYTES + frame::REQUEST_HEADER_LEN {
            return Err(TransportError::Frame {
                peer: target,
                error: frame::FrameError::TooLarge {
                    kind: kind.name(),
                    len: frame.len(),
                },
            });
        }
        let link = self.link(target)?;
        let result = link
            .call(
                |reply| RaftRpcMessage::new(kind, frame, reply),
                Some(timeout),
            )
            .await;
        let bytes = match result {
            Ok(ractor::rpc::CallResult::Success(bytes)) => bytes,
            Ok(ractor::rpc::CallResult::Timeout) => {
                return Err(TransportError::Timeout {
                    peer: target,
                    kind: kind.name(),
                    after: timeout,
                })
            }
            Ok(ractor::rpc::CallResult::SenderError) => {
                return Err(TransportError::Unreachable {
                    peer: target,
                    reason: "the connection closed before the reply".into(),
                })
            }
            Err(e) => {
                return Err(TransportError::Unreachable {
                    peer: target,
                    reason: format!("sending failed: {e}"),
                })
            }
        };
        frame::decode_reply(bytes).map_err(|error| TransportError::Frame {
            peer: target,
            error,
        })
    }

    fn link(&self, target: NodeId) -> Result<ActorRef<RaftRpcMessage>, TransportError> {
        if let Some(link) = self
            .shared
            .links
            .read()
            .expect("links lock poisoned")
            .get(&target)
        {
            return Ok(link.clone());
        }
        // Ask the manager to dial now rather than at its next tick.
        let _ = self.manager.cast(ConnectionManagerMessage::DialNow(target));
        Err(TransportError::Unreachable {
            peer: target,
            reason: "no authenticated session".into(),
        })
    }
}

#[async_trait]
impl RaftTransport for ClusterTransport {
    fn local_id(&self) -> NodeId {
        self.shared.id
    }

    fn set_peer(&self, id: NodeId, addr: String) {
        if id != self.shared.id {
            let _ = self
                .manager
                .cast(ConnectionManagerMessage::SetPeer(id, addr));
        }
    }

    fn remove_peer(&self, id: NodeId) {
        let _ = self.manager.cast(ConnectionManagerMessage::RemovePeer(id));
    }

    fn serve(&self, handler: Arc<dyn RpcHandler>) {
        *self.shared.handler.write().expect("handler lock poisoned") = Some(handler);
    }

    async fn call(
        &self,
        target: NodeId,
        kind: RpcKind,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let frame = RequestFrame {
            kind,
            from: self.shared.id,
            to: target,
            token: self.shared.token_for(target),
            payload,
        }
        .encode();
        match self.call_raw(target, kind, frame, timeout).await? {
            Ok(payload) => Ok(payload),
            Err(error) => Err(TransportError::Remote {
                peer: target,
                kind: kind.name(),
                error,
            }),
        }
    }

    async fn peers(&self) -> Vec<PeerStatus> {
        match self
            .manager
            .call(
                ConnectionManagerMessage::Status,
                Some(Duration::from_secs(2)),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(peers)) => peers,
            _ => Vec::new(),
        }
    }

    async fn shutdown(&self) {
        *self.shared.handler.write().expect("handler lock poisoned") = None;
        self.shared
            .links
            .write()
            .expect("links lock poisoned")
            .clear();
        let _ = self
            .manager
            .stop_and_wait(None, Some(Duration::from_secs(2)))
            .await;
        let _ = self
            .node_server
            .stop_and_wait(None, Some(Duration::from_secs(2)))
            .await;
        let _ = self
            .rpc_actor
            .stop_and_wait(None, Some(Duration::from_secs(2)))
            .await;
    }
}
