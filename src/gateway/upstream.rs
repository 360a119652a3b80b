//! The gateway's HTTP/2 connection to the backend, as a tower service for tonic's generated
//! clients.
//!
//! tonic's `Channel` puts every call through a `tower::buffer::Buffer`: each call is sent over
//! an mpsc queue to a worker task that owns the connection, and its reply comes back through a
//! oneshot. That hop cost the gateway 3k–5k instructions per request (2–4%; see
//! `bench/RESULTS.md`) and a task hand-off. Here each call clones hyper's `SendRequest` (a
//! handle to one shared HTTP/2 connection, whose own task does the I/O) and sends on it
//! directly.
//!
//! The connection is dialled on first use and dialled again after it breaks, by the first call
//! that finds it closed; calls meanwhile wait for that one dial. A dial that fails, and a call
//! whose connection breaks, fail with the transport error itself; tonic turns it into a status
//! that carries it as its source, which is how the gateway tells them (503) from a status the
//! backend sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
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
pub struct Tls {
    /// The TCP connection it runs on.
    pub tcp: Tcp,
    /// The name the certificate must carry.
    pub server_name: rustls::pki_types::ServerName<'static>,
    /// Roots and protocol settings.
    pub config: Arc<rustls::ClientConfig>,
}

impl Dial for Tls {
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

/// A lazily dialled, redialled HTTP/2 connection to the backend. Cheap to clone.
#[derive(Clone)]
pub struct Upstream(Arc<Shared>);

struct Shared {
    /// Scheme and authority of every request (`:scheme`, `:authority`).
    origin: http::Uri,
    dial: Box<dyn Dial>,
    /// The connection calls use while it is open.
    current: Mutex<Option<SendRequest<Body>>>,
    /// Held by the one call that dials; the others wait for its result. Holds the last dial's
    /// failure, which the calls that waited for that dial share instead of each dialling again
    /// in turn (against a backend that drops connection attempts, one after another they would
    /// wait a dial timeout each).
    dialing: tokio::sync::Mutex<Option<String>>,
    /// Dials finished so far: a call that sees it move while it waits knows a dial ended.
    dials: AtomicU64,
    /// How long one dial may take.
    dial_timeout: Duration,
}

impl Upstream {
    /// A connection opened with `dial` when first needed; requests name `origin`.
    pub fn new(origin: http::Uri, dial: impl Dial) -> Self {
        Self::with_dial_timeout(origin, dial, DIAL_TIMEOUT)
    }

    /// The same with another dial timeout than the default 2 s.
    pub fn with_dial_timeout(origin: http::Uri, dial: impl Dial, dial_timeout: Duration) -> Self {
        Self(Arc::new(Shared {
            origin,
            dial: Box::new(dial),
            current: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(None),
            dials: AtomicU64::new(0),
            dial_timeout,
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
        let dials_before = self.dials.load(Ordering::Acquire);
        let mut last_failure = self.dialing.lock().await;
        if let Some(sender) = self.open() {
            return Ok(sender); // another call dialled while this one waited
        }
        if let Some(error) = last_failure.as_ref()
            && self.dials.load(Ordering::Acquire) != dials_before
        {
            return Err(error.clone().into()); // the dial this call waited for failed
        }
        let timeout = self.dial_timeout;
        let dialled = tokio::time::timeout(timeout, self.handshake())
            .await
            .unwrap_or_else(|_| Err(format!("no connection within {timeout:?}").into()));
        self.dials.fetch_add(1, Ordering::AcqRel);
        match dialled {
            Ok(sender) => {
                *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender.clone());
                *last_failure = None;
                Ok(sender)
            }
            Err(e) => {
                tracing::warn!(error = %e, "backend connection failed");
                let error = format!("backend connection failed: {e}");
                *last_failure = Some(error.clone());
                Err(error.into())
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tower::Service;

    /// A backend that never answers a connection attempt (a firewall dropping SYNs).
    struct Blackhole(Arc<AtomicUsize>);

    impl Dial for Blackhole {
        fn dial(&self) -> Dialing<'_> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn calls_waiting_for_a_failed_dial_share_its_failure() {
        let dials = Arc::new(AtomicUsize::new(0));
        let upstream = Upstream::with_dial_timeout(
            http::Uri::from_static("http://backend.invalid/"),
            Blackhole(dials.clone()),
            Duration::from_millis(500),
        );
        let started = tokio::time::Instant::now();
        let calls = (0..20).map(|_| {
            let mut upstream = upstream.clone();
            tokio::spawn(async move { upstream.call(http::Request::new(Body::empty())).await })
        });
        for call in calls.collect::<Vec<_>>() {
            let error = call
                .await
                .expect("no panic")
                .expect_err("nothing to connect to");
            assert!(
                error.to_string().contains("no connection within 500ms"),
                "{error}"
            );
        }
        // One dial for all twenty, not twenty dials one after another.
        assert_eq!(dials.load(Ordering::SeqCst), 1);
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        // A later call dials afresh.
        let mut upstream = upstream.clone();
        assert!(
            upstream
                .call(http::Request::new(Body::empty()))
                .await
                .is_err()
        );
        assert_eq!(dials.load(Ordering::SeqCst), 2);
    }
}
