//! How the connection to a backend is opened: plain TCP, or TLS over it, from a backend URL.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;

/// A dial in progress.
pub(crate) type Dialing<'a> =
    Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Io>>> + Send + 'a>>;

/// Opens a byte stream to the backend.
pub(crate) trait Dial: Send + Sync + 'static {
    /// A new stream to the backend.
    fn dial(&self) -> Dialing<'_>;
}

/// A byte stream a connection runs on.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Plain TCP to `host:port`, with Nagle off (small unary messages must not wait).
pub(crate) struct Tcp(pub(crate) String);

impl Tcp {
    async fn connect(&self) -> std::io::Result<tokio::net::TcpStream> {
        let stream = tokio::net::TcpStream::connect(&self.0).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

impl Dial for Tcp {
    fn dial(&self) -> Dialing<'_> {
        Box::pin(async move { Ok(Box::new(self.connect().await?) as Box<dyn Io>) })
    }
}

/// TLS over [`Tcp`], ALPN `h2`, the server's certificate checked against `config`'s roots for
/// `server_name`.
pub(crate) struct TlsOverTcp {
    tcp: Tcp,
    server_name: rustls::pki_types::ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
}

impl Dial for TlsOverTcp {
    fn dial(&self) -> Dialing<'_> {
        Box::pin(async move {
            let stream = self.tcp.connect().await?;
            let tls = tokio_rustls::TlsConnector::from(self.config.clone())
                .connect(self.server_name.clone(), stream)
                .await?;
            Ok(Box::new(tls) as Box<dyn Io>)
        })
    }
}

/// How an `https://` backend is checked.
#[derive(Debug, Clone)]
pub struct BackendTls {
    /// The roots the backend's certificate must chain to (see [`crate::net::client_config`]).
    pub config: Arc<rustls::ClientConfig>,
    /// The name the backend's certificate must carry.
    pub server_name: String,
}

/// Why a backend URL cannot be dialled.
#[derive(Debug)]
pub enum UrlError {
    /// The URL itself is not one: no scheme, no host, a path, another scheme.
    Invalid {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// An `https://` URL, but no roots to check the backend's certificate against.
    NoRoots {
        /// The URL as given.
        url: String,
    },
    /// The TLS server name is not a valid DNS name or IP address.
    ServerName {
        /// The name as given.
        name: String,
        /// Why it is not valid.
        source: rustls::pki_types::InvalidDnsNameError,
    },
}

impl std::fmt::Display for UrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid { url, why } => write!(f, "invalid backend URL {url:?}: {why}"),
            Self::NoRoots { url } => write!(
                f,
                "backend URL {url:?} is https: give the certificate to trust (--backend-ca)"
            ),
            Self::ServerName { name, source } => {
                write!(f, "invalid TLS server name {name:?}: {source}")
            }
        }
    }
}

impl std::error::Error for UrlError {}

/// What a backend URL (`http://host:port` or `https://host:port`) says: the origin requests
/// name, and how to dial it.
pub(super) fn parse(
    url: &str,
    tls: Option<&BackendTls>,
) -> Result<(http::Uri, Box<dyn Dial>), UrlError> {
    let invalid = |why: String| UrlError::Invalid {
        url: url.to_string(),
        why,
    };
    let uri: http::Uri = url.parse().map_err(|e| invalid(format!("{e}")))?;
    let authority = uri.authority().ok_or_else(|| invalid("no host".into()))?;
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid("a backend URL has no path".into()));
    }
    let secure = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(invalid("the scheme is http or https".into())),
    };
    let port = authority
        .port_u16()
        .unwrap_or(if secure { 443 } else { 80 });
    let tcp = Tcp(format!("{}:{port}", authority.host()));
    let origin = http::Uri::builder()
        .scheme(uri.scheme_str().unwrap_or("http"))
        .authority(authority.as_str())
        .path_and_query("/")
        .build()
        .map_err(|e| invalid(format!("{e}")))?;
    let dial: Box<dyn Dial> = match (secure, tls) {
        (false, _) => Box::new(tcp),
        (true, None) => {
            return Err(UrlError::NoRoots {
                url: url.to_string(),
            });
        }
        (true, Some(tls)) => {
            let server_name =
                tls.server_name
                    .clone()
                    .try_into()
                    .map_err(|source| UrlError::ServerName {
                        name: tls.server_name.clone(),
                        source,
                    })?;
            Box::new(TlsOverTcp {
                tcp,
                server_name,
                config: tls.config.clone(),
            })
        }
    };
    Ok((origin, dial))
}
