//! A service this binary was not built with, served over REST from its descriptor set
//! (`--descriptor-set`): the routes come from its `google.api.http` rules, requests and replies
//! are transcoded with `prost_reflect::DynamicMessage` under the same JSON rules (path, query and
//! body binding, int64 as strings, enums by name, Timestamps, maps, strict unknown fields), and
//! a recording gRPC server that is not ours checks what arrives.

mod common;

use std::sync::Arc;

use compute_gateway::gateway::{Gateway, GatewayConfig, router};
use http::Request;
use http_body_util::BodyExt;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{Value, json};
use tower::ServiceExt;

const SHOP_PROTO: &str = r#"
syntax = "proto3";
package acme.shop.v1;

import "google/api/annotations.proto";
import "google/protobuf/timestamp.proto";

service Shop {
  rpc GetItem(GetItemRequest) returns (Item) {
    option (google.api.http) = {get: "/v1/shops/{shop}/items/{item_id}"};
  }
  rpc CreateItem(CreateItemRequest) returns (Item) {
    option (google.api.http) = {post: "/v1/shops/{shop}/items" body: "item"};
  }
}

enum Kind {
  KIND_UNSPECIFIED = 0;
  BOOK = 1;
  TOOL = 2;
}

message Item {
  string id = 1;
  string name = 2;
  int64 price_cents = 3;
  google.protobuf.Timestamp created = 4;
  map<string, string> tags = 5;
  repeated Kind kinds = 6;
  bool in_stock = 7;
}

message GetItemRequest {
  string shop = 1;
  string item_id = 2;
  int64 revision = 3;
  Kind kind = 4;
}

message CreateItemRequest {
  string shop = 1;
  Item item = 2;
}
"#;

/// The shop's descriptor set, compiled here as `protoc --include_imports -o` would write it;
/// its path and the pool it decodes to.
fn shop_descriptor_set(dir: &std::path::Path) -> (std::path::PathBuf, DescriptorPool) {
    let src = dir.join("src/acme/shop/v1");
    std::fs::create_dir_all(&src).expect("dir");
    std::fs::write(src.join("shop.proto"), SHOP_PROTO).expect("write proto");
    let ours = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let mut compiler = protox::Compiler::new([dir.join("src"), ours]).expect("compiler");
    compiler.include_imports(true);
    compiler
        .open_files(["acme/shop/v1/shop.proto"])
        .expect("the shop proto compiles");
    let bytes = compiler.encode_file_descriptor_set();
    let path = dir.join("shop.binpb");
    std::fs::write(&path, &bytes).expect("write set");
    let pool = DescriptorPool::decode(bytes.as_slice()).expect("pool");
    (path, pool)
}

fn message(pool: &DescriptorPool, name: &str, json: Value) -> DynamicMessage {
    let desc = pool.get_message_by_name(name).expect("message");
    DynamicMessage::deserialize(desc, json).expect("valid JSON of the message")
}

async fn call(gw: &Arc<Gateway>, method: &str, uri: &str, body: &str) -> (u16, Value) {
    let resp = router(gw.clone())
        .oneshot(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(axum::body::Body::from(body.to_string()))
                .expect("request"),
        )
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).expect("JSON"))
}

#[tokio::test]
async fn a_service_from_a_descriptor_set_is_routed_and_transcoded_dynamically() {
    let dir = tempfile::tempdir().expect("dir");
    let (set, pool) = shop_descriptor_set(dir.path());
    let item = message(
        &pool,
        "acme.shop.v1.Item",
        json!({"id": "i7", "name": "hammer", "priceCents": "1999",
               "created": "2026-12-01T10:00:00.500Z", "tags": {"aisle": "4"},
               "kinds": ["TOOL"], "inStock": true}),
    );
    let (url, seen) = common::recording_backend(item.encode_to_vec()).await;
    let gw = Arc::new(
        Gateway::new(
            &url,
            GatewayConfig {
                sources: compute_gateway::gateway::Sources {
                    descriptor_sets: vec![set],
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .expect("gateway"),
    );

    // Path and query bound into the request; the reply in proto3 JSON, every field.
    let (status, got) = call(
        &gw,
        "GET",
        "/v1/shops/s1/items/i7?revision=42&kind=TOOL",
        "",
    )
    .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(
        got,
        json!({"id": "i7", "name": "hammer", "priceCents": "1999",
               "created": "2026-12-01T10:00:00.500Z", "tags": {"aisle": "4"},
               "kinds": ["TOOL"], "inStock": true})
    );
    let recorded = std::mem::take(&mut *seen.lock().expect("lock"));
    assert_eq!(recorded.path, "/acme.shop.v1.Shop/GetItem");
    let request = DynamicMessage::decode(
        pool.get_message_by_name("acme.shop.v1.GetItemRequest")
            .expect("message"),
        recorded.message.as_slice(),
    )
    .expect("the backend got a GetItemRequest");
    assert_eq!(
        serde_json::to_value(&request).expect("json"),
        json!({"shop": "s1", "itemId": "i7", "revision": "42", "kind": "TOOL"})
    );

    // `body: "item"`: the body is that field; the path fills the rest.
    let (status, _) = call(
        &gw,
        "POST",
        "/v1/shops/s2/items",
        r#"{"name": "saw", "priceCents": 500, "tags": {"new": "yes"}}"#,
    )
    .await;
    assert_eq!(status, 200);
    let recorded = std::mem::take(&mut *seen.lock().expect("lock"));
    assert_eq!(recorded.path, "/acme.shop.v1.Shop/CreateItem");
    let request = DynamicMessage::decode(
        pool.get_message_by_name("acme.shop.v1.CreateItemRequest")
            .expect("message"),
        recorded.message.as_slice(),
    )
    .expect("a CreateItemRequest");
    assert_eq!(
        serde_json::to_value(&request).expect("json"),
        json!({"shop": "s2", "item": {"name": "saw", "priceCents": "500", "tags": {"new": "yes"}}})
    );

    // The same strict rules as the compiled-in API: each mistake is a 400 naming it.
    for (uri, body, says) in [
        ("/v1/shops/s1/items/i7?revision=abc", "", "revision"),
        ("/v1/shops/s1/items/i7?colour=red", "", "colour"),
        ("/v1/shops/s1/items/i7?kind=HAMMER", "", "HAMMER"),
    ] {
        let (status, got) = call(&gw, "GET", uri, body).await;
        assert_eq!(status, 400, "{uri}: {got}");
        assert!(
            got["message"].as_str().expect("message").contains(says),
            "{uri}: {got}"
        );
    }
    let (status, got) = call(&gw, "POST", "/v1/shops/s1/items", r#"{"nmae": "x"}"#).await;
    assert_eq!(status, 400, "{got}");
    assert!(
        got["message"].as_str().expect("message").contains("nmae"),
        "{got}"
    );

    // The compiled-in API is still there, and the OpenAPI document has both.
    let (status, doc) = call(&gw, "GET", "/openapi.json", "").await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().expect("paths");
    assert!(
        paths.contains_key("/v1/shops/{shop}/items/{itemId}"),
        "{:?}",
        paths.keys()
    );
    assert!(paths.contains_key("/compute/v1/images/{imageId}"));
}

#[test]
fn a_descriptor_set_that_does_not_read_is_a_clear_start_error() {
    let dir = tempfile::tempdir().expect("dir");
    let bad = dir.path().join("bad.binpb");
    std::fs::write(&bad, b"\xff\xff not protobuf").expect("write");
    for path in [bad, dir.path().join("missing.binpb")] {
        let err = match Gateway::new(
            "http://127.0.0.1:1",
            GatewayConfig {
                sources: compute_gateway::gateway::Sources {
                    descriptor_sets: vec![path.clone()],
                    ..Default::default()
                },
                ..Default::default()
            },
        ) {
            Ok(_) => panic!("{} was taken", path.display()),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("--descriptor-set"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}

/// `compute-gateway describe --descriptor-set FILE` prints the routes it would serve, the
/// loaded ones (dynamic) beside the compiled-in ones (typed), before anything is served.
#[test]
fn describe_prints_the_route_table_of_the_given_sources() {
    let dir = tempfile::tempdir().expect("dir");
    let (set, _) = shop_descriptor_set(dir.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_compute-gateway"))
        .arg("describe")
        .arg("--descriptor-set")
        .arg(&set)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no route {needle} in:\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        line("/acme.shop.v1.Shop/GetItem"),
        [
            "GET",
            "/v1/shops/{shop}/items/{item_id}",
            "body=-",
            "/acme.shop.v1.Shop/GetItem",
            "(dynamic)"
        ]
    );
    assert_eq!(
        line("/acme.shop.v1.Shop/CreateItem"),
        [
            "POST",
            "/v1/shops/{shop}/items",
            "body=item",
            "/acme.shop.v1.Shop/CreateItem",
            "(dynamic)"
        ]
    );
    assert_eq!(line("ImageService/Get ")[4], "(typed)");
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_compute-gateway"))
        .args(["describe", "--descriptor-set", "/nonexistent/set.binpb"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent/set.binpb"));
}
