//! The REST listener: an accept loop over hyper's HTTP/1.1 + HTTP/2 connection builder, with
//! optional TLS, a header-read timeout, and graceful shutdown that lets in-flight requests
//! finish. (`axum::serve` has neither TLS nor timeouts, so the loop is ours.)

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::first_bytes::{FirstBytes, accept_tls};

/// How connections are served.
#[derive(Clone, Debug)]
pub struct ListenerOptions {
    /// TLS, when set; ALPN picks HTTP/2 or HTTP/1.1.
    pub tls: Option<Arc<ServerConfig>>,
    /// A client must send a request's headers (and the TLS handshake) within this time.
    pub header_read_timeout: Duration,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Largest header block in bytes.
    pub max_header_bytes: usize,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        Self {
            tls: None,
            header_read_timeout: Duration::from_secs(10),
            max_concurrent_streams: 256,
            max_header_bytes: 64 * 1024,
        }
    }
}

/// The next connection on `listener`, with Nagle's algorithm off (small replies must not wait
/// for it). A failed accept (out of file descriptors and the like) is logged and retried after
/// 50 ms instead of spinning.
pub(crate) async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return stream;
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then waits (at most 10 s) for the
/// requests in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ListenerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
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
    let acceptor = options.tls.clone().map(TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            stream = accept(&listener) => stream,
            _ = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let handshake_timeout = options.header_read_timeout;
        tokio::spawn(async move {
            match acceptor {
                None => {
                    let stream = FirstBytes::new(stream, handshake_timeout);
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                Some(acceptor) => {
                    let Some(tls) = accept_tls(&acceptor, stream, handshake_timeout).await else {
                        return; // slow or failed handshake: drop the connection
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
    Ok(())
}
