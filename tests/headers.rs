//! Header policy (issue 16): what reaches the backend as metadata, what comes back as headers,
//! the client's `Grpc-Timeout`, and message compression on the backend connection. A fake
//! backend records what it is sent and answers with metadata of its choosing.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use compute_gateway::gateway::{CorsOrigins, EdgeOptions, GatewayConfig, HeaderPattern};
use compute_gateway::pb::yandex::cloud::compute::v1::Image;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use serde_json::Value;
use tokio::net::TcpListener;

/// The request headers of every call the fake backend took.
type Seen = Arc<Mutex<Vec<HeaderMap>>>;

/// A gRPC server that records each call's headers and answers with an Image, header metadata
/// `x-served-by` (and `x-http-code` when the call's metadata has `want-code`), and trailer
/// metadata `x-cost`; a call with metadata `fail` gets a trailers-only NOT_FOUND that carries
/// `x-served-by`.
async fn fake_backend() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let record = record.clone();
                async move {
                    let headers = req.headers().clone();
                    let _ = req.into_body().collect().await;
                    record.lock().expect("lock").push(headers.clone());
                    let mut response = Response::builder()
                        .header("content-type", "application/grpc")
                        .header("x-served-by", "fake-1");
                    if headers.contains_key("fail") {
                        let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![];
                        return Ok::<_, Infallible>(
                            response
                                .header("grpc-status", "5")
                                .header("grpc-message", "no such image")
                                .body(StreamBody::new(tokio_stream::iter(frames)))
                                .expect("response"),
                        );
                    }
                    if let Some(code) = headers.get("want-code") {
                        response = response.header("x-http-code", code.clone());
                    }
                    let image = Image {
                        id: "fd8fake".into(),
                        name: "from-the-fake".into(),
                        ..Default::default()
                    }
                    .encode_to_vec();
                    let mut frame = vec![0u8];
                    frame.extend_from_slice(&(image.len() as u32).to_be_bytes());
                    frame.extend_from_slice(&image);
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    trailers.insert("x-cost", HeaderValue::from_static("7"));
                    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                        Ok(Frame::data(Bytes::from(frame))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    Ok(response
                        .body(StreamBody::new(tokio_stream::iter(frames)))
                        .expect("response"))
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn gateway(backend: SocketAddr, config: GatewayConfig) -> common::GatewayOnly {
    common::gateway_only(&format!("http://{backend}"), config).await
}

fn get(gw: &common::GatewayOnly) -> reqwest::RequestBuilder {
    reqwest::Client::new().get(format!("http://{}/compute/v1/images/fd8fake", gw.addr))
}

fn last(seen: &Seen) -> HeaderMap {
    seen.lock().expect("lock").last().cloned().expect("a call")
}

fn value<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().expect("ascii"))
}

#[tokio::test]
async fn headers_reach_the_backend_by_the_policy() {
    let (backend, seen) = fake_backend().await;
    let gw = gateway(
        backend,
        GatewayConfig {
            forward_headers: vec![HeaderPattern::parse("x-tenant-*").expect("pattern")],
            ..Default::default()
        },
    )
    .await;
    let r = get(&gw)
        .header("x-tenant-id", "acme")
        .header("x-other", "not forwarded")
        .header("grpc-metadata-trace-note", "hello")
        .header("user-agent", "test-agent/1.0")
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let h = last(&seen);
    assert_eq!(value(&h, "x-tenant-id"), Some("acme"));
    assert_eq!(value(&h, "x-other"), None);
    assert_eq!(value(&h, "trace-note"), Some("hello"));
    assert_eq!(value(&h, "x-forwarded-for"), Some("203.0.113.7, 127.0.0.1"));
    assert_eq!(
        value(&h, "x-forwarded-host"),
        Some(gw.addr.to_string().as_str())
    );
    assert_eq!(value(&h, "x-forwarded-proto"), Some("http"));
    assert_eq!(value(&h, "grpcgateway-user-agent"), Some("test-agent/1.0"));
    let agent = value(&h, "user-agent").expect("user-agent");
    assert!(agent.starts_with("compute-gateway/"), "{agent}");
    assert!(value(&h, "x-request-id").is_some());
}

#[tokio::test]
async fn the_clients_grpc_timeout_is_honoured_within_the_gateways_own() {
    let (backend, seen) = fake_backend().await;
    let gw = gateway(
        backend,
        GatewayConfig {
            request_timeout: Duration::from_secs(30),
            ..Default::default()
        },
    )
    .await;
    let sent = |asked: Option<&str>| {
        let mut r = get(&gw);
        if let Some(asked) = asked {
            r = r.header("grpc-timeout", asked);
        }
        let seen = seen.clone();
        async move {
            assert_eq!(r.send().await.expect("get").status(), 200);
            let h = last(&seen);
            let v = value(&h, "grpc-timeout").expect("a deadline").to_string();
            compute_gateway::net::parse_grpc_timeout(v.as_bytes()).expect("a valid grpc-timeout")
        }
    };
    let shorter = sent(Some("2S")).await;
    assert!(
        shorter <= Duration::from_secs(2) && shorter > Duration::from_secs(1),
        "{shorter:?}"
    );
    let capped = sent(Some("1H")).await;
    assert!(
        capped <= Duration::from_secs(30) && capped > Duration::from_secs(29),
        "{capped:?}"
    );
    let default = sent(None).await;
    assert!(default > Duration::from_secs(29), "{default:?}");
    // Nonsense is ignored, as gRPC ignores it.
    let nonsense = sent(Some("soon")).await;
    assert!(nonsense > Duration::from_secs(29), "{nonsense:?}");
}

#[tokio::test]
async fn an_expired_grpc_timeout_is_504() {
    let s = common::TestServer::start().await;
    let r = reqwest::Client::new()
        .get(format!("{}/compute/v1/images/fd8nope", s.http()))
        .header("grpc-timeout", "1n")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 504);
    let status: Value = r.json().await.expect("a Status body");
    assert_eq!(status["code"], 4);
}

#[tokio::test]
async fn reply_metadata_comes_back_as_headers_and_x_http_code_sets_the_status() {
    let (backend, _) = fake_backend().await;
    let gw = gateway(backend, GatewayConfig::default()).await;
    let r = get(&gw)
        .header("grpc-metadata-want-code", "201")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 201);
    let h = r.headers().clone();
    assert_eq!(value(&h, "grpc-metadata-x-served-by"), Some("fake-1"));
    assert_eq!(value(&h, "grpc-trailer-x-cost"), Some("7"));
    for internal in [
        "grpc-metadata-x-http-code",
        "grpc-metadata-content-type",
        "grpc-trailer-grpc-status",
        "grpc-metadata-date",
    ] {
        assert_eq!(value(&h, internal), None, "{internal}");
    }
    let image: Value = r.json().await.expect("json");
    assert_eq!(image["name"], "from-the-fake");
    // Without x-http-code, the status is 200.
    let r = get(&gw).send().await.expect("get");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_errors_metadata_comes_back_too_and_its_status_is_the_codes() {
    let (backend, _) = fake_backend().await;
    let gw = gateway(backend, GatewayConfig::default()).await;
    let r = get(&gw)
        .header("grpc-metadata-fail", "1")
        .header("grpc-metadata-want-code", "201")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    assert_eq!(
        value(r.headers(), "grpc-metadata-x-served-by"),
        Some("fake-1")
    );
    let status: Value = r.json().await.expect("a Status body");
    assert_eq!(status["code"], 5);
}

#[tokio::test]
async fn a_page_on_an_allowed_origin_may_read_the_forwarded_metadata() {
    let (backend, _) = fake_backend().await;
    let gw = gateway(
        backend,
        GatewayConfig {
            edge: EdgeOptions {
                cors: CorsOrigins::parse(&["https://app.example".to_string()]).expect("origins"),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let r = get(&gw)
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("get");
    let exposed: Vec<&str> = r
        .headers()
        .get_all("access-control-expose-headers")
        .iter()
        .flat_map(|v| v.to_str().expect("ascii").split(','))
        .map(str::trim)
        .collect();
    for name in [
        "x-request-id",
        "grpc-metadata-x-served-by",
        "grpc-trailer-x-cost",
    ] {
        assert!(exposed.contains(&name), "{name} in {exposed:?}");
    }
}

#[tokio::test]
async fn the_backend_connection_can_compress_its_messages() {
    let (backend, seen) = fake_backend().await;
    let gw = gateway(
        backend,
        GatewayConfig {
            backend_compression: Some(tonic::codec::CompressionEncoding::Zstd),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(get(&gw).send().await.expect("get").status(), 200);
    let h = last(&seen);
    assert_eq!(value(&h, "grpc-encoding"), Some("zstd"));
    let accepted = value(&h, "grpc-accept-encoding").expect("accept-encoding");
    assert!(accepted.contains("zstd"), "{accepted}");
    // And our own backend takes them.
    let s = common::TestServer::start().await;
    let gw = common::gateway_only(
        &format!("http://{}", s.grpc_addr),
        GatewayConfig {
            backend_compression: Some(tonic::codec::CompressionEncoding::Gzip),
            ..Default::default()
        },
    )
    .await;
    let r = reqwest::Client::new()
        .post(format!("http://{}/compute/v1/images", gw.addr))
        .body(r#"{"folderId":"b1g","name":"compressed","diskId":"d"}"#)
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
}

#[tokio::test]
async fn trace_context_travels_with_the_gateway_as_a_hop_of_its_own() {
    let (backend, seen) = fake_backend().await;
    let gw = gateway(backend, GatewayConfig::default()).await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = get(&gw)
        .header("traceparent", parent)
        .header("tracestate", "vendor=opaque")
        .header("baggage", "tenant=acme")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let h = last(&seen);
    let sent = value(&h, "traceparent").expect("traceparent");
    let sent = compute_gateway::net::TraceParent::parse(sent.as_bytes()).expect("valid");
    assert_eq!(sent.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(
        sent.header_value(),
        parent,
        "the gateway's own span is the backend's parent"
    );
    assert_eq!(sent.flags, 1);
    assert_eq!(value(&h, "tracestate"), Some("vendor=opaque"));
    assert_eq!(value(&h, "baggage"), Some("tenant=acme"));
    // No trace, or a malformed one: the gateway starts one.
    for given in [None, Some("00-nonsense")] {
        let mut r = get(&gw);
        if let Some(given) = given {
            r = r.header("traceparent", given);
        }
        assert_eq!(r.send().await.expect("get").status(), 200);
        let h = last(&seen);
        let started = value(&h, "traceparent").expect("a new trace");
        assert!(
            compute_gateway::net::TraceParent::parse(started.as_bytes()).is_some(),
            "{started}"
        );
    }
}
