//! The REST/JSON gateway: every `google.api.http` rule in `proto/` becomes a route that is
//! transcoded into a gRPC call to the backend, over a real gRPC connection even when the
//! backend runs in the same process. Flow of one request: match route -> read the body as
//! bytes (limit) -> one canonical JSON value from body + path + query -> typed request ->
//! unary call with forwarded metadata -> reply rendered once, or one error body.

pub mod dispatch;
pub mod error;
pub mod matcher;
pub mod query;
pub mod request;
pub mod response;
pub mod routes;
pub mod server;
pub mod template;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Request, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};

pub use dispatch::Backend;
pub use error::GatewayError;
pub use response::RenderOptions;
pub use routes::RouteTable;
pub use server::ListenerOptions;

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest request body accepted; larger is 413.
    pub max_body_bytes: usize,
    /// Deadline of each backend call (sent as `grpc-timeout`); past it the reply is 504.
    pub request_timeout: Duration,
    /// The whole body must arrive within this time; past it the reply is 408.
    pub body_read_timeout: Duration,
    /// How replies are rendered.
    pub render: RenderOptions,
    /// TLS to the backend (for an `https://` backend URL).
    pub backend_tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            request_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(10),
            render: RenderOptions::default(),
            backend_tls: None,
        }
    }
}

/// Everything a request needs, built once at startup and read-only afterwards.
pub struct Gateway {
    routes: RouteTable,
    backend: Backend,
    config: GatewayConfig,
}

impl Gateway {
    /// A gateway in front of the backend at `url` (`http://host:port`). The connection is made
    /// lazily and re-made after failures; a bad route table or URL fails here.
    pub fn new(url: &str, config: GatewayConfig) -> Result<Self, String> {
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| format!("invalid backend URL {url:?}: {e}"))?;
        if let Some(tls) = &config.backend_tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("backend TLS: {e}"))?;
        }
        let endpoint = endpoint
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        Self::with_channel(endpoint.connect_lazy(), config)
    }

    /// A gateway over an existing channel.
    pub fn with_channel(channel: Channel, config: GatewayConfig) -> Result<Self, String> {
        Ok(Self {
            routes: RouteTable::new()?,
            backend: Backend::new(channel, config.request_timeout, config.render),
            config,
        })
    }
}

/// The axum router: every path goes to the one transcoding handler.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new().fallback(handle).with_state(gateway)
}

/// Serves the gateway on `listener` (plain HTTP, default limits) until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(
        listener,
        router(gateway),
        ListenerOptions::default(),
        shutdown,
    )
    .await
}

/// Serves the gateway on `listener` with these listener options until `shutdown` resolves.
pub async fn run_with(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    options: ListenerOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, router(gateway), options, shutdown).await
}

async fn handle(State(gw): State<Arc<Gateway>>, req: Request<Body>) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .expect("a UUID is a valid header value")
        });
    let mut resp = match transcode(&gw, req, &request_id).await {
        Ok(body) => {
            let mut r = body.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => e.into_response(),
    };
    resp.headers_mut().insert("x-request-id", request_id);
    resp
}

async fn transcode(
    gw: &Gateway,
    req: Request<Body>,
    request_id: &HeaderValue,
) -> Result<Vec<u8>, GatewayError> {
    let (parts, body) = req.into_parts();
    let m = gw.routes.find(&parts.method, parts.uri.path())?;
    let limit = gw.config.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::PayloadTooLarge { limit });
    }
    let body = tokio::time::timeout(gw.config.body_read_timeout, to_bytes(body, limit))
        .await
        .map_err(|_| GatewayError::RequestTimeout)?
        .map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                GatewayError::PayloadTooLarge { limit }
            } else {
                GatewayError::bad_request(format!("could not read the request body: {e}"))
            }
        })?;
    let json = request::build(&m, parts.uri.query(), &body)?;
    let transcoded = dispatch::Transcoded {
        json,
        metadata: forward_metadata(&parts.headers, request_id),
        response_body: m.route.response_body.clone(),
    };
    dispatch::dispatch(&gw.backend, m.route.rpc, transcoded)
        .await
        .map(|r| r.body)
}

/// HTTP headers that reach the backend as gRPC metadata: `Authorization`, `Idempotency-Key`,
/// `X-Request-Id` (the one the reply carries), `X-Client-Request-Id`, and every
/// `Grpc-Metadata-<name>` as `<name>`.
fn forward_metadata(headers: &HeaderMap, request_id: &HeaderValue) -> MetadataMap {
    let mut md = MetadataMap::new();
    for name in ["authorization", "idempotency-key", "x-client-request-id"] {
        if let Some(v) = headers
            .get(name)
            .and_then(|v| AsciiMetadataValue::try_from(v.as_bytes()).ok())
        {
            md.insert(name, v);
        }
    }
    if let Ok(v) = AsciiMetadataValue::try_from(request_id.as_bytes()) {
        md.insert("x-request-id", v);
    }
    for (name, value) in headers {
        let Some(rest) = name.as_str().strip_prefix("grpc-metadata-") else {
            continue;
        };
        if let (Ok(k), Ok(v)) = (
            AsciiMetadataKey::from_bytes(rest.as_bytes()),
            AsciiMetadataValue::try_from(value.as_bytes()),
        ) {
            md.append(k, v);
        }
    }
    md
}
