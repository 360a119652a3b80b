//! The state every request reads ([`Gateway`], built once at startup) and the one handler
//! that transcodes a request: match the route, read the body as bytes (limit), build one
//! canonical JSON value from body + path + query, make the route's typed call with the
//! forwarded metadata, and answer with the rendered reply or one error body.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderValue, Request, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use hyper::body::Body as _;

use super::client::{BackendClient, BackendSpec, Backends};
use super::connect;
use super::dispatch::{self, Payload, Reply, Transcoded};
use super::edge::EdgeOptions;
use super::error::GatewayError;
use super::grpc_web;
use super::headers::{self, HeaderPattern, Origin};
use super::matcher::{Match, Matcher};
use super::media::{self, Format};
use super::request;
use super::response::RenderOptions;
use super::routes::{BodySelector, Route, RouteError, RouteTable};
use super::sources::{Loaded, Sources};
use super::stream::{self, Framing, StreamCall};
use super::value::InputOptions;
use crate::net::{
    BackendTls, Peer, Pool, TraceParent, Upstream, UpstreamError, UpstreamOptions, UrlError,
    parse_grpc_timeout,
};
use crate::telemetry;

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest request body accepted; larger is 413.
    pub max_body_bytes: usize,
    /// Largest backend reply message taken; a larger one is answered 500, naming this limit
    /// (it is the gateway's limit, not the client's mistake).
    pub max_reply_bytes: usize,
    /// Deadline of each backend call (sent as `grpc-timeout`); past it the reply is 504.
    pub request_timeout: Duration,
    /// The whole body must arrive within this time; past it the reply is 408.
    pub body_read_timeout: Duration,
    /// How replies are rendered.
    pub render: RenderOptions,
    /// How forgiving request parsing is (strict by default).
    pub input: InputOptions,
    /// TLS to the backend (for an `https://` backend URL).
    pub backend_tls: Option<BackendTls>,
    /// CORS and compression.
    pub edge: EdgeOptions,
    /// Headers forwarded to the backend as metadata besides the fixed ones (`--forward-header`).
    pub forward_headers: Vec<HeaderPattern>,
    /// gRPC message compression on the connection to the backend (`--backend-compression`).
    pub backend_compression: Option<tonic::codec::CompressionEncoding>,
    /// Where each request's span goes (`--otlp-endpoint`); `None` exports none.
    pub spans: Option<crate::telemetry::Spans>,
    /// Where the routes come from beside the compiled-in services (`--descriptor-set`,
    /// `--reflect`, `--http-config`, `--auto-map`); their methods are transcoded dynamically.
    pub sources: Sources,
    /// Reload the sources this often (`--reflect-interval`); `None`: only on SIGHUP (with
    /// [`Self::reload_on_hangup`]) and, with reflection, when a routed method turns out
    /// unimplemented.
    pub reload_interval: Option<Duration>,
    /// Reload the sources on SIGHUP (the binary sets it; tests in one process do not).
    pub reload_on_hangup: bool,
}

impl GatewayConfig {
    /// The limits of the gateway's connection to its backend.
    pub(crate) fn upstream_options(&self) -> UpstreamOptions {
        UpstreamOptions {
            max_reply_bytes: self.max_reply_bytes,
            ..UpstreamOptions::default()
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_reply_bytes: UpstreamOptions::default().max_reply_bytes,
            request_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(10),
            render: RenderOptions::default(),
            input: InputOptions::default(),
            backend_tls: None,
            edge: EdgeOptions::default(),
            forward_headers: Vec::new(),
            backend_compression: None,
            spans: None,
            sources: Sources::default(),
            reload_interval: None,
            reload_on_hangup: false,
        }
    }
}

/// Why a gateway cannot start.
#[derive(Debug)]
pub enum StartError {
    /// The backend URL cannot be dialled.
    Url(UrlError),
    /// The route table does not build.
    Routes(RouteError),
    /// A backend did not answer reflection at start.
    Reflect(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Url(e) => e.fmt(f),
            Self::Routes(e) => e.fmt(f),
            Self::Reflect(why) => write!(f, "--reflect: {why}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The routes, as one unit that a reload swaps whole: the matcher over the route table, the
/// route of each gRPC path (for Connect), and the OpenAPI document, made on first request.
pub struct Routing {
    pub(super) matcher: Matcher,
    /// The route of each method by its gRPC path, for Connect calls.
    by_rpc_path: std::collections::HashMap<String, usize>,
    openapi: OnceLock<String>,
    /// What the sources read as when this was made.
    pub(super) fingerprint: [u8; 32],
}

impl Routing {
    pub(super) fn new(table: RouteTable, fingerprint: [u8; 32]) -> Self {
        let matcher = Matcher::new(table);
        let mut by_rpc_path = std::collections::HashMap::new();
        for (i, route) in matcher.table().routes().iter().enumerate() {
            by_rpc_path
                .entry(route.rpc().path().to_string())
                .or_insert(i);
        }
        Self {
            matcher,
            by_rpc_path,
            openapi: OnceLock::new(),
            fingerprint,
        }
    }

    /// The route table.
    pub fn table(&self) -> &RouteTable {
        self.matcher.table()
    }

    /// The OpenAPI document of the routes.
    pub(super) fn openapi(&self) -> &str {
        self.openapi
            .get_or_init(|| super::openapi::document(self.matcher.table()))
    }
}

/// Everything a request needs, built once at startup and read-only afterwards (but for the
/// draining flag, set once when shutdown begins, and the routes, swapped whole by a reload:
/// a request keeps the routes it started with).
pub struct Gateway {
    pub(super) routing: arc_swap::ArcSwap<Routing>,
    pub(super) backends: Arc<Backends>,
    /// gRPC-Web, translated and sent on to the backend.
    grpc_web: tonic_web::GrpcWebService<grpc_web::Proxy>,
    config: GatewayConfig,
    pub(super) draining: AtomicBool,
    /// Set when a routed method turns out unimplemented: the sources are read again.
    pub(super) stale: tokio::sync::Notify,
    /// One reload at a time.
    pub(super) reloading: tokio::sync::Mutex<()>,
}

impl Gateway {
    /// A gateway in front of the backend at `url` (`http://host:port`, or `https://host:port`
    /// with [`GatewayConfig::backend_tls`]). The connection is made lazily and re-made after
    /// failures; a bad route table or URL fails here.
    pub fn new(url: &str, config: GatewayConfig) -> Result<Self, StartError> {
        Self::balancing(&[url.to_string()], config)
    }

    /// A gateway in front of several backends: each `URL` or `SERVICE_OR_PACKAGE=URL` (see
    /// [`BackendSpec`]). The backends of one scope serve the same services: calls go to the
    /// ones that are up, in turn, and one the chosen backend certainly did not process moves on
    /// to the next (see [`crate::net::Pool`]). Each scope has its own connections.
    pub fn balancing(specs: &[String], config: GatewayConfig) -> Result<Self, StartError> {
        let mut scopes: Vec<(Option<String>, Vec<Upstream>)> = Vec::new();
        for spec in specs {
            let spec: BackendSpec = spec.parse().map_err(|why| {
                StartError::Url(UrlError::Invalid {
                    url: spec.clone(),
                    why,
                })
            })?;
            let upstream = Upstream::from_url(
                &spec.url,
                config.backend_tls.as_ref(),
                config.upstream_options(),
            )
            .map_err(StartError::Url)?;
            match scopes.iter_mut().find(|(scope, _)| *scope == spec.scope) {
                Some((_, upstreams)) => upstreams.push(upstream),
                None => scopes.push((spec.scope, vec![upstream])),
            }
        }
        if scopes.is_empty() {
            return Err(StartError::Url(UrlError::Invalid {
                url: String::new(),
                why: "no backend URL was given".into(),
            }));
        }
        let backends = scopes
            .into_iter()
            .map(|(scope, upstreams)| {
                let client = BackendClient::new(Pool::new(upstreams), &config);
                (scope, client)
            })
            .collect();
        Self::with_backends(Backends::new(backends), config)
    }

    /// A gateway over an existing connection to the backend.
    pub(crate) fn with_upstream(
        upstream: Upstream,
        config: GatewayConfig,
    ) -> Result<Self, StartError> {
        let client = BackendClient::new(Pool::new(vec![upstream]), &config);
        Self::with_backends(Backends::new(vec![(None, client)]), config)
    }

    fn with_backends(backends: Backends, config: GatewayConfig) -> Result<Self, StartError> {
        let backends = Arc::new(backends);
        let grpc_web = tower::Layer::layer(
            &tonic_web::GrpcWebLayer::new(),
            grpc_web::Proxy {
                backends: backends.clone(),
                max_body_bytes: config.max_body_bytes,
                body_read_timeout: config.body_read_timeout,
                request_timeout: config.request_timeout,
            },
        );
        let loaded = Loaded::read(&config.sources, Vec::new()).map_err(StartError::Routes)?;
        let table = loaded
            .table(&config.sources, &|service| backends.of(service).is_some())
            .map_err(StartError::Routes)?;
        Ok(Self {
            routing: arc_swap::ArcSwap::from_pointee(Routing::new(table, loaded.fingerprint)),
            backends,
            grpc_web,
            config,
            draining: AtomicBool::new(false),
            stale: tokio::sync::Notify::new(),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The settings it was made with.
    pub(super) fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The routes requests are served by now.
    pub fn routes(&self) -> Arc<Routing> {
        self.routing.load_full()
    }
}

/// What one request did, for its log line and metrics.
#[derive(Default)]
struct Outcome {
    route: Option<metrics::SharedString>,
    rpc: Option<metrics::SharedString>,
    /// Reading the body began and did not reach its end (over the limit, too slow, broken).
    body_cut: bool,
    /// A streaming call's framing, once the call is made: its failure is framed so too.
    framing: Option<Framing>,
}

/// Reads and drops what is left of a body the reply did not need: up to four times the body
/// limit, within the body-read timeout. True once it reached the end; false when the body is
/// longer (as declared, or as it turns out), slower or broken.
async fn discard(body: Body, config: &GatewayConfig) -> bool {
    let budget = (config.max_body_bytes as u64).saturating_mul(4);
    if body.size_hint().lower() > budget {
        return false;
    }
    let drain = async {
        let mut left = budget;
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return false;
            };
            if let Some(data) = frame.data_ref() {
                match left.checked_sub(data.len() as u64) {
                    Some(rest) => left = rest,
                    None => return false,
                }
            }
        }
        true
    };
    tokio::time::timeout(config.body_read_timeout, drain)
        .await
        .unwrap_or(false)
}

/// The handler of every path but the operator's.
pub(super) async fn handle(State(gw): State<Arc<Gateway>>, req: Request<Body>) -> Response {
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
    let (parts, body) = req.into_parts();
    // This request's hop of the client's trace, or a trace of its own.
    let caller = parts
        .headers
        .get("traceparent")
        .and_then(|v| TraceParent::parse(v.as_bytes()));
    let trace = caller.map_or_else(TraceParent::start, |t| t.child());
    let in_flight = metrics::gauge!(telemetry::HTTP_IN_FLIGHT);
    in_flight.increment(1.0);
    let mut outcome = Outcome::default();
    let mut body = Some(body);
    // The routes this request is served by, whatever a reload does meanwhile.
    let routing = gw.routing.load_full();
    let mut resp = if grpc_web::is_grpc_web(&parts.headers) {
        outcome.route = Some(metrics::SharedString::const_str("grpc-web"));
        let mut req = Request::new(body.take().expect("the body is read once, here"));
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = parts.uri.clone();
        *req.version_mut() = parts.version;
        *req.headers_mut() = parts.headers.clone();
        // Boxed: the REST path's future stays as small as it was.
        let Ok(resp) = Box::pin(tower::ServiceExt::oneshot(gw.grpc_web.clone(), req)).await;
        resp.map(Body::new)
    } else {
        let mut cx = Ctx {
            started,
            gw: &gw,
            routing: &routing,
            parts: &parts,
            body: &mut body,
            request_id: &request_id,
            trace: &trace,
            outcome: &mut outcome,
        };
        match connect_target(&routing, &parts) {
            Some((route, codec)) => {
                cx.outcome.route = Some(metrics::SharedString::const_str("connect"));
                connect_response(connect_call(&mut cx, route, codec).await)
            }
            None => {
                let result = transcode(&mut cx).await;
                rest_response(result, outcome.framing)
            }
        }
    };
    // A reply that did not need the body (an error found before it was read), or that cut its
    // reading short: over HTTP/1 the rest of the body stands between this request and the
    // client's next one on the connection. It is read and dropped, within bounds; past them the
    // connection is closed, and the reply says so, so that the client sends nothing more on it
    // (RFC 9112 §9.6). HTTP/2 resets the stream instead, on its own.
    if parts.version < http::Version::HTTP_2 {
        let cleared = match body.take() {
            Some(rest) => discard(rest, &gw.config).await,
            None => !outcome.body_cut,
        };
        if !cleared {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    in_flight.decrement(1.0);
    let elapsed = started.elapsed();
    let route = outcome
        .route
        .unwrap_or(metrics::SharedString::const_str("unmatched"));
    let status = resp.status().as_u16();
    let method_label = telemetry::method_label(&parts.method);
    tracing::info!(
        target: "compute_gateway::access",
        request_id = request_id.to_str().unwrap_or_default(),
        trace_id = trace.trace_id_hex(),
        method = parts.method.as_str(),
        route = &*route,
        grpc_method = outcome.rpc.as_deref().unwrap_or_default(),
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    metrics::counter!(telemetry::HTTP_REQUESTS, "route" => route.clone(), "method" => method_label.clone(), "status" => telemetry::status_label(resp.status()))
        .increment(1);
    if let Some(spans) = &gw.config.spans {
        spans.record(request_span(
            &parts,
            outcome.rpc.as_deref(),
            &route,
            status,
            elapsed,
            trace,
            caller,
        ));
    }
    metrics::histogram!(telemetry::HTTP_DURATION, "route" => route, "method" => method_label)
        .record(elapsed.as_secs_f64());
    resp.headers_mut().insert("x-request-id", request_id);
    resp
}

/// The span of one request, in OpenTelemetry's HTTP server conventions.
fn request_span(
    parts: &http::request::Parts,
    rpc: Option<&str>,
    route: &str,
    status: u16,
    elapsed: std::time::Duration,
    trace: TraceParent,
    caller: Option<TraceParent>,
) -> telemetry::ServerSpan {
    use opentelemetry::KeyValue;
    let method = parts.method.as_str().to_string();
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.clone()),
        KeyValue::new("http.route", route.to_string()),
        KeyValue::new("url.path", parts.uri.path().to_string()),
        KeyValue::new("http.response.status_code", i64::from(status)),
    ];
    if let Some(rpc) = rpc {
        attributes.push(KeyValue::new("rpc.method", rpc.to_string()));
    }
    telemetry::ServerSpan {
        trace_id: trace.trace_id,
        span_id: trace.parent_id,
        sampled: trace.flags & 1 == 1,
        parent: caller.map(|c| c.parent_id),
        name: format!("{method} {route}"),
        start: std::time::SystemTime::now() - elapsed,
        duration: elapsed,
        attributes,
        error: (status >= 500).then(|| status.to_string()),
    }
}

/// The HTTP reply of a transcoded call: the rendered body with the backend's metadata as
/// headers, or the error's Status body (with the metadata of a backend's error).
///
/// A streaming call that fails before its first message has the error's status, with the
/// error as the stream would frame it.
fn rest_response(result: Result<Reply, GatewayError>, framing: Option<Framing>) -> Response {
    match result {
        Ok(reply) => {
            let mut r = match reply.body {
                Payload::Whole(bytes) => bytes.into_response(),
                Payload::Stream(body) => body.into_response(),
            };
            let content_type = reply
                .content_type
                .unwrap_or_else(|| HeaderValue::from_static(reply.format.content_type()));
            r.headers_mut().insert(header::CONTENT_TYPE, content_type);
            if let Some(status) = headers::incoming(
                &reply.headers,
                reply.trailers.as_ref(),
                headers::REST,
                r.headers_mut(),
            ) {
                *r.status_mut() = status;
            }
            r
        }
        Err(e) => {
            e.report();
            let metadata = match &e {
                GatewayError::Backend(status) => Some(status.metadata().clone()),
                _ => None,
            };
            let framed = framing.map(|framing| stream::error_frame(&e, framing));
            let mut r = e.into_response();
            if let Some(framed) = framed {
                *r.body_mut() = Body::from(framed);
                r.headers_mut().remove(header::CONTENT_LENGTH);
                if framing == Some(Framing::Events) {
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/event-stream"),
                    );
                }
            }
            if let Some(metadata) = metadata {
                // An error's status is the code's: an x-http-code does not change it.
                headers::incoming(&metadata, None, headers::REST, r.headers_mut());
            }
            r
        }
    }
}

/// The route of the method a Connect unary call names (`POST /<service>/<method>` with a
/// Connect codec), and the codec.
///
/// A plain JSON POST without `Connect-Protocol-Version` to a path that has a REST route (an
/// auto-mapped method's, which is the same path) is that REST call: its errors are then
/// `google.rpc.Status` bodies, as grpc-gateway's clients of unbound methods expect. Connect's
/// own clients always send the header.
fn connect_target<'g>(
    routing: &'g Routing,
    parts: &http::request::Parts,
) -> Option<(&'g Route, Format)> {
    if parts.method != http::Method::POST {
        return None;
    }
    let codec = connect::codec(&parts.headers)?;
    let index = *routing.by_rpc_path.get(parts.uri.path())?;
    let route = &routing.matcher.table().routes()[index];
    // Connect's streaming protocol is not served: such a path is REST's (auto-mapped) or 404.
    if route.rpc().is_streaming() {
        return None;
    }
    if codec == Format::Json
        && !parts.headers.contains_key("connect-protocol-version")
        && routing
            .matcher
            .find(&http::Method::POST, parts.uri.path())
            .is_ok()
    {
        return None;
    }
    Some((route, codec))
}

/// What one request's handling reads and updates, on every path.
struct Ctx<'a> {
    started: std::time::Instant,
    gw: &'a Gateway,
    routing: &'a Arc<Routing>,
    parts: &'a http::request::Parts,
    /// Taken once the route is known and the declared length is within the limit.
    body: &'a mut Option<Body>,
    request_id: &'a HeaderValue,
    trace: &'a TraceParent,
    outcome: &'a mut Outcome,
}

impl Ctx<'_> {
    /// The deadline of the call: the one the client asks for (`asked`), within the gateway's.
    fn deadline(&self, asked: Option<std::time::Duration>) -> std::time::Duration {
        let cap = self.gw.config.request_timeout;
        asked.map_or(cap, |asked| asked.min(cap))
    }

    /// Makes the call (`&mut`: a shared `Ctx` would not be `Send`, for the body it holds). A
    /// reply (or error) that came after the deadline is too late, however
    /// fast the backend was to send it (a deadline shorter than a timer tick can pass
    /// unnoticed on the way).
    async fn call(
        &mut self,
        rpc: &super::Rpc,
        transcoded: Transcoded,
    ) -> Result<Reply, GatewayError> {
        let timeout = transcoded.timeout;
        let Some(client) = self.gw.backends.of_path(rpc.path()) else {
            // The table holds only services with a backend; a reload may have dropped it since.
            return Err(GatewayError::NotFound);
        };
        let reply = rpc.call(client, transcoded).await;
        if self.started.elapsed() >= timeout {
            return Err(GatewayError::Upstream(UpstreamError::Deadline(timeout)));
        }
        if let Err(GatewayError::Backend(status)) = &reply
            && status.code() == tonic::Code::Unimplemented
            && self.gw.config.sources.reflect
        {
            // The backend no longer has a method the table has: its services are asked for
            // again.
            self.gw.stale.notify_one();
        }
        reply
    }
}

/// A Connect unary call: the body is the whole request message.
async fn connect_call(
    cx: &mut Ctx<'_>,
    route: &Route,
    codec: Format,
) -> Result<Reply, GatewayError> {
    let rpc = route.rpc();
    cx.outcome.rpc = Some(rpc.label().clone());
    let metadata = outgoing_metadata(cx.gw, cx.parts, cx.request_id, cx.trace)?;
    let timeout = cx.deadline(connect::timeout(&cx.parts.headers));
    let bytes = read_body(cx.gw, cx.parts, cx.body, cx.outcome).await?;
    let input = rpc.method().input();
    let json = match codec {
        Format::Json if bytes.iter().all(u8::is_ascii_whitespace) => Vec::new(),
        Format::Json => bytes.to_vec(),
        Format::Proto => media::proto_to_json(&input, &bytes)?,
    };
    let value = if json.is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_slice(&json).map_err(|e| {
            GatewayError::bad_request(format!("the request body is not valid JSON: {e}"))
        })?
    };
    let json = serde_json::Value::Object(request::message(&input, value, "", cx.gw.config.input)?);
    let transcoded = Transcoded {
        json,
        metadata,
        timeout,
        output: codec,
        response_body: None,
    };
    cx.call(rpc, transcoded).await
}

/// The HTTP reply of a Connect unary call.
fn connect_response(result: Result<Reply, GatewayError>) -> Response {
    match result {
        Ok(reply) => {
            let mut r = match reply.body {
                Payload::Whole(bytes) => bytes.into_response(),
                Payload::Stream(body) => body.into_response(),
            };
            let content_type = match reply.format {
                Format::Json => "application/json",
                Format::Proto => "application/proto",
            };
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers::incoming(
                &reply.headers,
                reply.trailers.as_ref(),
                headers::CONNECT,
                r.headers_mut(),
            );
            r
        }
        Err(e) => {
            e.report();
            let mut r = connect::error_response(&e);
            if let GatewayError::Backend(status) = &e {
                headers::incoming(status.metadata(), None, headers::CONNECT, r.headers_mut());
            }
            r
        }
    }
}

/// The method a request is routed by: its own, or on a POST the one `X-HTTP-Method-Override`
/// names (for clients and proxies that send only GET and POST).
fn method_of(parts: &http::request::Parts) -> Result<http::Method, GatewayError> {
    let Some(name) = parts.headers.get("x-http-method-override") else {
        return Ok(parts.method.clone());
    };
    if parts.method != http::Method::POST {
        return Err(GatewayError::bad_request(
            "X-HTTP-Method-Override is taken on POST requests only",
        ));
    }
    let name = name
        .to_str()
        .unwrap_or_default()
        .trim()
        .to_ascii_uppercase();
    match http::Method::from_bytes(name.as_bytes()) {
        Ok(m)
            if [
                http::Method::GET,
                http::Method::PUT,
                http::Method::PATCH,
                http::Method::DELETE,
            ]
            .contains(&m) =>
        {
            Ok(m)
        }
        _ => Err(GatewayError::bad_request(format!(
            "X-HTTP-Method-Override {name:?} is not one of GET, PUT, PATCH, DELETE"
        ))),
    }
}

/// The metadata a call carries to the backend, by the header policy.
fn outgoing_metadata(
    gw: &Gateway,
    parts: &http::request::Parts,
    request_id: &HeaderValue,
    trace: &TraceParent,
) -> Result<tonic::metadata::MetadataMap, GatewayError> {
    let peer = parts.extensions.get::<Peer>();
    let origin = Origin {
        peer: peer.and_then(|p| p.remote),
        tls: peer.is_some_and(|p| p.tls),
        host: parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str())),
    };
    headers::outgoing(
        &parts.headers,
        request_id,
        origin,
        trace,
        &gw.config.forward_headers,
    )
}

/// Reads the whole body within the size limit (decompressed, when it came compressed) and the
/// body-read timeout.
async fn read_body(
    gw: &Gateway,
    parts: &http::request::Parts,
    body: &mut Option<Body>,
    outcome: &mut Outcome,
) -> Result<bytes::Bytes, GatewayError> {
    // The edge decompressed (and removed the header of) every encoding it knows.
    if let Some(encoding) = parts.headers.get(header::CONTENT_ENCODING)
        && !encoding.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Err(GatewayError::UnsupportedEncoding(
            String::from_utf8_lossy(encoding.as_bytes()).into_owned(),
        ));
    }
    let limit = gw.config.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::PayloadTooLarge { limit });
    }
    let body = body.take().expect("the body is read once, here");
    // Whatever the outcome from here on, the body is gone; read whole only if this succeeds.
    outcome.body_cut = true;
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
    outcome.body_cut = false;
    Ok(body)
}

/// Transcodes one request; takes `body` only once the route is known and the body's declared
/// length is within the limit.
async fn transcode(cx: &mut Ctx<'_>) -> Result<Reply, GatewayError> {
    let (gw, parts) = (cx.gw, cx.parts);
    let m = cx
        .routing
        .matcher
        .find(&method_of(parts)?, parts.uri.path())?;
    cx.outcome.route = Some(m.route.label().clone());
    cx.outcome.rpc = Some(m.route.rpc().label().clone());
    let metadata = outgoing_metadata(gw, parts, cx.request_id, cx.trace)?;
    let timeout = cx.deadline(
        parts
            .headers
            .get("grpc-timeout")
            .and_then(|v| parse_grpc_timeout(v.as_bytes())),
    );
    if m.route.rpc().is_streaming() {
        return transcode_stream(cx, m, metadata, timeout).await;
    }
    let body = read_body(gw, parts, cx.body, cx.outcome).await?;
    let body = if takes_http_body(m.route) {
        http_body_json(content_type_of(parts), &body).into()
    } else if !body.iter().all(u8::is_ascii_whitespace)
        && media::request_format(&parts.headers)? == Format::Proto
    {
        media::proto_body_to_json(m.route, &body)?.into()
    } else {
        body
    };
    let json = request::build(&m, parts.uri.query(), &body, gw.config.input)?;
    let transcoded = Transcoded {
        json,
        metadata,
        timeout,
        output: media::reply_format(&parts.headers),
        response_body: m.route.response_body().cloned(),
    };
    cx.call(m.route.rpc(), transcoded).await
}

/// Whether a route's body is a `google.api.HttpBody` (the raw bytes, any content type).
fn takes_http_body(route: &Route) -> bool {
    match route.body() {
        BodySelector::None => false,
        BodySelector::Whole => stream::is_http_body(&route.rpc().method().input()),
        BodySelector::Field(field) => field.kind().as_message().is_some_and(stream::is_http_body),
    }
}

/// The request's content type, as a `google.api.HttpBody` carries it.
fn content_type_of(parts: &http::request::Parts) -> &str {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
}

/// The JSON of a `google.api.HttpBody` holding `bytes` of `content_type`.
fn http_body_json(content_type: &str, bytes: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    serde_json::to_vec(&serde_json::json!({
        "contentType": content_type,
        "data": base64::engine::general_purpose::STANDARD.encode(bytes),
    }))
    .expect("a JSON object of strings always serializes")
}

/// A call of a streaming method (see `stream.rs`): a server stream's one request is read and
/// bound as a unary one; a client stream's messages are read from the body as they come.
async fn transcode_stream(
    cx: &mut Ctx<'_>,
    m: Match<'_>,
    metadata: tonic::metadata::MetadataMap,
    timeout: Duration,
) -> Result<Reply, GatewayError> {
    let (gw, parts) = (cx.gw, cx.parts);
    let rpc = m.route.rpc();
    let method = rpc.method();
    let Some(client) = gw.backends.of_path(rpc.path()) else {
        return Err(GatewayError::NotFound);
    };
    let framing = Framing::of(&parts.headers, &method.output());
    let call = |failure| StreamCall {
        metadata,
        timeout,
        framing,
        response_body: m.route.response_body().cloned(),
        failure,
    };
    if !method.is_client_streaming() {
        let body = read_body(gw, parts, cx.body, cx.outcome).await?;
        let body = if takes_http_body(m.route) {
            http_body_json(content_type_of(parts), &body).into()
        } else {
            body
        };
        let json = request::build(&m, parts.uri.query(), &body, gw.config.input)?;
        let message = dispatch::dynamic_request(rpc, json)?;
        cx.outcome.framing = Some(framing);
        let one = futures_util::stream::iter([message]);
        return stream::call(client, rpc, one, call(None)).await;
    }
    if let Some(encoding) = parts.headers.get(header::CONTENT_ENCODING)
        && !encoding.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Err(GatewayError::UnsupportedEncoding(
            String::from_utf8_lossy(encoding.as_bytes()).into_owned(),
        ));
    }
    let body = cx.body.take().expect("the body is read once, here");
    // From here the body belongs to the call: whether it is read to its end is the call's.
    cx.outcome.body_cut = true;
    let raw = takes_http_body(m.route);
    let routing = cx.routing.clone();
    let (index, bindings) = (m.index, m.bindings.clone());
    let query = parts.uri.query().map(str::to_owned);
    let input = gw.config.input;
    let content_type = content_type_of(parts).to_string();
    let parse = move |bytes: &[u8]| {
        let route = &routing.table().routes()[index];
        let m = Match {
            route,
            bindings: bindings.clone(),
            index,
        };
        let json;
        let body = if raw {
            json = http_body_json(&content_type, bytes);
            &json[..]
        } else {
            bytes
        };
        let json = request::build(&m, query.as_deref(), body, input)?;
        dispatch::dynamic_request(route.rpc(), json)
    };
    let (messages, failure) = stream::messages(body, gw.config.max_body_bytes, raw, parse);
    if method.is_server_streaming() {
        cx.outcome.framing = Some(framing);
    }
    stream::call(client, rpc, messages, call(Some(failure))).await
}
