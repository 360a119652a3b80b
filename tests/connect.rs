//! The Connect protocol's unary calls on the REST port (issue 16): JSON and binary, Connect's
//! error body and status table, its timeout header.

mod common;

use common::TestServer;
use compute_gateway::pb::yandex::cloud::compute::v1::*;
use compute_gateway::pb::yandex::cloud::operation::Operation;
use prost::Message;
use serde_json::{Value, json};

fn call(
    s: &TestServer,
    method: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!(
            "{}/yandex.cloud.compute.v1.ImageService/{method}",
            s.http()
        ))
        .header("content-type", content_type)
        .header("connect-protocol-version", "1")
        .body(body)
}

#[tokio::test]
async fn a_json_call_is_transcoded_like_a_rest_call() {
    let s = TestServer::start().await;
    let body = json!({"folderId": "b1g", "name": "from-connect", "diskId": "d", "minDiskSize": "1073741824"});
    let r = call(
        &s,
        "Create",
        "application/json",
        body.to_string().into_bytes(),
    )
    .send()
    .await
    .expect("create");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let op: Value = r.json().await.expect("json");
    let id = op["metadata"]["imageId"]
        .as_str()
        .expect("image id")
        .to_string();
    common::wait_done(&mut s.operations(), op["id"].as_str().expect("op id")).await;
    let r = call(
        &s,
        "Get",
        "application/json",
        json!({"imageId": id}).to_string().into_bytes(),
    )
    .send()
    .await
    .expect("get");
    assert_eq!(r.status(), 200);
    let image: Value = r.json().await.expect("json");
    assert_eq!(image["name"], "from-connect");
    assert_eq!(image["minDiskSize"], "1073741824");
    assert_eq!(image["status"], "READY");
}

#[tokio::test]
async fn a_binary_call_sends_and_gets_protobuf() {
    let s = TestServer::start().await;
    let request = CreateImageRequest {
        folder_id: "b1g".into(),
        name: "binary-connect".into(),
        source: Some(create_image_request::Source::DiskId("d".into())),
        ..Default::default()
    };
    let r = call(&s, "Create", "application/proto", request.encode_to_vec())
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/proto");
    let op = Operation::decode(r.bytes().await.expect("body")).expect("an Operation");
    assert!(op.id.starts_with("epd"), "{}", op.id);
}

#[tokio::test]
async fn errors_have_connects_shape_and_status() {
    let s = TestServer::start().await;
    let r = call(
        &s,
        "Get",
        "application/json",
        br#"{"imageId":"fd8nothere"}"#.to_vec(),
    )
    .send()
    .await
    .expect("get");
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["code"], "not_found");
    assert!(
        e["message"]
            .as_str()
            .expect("message")
            .contains("fd8nothere"),
        "{e}"
    );
    // A validation error carries its google.rpc.BadRequest as a Connect detail.
    let r = call(
        &s,
        "Create",
        "application/json",
        br#"{"folderId":"b1g","name":"Bad Name!"}"#.to_vec(),
    )
    .send()
    .await
    .expect("create");
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["code"], "invalid_argument");
    let details = e["details"].as_array().expect("details");
    assert!(
        details
            .iter()
            .any(|d| d["type"] == "google.rpc.BadRequest" && d["value"].is_string()),
        "{e}"
    );
    // An unknown field is the client's mistake too.
    let r = call(
        &s,
        "Get",
        "application/json",
        br#"{"imageId":"x","nope":1}"#.to_vec(),
    )
    .send()
    .await
    .expect("get");
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["code"], "invalid_argument");
}

#[tokio::test]
async fn an_expired_connect_timeout_is_deadline_exceeded() {
    let s = TestServer::start().await;
    let r = call(
        &s,
        "Get",
        "application/json",
        br#"{"imageId":"fd8x"}"#.to_vec(),
    )
    .header("connect-timeout-ms", "0")
    .send()
    .await
    .expect("get");
    assert_eq!(r.status(), 504);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["code"], "deadline_exceeded");
}

#[tokio::test]
async fn other_content_types_on_a_method_path_are_not_connect() {
    let s = TestServer::start().await;
    let r = call(&s, "Get", "text/plain", b"{}".to_vec())
        .send()
        .await
        .expect("post");
    // Not a Connect call and no REST route: 404 in the REST error shape.
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["code"], 5);
}
