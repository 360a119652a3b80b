//! A tower layer around the gRPC server: one log line per call (with the caller's
//! `x-request-id` and the trace id of its `traceparent`, so REST requests can be followed from
//! the gateway into the backend) and the
//! `grpc_server_*` metrics by method and status code.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};

use crate::telemetry;

/// Whether `path` is `/<service>/<method>` of a method served here: the embedded services,
/// health's and reflection's.
fn served(path: &str) -> bool {
    static PATHS: std::sync::LazyLock<std::collections::HashSet<String>> =
        std::sync::LazyLock::new(|| {
            let mut paths: std::collections::HashSet<String> = crate::pb::descriptor_pool()
                .services()
                .flat_map(|s| s.methods().collect::<Vec<_>>())
                .map(|m| format!("/{}/{}", m.parent_service().full_name(), m.name()))
                .collect();
            for (service, methods) in [
                ("grpc.health.v1.Health", &["Check", "Watch"][..]),
                (
                    "grpc.reflection.v1.ServerReflection",
                    &["ServerReflectionInfo"][..],
                ),
                (
                    "grpc.reflection.v1alpha.ServerReflection",
                    &["ServerReflectionInfo"][..],
                ),
            ] {
                paths.extend(methods.iter().map(|m| format!("/{service}/{m}")));
            }
            paths
        });
    PATHS.contains(path)
}

/// Adds [`Observe`] to a service.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ObserveLayer;

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe(inner)
    }
}

/// Logs and measures each call of the wrapped service.
#[derive(Clone, Debug)]
pub(super) struct Observe<S>(S);

impl<S, B, RB> Service<http::Request<B>> for Observe<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let path = req.uri().path().to_string();
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let trace_id = req
            .headers()
            .get("traceparent")
            .and_then(|v| crate::net::TraceParent::parse(v.as_bytes()))
            .map(|t| t.trace_id_hex())
            .unwrap_or_default();
        let call = self.0.call(req);
        Box::pin(async move {
            let resp = call.await?;
            // Errors from a unary handler are trailers-only replies: grpc-status is a header.
            // A reply without it carried a message, and its status is OK.
            let code: i32 = resp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let code = tonic::Code::from_i32(code);
            // A path is the client's invention until it names a method served here; only
            // those become label values (see `telemetry::method_label`).
            let method = if served(&path) {
                path
            } else {
                "unknown".to_string()
            };
            let elapsed = started.elapsed().as_secs_f64();
            let code = telemetry::grpc_code_label(code);
            tracing::info!(
                target: "compute_gateway::grpc",
                request_id,
                trace_id,
                method = method.as_str(),
                code,
                latency_ms = elapsed * 1000.0,
                "call"
            );
            metrics::counter!(telemetry::GRPC_REQUESTS, "method" => method.clone(), "code" => code)
                .increment(1);
            metrics::histogram!(telemetry::GRPC_DURATION, "method" => method).record(elapsed);
            Ok(resp)
        })
    }
}
