//! TLS for both listeners from one PEM certificate chain and key (`--tls-cert`, `--tls-key`):
//! rustls server configs for gRPC (ALPN h2) and for REST (ALPN h2 and http/1.1); and the
//! client config the `gateway` command dials an `https://` backend with (`--backend-ca`).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate chain and its key, read and checked once.
#[derive(Clone)]
pub struct Tls {
    grpc: Arc<rustls::ServerConfig>,
    rest: Arc<rustls::ServerConfig>,
}

impl Tls {
    /// Reads and validates the PEM files.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, String> {
        let cert_pem = std::fs::read(cert)
            .map_err(|e| format!("cannot read --tls-cert {}: {e}", cert.display()))?;
        let key_pem = std::fs::read(key)
            .map_err(|e| format!("cannot read --tls-key {}: {e}", key.display()))?;
        Self::from_pem(cert_pem, key_pem)
    }

    /// Validates PEM bytes.
    pub fn from_pem(cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Result<Self, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--tls-cert is not a PEM certificate chain: {e}"))?;
        if chain.is_empty() {
            return Err("--tls-cert holds no certificate".into());
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| format!("--tls-key is not a PEM private key: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("--tls-cert and --tls-key do not form a usable identity: {e}"))?;
        // gRPC clients insist on HTTP/2 being chosen by ALPN.
        config.alpn_protocols = vec![b"h2".to_vec()];
        let grpc = Arc::new(config.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            grpc,
            rest: Arc::new(config),
        })
    }

    /// The gRPC listener's configuration.
    pub fn grpc_server(&self) -> Arc<rustls::ServerConfig> {
        self.grpc.clone()
    }

    /// The REST listener's configuration.
    pub fn rest_server(&self) -> Arc<rustls::ServerConfig> {
        self.rest.clone()
    }
}

/// A client configuration that trusts the certificates in `ca_pem` (and nothing else) and
/// speaks HTTP/2 (ALPN `h2`): how the gateway dials an `https://` backend.
pub fn client_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("--backend-ca is not a PEM certificate: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("--backend-ca holds an unusable certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("--backend-ca holds no certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
