//! The REST/JSON gateway: every `google.api.http` rule in `proto/` becomes a route that is
//! transcoded into a gRPC call to the backend, over a real gRPC connection even when the
//! backend runs in the same process. Flow of one request: match route -> read the body as
//! bytes (limit) -> one canonical JSON value from body + path + query -> typed request ->
//! unary call with forwarded metadata -> reply rendered once, or one error body.

pub mod dispatch;
pub mod error;
pub mod matcher;
pub mod ops;
pub mod query;
pub mod request;
pub mod response;
pub mod routes;
pub mod server;
pub mod template;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Request, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};

pub use dispatch::Backend;

use crate::telemetry;
pub use error::GatewayError;
pub use response::RenderOptions;
pub use routes::RouteTable;
pub use server::ListenerOptions;
pub use upstream::Upstream;

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
    pub backend_tls: Option<BackendTls>,
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

/// How the gateway checks an `https://` backend.
#[derive(Debug, Clone)]
pub struct BackendTls {
    /// The roots the backend's certificate must chain to (see [`crate::tls::client_config`]).
    pub config: Arc<tokio_rustls::rustls::ClientConfig>,
    /// The name the backend's certificate must carry.
    pub server_name: String,
}

/// Everything a request needs, built once at startup and read-only afterwards (but for the
/// draining flag, set once when shutdown begins).
pub struct Gateway {
    routes: RouteTable,
    backend: Backend,
    config: GatewayConfig,
    draining: std::sync::atomic::AtomicBool,
}

impl Gateway {
    /// A gateway in front of the backend at `url` (`http://host:port`, or `https://host:port`
    /// with [`GatewayConfig::backend_tls`]). The connection is made lazily and re-made after
    /// failures; a bad route table or URL fails here.
    pub fn new(url: &str, config: GatewayConfig) -> Result<Self, String> {
        let invalid = |why: &str| format!("invalid backend URL {url:?}: {why}");
        let uri: http::Uri = url.parse().map_err(|e| invalid(&format!("{e}")))?;
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("a backend URL has no path"));
        }
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(invalid("the scheme is http or https")),
        };
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let addr = format!("{}:{port}", authority.host());
        let origin = http::Uri::builder()
            .scheme(uri.scheme_str().unwrap_or("http"))
            .authority(authority.as_str())
            .path_and_query("/")
            .build()
            .map_err(|e| invalid(&format!("{e}")))?;
        let upstream = match (tls, &config.backend_tls) {
            (false, _) => Upstream::new(origin, upstream::Tcp(addr)),
            (true, None) => {
                return Err(format!(
                    "backend URL {url:?} is https: give the certificate to trust (--backend-ca)"
                ));
            }
            (true, Some(backend_tls)) => {
                let server_name = backend_tls.server_name.clone().try_into().map_err(|e| {
                    format!("invalid TLS server name {:?}: {e}", backend_tls.server_name)
                })?;
                Upstream::new(
                    origin,
                    upstream::Tls {
                        tcp: upstream::Tcp(addr),
                        server_name,
                        config: backend_tls.config.clone(),
                    },
                )
            }
        };
        Self::with_upstream(upstream, config)
    }

    /// A gateway over an existing connection to the backend.
    pub fn with_upstream(upstream: Upstream, config: GatewayConfig) -> Result<Self, String> {
        Ok(Self {
            routes: RouteTable::new()?,
            backend: Backend::new(upstream, config.request_timeout, config.render),
            config,
            draining: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

/// The axum router: every path goes to the one transcoding handler.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/openapi.json", get(ops::openapi))
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .fallback(handle)
        .with_state(gateway)
}

/// Serves the gateway on `listener` (plain HTTP, default limits) until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_with(listener, gateway, ListenerOptions::default(), shutdown).await
}

/// Serves the gateway on `listener` with these listener options until `shutdown` resolves;
/// from then on `/readyz` answers 503 while requests in flight finish.
pub async fn run_with(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    options: ListenerOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let gw = gateway.clone();
    let shutdown = async move {
        shutdown.await;
        gw.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    };
    server::serve(listener, router(gateway), options, shutdown).await
}

/// What one request did, for its log line and metrics.
#[derive(Default)]
struct Outcome {
    route: Option<&'static str>,
    rpc: Option<&'static str>,
}

async fn handle(State(gw): State<Arc<Gateway>>, req: Request<Body>) -> Response {
    let started = std::time::Instant::now();
    let request_id = req
        .headers()
        .get("x-request-id")
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .cloned()
        .unwrap_or_else(|| {
            let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
            HeaderValue::from_str(id).expect("a UUID is a valid header value")
        });
    let method = req.method().clone();
    let in_flight = metrics::gauge!(telemetry::HTTP_IN_FLIGHT);
    in_flight.increment(1.0);
    let mut outcome = Outcome::default();
    let mut resp = match transcode(&gw, req, &request_id, &mut outcome).await {
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
    in_flight.decrement(1.0);
    let elapsed = started.elapsed();
    let route = outcome.route.unwrap_or("unmatched");
    let status = resp.status().as_u16();
    let method_label = telemetry::method_label(&method);
    metrics::counter!(telemetry::HTTP_REQUESTS, "route" => route, "method" => method_label.clone(), "status" => telemetry::status_label(resp.status()))
        .increment(1);
    metrics::histogram!(telemetry::HTTP_DURATION, "route" => route, "method" => method_label)
        .record(elapsed.as_secs_f64());
    tracing::info!(
        target: "compute_gateway::access",
        request_id = request_id.to_str().unwrap_or_default(),
        method = method.as_str(),
        route,
        grpc_method = outcome.rpc.unwrap_or_default(),
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    resp.headers_mut().insert("x-request-id", request_id);
    resp
}

async fn transcode(
    gw: &Gateway,
    req: Request<Body>,
    request_id: &HeaderValue,
    outcome: &mut Outcome,
) -> Result<Vec<u8>, GatewayError> {
    let (parts, body) = req.into_parts();
    let m = gw.routes.find(&parts.method, parts.uri.path())?;
    outcome.route = Some(m.route.pattern);
    outcome.rpc = Some(m.route.rpc().path);
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
///
/// These values change with every request (or are secrets), so they are marked sensitive: HPACK
/// sends them as never-indexed literals instead of churning the connection's header table,
/// where they would evict the headers that repeat on every call.
fn forward_metadata(headers: &HeaderMap, request_id: &HeaderValue) -> MetadataMap {
    let mut md = MetadataMap::new();
    for name in ["authorization", "idempotency-key", "x-client-request-id"] {
        if let Some(mut v) = headers
            .get(name)
            .and_then(|v| AsciiMetadataValue::try_from(v.as_bytes()).ok())
        {
            v.set_sensitive(true);
            md.insert(name, v);
        }
    }
    if let Ok(mut v) = AsciiMetadataValue::try_from(request_id.as_bytes()) {
        v.set_sensitive(true);
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
