//! The gateway's edge: the layers every request of the REST port passes before it is routed.
//! From the outside in:
//! - **CORS** (`--cors-allow-origin`, off by default): a preflight from an allowed origin is
//!   answered here, before routing; replies to allowed origins carry `Access-Control-*`
//!   headers, and expose the backend's metadata that the reply carries. Explicit origins may send credentials (cookies, `Authorization` with
//!   `credentials: "include"`); `*` may not, as the Fetch standard requires.
//! - **Response compression**: gzip, br or zstd, by the client's `Accept-Encoding`, for replies
//!   of at least `--compress-min-bytes` (default 1 KiB; `--no-compression` turns it off), never
//!   for gRPC replies, which compress per message.
//! - **Request decompression**: a body sent with `Content-Encoding` gzip, br or zstd is
//!   decompressed as it is read, so the body limit counts decompressed bytes (a zip bomb is
//!   cut off at the limit with 413). Any other encoding is refused with 415 by the handler.

use std::time::Duration;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};
use axum::response::Response;
use bytes::Bytes;
use tower::{Layer, Service};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::decompression::RequestDecompressionLayer;

/// The request headers a browser may send cross-origin: those the gateway reads or forwards,
/// and those of the gRPC-Web and Connect clients.
const ALLOWED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "idempotency-key",
    "x-request-id",
    "x-client-request-id",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "connect-protocol-version",
    "connect-timeout-ms",
];

/// The reply headers a cross-origin script may read.
const EXPOSED_HEADERS: &[&str] = &[
    "x-request-id",
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
];

/// How long a browser may cache a preflight's answer (Chromium caps it at 2 hours).
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(3600);

/// The edge's settings.
#[derive(Clone, Debug)]
pub struct EdgeOptions {
    /// Which origins may call cross-origin; `None` sends no CORS headers at all.
    pub cors: Option<CorsOrigins>,
    /// Replies of at least this many bytes are compressed when the client accepts it;
    /// `None` never compresses.
    pub compress_min_bytes: Option<u16>,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        Self {
            cors: None,
            compress_min_bytes: Some(1024),
        }
    }
}

/// The origins CORS allows.
#[derive(Clone, Debug, PartialEq)]
pub enum CorsOrigins {
    /// Every origin (`*`), without credentials.
    Any,
    /// These origins exactly, with credentials.
    List(Vec<HeaderValue>),
}

/// Why a `--cors-allow-origin` value was refused.
#[derive(Debug, PartialEq)]
pub struct CorsError(String);

impl std::fmt::Display for CorsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CorsError {}

impl CorsOrigins {
    /// The origins of the repeated `--cors-allow-origin` flag: `*` alone, or origins as a
    /// browser sends them (`scheme://host[:port]`, no path, no trailing slash).
    pub fn parse(values: &[String]) -> Result<Option<Self>, CorsError> {
        if values.is_empty() {
            return Ok(None);
        }
        if values.iter().any(|v| v == "*") {
            if values.len() > 1 {
                return Err(CorsError(
                    "--cors-allow-origin '*' allows every origin and cannot be combined with others"
                        .into(),
                ));
            }
            return Ok(Some(Self::Any));
        }
        let origins = values
            .iter()
            .map(|v| {
                let (scheme, rest) = v.split_once("://").unwrap_or(("", ""));
                let valid = matches!(scheme, "http" | "https")
                    && !rest.is_empty()
                    && !rest.contains(['/', '?', '#', ' ']);
                if !valid {
                    return Err(CorsError(format!(
                        "--cors-allow-origin {v:?} is not an origin: use scheme://host[:port], as in https://app.example.com"
                    )));
                }
                HeaderValue::from_str(v).map_err(|_| CorsError(format!("--cors-allow-origin {v:?} is not a valid header value")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(Self::List(origins)))
    }

    fn layer(&self) -> CorsLayer {
        let headers = |names: &[&'static str]| {
            names
                .iter()
                .map(|n| HeaderName::from_static(n))
                .collect::<Vec<_>>()
        };
        let layer = CorsLayer::new()
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers(headers(ALLOWED_HEADERS))
            .expose_headers(headers(EXPOSED_HEADERS))
            .max_age(PREFLIGHT_MAX_AGE);
        match self {
            Self::Any => layer.allow_origin(AllowOrigin::any()),
            Self::List(origins) => layer
                .allow_origin(AllowOrigin::list(origins.iter().cloned()))
                .allow_credentials(true),
        }
    }
}

/// `router` behind the layers of the edge.
///
/// The compression layers are taken only by requests that need them: tower-http's response
/// body is 5.8 KB inline whatever the encoding (and its request body 344 bytes), and moving it
/// on every reply cost more than the rest of the edge (callgrind: about 4,500 instructions of
/// `memcpy` per GET).
pub(super) fn wrap(router: Router, options: &EdgeOptions) -> Router {
    let mut router = router.layer(OnlyLayer {
        when: has_content_encoding,
        layer: RequestDecompressionLayer::new().pass_through_unaccepted(true),
    });
    if let Some(min) = options.compress_min_bytes {
        let when = SizeAbove::new(min)
            .and(NotForContentType::GRPC)
            .and(NotForContentType::SSE)
            .and(NotForContentType::IMAGES);
        router = router.layer(OnlyLayer {
            when: accepts_encoding,
            layer: CompressionLayer::new().compress_when(when),
        });
    }
    if let Some(cors) = &options.cors {
        router = router
            .layer(cors.layer())
            .layer(tower::util::MapResponseLayer::new(expose_forwarded));
    }
    router
}

/// Whether a request's body is encoded (and so needs the decompression layer).
fn has_content_encoding(headers: &HeaderMap) -> bool {
    headers.contains_key(header::CONTENT_ENCODING)
}

/// Whether a client accepts an encoded reply (and so needs the compression layer).
fn accepts_encoding(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ACCEPT_ENCODING)
}

/// Applies `layer` only to requests `when` says need it; the others go straight to the inner
/// service.
#[derive(Clone)]
struct OnlyLayer<L> {
    when: fn(&HeaderMap) -> bool,
    layer: L,
}

impl<L: Layer<S>, S: Clone> Layer<S> for OnlyLayer<L> {
    type Service = Only<S, L::Service>;
    fn layer(&self, inner: S) -> Self::Service {
        Only {
            when: self.when,
            wrapped: self.layer.layer(inner.clone()),
            plain: inner,
        }
    }
}

/// See [`OnlyLayer`].
#[derive(Clone)]
struct Only<S, W> {
    when: fn(&HeaderMap) -> bool,
    plain: S,
    wrapped: W,
}

impl<S, W, B1, B2> Service<Request<Body>> for Only<S, W>
where
    S: Service<Request<Body>, Response = http::Response<B1>, Error = Infallible>,
    S::Future: Send + 'static,
    W: Service<Request<Body>, Response = http::Response<B2>, Error = Infallible>,
    W::Future: Send + 'static,
    B1: hyper::body::Body<Data = Bytes> + Send + 'static,
    B1::Error: Into<axum::BoxError>,
    B2: hyper::body::Body<Data = Bytes> + Send + 'static,
    B2::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match self.plain.poll_ready(cx) {
            Poll::Ready(Ok(())) => self.wrapped.poll_ready(cx),
            other => other,
        }
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if (self.when)(req.headers()) {
            let call = self.wrapped.call(req);
            Box::pin(async move { Ok(call.await?.map(Body::new)) })
        } else {
            let call = self.plain.call(req);
            Box::pin(async move { Ok(call.await?.map(Body::new)) })
        }
    }
}

/// Lets a page on an allowed origin read the backend's metadata of this reply too: the
/// `Grpc-Metadata-*` and `Grpc-Trailer-*` names are added to `Access-Control-Expose-Headers`
/// (a fixed list cannot name them, and `*` is not allowed with credentials).
fn expose_forwarded(mut response: Response) -> Response {
    if !response
        .headers()
        .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    {
        return response;
    }
    let names: Vec<&str> = response
        .headers()
        .keys()
        .map(HeaderName::as_str)
        .filter(|n| n.starts_with("grpc-metadata-") || n.starts_with("grpc-trailer-"))
        .collect();
    if names.is_empty() {
        return response;
    }
    if let Ok(value) = HeaderValue::from_str(&names.join(", ")) {
        // A second line of a list header: the browser joins them.
        response
            .headers_mut()
            .append(header::ACCESS_CONTROL_EXPOSE_HEADERS, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins_are_star_alone_or_exact_origins() {
        let parse =
            |v: &[&str]| CorsOrigins::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(parse(&[]), Ok(None));
        assert_eq!(parse(&["*"]), Ok(Some(CorsOrigins::Any)));
        assert_eq!(
            parse(&["https://a.example", "http://localhost:5173"]),
            Ok(Some(CorsOrigins::List(vec![
                HeaderValue::from_static("https://a.example"),
                HeaderValue::from_static("http://localhost:5173"),
            ])))
        );
        for bad in [
            &["*", "https://a.example"][..],
            &["a.example"],
            &["https://a.example/"],
            &["https://a.example/app"],
            &["ftp://a.example"],
            &["https://"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
