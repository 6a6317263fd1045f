//! TLS between nodes, from PEM files: mutual authentication against the cluster's CA.
//!
//! Every node presents a certificate signed by the cluster CA and carrying the cluster's
//! server name, and accepts only peers that do the same, in both directions: a node whose
//! certificate another CA signed gets no link (its TLS handshake fails before ractor_cluster's
//! cookie is even asked for). rustls with the ring provider, named explicitly (the tree
//! links two providers, so none is the process default).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::TlsConfig;

/// Why TLS could not be set up: which input, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("tls {what}: {message}")]
pub struct TlsError {
    /// The input (`ca`, `certificate`, `key`, `server name`, or a file path).
    pub what: String,
    /// What is wrong.
    pub message: String,
}

fn err(what: impl Into<String>, message: impl std::fmt::Display) -> TlsError {
    TlsError {
        what: what.into(),
        message: message.to_string(),
    }
}

impl TlsConfig {
    /// Mutual TLS from PEM text: the cluster CA (trusted for both servers and clients), this
    /// node's certificate chain and private key, and the name every node's certificate
    /// carries (`server_name`).
    pub fn from_pem(
        ca: &[u8],
        cert_chain: &[u8],
        key: &[u8],
        server_name: &str,
    ) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca) {
            let cert = cert.map_err(|e| err("ca", e))?;
            roots.add(cert).map_err(|e| err("ca", e))?;
        }
        if roots.is_empty() {
            return Err(err("ca", "no certificate in the CA file"));
        }
        let certs = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err("certificate", e))?;
        if certs.is_empty() {
            return Err(err("certificate", "no certificate in the certificate file"));
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| err("key", e))?;
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| err("ca", e))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| err("server", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| err("certificate", e))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err("client", e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| err("certificate", e))?;
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| err("server name", format!("{server_name:?}: {e}")))?;
        Ok(TlsConfig {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            server_name,
        })
    }

    /// [`TlsConfig::from_pem`] from files.
    pub fn from_pem_files(
        ca: &Path,
        cert_chain: &Path,
        key: &Path,
        server_name: &str,
    ) -> Result<Self, TlsError> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| err(p.display().to_string(), e));
        Self::from_pem(&read(ca)?, &read(cert_chain)?, &read(key)?, server_name)
    }
}
