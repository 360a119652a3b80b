//! A tower layer around the gRPC server: one log line per call (with the caller's
//! `x-request-id` and the trace id of its `traceparent`, so REST requests can be followed from
//! the gateway into the backend) and the
//! `grpc_server_*` metrics by method and status code; with `--otlp-endpoint`, a SERVER span
//! per call, the child of the caller's `traceparent` (the gateway's hop, for a REST request).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use tower::{Layer, Service};

use crate::net::TraceParent;
use crate::telemetry::{self, ServerSpan, Spans};

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
#[derive(Clone, Debug, Default)]
pub(super) struct ObserveLayer {
    /// Where spans go, when they are exported.
    pub(super) spans: Option<Spans>,
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            spans: self.spans.clone(),
        }
    }
}

/// Logs and measures each call of the wrapped service.
#[derive(Clone, Debug)]
pub(super) struct Observe<S> {
    inner: S,
    spans: Option<Spans>,
}

/// Codes a server is to blame for: its span's status is an error (OpenTelemetry's gRPC
/// conventions); the others are the caller's outcome.
fn server_fault(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss
    )
}

impl<S, B, RB> Service<http::Request<B>> for Observe<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
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
        let caller = req
            .headers()
            .get("traceparent")
            .and_then(|v| TraceParent::parse(v.as_bytes()));
        let trace_id = caller.map(|t| t.trace_id_hex()).unwrap_or_default();
        let span = self.spans.clone().map(|spans| {
            let trace = caller.map_or_else(TraceParent::start, |t| t.child());
            (spans, trace, SystemTime::now())
        });
        let call = self.inner.call(req);
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
            if let Some((spans, trace, start)) = span {
                let (service, rpc) = method
                    .trim_start_matches('/')
                    .split_once('/')
                    .unwrap_or((&method, ""));
                spans.record(ServerSpan {
                    trace_id: trace.trace_id,
                    span_id: trace.parent_id,
                    sampled: trace.flags & 1 == 1,
                    parent: caller.map(|c| c.parent_id),
                    name: method.trim_start_matches('/').to_string(),
                    start,
                    duration: started.elapsed(),
                    attributes: vec![
                        opentelemetry::KeyValue::new("rpc.system", "grpc"),
                        opentelemetry::KeyValue::new("rpc.service", service.to_string()),
                        opentelemetry::KeyValue::new("rpc.method", rpc.to_string()),
                        opentelemetry::KeyValue::new("rpc.grpc.status_code", code as i64),
                        opentelemetry::KeyValue::new("request_id", request_id.clone()),
                    ],
                    error: server_fault(code).then(|| format!("{code:?}")),
                });
            }
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
