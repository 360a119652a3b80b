//! Metrics (Prometheus text through the `metrics` facade and its Prometheus exporter) and the
//! metric names every layer records, in one place; plus the log setup (`tracing`, human or
//! JSON lines on stderr), and the spans exported over OTLP ([`Spans`]).

mod spans;

pub(crate) use spans::ServerSpan;
pub use spans::Spans;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// REST requests by route template, method and HTTP status.
pub(crate) const HTTP_REQUESTS: &str = "http_requests_total";
/// Whole REST request latency by route template and method.
pub(crate) const HTTP_DURATION: &str = "http_request_duration_seconds";
/// REST requests being served.
pub(crate) const HTTP_IN_FLIGHT: &str = "http_requests_in_flight";
/// The gateway's backend call latency by gRPC method.
pub(crate) const BACKEND_DURATION: &str = "gateway_backend_call_duration_seconds";
/// Whether the gateway sends calls to a backend (1) or skips it (0), by backend URL.
pub(crate) const BACKEND_UP: &str = "gateway_backend_up";
/// gRPC server requests by method and status code.
pub(crate) const GRPC_REQUESTS: &str = "grpc_server_requests_total";
/// gRPC server latency by method.
pub(crate) const GRPC_DURATION: &str = "grpc_server_request_duration_seconds";
/// Store write-transaction latency: running a batch of jobs and its durable commit (the fsync).
pub(crate) const STORE_COMMIT: &str = "store_commit_duration_seconds";
/// Connections open, by listener (`grpc`, `http`).
pub(crate) const CONNECTIONS_OPEN: &str = "net_connections_open";
/// Connections closed on accept because their listener was at its cap, by listener.
pub(crate) const CONNECTIONS_REFUSED: &str = "net_connections_refused_total";
/// Jobs per store write transaction (group commit).
pub(crate) const STORE_BATCH: &str = "store_commit_batch_jobs";

/// The label value of an HTTP method: one of the standard nine, or `OTHER`. A method is the
/// client's to choose, and every label value is a new series kept for the process's life: a
/// label taken from the client would let one client grow `/metrics` (and the memory behind it)
/// without bound.
pub(crate) fn method_label(method: &http::Method) -> metrics::SharedString {
    const STANDARD: [&str; 9] = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    let m = STANDARD
        .iter()
        .find(|m| **m == method.as_str())
        .unwrap_or(&"OTHER");
    metrics::SharedString::const_str(m)
}

/// The label value of an HTTP status code, without allocating.
pub(crate) fn status_label(status: http::StatusCode) -> metrics::SharedString {
    /// "100" to "999", three bytes each.
    static DIGITS: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| (100..1000).map(|n| n.to_string()).collect());
    let i = usize::from(status.as_u16() - 100) * 3;
    metrics::SharedString::const_str(&DIGITS[i..i + 3])
}

/// The label value of a gRPC status code: its name as tonic spells it (`NotFound`).
pub(crate) fn grpc_code_label(code: tonic::Code) -> &'static str {
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
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: a file or pipe gets plain text, and cheaper lines.
        .with_ansi(ansi)
        .with_env_filter(filter);
    match format {
        LogFormat::Text if !ansi => builder.event_format(PlainText::default()).init(),
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The plain-text log line, byte for byte what tracing-subscriber's default format writes
/// without colours (`2026-11-28T07:05:46.381129Z  INFO target: message k=v ...`), written
/// piece by piece: its generic path (a `write!` and a colour wrapper per piece, the timestamp
/// formatted anew each time) was a large share of the gateway's instructions per GET
/// (`bench/RESULTS.md`). Events this writer does not cover exactly - inside spans, from the
/// `log` crate, or with a value that Debug would escape - go to the default format, so every
/// line reads the same either way.
#[derive(Default)]
struct PlainText {
    fallback: tracing_subscriber::fmt::format::Format,
}

thread_local! {
    /// The fields of the event being formatted, and the timestamp prefix of the last second.
    static LINE: std::cell::RefCell<(String, i64, String)> =
        const { std::cell::RefCell::new((String::new(), i64::MIN, String::new())) };
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for PlainText
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let plain = ctx.event_scope().is_none()
            && meta.fields().field("log.target").is_none()
            && LINE.with_borrow_mut(|(fields, _, _)| {
                fields.clear();
                let mut visitor = PlainFields {
                    out: fields,
                    plain: true,
                };
                event.record(&mut visitor);
                visitor.plain
            });
        if !plain {
            return self.fallback.format_event(ctx, writer, event);
        }
        #[cfg(test)]
        tests::FAST_LINES.with(|n| n.set(n.get() + 1));
        let level = match *meta.level() {
            tracing::Level::TRACE => "TRACE",
            tracing::Level::DEBUG => "DEBUG",
            tracing::Level::INFO => " INFO",
            tracing::Level::WARN => " WARN",
            tracing::Level::ERROR => "ERROR",
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        LINE.with_borrow_mut(|(fields, second, prefix)| {
            let secs = now.as_secs() as i64;
            if *second != secs {
                *second = secs;
                prefix.clear();
                if let Some(t) = chrono::DateTime::from_timestamp(secs, 0) {
                    use std::fmt::Write as _;
                    let _ = write!(prefix, "{}", t.format("%Y-%m-%dT%H:%M:%S"));
                }
            }
            writer.write_str(prefix)?;
            let micros = now.subsec_micros();
            let mut digits = [b'0'; 7];
            digits[0] = b'.';
            for (i, d) in digits[1..].iter_mut().enumerate() {
                *d = b'0' + (micros / 10u32.pow(5 - i as u32) % 10) as u8;
            }
            writer.write_str(std::str::from_utf8(&digits).unwrap_or_default())?;
            writer.write_str("Z ")?;
            writer.write_str(level)?;
            writer.write_char(' ')?;
            writer.write_str(meta.target())?;
            writer.write_str(": ")?;
            writer.write_str(fields)?;
            writer.write_char('\n')
        })
    }
}

/// Writes an event's fields as the default format does (`message name=value ...`), or gives up
/// (`plain = false`) on anything whose default rendering it does not reproduce exactly.
struct PlainFields<'a> {
    out: &'a mut String,
    plain: bool,
}

impl PlainFields<'_> {
    /// The separator and `name=` of a field (none for the message).
    fn name(&mut self, field: &tracing::field::Field) {
        if !self.out.is_empty() {
            self.out.push(' ');
        }
        let name = field.name();
        if name != "message" {
            self.out.push_str(name.strip_prefix("r#").unwrap_or(name));
            self.out.push('=');
        }
    }
}

/// Text whose Debug form is itself in quotes, and that the default format's escaping of
/// messages leaves alone: printable ASCII without `"` or `\`.
fn is_plain(text: &str) -> bool {
    text.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl tracing::field::Visit for PlainFields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if !is_plain(value) {
            self.plain = false;
            return;
        }
        self.name(field);
        if field.name() == "message" {
            self.out.push_str(value);
        } else {
            self.out.push('"');
            self.out.push_str(value);
            self.out.push('"');
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let start = self.out.len();
        self.name(field);
        let value_start = self.out.len();
        let _ = write!(self.out, "{value:?}");
        // The default format escapes control characters in messages only.
        if field.name() == "message"
            && !self.out[value_start..]
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b))
        {
            self.out.truncate(start);
            self.plain = false;
        }
    }

    fn record_error(
        &mut self,
        _field: &tracing::field::Field,
        _value: &(dyn std::error::Error + 'static),
    ) {
        self.plain = false;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    thread_local! {
        /// Lines [`PlainText`] wrote itself on this thread.
        pub(super) static FAST_LINES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Log output of `emit` through a non-ANSI fmt subscriber, with [`PlainText`] or with the
    /// default event format.
    pub(crate) fn log_lines(plain: bool, emit: &dyn Fn()) -> String {
        use std::sync::{Arc, Mutex};
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || SharedBuf(sink.clone()));
        if plain {
            tracing::subscriber::with_default(
                builder.event_format(PlainText::default()).finish(),
                emit,
            );
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        String::from_utf8(out.lock().expect("buffer").clone()).expect("UTF-8")
    }

    struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The fast plain-text lines are the default format's lines, byte for byte but for the
    /// time; the cases the fast path does not take go to the default format.
    #[test]
    fn plain_text_lines_are_the_default_format() {
        let emit = || {
            tracing::info!(
                target: "compute_gateway::access",
                request_id = "7f0c6f1e-0000-4000-8000-000000000000",
                method = "PATCH",
                route = "/compute/v1/images/{image_id}",
                status = 200u16,
                latency_ms = 1.25,
                "request"
            );
            tracing::warn!(error = %"connection refused", retry = true, n = -3i64, big = 7u128, "backend call failed");
            tracing::debug!(r#type = "x", "raw name");
            tracing::info!(request_id = "quote\" and\nnewline", "client value");
            tracing::info!("escape \u{1b}[31m in a message {}", 1);
            tracing::info!(message = "escape \u{7} in a str message");
            tracing::error!(
                error = &std::io::Error::other("disk") as &(dyn std::error::Error + 'static),
                "failed"
            );
            let span = tracing::info_span!("outer", k = 1);
            let _inside = span.enter();
            tracing::info!("inside a span");
        };
        let fast = log_lines(true, &emit);
        // The first three events take the fast path; the other five go to the default format.
        assert_eq!(FAST_LINES.get(), 3);
        let default = log_lines(false, &emit);
        assert_eq!(fast.lines().count(), 8, "{fast}");
        for (f, d) in fast.lines().zip(default.lines()) {
            // `2026-11-28T07:05:46.381129Z`: the same shape, then the same bytes.
            assert_eq!(f.len(), d.len(), "{f}\n{d}");
            let shape = |l: &str| {
                l[..27]
                    .bytes()
                    .map(|b| if b.is_ascii_digit() { b'0' } else { b })
                    .collect::<Vec<_>>()
            };
            assert_eq!(shape(f), b"0000-00-00T00:00:00.000000Z".to_vec(), "{f}");
            assert_eq!(shape(f), shape(d));
            assert_eq!(f[27..], d[27..]);
        }
        assert!(fast.contains(r#" INFO compute_gateway::access: request request_id="7f0c6f1e-0000-4000-8000-000000000000" method="PATCH" route="/compute/v1/images/{image_id}" status=200 latency_ms=1.25"#), "{fast}");
    }

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
        assert_eq!(
            &*method_label(&custom),
            "OTHER",
            "a client's method is no label value"
        );
        for n in 0..17 {
            let code = tonic::Code::from_i32(n);
            assert_eq!(grpc_code_label(code), format!("{code:?}"));
        }
    }
}
