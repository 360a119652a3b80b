//! gRPC-Web on the REST port (issue 16): binary and text, over HTTP/1.1, sent on to the
//! backend as plain gRPC, with the REST port's bounds.

mod common;

use base64::Engine as _;
use common::TestServer;
use compute_gateway::gateway::GatewayConfig;
use compute_gateway::pb::yandex::cloud::compute::v1::*;
use compute_gateway::pb::yandex::cloud::operation::Operation;
use prost::Message;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A message in gRPC's framing: an uncompressed flag, the length, the bytes.
fn frame(message: &impl Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&bytes);
    out
}

/// What a gRPC-Web reply carried: its messages, and its status and other trailers (from the
/// trailer frame, or from the headers of a trailers-only reply).
#[derive(Debug, Default)]
struct Reply {
    messages: Vec<Vec<u8>>,
    trailers: Vec<(String, String)>,
}

impl Reply {
    fn status(&self) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(k, _)| k == "grpc-status")
            .map(|(_, v)| v.as_str())
    }
}

async fn read(resp: reqwest::Response, text: bool) -> Reply {
    let mut reply = Reply::default();
    for name in ["grpc-status", "grpc-message"] {
        if let Some(v) = resp.headers().get(name) {
            reply
                .trailers
                .push((name.into(), v.to_str().expect("ascii").into()));
        }
    }
    let raw = resp.bytes().await.expect("body").to_vec();
    // Text mode is base64 per flushed chunk: each group of four characters decodes alone.
    let mut body = if text {
        raw.chunks(4)
            .flat_map(|group| B64.decode(group).expect("base64"))
            .collect()
    } else {
        raw
    };
    while body.len() >= 5 {
        let flag = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let payload: Vec<u8> = body[5..5 + len].to_vec();
        body.drain(..5 + len);
        if flag & 0x80 != 0 {
            for line in String::from_utf8(payload).expect("text").split("\r\n") {
                if let Some((k, v)) = line.split_once(':') {
                    reply
                        .trailers
                        .push((k.trim().to_lowercase(), v.trim().to_string()));
                }
            }
        } else {
            reply.messages.push(payload);
        }
    }
    assert!(body.is_empty(), "trailing bytes: {body:?}");
    reply
}

async fn call(
    s: &TestServer,
    method: &str,
    body: Vec<u8>,
    text: bool,
) -> (reqwest::Response, bool) {
    let content_type = if text {
        "application/grpc-web-text"
    } else {
        "application/grpc-web+proto"
    };
    let body = if text {
        B64.encode(body).into_bytes()
    } else {
        body
    };
    let resp = reqwest::Client::new()
        .post(format!("{}/{method}", s.http()))
        .header("content-type", content_type)
        // As the JavaScript client asks: the reply in the request's own encoding.
        .header("accept", content_type)
        .header("x-grpc-web", "1")
        .header("x-user-agent", "grpc-web-javascript/0.1")
        .body(body)
        .send()
        .await
        .expect("grpc-web call");
    (resp, text)
}

async fn server(config: GatewayConfig) -> TestServer {
    TestServer::start_with(common::Options {
        gateway: config,
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn a_grpc_web_call_over_http1_reaches_the_backend() {
    let s = server(GatewayConfig::default()).await;
    let (resp, text) = call(
        &s,
        "yandex.cloud.compute.v1.ImageService/Create",
        frame(&CreateImageRequest {
            folder_id: "b1g".into(),
            name: "from-grpc-web".into(),
            source: Some(create_image_request::Source::DiskId("d".into())),
            ..Default::default()
        }),
        false,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(
        resp.headers()["content-type"].to_str().expect("ascii"),
        "application/grpc-web+proto"
    );
    let reply = read(resp, text).await;
    assert_eq!(reply.status(), Some("0"), "{reply:?}");
    assert_eq!(reply.messages.len(), 1);
    let op = Operation::decode(&reply.messages[0][..]).expect("an Operation");
    let meta: CreateImageMetadata = common::unpack(op.metadata.as_ref().expect("metadata"));
    // The image is there for gRPC clients too.
    let image = s
        .images()
        .get(GetImageRequest {
            image_id: meta.image_id,
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(image.name, "from-grpc-web");
}

#[tokio::test]
async fn grpc_web_text_is_base64_both_ways() {
    let s = server(GatewayConfig::default()).await;
    let (resp, text) = call(
        &s,
        "yandex.cloud.compute.v1.ImageService/List",
        frame(&ListImagesRequest {
            folder_id: "b1g".into(),
            ..Default::default()
        }),
        true,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("application/grpc-web-text"),
        "{:?}",
        resp.headers()
    );
    let reply = read(resp, text).await;
    assert_eq!(reply.status(), Some("0"), "{reply:?}");
    let list = ListImagesResponse::decode(&reply.messages[0][..]).expect("a list");
    assert!(list.images.is_empty());
}

#[tokio::test]
async fn errors_come_back_as_grpc_statuses() {
    let s = server(GatewayConfig {
        max_body_bytes: 1024,
        ..Default::default()
    })
    .await;
    // The backend's own error.
    let (resp, text) = call(
        &s,
        "yandex.cloud.compute.v1.ImageService/Get",
        frame(&GetImageRequest {
            image_id: "fd8nothere".into(),
        }),
        false,
    )
    .await;
    assert_eq!(
        resp.status(),
        200,
        "gRPC-Web errors are statuses, not HTTP errors"
    );
    let reply = read(resp, text).await;
    assert_eq!(reply.status(), Some("5"), "{reply:?}");
    // A method the backend does not have.
    let (resp, text) = call(
        &s,
        "nope.Service/Nothing",
        frame(&GetImageRequest::default()),
        false,
    )
    .await;
    assert_eq!(read(resp, text).await.status(), Some("12"));
    // Over the gateway's body limit.
    let (resp, text) = call(
        &s,
        "yandex.cloud.compute.v1.ImageService/Create",
        frame(&CreateImageRequest {
            description: "x".repeat(4096),
            ..Default::default()
        }),
        false,
    )
    .await;
    assert_eq!(read(resp, text).await.status(), Some("8"));
}

#[tokio::test]
async fn a_grpc_web_client_cannot_send_oversized_metadata() {
    let s = server(GatewayConfig::default()).await;
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/yandex.cloud.compute.v1.ImageService/Get",
            s.http()
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("x-big", "y".repeat(9000))
        .body(frame(&GetImageRequest::default()))
        .send()
        .await
        .expect("call");
    assert_eq!(read(resp, false).await.status(), Some("8"));
}
