//! The operator's endpoints beside the API: `GET /openapi.json` (made from the route table),
//! `GET /metrics` (Prometheus text), `GET /healthz` and `GET /readyz` (both 200 only while the
//! backend's grpc.health.v1 says SERVING; `/readyz` also turns 503 once shutdown has begun, so
//! a load balancer drains the instance).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::error::GatewayError;
use super::handler::Gateway;

fn with_type(body: impl IntoResponse, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub(super) async fn openapi(State(gw): State<Arc<Gateway>>) -> Response {
    with_type(gw.openapi().to_string(), "application/json")
}

pub(super) async fn metrics() -> Response {
    let handle = crate::telemetry::metrics();
    handle.run_upkeep();
    with_type(handle.render(), "text/plain; version=0.0.4")
}

/// The backend's overall health, asked over the gateway's connection to it.
async fn backend_serving(gw: &Gateway) -> bool {
    let upstream = gw.client.upstream();
    let mut client = HealthClient::with_origin(upstream.clone(), upstream.origin());
    let check = client.check(HealthCheckRequest {
        service: String::new(),
    });
    matches!(
        tokio::time::timeout(Duration::from_secs(2), check).await,
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32
    )
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
