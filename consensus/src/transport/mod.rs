//! The raft transport: how one node's raft RPCs reach another node.
//!
//! [`RaftTransport`] is deliberately small (send a frame of bytes to a node id, get bytes
//! back) so that the raft network ([`crate::network`]) does not depend on how bytes travel.
//! The implementation here, [`ClusterTransport`], carries them as `RactorClusterMessage`
//! calls between nodes linked by ractor_cluster (cookie authentication, optional TLS), with a
//! [`ConnectionManager`](connections) that dials peers, reconnects with backoff and drops a
//! peer that stopped answering heartbeats. A dedicated TCP transport can be added beside it
//! behind the same trait.
//!
//! Raft node ids are stable and come from configuration; ractor_cluster's per-session ids
//! never leave this module.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod cluster;
pub mod connections;
pub mod frame;
pub mod tls;

pub use cluster::{ClusterTransport, ClusterTransportConfig, TlsConfig};
pub use frame::FrameError;
pub use tls::TlsError;

/// Compares two secrets in time independent of where they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A raft node id: stable, from configuration.
pub type NodeId = u64;

/// Which RPC a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum RpcKind {
    /// openraft's append-entries (also the leader's heartbeat).
    AppendEntries = 1,
    /// openraft's vote request.
    Vote = 2,
    /// One chunk of a snapshot sent to a lagging node.
    InstallSnapshot = 3,
    /// A client request forwarded from a follower to the leader.
    Forward = 4,
    /// The connection manager's liveness probe.
    Ping = 5,
    /// The session token a node issues to a peer, sent over that peer's session.
    Bind = 6,
}

impl RpcKind {
    /// The kind for a header byte, if it names one.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::AppendEntries,
            2 => Self::Vote,
            3 => Self::InstallSnapshot,
            4 => Self::Forward,
            5 => Self::Ping,
            6 => Self::Bind,
            _ => return None,
        })
    }

    /// A short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::AppendEntries => "append_entries",
            Self::Vote => "vote",
            Self::InstallSnapshot => "install_snapshot",
            Self::Forward => "forward",
            Self::Ping => "ping",
            Self::Bind => "bind",
        }
    }
}

/// Why the receiving node refused or failed an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RemoteErrorKind {
    /// The frame or its payload could not be decoded.
    Malformed = 1,
    /// The frame was addressed to a node id the receiver is not.
    UnknownNode = 2,
    /// The receiver has not finished starting (no raft handler yet).
    NotReady = 3,
    /// The receiver's handler failed.
    Handler = 4,
}

impl RemoteErrorKind {
    /// The kind for a byte, if it names one.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Malformed,
            2 => Self::UnknownNode,
            3 => Self::NotReady,
            4 => Self::Handler,
            _ => return None,
        })
    }
}

/// An error reported by the receiving node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// What kind of failure.
    pub kind: RemoteErrorKind,
    /// What the receiver said.
    pub message: String,
}

impl RemoteError {
    /// A remote error of the given kind.
    pub fn new(kind: RemoteErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

/// Why an RPC did not get an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// No address is known for the node id.
    #[error("unknown node {0}: no address configured for it")]
    UnknownPeer(NodeId),
    /// There is no working connection to the node right now.
    #[error("node {peer} is unreachable: {reason}")]
    Unreachable {
        /// The peer.
        peer: NodeId,
        /// Why.
        reason: String,
    },
    /// The node did not answer in time.
    #[error("{kind} to node {peer} timed out after {after:?}")]
    Timeout {
        /// The peer.
        peer: NodeId,
        /// The RPC.
        kind: &'static str,
        /// How long it was given.
        after: Duration,
    },
    /// The node answered with an error.
    #[error("node {peer} refused {kind}: {error}")]
    Remote {
        /// The peer.
        peer: NodeId,
        /// The RPC.
        kind: &'static str,
        /// Its answer.
        error: RemoteError,
    },
    /// A frame (sent or received) could not be understood.
    #[error("bad frame from node {peer}: {error}")]
    Frame {
        /// The peer.
        peer: NodeId,
        /// What is wrong.
        error: FrameError,
    },
    /// The transport has been shut down.
    #[error("the transport is shut down")]
    Shutdown,
}

impl TransportError {
    /// True when the same RPC may succeed later (connection or timing trouble).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } => true,
            Self::Remote { error, .. } => error.kind == RemoteErrorKind::NotReady,
            Self::UnknownPeer(_) | Self::Frame { .. } | Self::Shutdown => false,
        }
    }
}

/// What the transport knows about one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer's raft node id.
    pub id: NodeId,
    /// Where it listens.
    pub addr: String,
    /// True when an authenticated session with it is up and its RPC endpoint is known.
    pub connected: bool,
    /// Heartbeats missed in a row.
    pub missed_heartbeats: u32,
    /// Connection attempts since it was last connected.
    pub failed_dials: u32,
}

/// Serves RPCs that arrive for this node (implemented by the raft node).
#[async_trait]
pub trait RpcHandler: Send + Sync + 'static {
    /// Handles one RPC from `from`, returning the reply payload.
    async fn handle(
        &self,
        from: NodeId,
        kind: RpcKind,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, RemoteError>;
}

/// Moves raft RPCs between nodes, addressed by stable raft node ids.
#[async_trait]
pub trait RaftTransport: Send + Sync + 'static {
    /// This node's id.
    fn local_id(&self) -> NodeId;
    /// Records (or changes) where a node listens; the transport connects to it.
    fn set_peer(&self, id: NodeId, addr: String);
    /// Forgets a node (after it left the cluster).
    fn remove_peer(&self, id: NodeId);
    /// Installs the handler for RPCs that arrive; until then they are refused as not ready.
    fn serve(&self, handler: Arc<dyn RpcHandler>);
    /// Sends one RPC and waits for its reply.
    async fn call(
        &self,
        target: NodeId,
        kind: RpcKind,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError>;
    /// The state of every known peer.
    async fn peers(&self) -> Vec<PeerStatus>;
    /// Closes every connection and stops serving.
    async fn shutdown(&self);
}
