//! The gateway's edge (issue 16): CORS for browsers on other origins, compressed replies and
//! request bodies on the REST port, and gRPC message compression on the gRPC port.

mod common;

use std::io::{Read, Write};

use common::TestServer;
use compute_gateway::gateway::{CorsOrigins, EdgeOptions, GatewayConfig};
use compute_gateway::pb::yandex::cloud::compute::v1::*;
use reqwest::Method;
use serde_json::Value;
use tonic::codec::CompressionEncoding;

const APP: &str = "https://app.example";

async fn server(edge: EdgeOptions) -> TestServer {
    TestServer::start_with(common::Options {
        gateway: GatewayConfig {
            edge,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

fn cors(origins: &[&str]) -> EdgeOptions {
    let origins: Vec<String> = origins.iter().map(|o| o.to_string()).collect();
    EdgeOptions {
        cors: CorsOrigins::parse(&origins).expect("valid origins"),
        ..Default::default()
    }
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().expect("ascii"))
}

/// What a browser sends before a cross-origin PATCH with an `Authorization` header.
async fn preflight(s: &TestServer, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(
            Method::OPTIONS,
            format!("{}/compute/v1/images/fd8abc", s.http()),
        )
        .header("origin", origin)
        .header("access-control-request-method", "PATCH")
        .header(
            "access-control-request-headers",
            "authorization,content-type,idempotency-key",
        )
        .send()
        .await
        .expect("preflight")
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_before_routing() {
    let s = server(cors(&[APP, "http://localhost:5173"])).await;
    let r = preflight(&s, APP).await;
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(header(&r, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    let methods = header(&r, "access-control-allow-methods").expect("methods");
    assert!(methods.contains("PATCH"), "{methods}");
    let headers = header(&r, "access-control-allow-headers").expect("headers");
    for h in [
        "authorization",
        "content-type",
        "idempotency-key",
        "x-grpc-web",
    ] {
        assert!(headers.contains(h), "{h} in {headers}");
    }
    assert_eq!(header(&r, "access-control-max-age"), Some("3600"));
}

#[tokio::test]
async fn a_refused_origin_gets_no_cors_headers() {
    let s = server(cors(&[APP])).await;
    let r = preflight(&s, "https://evil.example").await;
    // Without Access-Control-Allow-Origin the browser refuses, whatever else is sent.
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    // The actual request is served (CORS is the browser's to enforce) but not shared.
    let r = reqwest::Client::new()
        .get(format!("{}/compute/v1/images/fd8nope", s.http()))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn an_allowed_origin_may_read_the_reply_and_its_request_id() {
    let s = server(cors(&[APP])).await;
    let r = reqwest::Client::new()
        .get(format!("{}/compute/v1/images/fd8nope", s.http()))
        .header("origin", APP)
        .send()
        .await
        .expect("get");
    // An error reply is shared too: the page reads its google.rpc.Status.
    assert_eq!(r.status(), 404);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(APP));
    let exposed = header(&r, "access-control-expose-headers").expect("exposed");
    for h in ["x-request-id", "grpc-status", "grpc-message"] {
        assert!(exposed.contains(h), "{h} in {exposed}");
    }
    let vary = header(&r, "vary").expect("vary");
    assert!(vary.contains("origin"), "{vary}");
}

#[tokio::test]
async fn any_origin_is_allowed_without_credentials() {
    let s = server(cors(&["*"])).await;
    let r = preflight(&s, "https://anyone.example").await;
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
}

#[tokio::test]
async fn without_cors_a_preflight_is_an_ordinary_unrouted_request() {
    let s = server(EdgeOptions::default()).await;
    let r = preflight(&s, APP).await;
    assert_eq!(r.status(), 405);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
}

/// Creates `n` images in folder `b1gzip` with long descriptions, so that a List of them is
/// some kilobytes.
async fn fill(s: &TestServer, n: usize) {
    for i in 0..n {
        s.images()
            .create(CreateImageRequest {
                folder_id: "b1gzip".into(),
                name: format!("image-{i}"),
                description: "an image with a description long enough to compress".repeat(3),
                source: Some(create_image_request::Source::DiskId("d".into())),
                ..Default::default()
            })
            .await
            .expect("create");
    }
}

fn decode(encoding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .expect("gzip");
        }
        "br" => {
            brotli::Decompressor::new(bytes, 4096)
                .read_to_end(&mut out)
                .expect("br");
        }
        "zstd" => out = zstd::decode_all(bytes).expect("zstd"),
        other => panic!("unexpected encoding {other}"),
    }
    out
}

async fn list(s: &TestServer, accept: Option<&str>) -> reqwest::Response {
    let mut r =
        reqwest::Client::new().get(format!("{}/compute/v1/images?folderId=b1gzip", s.http()));
    if let Some(accept) = accept {
        r = r.header("accept-encoding", accept);
    }
    r.send().await.expect("list")
}

#[tokio::test]
async fn replies_are_compressed_as_the_client_accepts() {
    let s = server(EdgeOptions::default()).await;
    fill(&s, 20).await;
    let plain = list(&s, None).await;
    assert_eq!(header(&plain, "content-encoding"), None);
    let plain = plain.bytes().await.expect("body");
    assert!(plain.len() > 4096, "{} bytes", plain.len());
    for encoding in ["gzip", "br", "zstd"] {
        let r = list(&s, Some(encoding)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-encoding"), Some(encoding));
        let packed = r.bytes().await.expect("body");
        assert!(
            packed.len() * 3 < plain.len(),
            "{encoding}: {}",
            packed.len()
        );
        let json: Value = serde_json::from_slice(&decode(encoding, &packed)).expect("JSON");
        assert_eq!(json["images"].as_array().map(Vec::len), Some(20));
    }
    // A preference among several.
    let r = list(&s, Some("zstd;q=0.5, gzip;q=1.0")).await;
    assert_eq!(header(&r, "content-encoding"), Some("gzip"));
    // Small replies are not worth it.
    let r = reqwest::Client::new()
        .get(format!("{}/compute/v1/images/fd8nope", s.http()))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    assert_eq!(header(&r, "content-encoding"), None);
}

#[tokio::test]
async fn compression_can_be_turned_off() {
    let s = server(EdgeOptions {
        compress_min_bytes: None,
        ..Default::default()
    })
    .await;
    fill(&s, 20).await;
    let r = list(&s, Some("gzip, br, zstd")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-encoding"), None);
    let json: Value = r.json().await.expect("plain JSON");
    assert_eq!(json["images"].as_array().map(Vec::len), Some(20));
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

async fn create_with(s: &TestServer, encoding: &str, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/compute/v1/images", s.http()))
        .header("content-type", "application/json")
        .header("content-encoding", encoding)
        .body(body)
        .send()
        .await
        .expect("create")
}

#[tokio::test]
async fn compressed_request_bodies_are_read() {
    let s = server(EdgeOptions::default()).await;
    let body = |name: &str| {
        serde_json::to_vec(&serde_json::json!({"folderId": "b1g", "name": name, "diskId": "d"}))
            .expect("json")
    };
    let r = create_with(&s, "gzip", gzip(&body("from-gzip"))).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let r = create_with(
        &s,
        "zstd",
        zstd::encode_all(&body("from-zstd")[..], 3).expect("zstd"),
    )
    .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let names: Vec<String> = s
        .images()
        .list(ListImagesRequest {
            folder_id: "b1g".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .images
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"from-gzip".to_string()) && names.contains(&"from-zstd".to_string()));
}

#[tokio::test]
async fn a_compressed_body_is_limited_by_its_decompressed_size() {
    let s = server(EdgeOptions::default()).await;
    // 64 MiB of spaces (valid JSON whitespace) in about 64 KB: the 1 MiB limit stops it.
    let bomb = gzip(&vec![b' '; 64 << 20]);
    assert!(bomb.len() < 256 * 1024, "{}", bomb.len());
    let r = create_with(&s, "gzip", bomb).await;
    assert_eq!(r.status(), 413);
    let status: Value = r.json().await.expect("a Status body");
    assert_eq!(status["code"], 8);
    // A corrupt stream is the client's mistake too.
    let r = create_with(&s, "gzip", b"not gzip at all".to_vec()).await;
    assert_eq!(r.status(), 400);
    let status: Value = r.json().await.expect("a Status body");
    assert_eq!(status["code"], 3);
}

#[tokio::test]
async fn an_unknown_content_encoding_is_415_naming_the_ones_taken() {
    let s = server(EdgeOptions::default()).await;
    let r = create_with(&s, "compress", b"{}".to_vec()).await;
    assert_eq!(r.status(), 415);
    assert_eq!(header(&r, "accept-encoding"), Some("gzip, br, zstd"));
    let status: Value = r.json().await.expect("a Status body");
    assert_eq!(status["code"], 3);
    let message = status["message"].as_str().expect("message");
    assert!(message.contains("\"compress\""), "{message}");
}

#[tokio::test]
async fn the_grpc_port_takes_and_sends_compressed_messages() {
    let s = server(EdgeOptions::default()).await;
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut images = s
            .images()
            .send_compressed(encoding)
            .accept_compressed(encoding);
        let op = images
            .create(CreateImageRequest {
                folder_id: "b1g".into(),
                name: format!("{encoding:?}").to_lowercase(),
                description: "x".repeat(256),
                source: Some(create_image_request::Source::DiskId("d".into())),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{encoding:?}: {e}"))
            .into_inner();
        let id = op
            .metadata
            .and_then(|m| m.unpack::<CreateImageMetadata>().ok().flatten())
            .map(|m| m.image_id)
            .expect("image id");
        let reply = images
            .get(GetImageRequest { image_id: id })
            .await
            .unwrap_or_else(|e| panic!("{encoding:?}: {e}"));
        assert_eq!(reply.get_ref().description.len(), 256);
        let sent = reply
            .metadata()
            .get("grpc-encoding")
            .map(|v| v.to_str().expect("ascii"));
        assert_eq!(
            sent,
            Some(encoding.to_string().as_str()),
            "the reply was compressed"
        );
    }
}
