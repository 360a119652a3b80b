//! A table of bad REST requests: each gets the exact HTTP status and google.rpc.Status code,
//! a message, and the server keeps answering afterwards.

mod common;

use std::time::{Duration, Instant};

use common::{Options, TestServer};
use compute_gateway::gateway::GatewayConfig;
use serde_json::Value;

struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    body: Vec<u8>,
    status: u16,
    code: i64,
    /// Text the message must contain.
    says: &'static str,
}

fn case(
    name: &'static str,
    method: &'static str,
    path: &str,
    body: &str,
    status: u16,
    code: i64,
    says: &'static str,
) -> Case {
    Case {
        name,
        method,
        path: path.into(),
        body: body.as_bytes().to_vec(),
        status,
        code,
        says,
    }
}

#[tokio::test]
async fn every_bad_request_gets_a_clear_status() {
    let s = TestServer::start_with(Options {
        gateway: GatewayConfig {
            max_body_bytes: 4096,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let http = reqwest::Client::new();
    let base = s.http();
    // One real image to aim the body checks at.
    let op: Value = http
        .post(format!("{base}/compute/v1/images"))
        .body(r#"{"folderId":"b1g","name":"target","diskId":"d"}"#)
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let id = op["metadata"]["imageId"]
        .as_str()
        .expect("image id")
        .to_string();
    let img = format!("/compute/v1/images/{id}");
    let big = format!("{{\"description\":\"{}\"}}", "x".repeat(5000));
    let mut cases = vec![
        case(
            "malformed JSON",
            "PATCH",
            &img,
            "{\"name\": }",
            400,
            3,
            "byte offset 9",
        ),
        case(
            "truncated JSON",
            "PATCH",
            &img,
            "{\"name\": \"x\"",
            400,
            3,
            "not valid JSON",
        ),
        case(
            "trailing garbage",
            "PATCH",
            &img,
            "{} x",
            400,
            3,
            "not valid JSON",
        ),
        case(
            "body is an array",
            "PATCH",
            &img,
            "[1]",
            400,
            3,
            "must be a JSON object",
        ),
        case(
            "body is a string",
            "PATCH",
            &img,
            "\"x\"",
            400,
            3,
            "must be a JSON object",
        ),
        case(
            "name is a number",
            "PATCH",
            &img,
            r#"{"name": 5}"#,
            400,
            3,
            "name",
        ),
        case(
            "labels is a list",
            "PATCH",
            &img,
            r#"{"labels": ["a"]}"#,
            400,
            3,
            "labels",
        ),
        case(
            "label value not a string",
            "PATCH",
            &img,
            r#"{"labels": {"a": 1}}"#,
            400,
            3,
            "labels",
        ),
        case(
            "label value null",
            "PATCH",
            &img,
            r#"{"labels": {"a": null}}"#,
            400,
            3,
            "null",
        ),
        case(
            "unknown field",
            "PATCH",
            &img,
            r#"{"nmae": "x"}"#,
            400,
            3,
            "nmae",
        ),
        case(
            "unknown nested field",
            "POST",
            "/compute/v1/images",
            r#"{"folderId":"b1g","diskId":"d","os":{"kind":"LINUX"}}"#,
            400,
            3,
            "os.kind",
        ),
        case(
            "int64 overflow",
            "PATCH",
            &img,
            r#"{"minDiskSize": "9223372036854775808"}"#,
            400,
            3,
            "out of range",
        ),
        case(
            "int64 overflow as number",
            "PATCH",
            &img,
            r#"{"minDiskSize": 92233720368547758080}"#,
            400,
            3,
            "minDiskSize",
        ),
        case(
            "1.5 for an int64",
            "PATCH",
            &img,
            r#"{"minDiskSize": 1.5}"#,
            400,
            3,
            "not an integer",
        ),
        case(
            "\"1.5\" for an int64",
            "PATCH",
            &img,
            r#"{"minDiskSize": "1.5"}"#,
            400,
            3,
            "not an integer",
        ),
        case(
            "bool for an int64",
            "PATCH",
            &img,
            r#"{"minDiskSize": true}"#,
            400,
            3,
            "minDiskSize",
        ),
        case(
            "min disk size below range",
            "PATCH",
            &img,
            r#"{"updateMask":"minDiskSize","minDiskSize": 1}"#,
            400,
            3,
            "min_disk_size",
        ),
        case(
            "bad mask path",
            "PATCH",
            &img,
            r#"{"updateMask": "min_disk_size"}"#,
            400,
            3,
            "field mask",
        ),
        case(
            "non-updatable mask path",
            "PATCH",
            &img,
            r#"{"updateMask": "folderId"}"#,
            400,
            3,
            "folder_id",
        ),
        case(
            "mask as object",
            "PATCH",
            &img,
            r#"{"updateMask": {"paths": ["name"]}}"#,
            400,
            3,
            "updateMask",
        ),
        case(
            "bad enum name",
            "POST",
            "/compute/v1/images",
            r#"{"folderId":"b1g","diskId":"d","os":{"type":"MACOS"}}"#,
            400,
            3,
            "MACOS",
        ),
        case(
            "bad enum number",
            "POST",
            "/compute/v1/images",
            r#"{"folderId":"b1g","diskId":"d","os":{"type":9}}"#,
            400,
            3,
            "os.type",
        ),
        case(
            "two oneof members",
            "POST",
            "/compute/v1/images",
            r#"{"folderId":"b1g","diskId":"d","uri":"u"}"#,
            400,
            3,
            "oneof source",
        ),
        case(
            "no source",
            "POST",
            "/compute/v1/images",
            r#"{"folderId":"b1g"}"#,
            400,
            3,
            "source",
        ),
        case(
            "bad name pattern",
            "POST",
            "/compute/v1/images",
            r#"{"folderId":"b1g","name":"Bad","diskId":"d"}"#,
            400,
            3,
            "name",
        ),
        case(
            "body contradicts the path",
            "PATCH",
            &img,
            r#"{"imageId": "fd8other"}"#,
            400,
            3,
            "URL path",
        ),
        case(
            "unknown query key",
            "GET",
            "/compute/v1/images?folderId=b1g&colour=red",
            "",
            400,
            3,
            "colour",
        ),
        case(
            "query on a body:* method",
            "PATCH",
            &format!("{img}?name=x"),
            "{}",
            400,
            3,
            "\"name\"",
        ),
        case(
            "bad pageSize type",
            "GET",
            "/compute/v1/images?folderId=b1g&pageSize=ten",
            "",
            400,
            3,
            "pageSize",
        ),
        case(
            "pageSize over 1000",
            "GET",
            "/compute/v1/images?folderId=b1g&pageSize=1001",
            "",
            400,
            3,
            "page_size",
        ),
        case(
            "bad query escape",
            "GET",
            "/compute/v1/images?folderId=%zz",
            "",
            400,
            3,
            "percent",
        ),
        case(
            "bad path escape",
            "GET",
            "/compute/v1/images/%zz",
            "",
            400,
            3,
            "percent",
        ),
        case(
            "path escape not UTF-8",
            "GET",
            "/compute/v1/images/%ff",
            "",
            400,
            3,
            "UTF-8",
        ),
        case(
            "bad filter",
            "GET",
            "/compute/v1/images?folderId=b1g&filter=name%3Dx",
            "",
            400,
            3,
            "filter",
        ),
        case(
            "missing folder",
            "GET",
            "/compute/v1/images",
            "",
            400,
            3,
            "folder_id",
        ),
        case(
            "body on a GET",
            "GET",
            &img,
            "{\"x\":1}",
            400,
            3,
            "takes no request body",
        ),
        case("wrong method", "PUT", &img, "", 405, 12, "allowed"),
        case(
            "wrong method on collection",
            "DELETE",
            "/compute/v1/images",
            "",
            405,
            12,
            "allowed",
        ),
        case(
            "unknown path",
            "GET",
            "/compute/v2/images",
            "",
            404,
            5,
            "no route",
        ),
        case(
            "unknown verb",
            "GET",
            "/compute/v1/images:frobnicate",
            "",
            404,
            5,
            "no route",
        ),
        case(
            "missing image",
            "GET",
            "/compute/v1/images/fd8nope",
            "",
            404,
            5,
            "not found",
        ),
        case("oversized body", "PATCH", &img, &big, 413, 8, "limit"),
        case(
            "deep nesting",
            "PATCH",
            &img,
            &format!("{}{}", "[".repeat(200), "]".repeat(200)),
            400,
            3,
            "not valid JSON",
        ),
        case(
            "NUL in a name",
            "PATCH",
            &img,
            "{\"updateMask\":\"name\",\"name\":\"a\\u0000b\"}",
            400,
            3,
            "name",
        ),
        case(
            "cancel a missing operation",
            "POST",
            &format!("/operations/{}:cancel", "epdnone"),
            "",
            404,
            5,
            "epdnone",
        ),
        case(
            "timestamp-like garbage in mask",
            "PATCH",
            &img,
            r#"{"updateMask": "name,,labels"}"#,
            400,
            3,
            "field mask",
        ),
    ];
    cases.push(Case {
        name: "invalid UTF-8 body",
        method: "PATCH",
        path: img.clone(),
        body: b"{\"name\":\"\xff\"}".to_vec(),
        status: 400,
        code: 3,
        says: "not valid JSON",
    });
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for c in cases {
        let resp = http
            .request(
                c.method.parse().expect("method"),
                format!("{base}{}", c.path),
            )
            .body(c.body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let status = resp.status().as_u16();
        assert_eq!(
            resp.headers()["content-type"],
            "application/json",
            "{}",
            c.name
        );
        let body: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: body is not JSON: {e}", c.name));
        assert_eq!(
            (status, body["code"].as_i64()),
            (c.status, Some(c.code)),
            "{}: {body}",
            c.name
        );
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(c.says),
            "{}: {message:?} should mention {:?}",
            c.name,
            c.says
        );
        assert!(body["details"].is_array(), "{}", c.name);
        // Still healthy afterwards.
        let ok = http.get(format!("{base}{img}")).send().await.expect("get");
        assert_eq!(ok.status(), 200, "after {}", c.name);
    }
}

/// A 405 names each method that would have matched the path once, in route order (HEAD after
/// GET, which answers it). On
/// `/operations/{id}:cancel` two GET routes match (Get takes `x:cancel` as the id, Cancel
/// its verb) and the POST Cancel a third time.
#[tokio::test]
async fn a_405_lists_each_allowed_method_once() {
    let s = TestServer::start().await;
    let http = reqwest::Client::new();
    for (method, path, allow) in [
        ("PATCH", "/operations/x:cancel", "GET, HEAD, POST"),
        ("PUT", "/compute/v1/images/fd8x", "GET, HEAD, PATCH, DELETE"),
        ("DELETE", "/compute/v1/images", "GET, HEAD, POST"),
        // GET twice again (Get with the id `fd8x:listAccessBindings`, ListAccessBindings);
        // Update and Delete take the same id.
        (
            "POST",
            "/compute/v1/images/fd8x:listAccessBindings",
            "GET, HEAD, PATCH, DELETE",
        ),
    ] {
        let resp = http
            .request(
                method.parse().expect("method"),
                format!("{}{path}", s.http()),
            )
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(resp.headers()["allow"], allow, "{method} {path}");
    }
}

#[tokio::test]
async fn a_dead_backend_is_503_at_once() {
    // A port that was just free: nothing listens there.
    let dead = common::dead_address().await;
    let gw = common::gateway_only(&format!("http://{dead}"), GatewayConfig::default()).await;
    let addr = gw.addr;
    let started = Instant::now();
    let resp = reqwest::get(format!("http://{addr}/compute/v1/images/fd8x"))
        .await
        .expect("send");
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["code"], 14);
    assert!(
        !body["message"].as_str().unwrap_or_default().contains("tcp"),
        "no transport internals: {body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "503 without waiting for the 30 s timeout"
    );
}

#[tokio::test]
async fn a_stuck_backend_is_504_after_the_request_timeout() {
    // Accepts connections and never answers: not even the HTTP/2 handshake completes.
    let stuck = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stuck_addr = stuck.local_addr().expect("addr");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = stuck.accept().await {
            held.push(conn);
        }
    });
    let config = GatewayConfig {
        request_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let gw = common::gateway_only(&format!("http://{stuck_addr}"), config).await;
    let addr = gw.addr;
    let started = Instant::now();
    let resp = reqwest::get(format!("http://{addr}/compute/v1/images/fd8x"))
        .await
        .expect("send");
    assert_eq!(resp.status(), 504);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["code"], 4);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    holder.abort();
}
