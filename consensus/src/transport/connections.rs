//! The connection manager: dials peers, redials with backoff, and drops silent peers.
//!
//! ractor_cluster neither reconnects a closed session nor notices a peer that stopped
//! answering (its own ping only logs latency), so one `ConnectionManager` actor per node
//! does both. On every tick it lists the node server's sessions, finds each peer's RPC
//! endpoint among the remote members of the raft process group, publishes the working ones
//! for [`ClusterTransport`](super::ClusterTransport), pings each with a timeout, and:
//! - dials a configured peer that has no session, with exponential backoff and jitter;
//! - stops a session whose handshake does not finish in time (a peer that accepts TCP but
//!   never authenticates, e.g. a stopped process), inbound or outbound: it learns of every
//!   session when it opens (ractor_cluster lists only authenticated ones), so neither redials
//!   to a silent peer nor a flood of inbound connections leave sessions behind, and at most
//!   [`ClusterTransportConfig::max_pending_sessions`] wait at once (more are closed at once);
//! - stops a session whose peer missed several pings in a row, so that calls fail fast and the
//!   next tick redials.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServerMessage, NodeSessionMessage, RactorMessage};

use super::cluster::{
    parse_node_name, parse_rpc_actor_name, ClusterTransportConfig, RaftRpcMessage, Shared,
    PG_GROUP, PG_SCOPE,
};
use super::frame::RequestFrame;
use super::{NodeId, PeerStatus, RpcKind};

/// Messages of the `ConnectionManager`.
#[derive(RactorMessage)]
pub enum ConnectionManagerMessage {
    /// Periodic: refresh sessions, dial, ping.
    Tick,
    /// A peer's address (added or changed).
    SetPeer(NodeId, String),
    /// Forget a peer.
    RemovePeer(NodeId),
    /// A call found no link: dial now if the backoff allows.
    DialNow(NodeId),
    /// A dial finished.
    Dialed(NodeId, Result<(), String>),
    /// A ping finished (true: answered in time).
    Pinged(NodeId, bool),
    /// A binding finished: the peer, the token, and whether the peer has it.
    Bound(NodeId, u64, bool),
    /// Every peer's state.
    Status(RpcReplyPort<Vec<PeerStatus>>),
    /// A session opened (not authenticated yet).
    SessionOpened(ActorRef<NodeSessionMessage>),
    /// A session authenticated.
    SessionAuthenticated(ActorId),
    /// A session closed.
    SessionClosed(ActorId),
}

/// Forwards the node server's session events to the manager.
struct SessionEvents(ActorRef<ConnectionManagerMessage>);

impl NodeEventSubscription for SessionEvents {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        let _ = self
            .0
            .cast(ConnectionManagerMessage::SessionOpened(ses.actor));
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let _ = self
            .0
            .cast(ConnectionManagerMessage::SessionClosed(ses.actor.get_id()));
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(ConnectionManagerMessage::SessionAuthenticated(
            ses.actor.get_id(),
        ));
    }
}

/// What the manager needs to run.
pub(crate) struct ConnectionManagerArgs {
    /// Timings, cookie, TLS.
    pub config: ClusterTransportConfig,
    /// The node server that owns the sessions.
    pub node_server: ActorRef<NodeServerMessage>,
    pub(crate) shared: Arc<Shared>,
}

/// See the module docs.
pub(crate) struct ConnectionManager;

struct Peer {
    /// Empty for a peer that dialed us and whose address we were never told.
    addr: String,
    link: Option<ActorRef<RaftRpcMessage>>,
    sessions: Vec<ActorRef<NodeSessionMessage>>,
    dialing: bool,
    next_dial: Instant,
    backoff: Duration,
    failed_dials: u32,
    handshake_since: Option<Instant>,
    ping_in_flight: bool,
    missed: u32,
    /// The peer has the token issued for its current session.
    bound: bool,
    binding: bool,
}

impl Peer {
    fn new(addr: String, min_backoff: Duration) -> Self {
        Self {
            addr,
            link: None,
            sessions: Vec::new(),
            dialing: false,
            next_dial: Instant::now(),
            backoff: min_backoff,
            failed_dials: 0,
            handshake_since: None,
            ping_in_flight: false,
            missed: 0,
            bound: false,
            binding: false,
        }
    }
}

/// A fresh session token: random, never 0 (what a frame without a binding carries).
fn new_token() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0 | 1
}

/// The manager's state.
pub(crate) struct ConnectionManagerState {
    config: ClusterTransportConfig,
    node_server: ActorRef<NodeServerMessage>,
    shared: Arc<Shared>,
    peers: HashMap<NodeId, Peer>,
    /// Sessions that have not authenticated yet, and since when.
    pending: HashMap<ActorId, (ActorRef<NodeSessionMessage>, Instant)>,
    ticker: tokio::task::JoinHandle<()>,
}

/// A small deterministic jitter (0..=25% of `d`) so that nodes do not redial in lockstep.
fn jitter(d: Duration, salt: u64) -> Duration {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let nanos = clock ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let frac = (nanos % 256) as u32;
    d / 4 * frac / 256
}

impl ConnectionManagerState {
    /// A new session: tracked until it authenticates, refused at once over the limit.
    fn session_opened(&mut self, session: ActorRef<NodeSessionMessage>) {
        if self.pending.len() >= self.config.max_pending_sessions {
            tracing::warn!(
                component = "raft-transport",
                pending = self.pending.len(),
                "too many sessions waiting to authenticate; closing a new one"
            );
            session.stop(Some("too many unauthenticated sessions".into()));
            return;
        }
        self.pending
            .insert(session.get_id(), (session, Instant::now()));
    }

    /// Stops the sessions that did not authenticate within the handshake timeout.
    fn expire_pending(&mut self) {
        let timeout = self.config.handshake_timeout;
        self.pending.retain(|_, (session, since)| {
            if since.elapsed() <= timeout {
                return true;
            }
            tracing::debug!(
                component = "raft-transport",
                "a session did not authenticate in {timeout:?}; closing it"
            );
            session.stop(Some("handshake timeout".into()));
            false
        });
    }

    fn dial(&mut self, myself: &ActorRef<ConnectionManagerMessage>, id: NodeId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.addr.is_empty() || peer.dialing || peer.link.is_some() || !peer.sessions.is_empty()
        {
            return;
        }
        if Instant::now() < peer.next_dial {
            return;
        }
        peer.dialing = true;
        let addr = peer.addr.clone();
        let server = self.node_server.clone();
        let tls = self.config.tls.clone();
        let timeout = self.config.handshake_timeout;
        let me = myself.clone();
        tracing::debug!(component = "raft-transport", peer = id, %addr, "dialing peer");
        tokio::spawn(async move {
            let attempt = async {
                match tls {
                    Some(tls) => ractor_cluster::client_connect_enc(
                        &server,
                        addr.as_str(),
                        tls.connector,
                        tls.server_name,
                    )
                    .await
                    .map_err(|e| e.to_string()),
                    None => ractor_cluster::client_connect(&server, addr.as_str())
                        .await
                        .map_err(|e| e.to_string()),
                }
            };
            let result = match tokio::time::timeout(timeout, attempt).await {
                Ok(r) => r,
                Err(_) => Err(format!("connect timed out after {timeout:?}")),
            };
            let _ = me.cast(ConnectionManagerMessage::Dialed(id, result));
        });
    }

    /// Issues `id` a token for its new session (the previous one stops working).
    fn issue(&mut self, id: NodeId) {
        self.shared
            .issued
            .write()
            .expect("tokens lock poisoned")
            .insert(id, new_token());
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.bound = false;
        }
    }

    /// Forgets the token issued to `id`: its frames are refused until a new session binds.
    fn revoke(&mut self, id: NodeId) {
        self.shared
            .issued
            .write()
            .expect("tokens lock poisoned")
            .remove(&id);
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.bound = false;
        }
    }

    /// Sends `id` its token through its session, unless it has it or a send is under way.
    fn bind(&mut self, myself: &ActorRef<ConnectionManagerMessage>, id: NodeId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(link) = peer.link.clone() else {
            return;
        };
        let Some(token) = self
            .shared
            .issued
            .read()
            .expect("tokens lock poisoned")
            .get(&id)
            .copied()
        else {
            return;
        };
        if peer.bound || peer.binding {
            return;
        }
        peer.binding = true;
        let frame = RequestFrame {
            kind: RpcKind::Bind,
            from: self.shared.id,
            to: id,
            token: 0,
            payload: token.to_be_bytes().to_vec(),
        }
        .encode();
        let timeout = self.config.heartbeat_timeout;
        let me = myself.clone();
        tokio::spawn(async move {
            let ok = matches!(
                link.call(|r| RaftRpcMessage::Bind(frame, r), Some(timeout)).await,
                Ok(ractor::rpc::CallResult::Success(ref reply))
                    if matches!(super::frame::decode_reply(reply.clone()), Ok(Ok(_)))
            );
            let _ = me.cast(ConnectionManagerMessage::Bound(id, token, ok));
        });
    }

    fn ping(&mut self, myself: &ActorRef<ConnectionManagerMessage>, id: NodeId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(link) = peer.link.clone() else {
            return;
        };
        if peer.ping_in_flight {
            return;
        }
        peer.ping_in_flight = true;
        let frame = RequestFrame {
            kind: RpcKind::Ping,
            from: self.shared.id,
            to: id,
            token: 0,
            payload: Vec::new(),
        }
        .encode();
        let timeout = self.config.heartbeat_timeout;
        let me = myself.clone();
        tokio::spawn(async move {
            let ok = matches!(
                link.call(|r| RaftRpcMessage::Ping(frame, r), Some(timeout))
                    .await,
                Ok(ractor::rpc::CallResult::Success(_))
            );
            let _ = me.cast(ConnectionManagerMessage::Pinged(id, ok));
        });
    }

    fn drop_sessions(&mut self, id: NodeId, why: &str) {
        if let Some(peer) = self.peers.get_mut(&id) {
            for s in peer.sessions.drain(..) {
                s.stop(Some(why.to_string()));
            }
            peer.link = None;
            peer.handshake_since = None;
            peer.missed = 0;
            peer.ping_in_flight = false;
        }
        self.revoke(id);
        self.publish();
    }

    fn publish(&self) {
        let links = self
            .peers
            .iter()
            .filter_map(|(id, p)| p.link.clone().map(|l| (*id, l)))
            .collect();
        *self.shared.links.write().expect("links lock poisoned") = links;
    }

    async fn refresh(&mut self, myself: &ActorRef<ConnectionManagerMessage>) {
        let sessions = match self
            .node_server
            .call(NodeServerMessage::GetSessions, Some(Duration::from_secs(1)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(s)) => s,
            _ => {
                tracing::warn!(
                    component = "raft-transport",
                    "node server did not list its sessions"
                );
                return;
            }
        };
        // Sessions per raft peer, by ractor_cluster session id.
        let mut by_peer: HashMap<NodeId, Vec<(u64, ActorRef<NodeSessionMessage>)>> = HashMap::new();
        for (session_id, info) in &sessions {
            if let Some(peer) = info
                .peer_name
                .as_ref()
                .and_then(|n| parse_node_name(&n.name))
            {
                by_peer
                    .entry(peer)
                    .or_default()
                    .push((*session_id, info.actor.clone()));
            }
        }
        let my_sessions: HashSet<u64> = sessions.keys().copied().collect();
        // Remote RPC endpoints reachable through one of this node's sessions.
        let mut endpoints: HashMap<NodeId, ActorRef<RaftRpcMessage>> = HashMap::new();
        for cell in ractor::pg::get_scoped_members(&PG_SCOPE.to_string(), &PG_GROUP.to_string()) {
            let ActorId::Remote { node_id, .. } = cell.get_id() else {
                continue;
            };
            let Some(peer) = cell.get_name().as_deref().and_then(parse_rpc_actor_name) else {
                continue;
            };
            if peer == self.shared.id || !my_sessions.contains(&node_id) {
                continue;
            }
            let own_session = by_peer
                .get(&peer)
                .is_some_and(|s| s.iter().any(|(sid, _)| *sid == node_id));
            // Prefer the endpoint seen through the peer's own session.
            if own_session || !endpoints.contains_key(&peer) {
                endpoints.insert(peer, cell.into());
            }
        }
        // Peers that dialed us become known too (without an address to redial).
        for id in by_peer.keys().chain(endpoints.keys()) {
            if *id != self.shared.id {
                self.peers
                    .entry(*id)
                    .or_insert_with(|| Peer::new(String::new(), self.config.reconnect_min));
            }
        }
        let now = Instant::now();
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        // Peers whose session is new (a token to issue) or gone (a token to revoke).
        let (mut fresh, mut gone) = (Vec::new(), Vec::new());
        for id in ids {
            let peer = self.peers.get_mut(&id).expect("listed above");
            peer.sessions = by_peer
                .remove(&id)
                .unwrap_or_default()
                .into_iter()
                .map(|(_, a)| a)
                .collect();
            match endpoints.remove(&id) {
                Some(link) => {
                    if peer.link.is_none() {
                        tracing::info!(component = "raft-transport", peer = id, addr = %peer.addr, "peer connected");
                    }
                    if peer.link.as_ref().map(|l| l.get_id()) != Some(link.get_id()) {
                        fresh.push(id);
                    }
                    peer.link = Some(link);
                    peer.handshake_since = None;
                    peer.backoff = self.config.reconnect_min;
                    peer.failed_dials = 0;
                }
                None => {
                    if peer.link.take().is_some() {
                        gone.push(id);
                        tracing::warn!(component = "raft-transport", peer = id, addr = %peer.addr, "peer disconnected");
                        peer.missed = 0;
                        peer.ping_in_flight = false;
                        peer.next_dial = now;
                    }
                    if peer.sessions.is_empty() {
                        peer.handshake_since = None;
                    } else if now.duration_since(*peer.handshake_since.get_or_insert(now))
                        > self.config.handshake_timeout
                    {
                        tracing::warn!(
                            component = "raft-transport",
                            peer = id,
                            "handshake did not finish; dropping the session"
                        );
                        for s in peer.sessions.drain(..) {
                            s.stop(Some("handshake timeout".into()));
                        }
                        peer.handshake_since = None;
                    }
                }
            }
        }
        for id in gone {
            self.revoke(id);
        }
        for id in fresh {
            self.issue(id);
        }
        self.publish();
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in ids {
            self.dial(myself, id);
            self.bind(myself, id);
            self.ping(myself, id);
        }
    }

    fn status(&self) -> Vec<PeerStatus> {
        let mut out: Vec<PeerStatus> = self
            .peers
            .iter()
            .map(|(id, p)| PeerStatus {
                id: *id,
                addr: p.addr.clone(),
                connected: p.link.is_some(),
                missed_heartbeats: p.missed,
                failed_dials: p.failed_dials,
            })
            .collect();
        out.sort_by_key(|p| p.id);
        out
    }
}

impl Actor for ConnectionManager {
    type Msg = ConnectionManagerMessage;
    type State = ConnectionManagerState;
    type Arguments = ConnectionManagerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ConnectionManagerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let me = myself.clone();
        let period = args.config.heartbeat_interval;
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if me.cast(ConnectionManagerMessage::Tick).is_err() {
                    break;
                }
            }
        });
        args.node_server
            .cast(NodeServerMessage::SubscribeToEvents {
                id: "ire-connection-manager".into(),
                subscription: Box::new(SessionEvents(myself.clone())),
            })
            .map_err(|e| format!("subscribing to session events: {e}"))?;
        Ok(ConnectionManagerState {
            config: args.config,
            node_server: args.node_server,
            shared: args.shared,
            peers: HashMap::new(),
            pending: HashMap::new(),
            ticker,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.ticker.abort();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConnectionManagerMessage::Tick => {
                state.expire_pending();
                state.refresh(&myself).await
            }
            ConnectionManagerMessage::SessionOpened(session) => state.session_opened(session),
            ConnectionManagerMessage::SessionAuthenticated(id)
            | ConnectionManagerMessage::SessionClosed(id) => {
                state.pending.remove(&id);
            }
            ConnectionManagerMessage::SetPeer(id, addr) => {
                let min = state.config.reconnect_min;
                let peer = state
                    .peers
                    .entry(id)
                    .or_insert_with(|| Peer::new(addr.clone(), min));
                if peer.addr != addr {
                    peer.addr = addr;
                    peer.next_dial = Instant::now();
                    peer.backoff = min;
                }
                state.dial(&myself, id);
            }
            ConnectionManagerMessage::RemovePeer(id) => {
                state.drop_sessions(id, "peer removed");
                state.peers.remove(&id);
                state
                    .shared
                    .held
                    .write()
                    .expect("tokens lock poisoned")
                    .remove(&id);
                state.publish();
            }
            ConnectionManagerMessage::Bound(id, token, ok) => {
                let current = state
                    .shared
                    .issued
                    .read()
                    .expect("tokens lock poisoned")
                    .get(&id)
                    .copied();
                if let Some(peer) = state.peers.get_mut(&id) {
                    peer.binding = false;
                    // A binding for a session that was replaced meanwhile does not count.
                    peer.bound = ok && current == Some(token);
                }
                if !ok {
                    state.bind(&myself, id);
                }
            }
            ConnectionManagerMessage::DialNow(id) => state.dial(&myself, id),
            ConnectionManagerMessage::Dialed(id, result) => {
                let (min, max) = (state.config.reconnect_min, state.config.reconnect_max);
                let handshake = state.config.handshake_timeout;
                if let Some(peer) = state.peers.get_mut(&id) {
                    peer.dialing = false;
                    match result {
                        // The session now authenticates; the handshake timeout guards it
                        // (and no other dial starts before it ran out).
                        Ok(()) => peer.next_dial = Instant::now() + handshake,
                        Err(e) => {
                            peer.failed_dials += 1;
                            let wait = peer.backoff + jitter(peer.backoff, id);
                            peer.next_dial = Instant::now() + wait;
                            peer.backoff = (peer.backoff * 2).clamp(min, max);
                            tracing::debug!(component = "raft-transport", peer = id, error = %e, retry_in = ?wait, "dial failed");
                        }
                    }
                }
            }
            ConnectionManagerMessage::Pinged(id, ok) => {
                let max_missed = state.config.max_missed_heartbeats;
                let Some(peer) = state.peers.get_mut(&id) else {
                    return Ok(());
                };
                peer.ping_in_flight = false;
                if ok {
                    peer.missed = 0;
                } else if peer.link.is_some() {
                    peer.missed += 1;
                    if peer.missed >= max_missed {
                        tracing::warn!(
                            component = "raft-transport",
                            peer = id,
                            missed = peer.missed,
                            "peer went silent; dropping its session"
                        );
                        peer.next_dial = Instant::now();
                        state.drop_sessions(id, "peer silent");
                    }
                }
            }
            ConnectionManagerMessage::Status(reply) => {
                let _ = reply.send(state.status());
            }
        }
        Ok(())
    }
}
