//! The REST listener's HTTP side: the router (the operator's endpoints, and every other path to
//! the transcoding handler), served by hyper's HTTP/1.1 + HTTP/2 connection builder over the
//! connections of an [`Incoming`], with a header-read timeout, an idle timeout (a connection
//! with no request in flight for that long is closed gracefully: GOAWAY on HTTP/2), and
//! graceful shutdown that lets in-flight requests finish. (`axum::serve` has none of these, so
//! the loop is ours.)

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio_stream::StreamExt as _;

use super::admin;
use super::handler::{Gateway, handle};
use crate::net::{ConnOptions, Incoming, Shutdown};

/// How long shutdown waits for the requests in flight.
const DRAIN: Duration = Duration::from_secs(10);

/// How connections are served.
#[derive(Clone, Debug)]
pub struct ListenerOptions {
    /// A client must send a request's headers within this time (and its TLS handshake and first
    /// bytes within this time each: see [`crate::net::incoming`]).
    pub header_read_timeout: Duration,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Largest header block in bytes.
    pub max_header_bytes: usize,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest a write may wait for a client that does not read.
    pub write_timeout: Duration,
    /// A connection with no request in flight for this long is closed (GOAWAY on HTTP/2).
    pub idle_timeout: Duration,
}

impl ListenerOptions {
    /// How the listener's connections are bounded: the header-read timeout also bounds a
    /// TLS handshake and the first bytes.
    pub fn connections(&self) -> ConnOptions {
        ConnOptions {
            name: "http",
            handshake_timeout: self.header_read_timeout,
            max_connections: self.max_connections,
            write_timeout: self.write_timeout,
        }
    }
}

impl Default for ListenerOptions {
    fn default() -> Self {
        let connections = ConnOptions::named("http");
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_concurrent_streams: 256,
            max_header_bytes: 64 * 1024,
            max_connections: connections.max_connections,
            write_timeout: connections.write_timeout,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// The axum router: the operator's endpoints, and every other path to the one transcoding
/// handler.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/openapi.json", get(admin::openapi))
        .route("/metrics", get(admin::metrics))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .fallback(handle)
        .with_state(gateway)
}

/// Serves the gateway on the connections of `incoming` until `shutdown`; from then on
/// `/readyz` answers 503 and no connection is taken, while the requests in flight finish
/// (at most [`DRAIN`]).
pub async fn serve(
    mut incoming: Incoming,
    gateway: Arc<Gateway>,
    options: ListenerOptions,
    shutdown: Shutdown,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(options.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(options.max_concurrent_streams)
        .max_header_list_size(options.max_header_bytes as u32)
        .keep_alive_interval(Duration::from_secs(30));
    let open = Arc::new(OpenConnections::default());
    let (drain, draining) = tokio::sync::watch::channel(false);
    let router = router(gateway.clone());
    let stop = shutdown.requested();
    tokio::pin!(stop);
    loop {
        let conn = tokio::select! {
            conn = incoming.next() => match conn {
                Some(Ok(conn)) => conn,
                Some(Err(_)) => continue,
                None => break,
            },
            () = &mut stop => break,
        };
        let activity = Arc::new(Activity::new());
        let service = TowerToHyperService::new(Tracked {
            inner: router.clone(),
            activity: activity.clone(),
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(conn), service)
            .into_owned();
        let held = open.hold();
        let draining = draining.clone();
        let idle_timeout = options.idle_timeout;
        tokio::spawn(async move {
            serve_connection(connection, &activity, idle_timeout, draining).await;
            drop(held);
        });
    }
    gateway.draining.store(true, Ordering::Relaxed);
    drop(incoming);
    let _ = drain.send(true);
    let _ = tokio::time::timeout(DRAIN, open.none()).await;
}

/// Drives one connection to its end, closing it gracefully when shutdown begins or when it
/// has had no request in flight for `idle_timeout`.
async fn serve_connection<C>(
    connection: C,
    activity: &Activity,
    idle_timeout: Duration,
    mut draining: tokio::sync::watch::Receiver<bool>,
) where
    C: std::future::Future + GracefulClose,
{
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        let idle_at = activity.idle_deadline(idle_timeout);
        tokio::select! {
            _ = connection.as_mut() => return,
            changed = draining.changed(), if !closing => {
                if changed.is_err() || *draining.borrow() {
                    connection.as_mut().close_gracefully();
                    closing = true;
                }
            }
            () = tokio::time::sleep_until(idle_at), if !closing => {
                if activity.idle_deadline(idle_timeout) <= tokio::time::Instant::now() {
                    connection.as_mut().close_gracefully();
                    closing = true;
                }
            }
        }
    }
}

/// A connection that can be asked to finish its requests in flight and close.
trait GracefulClose {
    fn close_gracefully(self: Pin<&mut Self>);
}

impl<I, S, E, B> GracefulClose for auto::UpgradeableConnection<'static, I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn close_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    last: std::sync::Mutex<tokio::time::Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// When the connection will have been idle for `timeout`, as things stand (a connection
    /// with a request in flight is looked at again a timeout from now).
    fn idle_deadline(&self, timeout: Duration) -> tokio::time::Instant {
        let last = *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return tokio::time::Instant::now() + timeout;
        }
        last + timeout
    }
}

/// Counts a request in flight until its reply is made.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self
            .0
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = tokio::time::Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router, counting each connection's requests in flight.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, R> tower::Service<R> for Tracked<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.activity.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(self.activity.clone());
        let call = self.inner.call(req);
        Box::pin(async move {
            let reply = call.await;
            drop(guard);
            reply
        })
    }
}

/// How many connections are open, and a way to wait for none.
#[derive(Default)]
struct OpenConnections {
    count: AtomicUsize,
    closed: tokio::sync::Notify,
}

impl OpenConnections {
    fn hold(self: &Arc<Self>) -> OpenConnection {
        self.count.fetch_add(1, Ordering::AcqRel);
        OpenConnection(self.clone())
    }

    async fn none(&self) {
        loop {
            let closed = self.closed.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// One open connection, counted until dropped.
struct OpenConnection(Arc<OpenConnections>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.closed.notify_waiters();
    }
}
