//! Spans over OTLP (`--otlp-endpoint`): one SERVER span per REST request on the gateway and per
//! gRPC call on the backend, in the trace the request's `traceparent` names. The span ids are
//! the ones our `traceparent` handling already chose (the gateway's own hop is the parent the
//! backend sees), so a finished span is handed straight to the SDK's batch processor as
//! `SpanData` rather than made again through a `Tracer` that would pick ids of its own. Only
//! sampled traces are exported; the batch queue is bounded (spans past it are dropped and
//! counted by the SDK), and exporting runs on the processor's own thread, off the request path.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};

/// Where finished spans go: a cheap-to-clone handle on one batch processor.
#[derive(Clone)]
pub struct Spans {
    processor: Arc<BatchSpanProcessor>,
    scope: InstrumentationScope,
}

impl fmt::Debug for Spans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Spans(otlp)")
    }
}

/// A finished server span.
pub(crate) struct ServerSpan {
    /// The trace.
    pub(crate) trace_id: [u8; 16],
    /// This span's own id (the parent id of the `traceparent` this hop sends on).
    pub(crate) span_id: [u8; 8],
    /// Whether the trace is sampled (only sampled ones are exported).
    pub(crate) sampled: bool,
    /// The span that called us, when the caller sent a `traceparent`.
    pub(crate) parent: Option<[u8; 8]>,
    pub(crate) name: String,
    pub(crate) start: SystemTime,
    pub(crate) duration: Duration,
    pub(crate) attributes: Vec<KeyValue>,
    /// Set for a failure on the server's side (HTTP 5xx, or a gRPC code a server is to blame
    /// for), as the semantic conventions ask; a client's mistake leaves the status unset.
    pub(crate) error: Option<String>,
}

impl Spans {
    /// Exports over OTLP/gRPC to `endpoint` (`http://host:4317`), as `service`. Must be called
    /// inside the Tokio runtime: the exporter's connection lives on it.
    pub fn otlp(endpoint: &str, service: &'static str) -> Result<Self, String> {
        let exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(8192)
            .with_max_export_batch_size(512)
            .with_scheduled_delay(Duration::from_secs(1))
            .build();
        let mut processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(config)
            .build();
        processor.set_resource(&Resource::builder().with_service_name(service).build());
        Ok(Self {
            processor: Arc::new(processor),
            scope: InstrumentationScope::builder("compute-gateway")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        })
    }

    /// Queues a finished span for export, if its trace is sampled.
    pub(crate) fn record(&self, span: ServerSpan) {
        if !span.sampled {
            return;
        }
        let context = SpanContext::new(
            TraceId::from_bytes(span.trace_id),
            SpanId::from_bytes(span.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        self.processor.on_end(SpanData {
            span_context: context,
            parent_span_id: span.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: span.parent.is_some(),
            span_kind: SpanKind::Server,
            name: Cow::Owned(span.name),
            start_time: span.start,
            end_time: span.start + span.duration,
            attributes: span.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: span.error.map_or(Status::Unset, Status::error),
            instrumentation_scope: self.scope.clone(),
        });
    }

    /// Exports what is queued and waits for it (at most a few seconds). Blocks: call it from a
    /// blocking thread.
    pub fn flush(&self) -> Result<(), String> {
        self.processor.force_flush().map_err(|e| e.to_string())
    }

    /// Exports what is queued and stops the processor. Blocks, as [`Spans::flush`].
    pub fn shutdown(&self) -> Result<(), String> {
        self.processor.shutdown().map_err(|e| e.to_string())
    }
}
