//! The REST listener's HTTP side: the router (the operator's endpoints, and every other path to
//! the transcoding handler), served by hyper's HTTP/1.1 + HTTP/2 connection builder over the
//! connections of an [`Incoming`], with a header-read timeout, and graceful shutdown that lets
//! in-flight requests finish. (`axum::serve` has no timeouts, so the loop is ours.)

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
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
    let graceful = GracefulShutdown::new();
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
        let service = TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(conn), service)
            .into_owned();
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = watched.await;
        });
    }
    gateway.draining.store(true, Ordering::Relaxed);
    drop(incoming);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}
