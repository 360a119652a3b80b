//! `serve` mode, the one wiring `main` and the tests both run: the gRPC backend and the REST
//! gateway in one process, the gateway reaching the backend over an in-process gRPC connection
//! ([`crate::net::pipe`]) while other clients use the gRPC port.
//!
//! Shutdown is ordered: on the signal both listeners stop taking connections; the gateway
//! drains its requests first, over a backend still serving; only then does the backend stop,
//! letting its own calls in flight finish.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::backend::{self, Backend, BackendConfig};
use crate::gateway::{self, Gateway, GatewayConfig, ListenerOptions, StartError};
use crate::net::{self, ConnOptions, Incoming, Shutdown, Tls, Upstream};
use crate::store::{Store, StoreError};

/// Settings of `serve` mode.
#[derive(Clone)]
pub struct ServeConfig {
    /// The backend's settings.
    pub backend: BackendConfig,
    /// The gateway's settings.
    pub gateway: GatewayConfig,
    /// The REST listener's settings.
    pub listener: ListenerOptions,
    /// How the gRPC listener's connections are bounded. Its handshake timeout: a new
    /// connection is closed unless it finishes its TLS handshake, if any, and then sends the
    /// HTTP/2 preface and SETTINGS, each within this time. grpc-go bounds the same stretch with
    /// its `ConnectionTimeout`, 120 s by default; `serve` uses 10 s, like the REST listener's
    /// header-read timeout.
    pub grpc_connections: ConnOptions,
    /// TLS on both listeners, when set.
    pub tls: Option<Tls>,
}

/// Why `serve` cannot start.
#[derive(Debug)]
pub enum ServeError {
    /// The store failed while finishing the creates of the last run.
    Store(StoreError),
    /// The gateway cannot start.
    Gateway(StartError),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Store(e) => e.fmt(f),
            Self::Gateway(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ServeError {}

/// `serve` mode, started: the store recovered and the route table built, ready to take its
/// listeners.
pub struct Server {
    backend: Backend,
    gateway: Arc<Gateway>,
    local: Incoming,
    config: ServeConfig,
}

impl Server {
    /// Finishes the creates the last run left running, then builds the gateway. Fails before
    /// anything is served.
    pub async fn new(store: Arc<dyn Store>, config: ServeConfig) -> Result<Self, ServeError> {
        let backend = Backend::new(store, config.backend.clone());
        let recovered = backend.recover().await.map_err(ServeError::Store)?;
        if recovered > 0 {
            tracing::info!(recovered, "completed creates left running by the last run");
        }
        let (dialer, local) = net::pipe();
        let origin = http::Uri::from_static("http://in-process.invalid/");
        let upstream = Upstream::new(origin, dialer, config.gateway.upstream_options());
        let gateway = Gateway::with_upstream(upstream, config.gateway.clone())
            .map_err(ServeError::Gateway)?;
        Ok(Self {
            backend,
            gateway: Arc::new(gateway),
            local,
            config,
        })
    }

    /// Serves gRPC on `grpc` and REST on `http` until `shutdown`, then stops in order.
    pub async fn run(
        self,
        grpc: TcpListener,
        http: TcpListener,
        shutdown: Shutdown,
    ) -> Result<(), ServeError> {
        let tls = self.config.tls.as_ref();
        let grpc = net::incoming(
            grpc,
            tls.map(Tls::grpc_server),
            self.config.grpc_connections.clone(),
            shutdown.clone(),
        )
        .merge(self.local);
        let http = net::incoming(
            http,
            tls.map(Tls::rest_server),
            self.config.listener.connections(),
            shutdown.clone(),
        );
        // The backend outlives the gateway's drain: it stops on a signal of its own, given
        // when this returns or is dropped.
        let backend_stop = Shutdown::new();
        let _stop_backend = backend_stop.trigger_on_drop();
        let mut backend = tokio::spawn(backend::serve(grpc, self.backend, backend_stop.clone()));
        let rest = gateway::serve(http, self.gateway, self.config.listener, shutdown.clone());
        tokio::pin!(rest);
        tokio::select! {
            () = &mut rest => {}
            ended = &mut backend => {
                // The gRPC server stopped on its own: nothing is served any more.
                shutdown.trigger();
                rest.await;
                return flatten(ended);
            }
        }
        backend_stop.trigger();
        flatten(backend.await)
    }
}

fn flatten(ended: Result<(), tokio::task::JoinError>) -> Result<(), ServeError> {
    match ended {
        Ok(()) => Ok(()),
        // A panic in the server task: carry it on.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Ok(()), // cancelled: the runtime is shutting down
    }
}
