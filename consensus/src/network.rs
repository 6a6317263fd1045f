//! The openraft network over a [`RaftTransport`]: raft RPCs encoded with bincode (serde
//! mode), and the serving side that hands incoming RPCs to the local [`Raft`].
//!
//! Generic over the raft type configuration: only node ids (`u64`, stable, from config) and
//! a node's address ([`NodeAddress`]) are needed here.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError,
    RemoteError as RaftRemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Raft, RaftTypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::transport::frame::{decode_payload, encode_payload};
use crate::transport::{
    NodeId, RaftTransport, RemoteError, RemoteErrorKind, RpcKind, TransportError,
};

/// Where a cluster member listens, as its raft `Node` value says.
pub trait NodeAddress {
    /// The `host:port` of the node's transport.
    fn address(&self) -> &str;
}

impl NodeAddress for openraft::BasicNode {
    fn address(&self) -> &str {
        &self.addr
    }
}

/// The largest append-entries payload sent as one RPC: a larger one (many batch entries of
/// big records) is refused before sending with a hint to send half as many entries, which
/// openraft follows for the next RPCs. Well under the transport's frame limit.
pub const MAX_APPEND_BYTES: usize = 16 << 20;

/// When an append-entries payload of `bytes` carrying `entries` entries is too large to
/// send, how many entries to send instead (a single entry always goes as it is).
pub fn entries_hint(bytes: usize, entries: usize) -> Option<u64> {
    (bytes > MAX_APPEND_BYTES && entries > 1).then_some((entries / 2) as u64)
}

/// How long openraft waits before retrying a peer it could not reach. openraft's default
/// (500 ms) slows a new leader's catch-up of a restarted follower for no benefit.
pub const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(100);

/// Builds one [`PeerNetwork`] per replication target.
pub struct Network<C> {
    transport: Arc<dyn RaftTransport>,
    _types: PhantomData<fn() -> C>,
}

impl<C> Network<C> {
    /// A network over `transport`.
    pub fn new(transport: Arc<dyn RaftTransport>) -> Self {
        Self {
            transport,
            _types: PhantomData,
        }
    }
}

impl<C> RaftNetworkFactory<C> for Network<C>
where
    C: RaftTypeConfig<NodeId = NodeId>,
    C::Node: NodeAddress,
    AppendEntriesRequest<C>: Serialize,
    InstallSnapshotRequest<C>: Serialize,
{
    type Network = PeerNetwork<C>;

    async fn new_client(&mut self, target: NodeId, node: &C::Node) -> Self::Network {
        // Membership is where node addresses come from: tell the transport, which dials.
        self.transport.set_peer(target, node.address().to_string());
        PeerNetwork {
            target,
            transport: self.transport.clone(),
            _types: PhantomData,
        }
    }
}

/// The raft RPCs to one peer.
pub struct PeerNetwork<C> {
    target: NodeId,
    transport: Arc<dyn RaftTransport>,
    _types: PhantomData<fn() -> C>,
}

/// A reply that could not be decoded.
#[derive(Debug)]
struct BadReply(String);

impl fmt::Display for BadReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadReply {}

impl<C> PeerNetwork<C>
where
    C: RaftTypeConfig<NodeId = NodeId>,
{
    async fn rpc<Req, Resp, E>(
        &self,
        kind: RpcKind,
        action: RPCTypes,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, C::Node, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = encode_payload(kind.name(), req)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send(kind, action, payload, option).await
    }

    async fn send<Resp, E>(
        &self,
        kind: RpcKind,
        action: RPCTypes,
        payload: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, C::Node, E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let timeout = option.hard_ttl();
        let bytes = self
            .transport
            .call(self.target, kind, payload, timeout)
            .await
            .map_err(|e| match e {
                TransportError::Timeout { .. } => RPCError::Timeout(Timeout {
                    action,
                    id: self.transport.local_id(),
                    target: self.target,
                    timeout,
                }),
                TransportError::Unreachable { .. }
                | TransportError::UnknownPeer(_)
                | TransportError::Shutdown => RPCError::Unreachable(Unreachable::new(&e)),
                TransportError::Remote { .. } | TransportError::Frame { .. } => {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        let reply: Result<Resp, E> = decode_payload(kind.name(), &bytes).map_err(|e| {
            RPCError::Network(NetworkError::new(&BadReply(format!(
                "reply to {} from node {}: {e}",
                kind.name(),
                self.target
            ))))
        })?;
        reply.map_err(|e| RPCError::RemoteError(RaftRemoteError::new(self.target, e)))
    }
}

impl<C> RaftNetwork<C> for PeerNetwork<C>
where
    C: RaftTypeConfig<NodeId = NodeId>,
    AppendEntriesRequest<C>: Serialize,
    InstallSnapshotRequest<C>: Serialize,
{
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, C::Node, RaftError<NodeId>>> {
        let kind = RpcKind::AppendEntries;
        let payload = encode_payload(kind.name(), &rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if let Some(hint) = entries_hint(payload.len(), rpc.entries.len()) {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        self.send(kind, RPCTypes::AppendEntries, payload, &option)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, C::Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(
            RpcKind::InstallSnapshot,
            RPCTypes::InstallSnapshot,
            &rpc,
            &option,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, C::Node, RaftError<NodeId>>> {
        self.rpc(RpcKind::Vote, RPCTypes::Vote, &rpc, &option).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }
}

fn malformed(e: impl fmt::Display) -> RemoteError {
    RemoteError::new(RemoteErrorKind::Malformed, e.to_string())
}

fn encode_reply<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, RemoteError> {
    encode_payload(what, value)
        .map_err(|e| RemoteError::new(RemoteErrorKind::Handler, e.to_string()))
}

/// Refuses a raft RPC whose payload speaks for another node than `from`, the sender its
/// session was bound to (a vote's candidate, an append's or a snapshot's leader).
fn check_sender(
    kind: RpcKind,
    from: NodeId,
    vote: &openraft::Vote<NodeId>,
) -> Result<(), RemoteError> {
    match vote.leader_id().voted_for() {
        Some(claimed) if claimed != from => Err(RemoteError::new(
            RemoteErrorKind::Malformed,
            format!(
                "{} from node {from} speaks for node {claimed}: refused",
                kind.name()
            ),
        )),
        _ => Ok(()),
    }
}

/// Serves one incoming raft RPC (append-entries, vote, install-snapshot) from `from` with
/// the local raft. A payload that does not decode, or that speaks for another node than
/// `from`, is refused as malformed; raft is never called with it.
pub async fn serve_raft_rpc<C>(
    raft: &Raft<C>,
    from: NodeId,
    kind: RpcKind,
    payload: &[u8],
) -> Result<Vec<u8>, RemoteError>
where
    C: RaftTypeConfig<NodeId = NodeId>,
    AppendEntriesRequest<C>: DeserializeOwned,
    InstallSnapshotRequest<C>: DeserializeOwned,
{
    match kind {
        RpcKind::AppendEntries => {
            let req: AppendEntriesRequest<C> =
                decode_payload("append_entries", payload).map_err(malformed)?;
            check_sender(kind, from, &req.vote)?;
            encode_reply("append_entries reply", &raft.append_entries(req).await)
        }
        RpcKind::Vote => {
            let req: VoteRequest<NodeId> = decode_payload("vote", payload).map_err(malformed)?;
            check_sender(kind, from, &req.vote)?;
            encode_reply("vote reply", &raft.vote(req).await)
        }
        RpcKind::InstallSnapshot => {
            let req: InstallSnapshotRequest<C> =
                decode_payload("install_snapshot", payload).map_err(malformed)?;
            check_sender(kind, from, &req.vote)?;
            encode_reply("install_snapshot reply", &raft.install_snapshot(req).await)
        }
        RpcKind::Forward | RpcKind::Ping | RpcKind::Bind => Err(RemoteError::new(
            RemoteErrorKind::Handler,
            format!("{} is not a raft rpc", kind.name()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_append_is_split_and_a_single_entry_is_sent_whole() {
        assert_eq!(entries_hint(MAX_APPEND_BYTES, 32), None);
        assert_eq!(entries_hint(MAX_APPEND_BYTES + 1, 32), Some(16));
        assert_eq!(entries_hint(MAX_APPEND_BYTES + 1, 3), Some(1));
        assert_eq!(entries_hint(MAX_APPEND_BYTES * 3, 1), None);
    }
}
