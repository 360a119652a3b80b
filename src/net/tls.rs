//! TLS for both listeners from one PEM certificate chain and key (`--tls-cert`, `--tls-key`):
//! rustls server configs for gRPC (ALPN h2) and for REST (ALPN h2 and http/1.1), the timed
//! server handshake, and the client config the gateway dials an `https://` backend with
//! (`--backend-ca`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

use super::first_bytes::FirstBytes;

/// Why a TLS configuration could not be made. The messages name the flag the input came from.
#[derive(Debug)]
pub enum TlsError {
    /// A PEM file could not be read.
    Read {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    NotPem {
        /// The flag that named it.
        flag: &'static str,
        /// What is expected of it.
        expected: &'static str,
        /// Why it is not.
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate file holds no certificate.
    Empty {
        /// The flag that named it.
        flag: &'static str,
    },
    /// rustls refused the certificate, key or roots.
    Unusable {
        /// What was refused.
        what: &'static str,
        /// Why.
        source: rustls::Error,
    },
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read { flag, path, source } => {
                write!(f, "cannot read {flag} {}: {source}", path.display())
            }
            Self::NotPem {
                flag,
                expected,
                source,
            } => write!(f, "{flag} is not {expected}: {source}"),
            Self::Empty { flag } => write!(f, "{flag} holds no certificate"),
            Self::Unusable { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. } => Some(source),
            Self::NotPem { source, .. } => Some(source),
            Self::Empty { .. } => None,
            Self::Unusable { source, .. } => Some(source),
        }
    }
}

/// A certificate chain and its key, read and checked once.
#[derive(Clone)]
pub struct Tls {
    grpc: Arc<rustls::ServerConfig>,
    rest: Arc<rustls::ServerConfig>,
}

impl Tls {
    /// Reads and validates the PEM files.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |flag, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                flag,
                path: path.to_path_buf(),
                source,
            })
        };
        Self::from_pem(read("--tls-cert", cert)?, read("--tls-key", key)?)
    }

    /// Validates PEM bytes.
    pub fn from_pem(cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Result<Self, TlsError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|source| TlsError::NotPem {
                flag: "--tls-cert",
                expected: "a PEM certificate chain",
                source,
            })?;
        if chain.is_empty() {
            return Err(TlsError::Empty { flag: "--tls-cert" });
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| TlsError::NotPem {
            flag: "--tls-key",
            expected: "a PEM private key",
            source,
        })?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Unusable {
                what: "TLS setup",
                source,
            })?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|source| TlsError::Unusable {
                what: "--tls-cert and --tls-key do not form a usable identity",
                source,
            })?;
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

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that trusts the certificates in `ca_pem` (and nothing else) and
/// speaks HTTP/2 (ALPN `h2`): how the gateway dials an `https://` backend.
pub fn client_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut config = client_builder()?
        .with_root_certificates(client_roots(ca_pem, "--backend-ca")?)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration's builder, with this program's crypto and protocol versions.
pub fn client_builder()
-> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, TlsError> {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Unusable {
            what: "TLS setup",
            source,
        })
}

/// The certificates of `ca_pem` (given by `flag`), as the roots a client trusts.
pub fn client_roots(ca_pem: &[u8], flag: &'static str) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|source| TlsError::NotPem {
            flag,
            expected: "a PEM certificate",
            source,
        })?;
        roots.add(cert).map_err(|source| TlsError::Unusable {
            what: "a CA file holds an unusable certificate",
            source,
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::Empty { flag });
    }
    Ok(roots)
}

/// The TLS side of `tcp` once its handshake has finished within `timeout`, with `timeout`
/// again for its first bytes; `None` if the handshake failed or took too long.
pub(super) async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
) -> Option<FirstBytes<TlsStream<TcpStream>>> {
    let tls = tokio::time::timeout(timeout, acceptor.accept(tcp))
        .await
        .ok()?
        .ok()?;
    Some(FirstBytes::new(tls, timeout))
}
