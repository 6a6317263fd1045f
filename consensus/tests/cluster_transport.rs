//! The ractor_cluster transport between two nodes in one process: RPCs round-trip, bad
//! frames get clear errors, a wrong cookie is refused, a restarted peer is redialed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ire_consensus::transport::frame::{RequestFrame, FRAME_VERSION};
use ire_consensus::transport::{
    ClusterTransport, ClusterTransportConfig, NodeId, RaftTransport, RemoteError, RemoteErrorKind,
    RpcHandler, RpcKind, TransportError,
};

/// Answers every RPC with `<node id> <kind> <payload reversed>` so a test can see who served it.
struct Echo(NodeId);

#[async_trait]
impl RpcHandler for Echo {
    async fn handle(
        &self,
        from: NodeId,
        kind: RpcKind,
        mut payload: Vec<u8>,
    ) -> Result<Vec<u8>, RemoteError> {
        if payload == b"fail" {
            return Err(RemoteError::new(RemoteErrorKind::Handler, "asked to fail"));
        }
        payload.reverse();
        let mut out = format!("{} {} {} ", self.0, from, kind.name()).into_bytes();
        out.extend(payload);
        Ok(out)
    }
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn start(id: NodeId, addr: SocketAddr, cookie: &str) -> ClusterTransport {
    let t = ClusterTransport::start(ClusterTransportConfig::new(id, addr, cookie))
        .await
        .unwrap();
    t.serve(Arc::new(Echo(id)));
    t
}

/// Calls until the link is up (or the deadline passes).
async fn call_until_connected(
    t: &ClusterTransport,
    target: NodeId,
    payload: &[u8],
) -> Result<Vec<u8>, TransportError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = t
            .call(
                target,
                RpcKind::Vote,
                payload.to_vec(),
                Duration::from_secs(2),
            )
            .await;
        match &r {
            // No session yet, or its binding still on the way.
            Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => return r,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcs_reach_the_node_named_by_its_stable_id_and_bad_frames_are_refused() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let a = start(101, a_addr, "secret").await;
    let b = start(102, b_addr, "secret").await;
    a.set_peer(102, b_addr.to_string());
    b.set_peer(101, a_addr.to_string());

    let reply = call_until_connected(&a, 102, b"abc").await.unwrap();
    assert_eq!(reply, b"102 101 vote cba");
    let reply = call_until_connected(&b, 101, b"xyz").await.unwrap();
    assert_eq!(reply, b"101 102 vote zyx");

    // The handler's error comes back as a remote error, not a transport failure.
    let err = a
        .call(
            102,
            RpcKind::Forward,
            b"fail".to_vec(),
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TransportError::Remote { error, .. } if error.kind == RemoteErrorKind::Handler),
        "{err}"
    );

    // A frame addressed to a node id the receiver is not.
    let wrong = RequestFrame {
        kind: RpcKind::Vote,
        from: 101,
        to: 999,
        token: a.session_token(102),
        payload: vec![1],
    }
    .encode();
    let reply = a
        .call_raw(102, RpcKind::Vote, wrong, Duration::from_secs(2))
        .await
        .unwrap();
    let err = reply.unwrap_err();
    assert_eq!(err.kind, RemoteErrorKind::UnknownNode);
    assert!(err.message.contains("999"), "{}", err.message);

    // Truncated and corrupted frames.
    let truncated = vec![FRAME_VERSION, RpcKind::Vote as u8, 0, 0];
    let err = a
        .call_raw(102, RpcKind::Vote, truncated, Duration::from_secs(2))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind, RemoteErrorKind::Malformed);
    assert!(err.message.contains("truncated request"), "{}", err.message);
    let mut corrupted = RequestFrame {
        kind: RpcKind::Vote,
        from: 101,
        to: 102,
        token: a.session_token(102),
        payload: vec![],
    }
    .encode();
    corrupted[0] = 0x42;
    let err = a
        .call_raw(102, RpcKind::Vote, corrupted, Duration::from_secs(2))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind, RemoteErrorKind::Malformed);
    let mismatched = RequestFrame {
        kind: RpcKind::AppendEntries,
        from: 101,
        to: 102,
        token: a.session_token(102),
        payload: vec![],
    }
    .encode();
    let err = a
        .call_raw(102, RpcKind::Vote, mismatched, Duration::from_secs(2))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind, RemoteErrorKind::Malformed);

    // The node still serves well-formed RPCs afterwards.
    assert_eq!(
        a.call(102, RpcKind::Vote, b"ok".to_vec(), Duration::from_secs(2))
            .await
            .unwrap(),
        b"102 101 vote ko"
    );

    // A node id with no address is refused without a network round trip.
    let err = a
        .call(7, RpcKind::Vote, vec![], Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Unreachable { peer: 7, .. }),
        "{err}"
    );

    let peers = a.peers().await;
    assert!(
        peers.iter().any(|p| p.id == 102 && p.connected),
        "{peers:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_the_wrong_cookie_never_gets_a_link() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let a = start(201, a_addr, "right").await;
    let b = start(202, b_addr, "wrong").await;
    a.set_peer(202, b_addr.to_string());
    b.set_peer(201, a_addr.to_string());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        let err = a
            .call(202, RpcKind::Vote, vec![], Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_is_redialed_with_backoff() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let a = start(301, a_addr, "secret").await;
    let b = start(302, b_addr, "secret").await;
    a.set_peer(302, b_addr.to_string());
    assert!(call_until_connected(&a, 302, b"1").await.is_ok());

    b.shutdown().await;
    // Calls fail (unreachable or timed out) while the peer is down, and never hang.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = a
            .call(302, RpcKind::Vote, vec![], Duration::from_millis(300))
            .await;
        if r.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "calls still succeed after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let b = start(302, b_addr, "secret").await;
    let reply = call_until_connected(&a, 302, b"again").await.unwrap();
    assert_eq!(reply, b"302 301 vote niaga");
    a.shutdown().await;
    b.shutdown().await;
}

/// A transport whose sessions must authenticate within 500 ms, at most 16 waiting at once.
async fn start_strict(id: NodeId, addr: SocketAddr) -> ClusterTransport {
    let mut config = ClusterTransportConfig::new(id, addr, "secret");
    config.handshake_timeout = Duration::from_millis(500);
    config.max_pending_sessions = 16;
    config.reconnect_max = Duration::from_millis(200);
    let t = ClusterTransport::start(config).await.unwrap();
    t.serve(Arc::new(Echo(id)));
    t
}

/// True once the other end closed `stream` (whatever it sent before is read and dropped).
fn closed(stream: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_that_never_authenticate_is_closed_and_peers_still_connect() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let a = start_strict(401, a_addr).await;
    // 40 connections that say nothing: over the limit of 16 waiting, and none ever
    // authenticates.
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(tokio::net::TcpStream::connect(a_addr).await.unwrap());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let open = flood.iter().filter(|s| !closed(s)).count();
        if open == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} of 40 silent connections still open after 5 s (handshake timeout 500 ms)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A real peer still gets a link.
    let b = start_strict(402, b_addr).await;
    b.set_peer(401, a_addr.to_string());
    assert_eq!(
        call_until_connected(&b, 401, b"hi").await.unwrap(),
        b"401 402 vote ih"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redials_to_a_peer_that_never_answers_leave_no_sessions_behind() {
    // A "peer" that accepts connections and never says a word (a stopped process).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let acceptor = {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = silent.accept().await {
                accepted.lock().unwrap().push(s);
            }
        })
    };
    let a = start_strict(501, free_addr()).await;
    a.set_peer(502, silent_addr.to_string());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (dialed, open) = {
        let accepted = accepted.lock().unwrap();
        (
            accepted.len(),
            accepted.iter().filter(|s| !closed(s)).count(),
        )
    };
    assert!(dialed >= 3, "the peer was redialed only {dialed} times");
    assert!(
        open <= 2,
        "{open} of {dialed} dialed sessions to the silent peer are still open"
    );
    acceptor.abort();
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_is_served_only_as_coming_from_the_node_whose_session_sent_it() {
    let (a_addr, b_addr, c_addr) = (free_addr(), free_addr(), free_addr());
    let a = start(601, a_addr, "secret").await;
    let b = start(602, b_addr, "secret").await;
    let c = start(603, c_addr, "secret").await;
    for t in [&a, &c] {
        t.set_peer(602, b_addr.to_string());
    }
    // Both get a working, bound link to b; b sees each as who it is.
    assert_eq!(
        call_until_connected(&a, 602, b"a").await.unwrap(),
        b"602 601 vote a"
    );
    assert_eq!(
        call_until_connected(&c, 602, b"c").await.unwrap(),
        b"602 603 vote c"
    );
    // c, holding the cookie and its own session, claims to be a: refused, with or without
    // the token b issued to c, and b's handler never hears of it.
    for token in [
        c.session_token(602),
        0,
        a.session_token(602).wrapping_add(1),
    ] {
        let forged = RequestFrame {
            kind: RpcKind::Vote,
            from: 601,
            to: 602,
            token,
            payload: b"forged".to_vec(),
        }
        .encode();
        let err = c
            .call_raw(602, RpcKind::Vote, forged, Duration::from_secs(2))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind, RemoteErrorKind::NotReady, "{}", err.message);
        assert!(err.message.contains("node 601"), "{}", err.message);
    }
    // a's own frames still work.
    assert_eq!(
        a.call(602, RpcKind::Vote, b"ok".to_vec(), Duration::from_secs(2))
            .await
            .unwrap(),
        b"602 601 vote ko"
    );
    for t in [a, b, c] {
        t.shutdown().await;
    }
}
