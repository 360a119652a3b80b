//! gRPC-Web on the REST port: a request with a `application/grpc-web*` content type (binary or
//! `-text`, over HTTP/1.1 or HTTP/2) is turned into plain gRPC by tonic-web and sent to the
//! backend over the gateway's own connection, unchanged: any method the backend serves is
//! reachable, with no route. The reply goes back the same way, trailers folded into the body
//! as gRPC-Web wants them (browsers cannot read HTTP trailers).
//!
//! The bounds of the REST port hold: the request body is read within `--max-body-bytes` and
//! `--body-read-timeout-ms`, the call within `--request-timeout-ms` (or the client's shorter
//! `grpc-timeout`), the reply within `--max-reply-bytes`, and at most 8 KiB of the client's
//! headers go on as metadata. A failure on the gateway's side is a gRPC status, as a gRPC
//! client expects, never an HTTP error page.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header};
use http_body_util::{BodyExt as _, Full, Limited};
use tonic::body::Body;

use super::client::Backends;
use super::headers::MAX_FORWARDED_METADATA_BYTES;
use crate::net::{grpc_timeout_value, parse_grpc_timeout};

/// Whether a request speaks gRPC-Web.
pub(crate) fn is_grpc_web(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc-web"))
}

/// The gRPC side of the gRPC-Web translation: sends each call on to the backend.
#[derive(Clone)]
pub(crate) struct Proxy {
    pub(crate) backends: std::sync::Arc<Backends>,
    pub(crate) max_body_bytes: usize,
    pub(crate) body_read_timeout: Duration,
    pub(crate) request_timeout: Duration,
}

/// A gRPC reply that carries only a status (trailers-only), as a gRPC server answers an error.
fn status_reply(status: tonic::Status) -> Response<Body> {
    status.into_http()
}

impl tower::Service<Request<Body>> for Proxy {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let proxy = self.clone();
        Box::pin(async move { Ok(proxy.forward(req).await.unwrap_or_else(status_reply)) })
    }
}

impl Proxy {
    async fn forward(self, req: Request<Body>) -> Result<Response<Body>, tonic::Status> {
        let (parts, body) = req.into_parts();
        let headers = outgoing(&parts.headers)?;
        let limit = self.max_body_bytes;
        let body =
            tokio::time::timeout(self.body_read_timeout, Limited::new(body, limit).collect())
                .await
                .map_err(|_| {
                    tonic::Status::deadline_exceeded("the request body did not arrive in time")
                })?
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        tonic::Status::resource_exhausted(format!(
                            "the request is larger than the limit of {limit} bytes"
                        ))
                    } else {
                        tonic::Status::invalid_argument(format!("could not read the request: {e}"))
                    }
                })?
                .to_bytes();
        let timeout = parts
            .headers
            .get("grpc-timeout")
            .and_then(|v| parse_grpc_timeout(v.as_bytes()))
            .map_or(self.request_timeout, |asked| {
                asked.min(self.request_timeout)
            });
        let client = self.backends.of_path(parts.uri.path()).ok_or_else(|| {
            tonic::Status::unimplemented(format!(
                "no backend serves {}",
                parts.uri.path().trim_start_matches('/')
            ))
        })?;
        let origin = client.upstream().origin();
        let mut uri = http::uri::Parts::default();
        uri.scheme = origin.scheme().cloned();
        uri.authority = origin.authority().cloned();
        uri.path_and_query = parts.uri.path_and_query().cloned();
        let uri = http::Uri::from_parts(uri)
            .map_err(|e| tonic::Status::invalid_argument(format!("bad method path: {e}")))?;
        let mut call = Request::new(Body::new(Full::new(body)));
        *call.method_mut() = http::Method::POST;
        *call.uri_mut() = uri;
        *call.headers_mut() = headers;
        call.headers_mut()
            .insert("grpc-timeout", grpc_timeout_value(timeout));
        let mut upstream = client.upstream().clone();
        let reply = tower::Service::call(&mut upstream, call)
            .await
            .map_err(|e| {
                let status = super::error::GatewayError::Upstream(e.clone()).status();
                tracing::warn!(cause = %e, "gRPC-Web call failed");
                status
            })?;
        Ok(reply.map(Body::new))
    }
}

/// The headers of a gRPC-Web request that go on to the backend: all of them (in gRPC-Web every
/// header is metadata) but the hop-by-hop ones and the browser's, within the metadata budget,
/// with the content type and `te` of plain gRPC.
fn outgoing(headers: &HeaderMap) -> Result<HeaderMap, tonic::Status> {
    let mut out = HeaderMap::new();
    let mut bytes = 0;
    for (name, value) in headers {
        let n = name.as_str();
        let skip = matches!(
            n,
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "transfer-encoding"
                | "upgrade"
                | "host"
                | "te"
                | "content-length"
                | "content-type"
                | "accept"
                | "accept-encoding"
                | "accept-language"
                | "origin"
                | "referer"
                | "cookie"
                | "grpc-timeout"
                | "x-grpc-web"
        ) || n.starts_with("sec-")
            || n.starts_with("access-control-");
        if skip {
            continue;
        }
        bytes += n.len() + value.len() + 32;
        if bytes > MAX_FORWARDED_METADATA_BYTES {
            return Err(tonic::Status::resource_exhausted(format!(
                "the request's metadata is larger than the limit of {MAX_FORWARDED_METADATA_BYTES} bytes"
            )));
        }
        out.append(name.clone(), value.clone());
    }
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    out.insert(
        HeaderName::from_static("te"),
        HeaderValue::from_static("trailers"),
    );
    Ok(out)
}
