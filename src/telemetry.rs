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

/// The label value of an HTTP method; the standard ones without allocating.
pub fn method_label(method: &http::Method) -> metrics::SharedString {
    const STANDARD: [&str; 9] = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    match STANDARD.iter().find(|m| **m == method.as_str()) {
        Some(m) => metrics::SharedString::const_str(m),
        None => metrics::SharedString::from_owned(method.as_str().to_string()),
    }
}

/// The label value of an HTTP status code, without allocating.
pub fn status_label(status: http::StatusCode) -> metrics::SharedString {
    /// "100" to "999", three bytes each.
    static DIGITS: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| (100..1000).map(|n| n.to_string()).collect());
    let i = usize::from(status.as_u16() - 100) * 3;
    metrics::SharedString::const_str(&DIGITS[i..i + 3])
}

/// The label value of a gRPC status code: its name as tonic spells it (`NotFound`).
pub fn grpc_code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_spell_what_they_label() {
        for (status, text) in [
            (100, "100"),
            (200, "200"),
            (404, "404"),
            (599, "599"),
            (999, "999"),
        ] {
            let code = http::StatusCode::from_u16(status).expect("valid status");
            assert_eq!(&*status_label(code), text);
        }
        assert_eq!(&*method_label(&http::Method::PATCH), "PATCH");
        let custom = http::Method::from_bytes(b"PURGE").expect("valid method");
        assert_eq!(&*method_label(&custom), "PURGE");
        for n in 0..17 {
            let code = tonic::Code::from_i32(n);
            assert_eq!(grpc_code_label(code), format!("{code:?}"));
        }
    }
}
