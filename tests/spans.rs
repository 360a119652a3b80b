//! Spans over OTLP (`--otlp-endpoint`): a small OTLP/gRPC collector, built here, receives the
//! gateway's span of a REST request and the backend's span of its gRPC call, in the client's
//! trace, parent to child; an unsampled trace exports nothing.

mod common;

use std::sync::{Arc, Mutex};

use common::TestServer;
use compute_gateway::gateway::GatewayConfig;
use compute_gateway::telemetry::Spans;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio_stream::wrappers::TcpListenerStream;

/// What the collector received: each span with its resource's `service.name`.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().expect("lock");
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.clone())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s,
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                got.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attribute(span: &Span, key: &str) -> Option<AnyValue> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.clone())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_request_exports_the_gateway_span_and_the_backend_span_under_it() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let spans = Spans::otlp(&endpoint, "compute-gateway-test").expect("exporter");
    let s = TestServer::start_with(common::Options {
        gateway: GatewayConfig {
            spans: Some(spans.clone()),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let http = reqwest::Client::new();
    let get = |traceparent: &'static str| {
        http.get(format!("{}/compute/v1/images/fd8missing", s.http()))
            .header("traceparent", traceparent)
            .send()
    };
    let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let unsampled = "00-aaf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    assert_eq!(get(sampled).await.expect("get").status(), 404);
    assert_eq!(get(unsampled).await.expect("get").status(), 404);
    let flushed = tokio::task::spawn_blocking(move || spans.flush())
        .await
        .expect("join");
    flushed.expect("flush");

    let got = collector.0.lock().expect("lock").clone();
    let in_trace = |trace: &str| -> Vec<&(String, Span)> {
        got.iter()
            .filter(|(_, s)| hex(&s.trace_id) == trace)
            .collect()
    };
    assert!(
        in_trace("aaf92f3577b34da6a3ce929d0e0e4736").is_empty(),
        "an unsampled trace is not exported"
    );
    let spans = in_trace("4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let (service, gateway) = spans
        .iter()
        .find(|(_, s)| s.name == "GET /compute/v1/images/{image_id}")
        .expect("the gateway's span");
    assert_eq!(service, "compute-gateway-test");
    assert_eq!(
        hex(&gateway.parent_span_id),
        "00f067aa0ba902b7",
        "the client's span is its parent"
    );
    assert_eq!(gateway.kind, 2, "SERVER");
    assert_eq!(
        attribute(gateway, "http.response.status_code"),
        Some(AnyValue::IntValue(404))
    );
    assert_eq!(
        attribute(gateway, "rpc.method"),
        Some(AnyValue::StringValue(
            "/yandex.cloud.compute.v1.ImageService/Get".into()
        ))
    );
    assert_eq!(
        gateway.status.as_ref().map_or(0, |s| s.code),
        0,
        "a 404 is the client's outcome, not an error of the server"
    );
    let (_, backend) = spans
        .iter()
        .find(|(_, s)| s.name == "yandex.cloud.compute.v1.ImageService/Get")
        .expect("the backend's span");
    assert_eq!(
        backend.parent_span_id, gateway.span_id,
        "the gateway's hop is its parent"
    );
    assert_ne!(backend.span_id, gateway.span_id);
    assert_eq!(
        attribute(backend, "rpc.grpc.status_code"),
        Some(AnyValue::IntValue(5))
    );
    assert!(backend.start_time_unix_nano >= gateway.start_time_unix_nano);
    assert!(backend.end_time_unix_nano <= gateway.end_time_unix_nano);
    server.abort();
}
