//! Formats and methods of the REST port (issue 16): HEAD, X-HTTP-Method-Override, request
//! Content-Types (JSON, curl's form type, protobuf, 415 for the rest), protobuf replies by
//! Accept, the output options and the leniency options.

mod common;

use common::TestServer;
use compute_gateway::gateway::{GatewayConfig, InputOptions, RenderOptions};
use compute_gateway::pb::yandex::cloud::compute::v1::*;
use compute_gateway::pb::yandex::cloud::operation::Operation;
use prost::Message;
use serde_json::Value;

async fn server(render: RenderOptions) -> TestServer {
    TestServer::start_with(common::Options {
        gateway: GatewayConfig {
            render,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

/// Creates an image over gRPC and waits until it is READY; returns its id.
async fn image(s: &TestServer, name: &str) -> String {
    let op = s
        .images()
        .create(CreateImageRequest {
            folder_id: "b1g".into(),
            name: name.into(),
            family: "fam".into(),
            source: Some(create_image_request::Source::DiskId("d".into())),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    common::wait_done(&mut s.operations(), &op.id).await;
    let meta: CreateImageMetadata = common::unpack(op.metadata.as_ref().expect("metadata"));
    meta.image_id
}

#[tokio::test]
async fn head_answers_every_get_route_without_a_body() {
    let s = server(RenderOptions::default()).await;
    let id = image(&s, "headed").await;
    let http = reqwest::Client::new();
    let url = format!("{}/compute/v1/images/{id}", s.http());
    let get = http.get(&url).send().await.expect("get");
    let length = get.headers()["content-length"].clone();
    let head = http.head(&url).send().await.expect("head");
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], length);
    assert_eq!(
        head.headers()["content-type"].to_str().expect("ascii"),
        "application/json"
    );
    assert!(head.bytes().await.expect("body").is_empty());
    let missing = http
        .head(format!("{}/compute/v1/images/fd8nope", s.http()))
        .send()
        .await
        .expect("head");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_post_can_stand_for_another_method() {
    let s = server(RenderOptions::default()).await;
    let id = image(&s, "overridden").await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/compute/v1/images/{id}", s.http()))
        .header("x-http-method-override", "PATCH")
        .body(r#"{"updateMask":"description","description":"via POST"}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let got = s
        .images()
        .get(GetImageRequest {
            image_id: id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.description, "via POST");
    let r = http
        .post(format!("{}/compute/v1/images/{id}", s.http()))
        .header("x-http-method-override", "TRACE")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let r = http
        .get(format!("{}/compute/v1/images/{id}", s.http()))
        .header("x-http-method-override", "DELETE")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 400, "an override on a GET is refused");
}

async fn create_as(s: &TestServer, content_type: &str, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/compute/v1/images", s.http()))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("create")
}

#[tokio::test]
async fn request_bodies_are_json_or_protobuf_and_nothing_else() {
    let s = server(RenderOptions::default()).await;
    let json = |name: &str| format!(r#"{{"folderId":"b1g","name":"{name}","diskId":"d"}}"#);
    for (i, ct) in [
        "application/json",
        "application/json; charset=utf-8",
        "application/x-www-form-urlencoded",
    ]
    .into_iter()
    .enumerate()
    {
        let r = create_as(&s, ct, json(&format!("json-{i}")).into_bytes()).await;
        assert_eq!(r.status(), 200, "{ct}: {:?}", r.text().await);
    }
    for ct in ["text/plain", "application/xml"] {
        let r = create_as(&s, ct, json("refused").into_bytes()).await;
        assert_eq!(r.status(), 415, "{ct}");
        let status: Value = r.json().await.expect("a Status body");
        assert_eq!(status["code"], 3);
        assert!(
            status["message"].as_str().expect("message").contains(ct),
            "{status}"
        );
    }
    let proto = CreateImageRequest {
        folder_id: "b1g".into(),
        name: "from-protobuf".into(),
        labels: [("k".to_string(), "v".to_string())].into(),
        min_disk_size: 1 << 30,
        source: Some(create_image_request::Source::DiskId("d".into())),
        ..Default::default()
    };
    let r = create_as(&s, "application/x-protobuf", proto.encode_to_vec()).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let op: Value = r.json().await.expect("a JSON Operation");
    let id = op["metadata"]["imageId"]
        .as_str()
        .expect("image id")
        .to_string();
    let got = s
        .images()
        .get(GetImageRequest { image_id: id })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.name, "from-protobuf");
    assert_eq!(got.min_disk_size, 1 << 30);
    assert_eq!(got.labels["k"], "v");
    let r = create_as(&s, "application/x-protobuf", b"\xff\xff\xff".to_vec()).await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn replies_are_protobuf_when_accepted() {
    let s = server(RenderOptions::default()).await;
    let id = image(&s, "binary").await;
    let r = reqwest::Client::new()
        .get(format!("{}/compute/v1/images/{id}", s.http()))
        .header("accept", "application/x-protobuf")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().expect("ascii"),
        "application/x-protobuf"
    );
    let image = Image::decode(r.bytes().await.expect("body")).expect("an Image");
    assert_eq!(image.name, "binary");
    assert_eq!(image.status, image::Status::Ready as i32);
    // A mutation's Operation too.
    let r = reqwest::Client::new()
        .delete(format!("{}/compute/v1/images/{id}", s.http()))
        .header("accept", "application/protobuf")
        .send()
        .await
        .expect("delete");
    let op = Operation::decode(r.bytes().await.expect("body")).expect("an Operation");
    assert!(op.id.starts_with("epd"), "{}", op.id);
}

async fn get_json(s: &TestServer, id: &str) -> (String, Value) {
    let text = reqwest::get(format!("{}/compute/v1/images/{id}", s.http()))
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    let json = serde_json::from_str(&text).expect("json");
    (text, json)
}

#[tokio::test]
async fn output_options_shape_the_json() {
    let s = server(RenderOptions {
        proto_names: true,
        enums_as_ints: true,
        pretty: true,
        ..Default::default()
    })
    .await;
    let id = image(&s, "shaped").await;
    let (text, json) = get_json(&s, &id).await;
    assert!(text.contains("\n  \""), "indented: {text}");
    assert_eq!(json["folder_id"], "b1g");
    assert!(
        json["min_disk_size"].is_string(),
        "an int64 stays a string: {json}"
    );
    assert!(json.get("folderId").is_none(), "{json}");
    assert_eq!(json["status"], image::Status::Ready as i32);
    assert!(
        json["created_at"].is_string(),
        "a Timestamp keeps its form: {json}"
    );
    // Inside an Any too.
    let op: Value = reqwest::Client::new()
        .delete(format!("{}/compute/v1/images/{id}", s.http()))
        .send()
        .await
        .expect("delete")
        .json()
        .await
        .expect("json");
    assert_eq!(op["metadata"]["image_id"], id.as_str(), "{op}");
    assert!(op["metadata"]["@type"].is_string(), "{op}");
    assert!(op["created_at"].is_string(), "{op}");
}

#[tokio::test]
async fn by_default_the_json_is_compact_camel_case_with_enum_names() {
    let s = server(RenderOptions::default()).await;
    let id = image(&s, "plain").await;
    let (text, json) = get_json(&s, &id).await;
    assert!(!text.contains('\n'), "{text}");
    assert_eq!(json["folderId"], "b1g");
    assert_eq!(json["status"], "READY");
}

/// Creates an image over REST with `os.type` given as `os_type`, and `query` on the URL.
async fn create_with(s: &TestServer, query: &str, os_type: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/compute/v1/images{query}", s.http()))
        .json(&serde_json::json!({
            "folderId": "b1g", "name": "lenient", "diskId": "d", "os": {"type": os_type}
        }))
        .send()
        .await
        .expect("create")
}

#[tokio::test]
async fn strict_by_default_enum_case_and_unknown_query_parameters_are_refused() {
    let s = server(RenderOptions::default()).await;
    let r = create_with(&s, "", "linux").await;
    assert_eq!(r.status(), 400);
    let text = r.text().await.expect("body");
    assert!(text.contains("\\\"linux\\\" is not a value"), "{text}");
    let r = reqwest::get(format!(
        "{}/compute/v1/images?folderId=b1g&utm_source=x",
        s.http()
    ))
    .await
    .expect("list");
    assert_eq!(r.status(), 400);
    let text = r.text().await.expect("body");
    assert!(text.contains("utm_source"), "{text}");
    assert_eq!(
        create_with(&s, "?utm_source=x", "LINUX").await.status(),
        400
    );
}

#[tokio::test]
async fn leniency_options_take_enum_names_in_any_case_and_skip_unknown_query_parameters() {
    let s = TestServer::start_with(common::Options {
        gateway: GatewayConfig {
            input: InputOptions {
                case_insensitive_enums: true,
                ignore_unknown_query_params: true,
            },
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    // In a body, on a route whose body is the whole request, with an unknown query parameter.
    let r = create_with(&s, "?utm_source=x", "linux").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let op: Value = r.json().await.expect("json");
    common::wait_done(&mut s.operations(), op["id"].as_str().expect("id")).await;
    let id = op["metadata"]["imageId"].as_str().expect("image id");
    let (_, image) = get_json(&s, id).await;
    assert_eq!(
        image["os"]["type"], "LINUX",
        "stored under its declared name"
    );

    let list = |q: &str| reqwest::get(format!("{}/compute/v1/images?{q}", s.http()));
    let r = list("folderId=b1g&utm_source=x&deep.unknown.path=1")
        .await
        .expect("list");
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.expect("json");
    assert_eq!(page["images"][0]["id"], id);
    // A known field's bad value is still the client's mistake.
    let r = list("folderId=b1g&pageSize=lots").await.expect("list");
    assert_eq!(r.status(), 400);
    // A parameter that names a field through a scalar is not a field either.
    let r = list("folderId=b1g&pageSize.x=1").await.expect("list");
    assert_eq!(r.status(), 200);
}
