//! An in-memory raft network with fault injection: messages between nodes can be dropped
//! (requests or responses), delayed, or cut by partitions, and a node can be taken down.
//!
//! Every request and response goes through bincode, as on the real transport, so a type
//! that does not survive encoding fails here first.

// openraft's `RPCError` is large, and its shape is fixed by the `RaftNetwork` trait.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::Raft;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::codec::{decode, encode};
use crate::types::{ClusterNode, NodeId, TypeConfig};

/// A small deterministic random generator (xorshift64*), enough for fault injection.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (zero is replaced).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

/// The faults currently injected.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Probability that a request is lost before it arrives.
    pub drop_request: f64,
    /// Probability that a response is lost after the request took effect.
    pub drop_response: f64,
    /// Each message is delayed by a random time in `0..=max_delay`.
    pub max_delay: Duration,
    /// Partition groups: nodes in different groups cannot talk. Nodes not listed are in
    /// group 0.
    pub group: BTreeMap<NodeId, u32>,
    /// Nodes that are down: nothing reaches them and nothing leaves them.
    pub down: BTreeSet<NodeId>,
}

impl Faults {
    fn linked(&self, a: NodeId, b: NodeId) -> bool {
        !self.down.contains(&a)
            && !self.down.contains(&b)
            && self.group.get(&a).copied().unwrap_or(0) == self.group.get(&b).copied().unwrap_or(0)
    }
}

#[derive(Default)]
struct RouterState {
    nodes: BTreeMap<NodeId, Raft<TypeConfig>>,
    faults: Faults,
    rng: Option<Rng>,
}

/// Routes raft RPCs between in-process nodes, with [`Faults`].
#[derive(Clone, Default)]
pub struct Router {
    state: Arc<Mutex<RouterState>>,
}

/// Why a message did not get through.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Cut(String);

impl Router {
    /// A router with no nodes and no faults; `seed` drives the random faults.
    pub fn new(seed: u64) -> Self {
        let r = Router::default();
        r.state.lock().unwrap().rng = Some(Rng::new(seed));
        r
    }

    /// Makes `raft` reachable as node `id` (replacing a previous incarnation).
    pub fn register(&self, id: NodeId, raft: Raft<TypeConfig>) {
        self.state.lock().unwrap().nodes.insert(id, raft);
    }

    /// Makes node `id` unreachable and forgets it.
    pub fn unregister(&self, id: NodeId) {
        self.state.lock().unwrap().nodes.remove(&id);
    }

    /// Changes the injected faults.
    pub fn set_faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.state.lock().unwrap().faults);
    }

    /// The injected faults.
    pub fn faults(&self) -> Faults {
        self.state.lock().unwrap().faults.clone()
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.state.lock().unwrap().faults = Faults::default();
    }

    /// Splits the cluster: each listed group can only talk within itself.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        let mut s = self.state.lock().unwrap();
        s.faults.group.clear();
        for (i, g) in groups.iter().enumerate() {
            for n in *g {
                s.faults.group.insert(*n, i as u32 + 1);
            }
        }
    }

    /// The network node `id` uses to reach the others.
    pub fn network_for(&self, id: NodeId) -> NodeNetwork {
        NodeNetwork {
            from: id,
            router: self.clone(),
        }
    }

    fn random(&self, f: impl FnOnce(&mut Rng, &Faults) -> (bool, Duration)) -> (bool, Duration) {
        let mut s = self.state.lock().unwrap();
        let faults = s.faults.clone();
        let rng = s.rng.get_or_insert_with(|| Rng::new(7));
        f(rng, &faults)
    }

    /// Delivers one RPC from `from` to `to`, injecting faults around the call.
    async fn deliver<Req, Resp, E, Fut>(
        &self,
        from: NodeId,
        to: NodeId,
        req: Req,
        call: impl FnOnce(Raft<TypeConfig>, Req) -> Fut,
    ) -> Result<Resp, RPCError<NodeId, ClusterNode, RaftError<NodeId, E>>>
    where
        Req: Serialize + DeserializeOwned,
        Resp: Serialize + DeserializeOwned,
        E: std::error::Error,
        Fut: std::future::Future<Output = Result<Resp, RaftError<NodeId, E>>>,
    {
        let unreachable = |why: &str| {
            RPCError::Unreachable(Unreachable::new(&Cut(format!("{from} -> {to}: {why}"))))
        };
        let (drop, delay) = self.random(|rng, f| {
            let delay = if f.max_delay.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_micros(rng.below(f.max_delay.as_micros() as u64 + 1))
            };
            (rng.chance(f.drop_request), delay)
        });
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let target = {
            let s = self.state.lock().unwrap();
            if !s.faults.linked(from, to) {
                return Err(unreachable("partitioned"));
            }
            s.nodes.get(&to).cloned()
        };
        let Some(target) = target else {
            return Err(unreachable("node is down"));
        };
        if drop {
            return Err(unreachable("request dropped"));
        }
        let wire = |what: &'static str, bytes: Result<Vec<u8>, _>| {
            bytes.map_err(|e: crate::error::StoreError| {
                RPCError::Network(NetworkError::new(&Cut(format!("{what}: {e}"))))
            })
        };
        let bytes = wire("request", encode("request", &req))?;
        let req: Req = decode("request", &bytes)
            .map_err(|e| RPCError::Network(NetworkError::new(&Cut(format!("request: {e}")))))?;
        let resp = call(target, req)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(to, e)))?;
        let (drop_resp, _) = self.random(|rng, f| (rng.chance(f.drop_response), Duration::ZERO));
        let still_linked = self.state.lock().unwrap().faults.linked(from, to);
        if drop_resp || !still_linked {
            return Err(unreachable("response lost"));
        }
        let bytes = wire("response", encode("response", &resp))?;
        decode::<Resp>("response", &bytes)
            .map_err(|e| RPCError::Network(NetworkError::new(&Cut(format!("response: {e}")))))
    }
}

/// The network of one node: a factory of connections to its peers.
#[derive(Clone)]
pub struct NodeNetwork {
    from: NodeId,
    router: Router,
}

/// A connection from one node to one peer.
pub struct Connection {
    from: NodeId,
    to: NodeId,
    router: Router,
}

impl RaftNetworkFactory<TypeConfig> for NodeNetwork {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &ClusterNode) -> Connection {
        Connection {
            from: self.from,
            to: target,
            router: self.router.clone(),
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, ClusterNode, RaftError<NodeId>>>
    {
        self.router
            .deliver(self.from, self.to, rpc, |raft, rpc| async move {
                raft.append_entries(rpc).await
            })
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, ClusterNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.router
            .deliver(self.from, self.to, rpc, |raft, rpc| async move {
                raft.install_snapshot(rpc).await
            })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, ClusterNode, RaftError<NodeId>>> {
        self.router
            .deliver(self.from, self.to, rpc, |raft, rpc| async move {
                raft.vote(rpc).await
            })
            .await
    }
}
