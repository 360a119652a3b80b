//! Serving HTTP on the connections of an [`Incoming`], for both ports: hyper's HTTP/1.1 +
//! HTTP/2 connection builder (or HTTP/2 only), a header-read timeout, an HTTP/2 keepalive ping,
//! an idle timeout (a connection with no request in flight for that long is closed gracefully:
//! GOAWAY on HTTP/2, as grpc-go's `MaxConnectionIdle` does), and graceful shutdown that lets the
//! requests in flight finish. tonic's `Server` and `axum::serve` have no idle timeout, so the
//! loop is ours, and the gRPC port and the REST port share it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio_stream::StreamExt as _;

use super::incoming::{Conn, Incoming, Peer};
use super::shutdown::Shutdown;

/// How a server's connections are spoken to.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// HTTP/2 only (gRPC), or HTTP/1.1 and HTTP/2 by what the client speaks.
    pub http2_only: bool,
    /// A client must send a request's headers within this time (HTTP/1.1).
    pub header_read_timeout: Duration,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Largest header block in bytes.
    pub max_header_bytes: usize,
    /// An HTTP/2 PING after this long without a frame, and how long its answer may take before
    /// the connection is closed: a peer that vanished without closing gives its connection back.
    pub keep_alive: (Duration, Duration),
    /// A connection with no request in flight for this long is closed (GOAWAY on HTTP/2).
    pub idle_timeout: Duration,
    /// How long shutdown waits for the requests in flight.
    pub drain: Duration,
}

/// Serves each connection of `incoming` with the service `make_service` builds for it, until
/// `shutdown`; from then on no connection is taken, and the requests in flight finish (at most
/// `options.drain`).
pub async fn serve_http<M, S, B>(
    mut incoming: Incoming,
    make_service: M,
    options: HttpOptions,
    shutdown: Shutdown,
) where
    M: Fn(&Conn) -> S,
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if options.http2_only {
        builder = builder.http2_only();
    }
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
        .keep_alive_interval(options.keep_alive.0)
        .keep_alive_timeout(options.keep_alive.1);
    let open = Arc::new(OpenConnections::default());
    let (drain, draining) = tokio::sync::watch::channel(false);
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
            inner: make_service(&conn),
            activity: activity.clone(),
            peer: conn.peer(),
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
    drop(incoming);
    let _ = drain.send(true);
    let _ = tokio::time::timeout(options.drain, open.none()).await;
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

/// A connection's service, counting the connection's requests in flight and giving each
/// request its [`Peer`].
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    peer: Peer,
}

impl<S, B> tower::Service<http::Request<B>> for Tracked<S>
where
    S: tower::Service<http::Request<B>>,
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

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.peer);
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
