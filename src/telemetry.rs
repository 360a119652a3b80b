//! Metrics (Prometheus text through the `metrics` facade and its Prometheus exporter) and the
//! metric names every layer records, in one place; plus the log setup (`tracing`, human or
//! JSON lines on stderr).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// REST requests by route template, method and HTTP status.
pub const HTTP_REQUESTS: &str = "http_requests_total";
/// Whole REST request latency by route template and method.
pub const HTTP_DURATION: &str = "http_request_duration_seconds";
/// REST requests being served.
pub const HTTP_IN_FLIGHT: &str = "http_requests_in_flight";
/// The gateway's backend call latency by gRPC method.
pub const BACKEND_DURATION: &str = "gateway_backend_call_duration_seconds";
/// gRPC server requests by method and status code.
pub const GRPC_REQUESTS: &str = "grpc_server_requests_total";
/// gRPC server latency by method.
pub const GRPC_DURATION: &str = "grpc_server_request_duration_seconds";
/// Store write-transaction latency: running a batch of jobs and its durable commit (the fsync).
pub const STORE_COMMIT: &str = "store_commit_duration_seconds";
/// Jobs per store write transaction (group commit).
pub const STORE_BATCH: &str = "store_commit_batch_jobs";

const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// The process-wide recorder's handle, installed on first use. Without it the `metrics`
/// macros are no-ops, so libraries and tests that never ask for metrics pay nothing.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .expect("the bucket list is not empty")
            .set_buckets_for_metric(Matcher::Full(STORE_BATCH.into()), BATCH_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding application's): then ours
        // renders nothing, which is honest rather than a panic.
        let _ = metrics::set_global_recorder(recorder);
        // Histogram samples pile up until upkeep drains them into the buckets; without a
        // scrape that never happens, so drain on a timer (the soak found this as RSS growth).
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
        handle
    })
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global log subscriber: `RUST_LOG` filters (default `info`), stderr output.
pub fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: a file or pipe gets plain text, and cheaper lines.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
