//! The REST listener's HTTP side: the router (the operator's endpoints, and every other path to
//! the transcoding handler), served over HTTP/1.1 and HTTP/2 by the shared connection loop of
//! [`crate::net::serve_http`] (header-read and idle timeouts, graceful shutdown).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::response::Redirect;
use axum::routing::get;

use super::admin;
use super::edge;
use super::handler::{Gateway, handle};
use crate::net::{ConnOptions, HttpOptions, Incoming, Shutdown, serve_http};

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

    /// How the listener speaks HTTP: both versions, a PING after 30 s of silence.
    fn http(&self) -> HttpOptions {
        HttpOptions {
            http2_only: false,
            header_read_timeout: self.header_read_timeout,
            max_concurrent_streams: self.max_concurrent_streams,
            max_header_bytes: self.max_header_bytes,
            keep_alive: (Duration::from_secs(30), Duration::from_secs(20)),
            idle_timeout: self.idle_timeout,
            drain: DRAIN,
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
/// handler, behind the layers of the edge.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let edge = gateway.config().edge.clone();
    let router = Router::new()
        .route("/openapi.json", get(admin::openapi))
        .route("/docs", get(admin::docs))
        .route("/docs/", get(|| async { Redirect::permanent("../docs") }))
        .route("/docs/docs.js", get(admin::docs_script))
        .route("/docs/docs.css", get(admin::docs_style))
        .route("/metrics", get(admin::metrics))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .fallback(handle)
        .with_state(gateway);
    edge::wrap(router, &edge)
}

/// Serves the gateway on the connections of `incoming` until `shutdown`; from then on
/// `/readyz` answers 503 and no connection is taken, while the requests in flight finish
/// (at most [`DRAIN`]).
pub async fn serve(
    incoming: Incoming,
    gateway: Arc<Gateway>,
    options: ListenerOptions,
    shutdown: Shutdown,
) {
    let router = router(gateway.clone());
    let current = gateway.clone().keep_current(shutdown.clone());
    let draining = {
        let stop = shutdown.requested();
        async move {
            stop.await;
            gateway.draining.store(true, Ordering::Relaxed);
        }
    };
    tokio::join!(
        serve_http(incoming, |_| router.clone(), options.http(), shutdown),
        draining,
        current
    );
}
