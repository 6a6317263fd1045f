//! Peers: membership changes need the admin token, not just the cookie; TLS between nodes,
//! end to end with certificates made here, and a node whose certificate another CA signed
//! never gets a link.

use std::time::Duration;

use ire_consensus::client::ConsensusClient;
use ire_consensus::node::{ConsensusError, RaftNode};
use ire_consensus::transport::TlsConfig;
use ire_core::StorageBackend;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use serde_json::json;

mod support;
use support::{config, wait_leader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_the_cookie_but_not_the_admin_token_cannot_change_the_membership() {
    let dir = tempfile::tempdir().unwrap();
    let c1 = config(41, &dir);
    let seed = (41, c1.listen.to_string());
    let n1 = RaftNode::start(c1).await.unwrap();
    n1.bootstrap().await.unwrap();
    wait_leader(&n1, Duration::from_secs(10)).await;

    for (id, token) in [(42, None), (43, Some("not-the-admin-token"))] {
        let mut c = config(id, &dir);
        c.admin_token = token.map(String::from);
        c.membership_timeout = Duration::from_secs(5);
        let intruder = RaftNode::start(c).await.unwrap();
        let err = intruder
            .join(std::slice::from_ref(&seed))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ConsensusError::Invalid { field, .. } if field == "admin token"),
            "{err}"
        );
        assert!(err.to_string().contains("admin token"), "{err}");
        intruder.shutdown().await;
    }
    let status = n1.status().await;
    assert_eq!(status.voters, vec![41], "{status:?}");
    assert!(status.learners.is_empty(), "{status:?}");

    // With the token, the same request is served.
    let n4 = RaftNode::start(config(44, &dir)).await.unwrap();
    n4.join(std::slice::from_ref(&seed)).await.unwrap();
    assert_eq!(n1.status().await.voters, vec![41, 44]);
    n4.shutdown().await;
    n1.shutdown().await;
}

/// A CA and node certificates for `name`, as PEM.
struct Pki {
    ca: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(cn: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self {
            ca: issuer.pem(),
            issuer,
        }
    }

    /// A node certificate and key carrying `name`, signed by this CA.
    fn node(&self, name: &str) -> (String, String) {
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn tls(&self, trusted_ca: &str, name: &str) -> TlsConfig {
        let (cert, key) = self.node(name);
        TlsConfig::from_pem(trusted_ca.as_bytes(), cert.as_bytes(), key.as_bytes(), name).unwrap()
    }
}

const NAME: &str = "ire-cluster.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_replicate_over_mutual_tls_and_a_node_with_a_foreign_certificate_is_refused() {
    let cluster = Pki::new("ire test cluster CA");
    let dir = tempfile::tempdir().unwrap();
    let mut c1 = config(51, &dir);
    c1.tls = Some(cluster.tls(&cluster.ca, NAME));
    let seed = (51, c1.listen.to_string());
    let n1 = RaftNode::start(c1).await.unwrap();
    n1.bootstrap().await.unwrap();
    wait_leader(&n1, Duration::from_secs(10)).await;
    let mut c2 = config(52, &dir);
    c2.tls = Some(cluster.tls(&cluster.ca, NAME));
    let n2 = RaftNode::start(c2).await.unwrap();
    n2.join(std::slice::from_ref(&seed)).await.unwrap();

    // A write through the follower is forwarded and replicated over TLS.
    ConsensusClient::new(n2.clone())
        .save("tls", "k", json!("over tls"))
        .await
        .unwrap();
    assert_eq!(
        ConsensusClient::new(n1.clone())
            .load("tls", "k")
            .await
            .unwrap(),
        json!("over tls")
    );
    assert!(n1.status().await.peers.iter().all(|p| p.connected));

    // Same cookie, same admin token, same server name, but a certificate another CA signed
    // (and trusting that CA): no TLS handshake succeeds in either direction, so no link.
    let rogue_ca = Pki::new("another CA");
    let mut c3 = config(53, &dir);
    c3.tls = Some(rogue_ca.tls(&rogue_ca.ca, NAME));
    c3.membership_timeout = Duration::from_secs(3);
    let n3 = RaftNode::start(c3).await.unwrap();
    let err = n3.join(std::slice::from_ref(&seed)).await.unwrap_err();
    assert!(matches!(err, ConsensusError::Unavailable { .. }), "{err}");
    // Trusting the cluster's CA does not help with a certificate it did not sign.
    let mut c4 = config(54, &dir);
    c4.tls = Some(rogue_ca.tls(&cluster.ca, NAME));
    c4.membership_timeout = Duration::from_secs(3);
    let n4 = RaftNode::start(c4).await.unwrap();
    let err = n4.join(std::slice::from_ref(&seed)).await.unwrap_err();
    assert!(matches!(err, ConsensusError::Unavailable { .. }), "{err}");
    let status = n1.status().await;
    assert_eq!(status.voters, vec![51, 52], "{status:?}");
    assert!(status.learners.is_empty(), "{status:?}");

    // A bad PEM input is a clear error naming the input.
    let err = TlsConfig::from_pem(b"not a pem", b"", b"", NAME).unwrap_err();
    assert!(err.to_string().starts_with("tls ca:"), "{err}");

    for n in [n4, n3, n2, n1] {
        n.shutdown().await;
    }
}
