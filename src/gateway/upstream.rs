//! The gateway's HTTP/2 connection to the backend, as a tower service for tonic's generated
//! clients.
//!
//! tonic's `Channel` puts every call through a `tower::buffer::Buffer`: each call is sent over
//! an mpsc queue to a worker task that owns the connection, and its reply comes back through a
//! oneshot. That hop cost the gateway about a tenth of its instructions per request. Here each
//! call clones hyper's `SendRequest` (a handle to one shared HTTP/2 connection, whose own task
//! does the I/O) and sends on it directly.
//!
//! The connection is dialled on first use and dialled again after it breaks, by the first call
//! that finds it closed; calls meanwhile wait for that one dial. A dial that fails, and a call
//! whose connection breaks, fail with the transport error itself; tonic turns it into a status
//! that carries it as its source, which is how the gateway tells them (503) from a status the
//! backend sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;
use tonic::body::Body;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long one dial (TCP connect, TLS and HTTP/2 handshakes) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 PING interval on the backend connection, idle or not: a dead peer is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// A dial in progress.
pub type Dialing<'a> = Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Io>>> + Send + 'a>>;

/// Opens a byte stream to the backend.
pub trait Dial: Send + Sync + 'static {
    /// A new stream to the backend.
    fn dial(&self) -> Dialing<'_>;
}

/// A byte stream a connection runs on.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Plain TCP to `host:port`, with Nagle off (small unary messages must not wait).
pub struct Tcp(pub String);

impl Dial for Tcp {
    fn dial(&self) -> Dialing<'_> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(&self.0).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn Io>)
        })
    }
}

/// TLS over TCP to `host:port`, ALPN `h2`, the server's certificate checked against `config`'s
/// roots for `server_name`.
pub struct Tls {
    /// `host:port`.
    pub addr: String,
    /// The name the certificate must carry.
    pub server_name: rustls::pki_types::ServerName<'static>,
    /// Roots and protocol settings.
    pub config: Arc<rustls::ClientConfig>,
}

impl Dial for Tls {
    fn dial(&self) -> Dialing<'_> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(&self.addr).await?;
            stream.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(self.config.clone())
                .connect(self.server_name.clone(), stream)
                .await?;
            Ok(Box::new(tls) as Box<dyn Io>)
        })
    }
}

/// A lazily dialled, redialled HTTP/2 connection to the backend. Cheap to clone.
#[derive(Clone)]
pub struct Upstream(Arc<Shared>);

struct Shared {
    /// Scheme and authority of every request (`:scheme`, `:authority`).
    origin: http::Uri,
    dial: Box<dyn Dial>,
    /// The connection calls use while it is open.
    current: Mutex<Option<SendRequest<Body>>>,
    /// Held by the one call that dials; the others wait for its result.
    dialing: tokio::sync::Mutex<()>,
}

impl Upstream {
    /// A connection opened with `dial` when first needed; requests name `origin`.
    pub fn new(origin: http::Uri, dial: impl Dial) -> Self {
        Self(Arc::new(Shared {
            origin,
            dial: Box::new(dial),
            current: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(()),
        }))
    }

    /// Scheme and authority of the backend, for tonic's clients.
    pub fn origin(&self) -> http::Uri {
        self.0.origin.clone()
    }
}

impl Shared {
    fn open(&self) -> Option<SendRequest<Body>> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// The open connection, dialling one if there is none.
    async fn sender(&self) -> Result<SendRequest<Body>, BoxError> {
        if let Some(sender) = self.open() {
            return Ok(sender);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(sender) = self.open() {
            return Ok(sender); // another call dialled while this one waited
        }
        let sender = tokio::time::timeout(DIAL_TIMEOUT, self.handshake())
            .await
            .unwrap_or_else(|_| Err(format!("no connection within {DIAL_TIMEOUT:?}").into()))
            .inspect_err(|e| tracing::warn!(error = %e, "backend connection failed"))?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender.clone());
        Ok(sender)
    }

    async fn handshake(&self) -> Result<SendRequest<Body>, BoxError> {
        let io = self.dial.dial().await?;
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEP_ALIVE)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(io))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "backend connection closed");
            }
        });
        Ok(sender)
    }
}

impl tower::Service<http::Request<Body>> for Upstream {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(())) // readiness is the connection's, awaited in `call`
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let shared = self.0.clone();
        Box::pin(async move {
            let mut sender = shared.sender().await?;
            sender.ready().await?;
            Ok(sender.send_request(request).await?)
        })
    }
}
