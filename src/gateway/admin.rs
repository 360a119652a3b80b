//! The operator's endpoints beside the API: `GET /openapi.json` (made from the route table),
//! `GET /docs` (a page of our own, embedded in the binary, that lists the routes of
//! `/openapi.json` and sends a request from a form),
//! `GET /metrics` (Prometheus text), `GET /healthz` and `GET /readyz` (both 200 only while the
//! backend's grpc.health.v1 says SERVING; `/readyz` also turns 503 once shutdown has begun, so
//! a load balancer drains the instance).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::GatewayError;
use super::handler::Gateway;

fn with_type(body: impl IntoResponse, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub(super) async fn openapi(State(gw): State<Arc<Gateway>>) -> Response {
    with_type(gw.routes().openapi().to_string(), "application/json")
}

/// The page's content security policy: its own script and style, and requests to this origin
/// only (whatever a route's description says, nothing it holds can load or run anything).
const DOCS_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn docs_file(body: &'static str, content_type: &'static str) -> Response {
    let mut r = with_type(body, content_type);
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DOCS_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

pub(super) async fn docs() -> Response {
    docs_file(include_str!("docs/index.html"), "text/html; charset=utf-8")
}

pub(super) async fn docs_script() -> Response {
    docs_file(
        include_str!("docs/docs.js"),
        "text/javascript; charset=utf-8",
    )
}

pub(super) async fn docs_style() -> Response {
    docs_file(include_str!("docs/docs.css"), "text/css; charset=utf-8")
}

pub(super) async fn metrics() -> Response {
    let handle = crate::telemetry::metrics();
    handle.run_upkeep();
    with_type(handle.render(), "text/plain; version=0.0.4")
}

/// Whether a backend serves, asked over the gateway's connections (any one, of several).
async fn backend_serving(gw: &Gateway) -> bool {
    gw.backends.any_serving().await
}

fn serving() -> Response {
    with_type(
        (StatusCode::OK, r#"{"status":"SERVING"}"#),
        "application/json",
    )
}

pub(super) async fn healthz(State(gw): State<Arc<Gateway>>) -> Response {
    if backend_serving(&gw).await {
        serving()
    } else {
        GatewayError::NotServing.into_response()
    }
}

pub(super) async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.draining.load(Ordering::Relaxed) {
        return GatewayError::Draining.into_response();
    }
    healthz(State(gw)).await
}
