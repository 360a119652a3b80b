//! Operability: the OpenAPI document covers every route of the table (and only those); the
//! Prometheus text at /metrics parses and shows the expected series after a few requests; a
//! request's log lines, from the gateway and from the backend, carry its request id; /healthz
//! and /readyz follow the backend's health.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::TestServer;
use compute_gateway::gateway::{GatewayConfig, RouteTable, openapi};
use serde_json::{Value, json};

/// `/compute/v1/images/{image_id}` -> `/compute/v1/images/{imageId}`: path variables by JSON name.
fn openapi_path(pattern: &str, input: &prost_reflect::MessageDescriptor) -> String {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = open + rest[open..].find('}').expect("closed");
        let field = rest[open + 1..close].split('=').next().expect("name");
        out.push('{');
        out.push_str(input.get_field_by_name(field).expect("field").json_name());
        out.push('}');
        rest = &rest[close + 1..];
    }
    out + rest
}

#[test]
fn the_openapi_document_covers_exactly_the_route_table() {
    let table = RouteTable::compiled().expect("routes");
    let doc: Value = serde_json::from_str(&openapi::document(&table)).expect("valid JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = 0;
    for (_, methods) in doc["paths"].as_object().expect("paths") {
        documented += methods.as_object().expect("methods").len();
    }
    assert_eq!(
        documented,
        table.routes().len(),
        "one OpenAPI operation per route"
    );
    for route in table.routes() {
        let path = openapi_path(route.pattern(), &route.rpc().method().input());
        let op = &doc["paths"][&path][route.method().as_str().to_lowercase()];
        assert!(
            op.is_object(),
            "{} {path} is not documented",
            route.method()
        );
        assert!(
            op["responses"]["200"]["content"]["application/json"]["schema"].is_object(),
            "{path}"
        );
        assert_eq!(
            op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/google.rpc.Status"
        );
    }
    // The Operation of Update is typed from the yandex.cloud.api.operation option.
    let update = &doc["paths"]["/compute/v1/images/{imageId}"]["patch"];
    let typed = update["responses"]["200"]["content"]["application/json"]["schema"]["allOf"][1]["properties"].clone();
    assert_eq!(
        typed["metadata"]["allOf"][1]["properties"]["@type"]["const"],
        "type.googleapis.com/yandex.cloud.compute.v1.UpdateImageMetadata"
    );
    assert_eq!(
        typed["response"]["allOf"][2]["$ref"],
        "#/components/schemas/yandex.cloud.compute.v1.Image"
    );
    let body = &update["requestBody"]["content"]["application/json"]["schema"]["properties"];
    assert_eq!(body["minDiskSize"]["type"], "string");
    assert_eq!(body["minDiskSize"]["format"], "int64");
    assert_eq!(body["updateMask"]["type"], "string");
    assert!(
        body.get("imageId").is_none(),
        "path-bound fields are not in the body"
    );
    let image = &doc["components"]["schemas"]["yandex.cloud.compute.v1.Image"]["properties"];
    assert_eq!(image["createdAt"]["format"], "date-time");
    assert_eq!(
        image["status"]["enum"],
        json!([
            "STATUS_UNSPECIFIED",
            "CREATING",
            "READY",
            "ERROR",
            "DELETING"
        ])
    );
    assert!(
        image["name"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("Name of the image")),
        "proto comments become descriptions"
    );
    let list = doc["paths"]["/compute/v1/images"]["get"]["parameters"]
        .as_array()
        .expect("params");
    let names: Vec<&str> = list
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["folderId", "pageSize", "pageToken", "filter", "orderBy"]
    );
}

/// Log lines of this test binary, captured as JSON.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .with_env_filter("info")
            .init();
        logs
    })
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_logs_and_health() {
    let logs = capture_logs();
    compute_gateway::telemetry::metrics();
    let s = TestServer::start().await;
    let http = reqwest::Client::new();
    let op: Value = http
        .post(format!("{}/compute/v1/images", s.http()))
        .body(r#"{"folderId":"b1g","name":"observed","diskId":"d"}"#)
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let id = op["metadata"]["imageId"].as_str().expect("id").to_string();
    let patched = http
        .patch(format!("{}/compute/v1/images/{id}", s.http()))
        .header("X-Request-Id", "log-line-42")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .body(r#"{"updateMask":"description","description":"seen"}"#)
        .send()
        .await
        .expect("patch");
    assert_eq!(patched.status(), 200);
    let missing = http
        .get(format!("{}/compute/v1/images/fd8none", s.http()))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);

    // Metrics.
    let text = http
        .get(format!("{}/metrics", s.http()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    // The text format itself is checked with the Prometheus client's own parser in
    // tests/sdk/python/test_operability.py; here, the series and their labels.
    // A series that is missing fails the test (it does not read as 0).
    let sample = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sample of {series} in:\n{text}"))
    };
    assert!(
        sample(
            r#"http_requests_total{route="/compute/v1/images/{image_id}",method="PATCH",status="200"}"#
        ) >= 1.0,
        "{text}"
    );
    assert!(
        sample(
            r#"http_requests_total{route="/compute/v1/images/{image_id}",method="GET",status="404"}"#
        ) >= 1.0
    );
    assert!(
        sample(
            r#"grpc_server_requests_total{method="/yandex.cloud.compute.v1.ImageService/Update",code="Ok"}"#
        ) >= 1.0
    );
    assert!(
        sample(
            r#"grpc_server_requests_total{method="/yandex.cloud.compute.v1.ImageService/Get",code="NotFound"}"#
        ) >= 1.0
    );
    assert!(
        sample(r#"http_request_duration_seconds_count{route="/compute/v1/images",method="POST"}"#)
            >= 1.0
    );
    assert!(
        sample(
            r#"gateway_backend_call_duration_seconds_count{grpc_method="/yandex.cloud.compute.v1.ImageService/Update"}"#
        ) >= 1.0
    );
    assert!(
        sample("store_commit_duration_seconds_count") >= 2.0,
        "create and update committed"
    );
    assert!(
        sample("store_commit_batch_jobs_sum") >= sample("store_commit_batch_jobs_count"),
        "every durable batch holds at least one write"
    );
    assert!(sample(r#"store_commit_batch_jobs_bucket{le="+Inf"}"#) >= 2.0);
    assert!(
        text.lines()
            .any(|l| l.starts_with("http_requests_in_flight "))
    );

    // Logs: the gateway's access line and the backend's call line share the request id.
    let captured = String::from_utf8(logs.0.lock().expect("logs").clone()).expect("UTF-8 logs");
    let mine: Vec<Value> = captured
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["request_id"] == "log-line-42")
        .collect();
    let access = mine
        .iter()
        .find(|v| v["target"] == "compute_gateway::access")
        .expect("a gateway log line with the request id");
    assert_eq!(access["route"], "/compute/v1/images/{image_id}");
    assert_eq!(
        access["grpc_method"],
        "/yandex.cloud.compute.v1.ImageService/Update"
    );
    assert_eq!(access["status"], 200);
    assert_eq!(access["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert!(access["latency_ms"].as_f64().is_some());
    assert!(
        mine.iter().any(|v| v["target"] == "compute_gateway::grpc"
            && v["method"] == "/yandex.cloud.compute.v1.ImageService/Update"
            && v["trace_id"] == "0af7651916cd43dd8448eb211c80319c"),
        "the backend's line carries the request id and the trace id too"
    );

    // Health.
    for path in ["/healthz", "/readyz"] {
        let r = http
            .get(format!("{}{path}", s.http()))
            .send()
            .await
            .expect("health");
        assert_eq!(r.status(), 200, "{path}");
    }
    let spec = http
        .get(format!("{}/openapi.json", s.http()))
        .send()
        .await
        .expect("openapi");
    assert_eq!(spec.headers()["content-type"], "application/json");
    let table = RouteTable::compiled().expect("routes");
    assert_eq!(spec.text().await.expect("text"), openapi::document(&table));

    // A gateway whose backend is gone reports it.
    let dead = common::dead_address().await;
    let gw = common::gateway_only(&format!("http://{dead}"), GatewayConfig::default()).await;
    let addr = gw.addr;
    for path in ["/healthz", "/readyz"] {
        let r = http
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .expect("health");
        assert_eq!(r.status(), 503, "{path}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["code"], 14);
    }
}

/// `/docs` is a page of our own, in the binary: its HTML loads its script and style from
/// beside it (no CDN), and all three keep to a policy that allows nothing from elsewhere. The
/// browser suite (tests/browser) drives it.
#[tokio::test]
async fn the_docs_page_is_served_from_the_binary() {
    let s = TestServer::start().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let get = |path: &str| http.get(format!("{}{path}", s.http())).send();
    let page = get("/docs").await.expect("docs");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let html = page.text().await.expect("html");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    for (asset, kind) in [
        ("docs/docs.js", "text/javascript"),
        ("docs/docs.css", "text/css"),
    ] {
        assert!(html.contains(&format!("\"{asset}\"")), "{asset} in {html}");
        let r = get(&format!("/{asset}")).await.expect("asset");
        assert_eq!(r.status(), 200, "{asset}");
        let content_type = r.headers()["content-type"].to_str().expect("ascii");
        assert!(content_type.starts_with(kind), "{asset}: {content_type}");
        assert_eq!(r.headers()["content-security-policy"], policy.as_str());
        assert!(!r.text().await.expect("text").is_empty());
    }
    assert!(html.contains("openapi.json"));
    let slash = get("/docs/").await.expect("docs/");
    assert_eq!(slash.status(), 308);
    assert_eq!(slash.headers()["location"], "../docs");
}
