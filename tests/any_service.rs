//! Any gRPC service, no rebuild: a "lab" service this binary knows nothing of, served by a
//! gRPC server that is not ours (raw HTTP/2 here, with server reflection that serves its files
//! as they were compiled, as grpc-go's does), reached through the gateway once from its
//! descriptor set and once over reflection, with the same checks: every scalar type in path,
//! query and body, maps, oneofs, every well-known type, enums, nested messages,
//! `additional_bindings`, a custom verb, `body: "field"`, `response_body`, HttpBody, an
//! auto-mapped method, and unary, server, client and bidi streaming.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use compute_gateway::gateway::{Gateway, GatewayConfig, Sources};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use serde_json::{Value, json};

const LAB_PROTO: &str = r#"
syntax = "proto3";
package lab.v1;

import "google/api/annotations.proto";
import "google/api/httpbody.proto";
import "google/protobuf/any.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/empty.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

service Lab {
  rpc Scalars(Scalars) returns (Scalars) {
    option (google.api.http) = {
      get: "/v1/scalars/{d}/{f}/{i32}/{i64}/{u32}/{u64}/{s32}/{s64}/{fx32}/{fx64}/{sfx32}/{sfx64}/{b}/{s}/{by}/{e}"
      additional_bindings { post: "/v1/scalars" body: "*" }
    };
  }
  rpc Echo(Everything) returns (Everything) {
    option (google.api.http) = { post: "/v1/{name=things/*}:echo" body: "*" };
  }
  rpc Patch(Everything) returns (Everything) {
    option (google.api.http) = { patch: "/v1/{name=things/*}" body: "nested" response_body: "nested" };
  }
  rpc Unbound(Everything) returns (Everything);
  rpc Download(Everything) returns (google.api.HttpBody) {
    option (google.api.http) = { get: "/v1/{name=things/*}/content" };
  }
  rpc Upload(UploadRequest) returns (Everything) {
    option (google.api.http) = { put: "/v1/{name=things/*}/content" body: "content" };
  }
  rpc Count(CountRequest) returns (stream Tick) {
    option (google.api.http) = { get: "/v1/count/{to}" };
  }
  rpc Sum(stream Tick) returns (Tick) {
    option (google.api.http) = { post: "/v1/sum" body: "*" };
  }
  rpc Chat(stream Tick) returns (stream Tick) {
    option (google.api.http) = { post: "/v1/chat" body: "*" };
  }
  rpc Chunks(CountRequest) returns (stream google.api.HttpBody) {
    option (google.api.http) = { get: "/v1/chunks/{to}" };
  }
  // OLD_METHOD
}

enum Colour {
  COLOUR_UNSPECIFIED = 0;
  RED = 1;
  GREEN = 2;
}

message Scalars {
  double d = 1;
  float f = 2;
  int32 i32 = 3;
  int64 i64 = 4;
  uint32 u32 = 5;
  uint64 u64 = 6;
  sint32 s32 = 7;
  sint64 s64 = 8;
  fixed32 fx32 = 9;
  fixed64 fx64 = 10;
  sfixed32 sfx32 = 11;
  sfixed64 sfx64 = 12;
  bool b = 13;
  string s = 14;
  bytes by = 15;
  Colour e = 16;
}

message Nested {
  string label = 1;
  repeated int64 counts = 2;
  Nested child = 3;
}

message Everything {
  string name = 1;
  Nested nested = 2;
  map<string, int64> totals = 3;
  map<int32, Nested> by_id = 4;
  oneof choice {
    string text = 5;
    Nested node = 6;
  }
  Colour colour = 7;
  repeated Colour colours = 8;
  google.protobuf.Any any = 9;
  google.protobuf.Duration duration = 10;
  google.protobuf.Empty empty = 11;
  google.protobuf.FieldMask mask = 12;
  google.protobuf.Struct struct = 13;
  google.protobuf.Value value = 14;
  google.protobuf.ListValue list = 15;
  google.protobuf.Timestamp time = 16;
  google.protobuf.BoolValue flag = 17;
  google.protobuf.Int64Value big = 18;
  google.protobuf.StringValue note = 19;
  google.protobuf.BytesValue blob = 20;
  google.protobuf.DoubleValue ratio = 21;
  google.protobuf.UInt32Value small = 22;
  Scalars scalars = 23;
}

message UploadRequest {
  string name = 1;
  google.api.HttpBody content = 2;
}

message CountRequest {
  int32 to = 1;
  int32 fail_at = 2;
  int32 pad = 3;
}

message Tick {
  int64 n = 1;
  string pad = 2;
}
"#;

/// `google.api.HttpBody`, as Google's API declares it.
const HTTPBODY_PROTO: &str = r#"
syntax = "proto3";
package google.api;
import "google/protobuf/any.proto";
message HttpBody {
  string content_type = 1;
  bytes data = 2;
  repeated google.protobuf.Any extensions = 3;
}
"#;

/// The lab's descriptor set (with `extra` methods added to the service), compiled here as
/// `protoc --include_imports -o` would write it: its bytes and the pool they decode to.
fn lab_set(dir: &std::path::Path, extra: &str) -> (Vec<u8>, DescriptorPool) {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("lab/v1")).expect("dir");
    std::fs::create_dir_all(src.join("google/api")).expect("dir");
    std::fs::write(
        src.join("lab/v1/lab.proto"),
        LAB_PROTO.replace("// OLD_METHOD", extra),
    )
    .expect("write proto");
    std::fs::write(src.join("google/api/httpbody.proto"), HTTPBODY_PROTO).expect("write proto");
    let ours = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let mut compiler = protox::Compiler::new([src, ours]).expect("compiler");
    compiler.include_imports(true);
    compiler
        .open_files(["lab/v1/lab.proto"])
        .expect("the lab proto compiles");
    let bytes = compiler.encode_file_descriptor_set();
    let pool = DescriptorPool::decode(bytes.as_slice()).expect("pool");
    (bytes, pool)
}

/// What the lab server saw, for the tests to check.
#[derive(Default)]
struct Seen {
    /// Messages of the `Count` stream sent so far.
    counted: AtomicU64,
    /// A `Count` stream was reset by the gateway.
    count_cancelled: AtomicBool,
    cancelled: tokio::sync::Notify,
}

/// The lab server's current descriptors: what it implements and what reflection serves.
struct Current {
    pool: DescriptorPool,
    files: Vec<Vec<u8>>,
}

/// A gRPC server for the lab service, over raw HTTP/2: it echoes the unary methods' requests,
/// streams `Count`, sums `Sum`, doubles each `Chat` message, and serves reflection (v1) from
/// the files of its current set; a method not in that set is UNIMPLEMENTED.
struct Lab {
    url: String,
    current: Arc<Mutex<Current>>,
    seen: Arc<Seen>,
}

impl Lab {
    async fn start(set: &[u8], pool: DescriptorPool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let current = Arc::new(Mutex::new(Current {
            pool,
            files: files_of(set),
        }));
        let seen = Arc::new(Seen::default());
        let (c, s) = (current.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (c, s) = (c.clone(), s.clone());
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (c, s) = (c.clone(), s.clone());
                    async move { Ok::<_, Infallible>(serve(req, c, s).await) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
                });
            }
        });
        Self { url, current, seen }
    }

    /// From now on, the server is built from another descriptor set.
    fn become_(&self, set: &[u8], pool: DescriptorPool) {
        *self.current.lock().expect("lock") = Current {
            pool,
            files: files_of(set),
        };
    }
}

fn files_of(set: &[u8]) -> Vec<Vec<u8>> {
    #[derive(Clone, PartialEq, prost::Message)]
    struct RawSet {
        #[prost(bytes = "vec", repeated, tag = "1")]
        file: Vec<Vec<u8>>,
    }
    RawSet::decode(set).expect("set").file
}

type Body = StreamBody<tokio_stream::wrappers::ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

fn framed(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.into()
}

fn trailers(code: i32, message: &str) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from(code));
    if !message.is_empty() {
        t.insert(
            "grpc-message",
            HeaderValue::from_str(message).expect("ascii"),
        );
    }
    t
}

/// The messages of a gRPC request body, as they come.
struct Messages {
    body: Incoming,
    buf: BytesMut,
}

impl Messages {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().expect("4")) as usize;
                if self.buf.len() >= 5 + len {
                    self.buf.advance(5);
                    return Some(self.buf.split_to(len).freeze());
                }
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                _ => return None,
            }
        }
    }
}

fn dynamic(method: &MethodDescriptor, bytes: &[u8]) -> DynamicMessage {
    DynamicMessage::decode(method.input(), bytes).expect("a request of the method's type")
}

fn reply_of(method: &MethodDescriptor, json: Value) -> Vec<u8> {
    DynamicMessage::deserialize(method.output(), json)
        .expect("a reply of the method's type")
        .encode_to_vec()
}

async fn serve(
    req: Request<Incoming>,
    current: Arc<Mutex<Current>>,
    seen: Arc<Seen>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let response = Response::builder()
        .header("content-type", "application/grpc")
        .body(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .expect("response");
    let mut messages = Messages {
        body: req.into_body(),
        buf: BytesMut::new(),
    };
    if path == "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo" {
        tokio::spawn(reflection(messages, tx, current));
        return response;
    }
    let method = {
        let current = current.lock().expect("lock");
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (service, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        current
            .pool
            .get_service_by_name(service)
            .and_then(|s| s.methods().find(|m| m.name() == name))
    };
    let Some(method) = method else {
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(Frame::trailers(trailers(12, "no such method"))))
                .await;
        });
        return response;
    };
    tokio::spawn(async move {
        let send = |bytes: Vec<u8>| Ok(Frame::data(framed(&bytes)));
        match method.name() {
            "Count" => {
                let request = dynamic(&method, &messages.next().await.unwrap_or_default());
                let get = |f: &str| {
                    request
                        .get_field_by_name(f)
                        .and_then(|v| v.as_i32())
                        .unwrap_or(0)
                };
                let (to, fail_at, pad) = (get("to"), get("fail_at"), get("pad"));
                let pad = "x".repeat(pad as usize);
                for n in 1..=to {
                    if n == fail_at {
                        let _ = tx
                            .send(Ok(Frame::trailers(trailers(9, "counting failed"))))
                            .await;
                        return;
                    }
                    let tick = reply_of(&method, json!({"n": n, "pad": pad}));
                    if tx.send(send(tick)).await.is_err() {
                        break;
                    }
                    seen.counted.fetch_add(1, Ordering::SeqCst);
                }
                if tx.is_closed() {
                    seen.count_cancelled.store(true, Ordering::SeqCst);
                    seen.cancelled.notify_waiters();
                    return;
                }
            }
            "Chunks" => {
                let request = dynamic(&method, &messages.next().await.unwrap_or_default());
                let to = request
                    .get_field_by_name("to")
                    .and_then(|v| v.as_i32())
                    .unwrap_or(0);
                use base64::Engine as _;
                for n in 1..=to {
                    let data =
                        base64::engine::general_purpose::STANDARD.encode(format!("chunk-{n}\n"));
                    let chunk =
                        reply_of(&method, json!({"contentType": "text/plain", "data": data}));
                    if tx.send(send(chunk)).await.is_err() {
                        return;
                    }
                }
            }
            "Sum" => {
                let mut sum = 0;
                while let Some(m) = messages.next().await {
                    sum += dynamic(&method, &m)
                        .get_field_by_name("n")
                        .and_then(|v| v.as_i64())
                        .unwrap_or(0);
                }
                let _ = tx.send(send(reply_of(&method, json!({"n": sum})))).await;
            }
            "Chat" => {
                while let Some(m) = messages.next().await {
                    let n = dynamic(&method, &m)
                        .get_field_by_name("n")
                        .and_then(|v| v.as_i64())
                        .unwrap_or(0);
                    if tx
                        .send(send(reply_of(&method, json!({"n": n * 2}))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            "Download" => {
                let request = dynamic(&method, &messages.next().await.unwrap_or_default());
                let name = request
                    .get_field_by_name("name")
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                use base64::Engine as _;
                let data =
                    base64::engine::general_purpose::STANDARD.encode(format!("name\n{name}\n"));
                let _ = tx
                    .send(send(reply_of(
                        &method,
                        json!({"contentType": "text/csv", "data": data}),
                    )))
                    .await;
            }
            "Upload" => {
                let request = dynamic(&method, &messages.next().await.unwrap_or_default());
                let request = serde_json::to_value(&request).expect("json");
                use base64::Engine as _;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(request["content"]["data"].as_str().unwrap_or_default())
                    .expect("base64");
                let text = format!(
                    "{}:{}",
                    request["content"]["contentType"]
                        .as_str()
                        .unwrap_or_default(),
                    String::from_utf8_lossy(&data)
                );
                let reply = json!({"name": request["name"], "text": text});
                let _ = tx.send(send(reply_of(&method, reply))).await;
            }
            // The unary methods echo their request.
            _ => {
                let request = messages.next().await.unwrap_or_default();
                let _ = tx.send(send(request.to_vec())).await;
            }
        }
        let _ = tx.send(Ok(Frame::trailers(trailers(0, "")))).await;
    });
    response
}

/// Server reflection v1 over the current files: each request answered in turn.
async fn reflection(
    mut messages: Messages,
    tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
    current: Arc<Mutex<Current>>,
) {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{
        ErrorResponse, FileDescriptorResponse, ListServiceResponse, ServerReflectionRequest,
        ServerReflectionResponse, ServiceResponse,
    };
    while let Some(m) = messages.next().await {
        let request = ServerReflectionRequest::decode(m).expect("a reflection request");
        let reply = {
            let current = current.lock().expect("lock");
            let by_name: HashMap<String, &Vec<u8>> = current
                .pool
                .files()
                .map(|f| f.name().to_string())
                .zip(current.files.iter())
                .collect();
            let file = |name: &str| by_name.get(name).map(|b| (*b).clone());
            match request.message_request {
                Some(MessageRequest::ListServices(_)) => {
                    MessageResponse::ListServicesResponse(ListServiceResponse {
                        service: current
                            .pool
                            .services()
                            .map(|s| ServiceResponse {
                                name: s.full_name().to_string(),
                            })
                            .chain([ServiceResponse {
                                name: "grpc.reflection.v1.ServerReflection".into(),
                            }])
                            .collect(),
                    })
                }
                Some(MessageRequest::FileContainingSymbol(symbol)) => {
                    let found = current
                        .pool
                        .get_service_by_name(&symbol)
                        .and_then(|s| file(s.parent_file().name()));
                    match found {
                        Some(bytes) => {
                            MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
                                file_descriptor_proto: vec![bytes],
                            })
                        }
                        None => MessageResponse::ErrorResponse(ErrorResponse {
                            error_code: 5,
                            error_message: format!("{symbol} not found"),
                        }),
                    }
                }
                Some(MessageRequest::FileByFilename(name)) => match file(&name) {
                    Some(bytes) => {
                        MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
                            file_descriptor_proto: vec![bytes],
                        })
                    }
                    None => MessageResponse::ErrorResponse(ErrorResponse {
                        error_code: 5,
                        error_message: format!("{name} not found"),
                    }),
                },
                _ => MessageResponse::ErrorResponse(ErrorResponse {
                    error_code: 12,
                    error_message: "not served".into(),
                }),
            }
        };
        let reply = ServerReflectionResponse {
            message_response: Some(reply),
            ..Default::default()
        };
        if tx
            .send(Ok(Frame::data(framed(&reply.encode_to_vec()))))
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = tx.send(Ok(Frame::trailers(trailers(0, "")))).await;
}

/// The REST client of the tests.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

async fn call(base: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = http().request(method.parse().expect("method"), format!("{base}{path}"));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("response");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

/// `got` has every field `want` has, with the same value (the reply also has the defaults).
fn assert_has(got: &Value, want: &Value, at: &str) {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            for (k, v) in w {
                let inner = g
                    .get(k)
                    .unwrap_or_else(|| panic!("{at}.{k} missing in {got}"));
                assert_has(inner, v, &format!("{at}.{k}"));
            }
        }
        // A Struct's numbers are doubles: 1 comes back as 1.0.
        (Value::Number(g), Value::Number(w)) => assert_eq!(g.as_f64(), w.as_f64(), "at {at}"),
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "at {at}: {got}");
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                assert_has(g, w, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(got, want, "at {at}"),
    }
}

/// The same checks, whatever the lab's descriptors came from.
async fn unary_checks(base: &str) {
    // Every scalar type in the path, and the same as a body.
    let scalars = json!({
        "d": 1.5, "f": 2.5, "i32": -3, "i64": "-4000000000", "u32": 5, "u64": "18000000000000000000",
        "s32": -7, "s64": "-8", "fx32": 9, "fx64": "10", "sfx32": -11, "sfx64": "-12",
        "b": true, "s": "a b/c", "by": "aGk=", "e": "GREEN"
    });
    let (status, got) = call(
        base,
        "GET",
        "/v1/scalars/1.5/2.5/-3/-4000000000/5/18000000000000000000/-7/-8/9/10/-11/-12/true/a%20b%2Fc/aGk=/GREEN",
        None,
    )
    .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got, scalars);
    let (status, got) = call(base, "POST", "/v1/scalars", Some(scalars.clone())).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got, scalars);

    // Maps, a oneof, enums, nested messages and every well-known type, through a custom verb.
    let everything = json!({
        "nested": {"label": "top", "counts": ["1", "-2"], "child": {"label": "leaf"}},
        "totals": {"a": "1", "b": "-9000000000"},
        "byId": {"7": {"label": "seven"}},
        "node": {"label": "chosen"},
        "colour": "RED",
        "colours": ["GREEN", "RED"],
        "any": {"@type": "type.googleapis.com/lab.v1.Tick", "n": "5", "pad": ""},
        "duration": "1.500s",
        "empty": {},
        "mask": "nested.label,totals",
        "struct": {"k": [1, "two", null, {"x": false}]},
        "value": "text",
        "list": [1, "a"],
        "time": "2026-12-01T10:00:00.123456789Z",
        "flag": false,
        "big": "9007199254740993",
        "note": "",
        "blob": "AAE=",
        "ratio": 0.25,
        "small": 7,
        "scalars": {"e": "RED", "by": "AP8="}
    });
    let (status, got) = call(base, "POST", "/v1/things/t1:echo", Some(everything.clone())).await;
    assert_eq!(status, 200, "{got}");
    assert_has(&got, &everything, "");
    assert_eq!(got["name"], "things/t1");
    assert!(got.get("text").is_none(), "one member of the oneof: {got}");

    // `body: "nested"` and `response_body: "nested"`.
    let (status, got) = call(
        base,
        "PATCH",
        "/v1/things/t2",
        Some(json!({"label": "patched", "counts": [3]})),
    )
    .await;
    assert_eq!(status, 200, "{got}");
    assert_has(&got, &json!({"label": "patched", "counts": ["3"]}), "");
    assert!(got.get("name").is_none(), "only the nested field: {got}");

    // A method with no rule, auto-mapped; its errors are google.rpc.Status bodies.
    let (status, got) = call(
        base,
        "POST",
        "/lab.v1.Lab/Unbound",
        Some(json!({"name": "u", "text": "hi"})),
    )
    .await;
    assert_eq!(status, 200, "{got}");
    assert_has(&got, &json!({"name": "u", "text": "hi"}), "");
    let (status, got) = call(
        base,
        "POST",
        "/lab.v1.Lab/Unbound",
        Some(json!({"nmae": 1})),
    )
    .await;
    assert_eq!(status, 400, "{got}");
    assert_eq!(got["code"], 3, "{got}");
    assert!(
        got["message"].as_str().expect("message").contains("nmae"),
        "{got}"
    );

    // Strict everywhere: a bad value names its field.
    for (method, path, body, says) in [
        (
            "GET",
            "/v1/scalars/x/2.5/-3/-4/5/6/-7/-8/9/10/-11/-12/true/s/aGk=/GREEN",
            None,
            "d",
        ),
        ("POST", "/v1/scalars", Some(json!({"u32": -1})), "u32"),
        (
            "POST",
            "/v1/things/t1:echo",
            Some(json!({"colour": "BLUE"})),
            "BLUE",
        ),
        (
            "POST",
            "/v1/things/t1:echo",
            Some(json!({"duration": "soon"})),
            "duration",
        ),
        (
            "POST",
            "/v1/things/t1:echo",
            Some(json!({"any": {"@type": "type.googleapis.com/no.Such"}})),
            "no.Such",
        ),
    ] {
        let (status, got) = call(base, method, path, body).await;
        assert_eq!(status, 400, "{path}: {got}");
        assert!(
            got["message"].as_str().expect("message").contains(says),
            "{path}: {got}"
        );
    }

    // HttpBody: a raw reply with its own content type, and a raw request body.
    let resp = http()
        .get(format!("{base}/v1/things/t3/content"))
        .send()
        .await
        .expect("download");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/csv");
    assert_eq!(resp.text().await.expect("text"), "name\nthings/t3\n");
    let resp = http()
        .put(format!("{base}/v1/things/t4/content"))
        .header("content-type", "image/png")
        .body(&b"\x89PNG"[..])
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), 200);
    let got: Value = resp.json().await.expect("json");
    assert_eq!(got["name"], "things/t4");
    assert_eq!(got["text"], "image/png:\u{fffd}PNG");
}

/// The lines of an NDJSON reply.
fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

async fn streaming_checks(base: &str) {
    // Server streaming, in grpc-gateway's framing.
    let resp = http()
        .get(format!("{base}/v1/count/3"))
        .send()
        .await
        .expect("count");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("text");
    assert_eq!(
        lines(&text),
        vec![
            json!({"result": {"n": "1", "pad": ""}}),
            json!({"result": {"n": "2", "pad": ""}}),
            json!({"result": {"n": "3", "pad": ""}}),
        ]
    );
    // A failure after the first message is a last error line; before it, the status too.
    let (status, got) = call(base, "GET", "/v1/count/5?failAt=3", None).await;
    assert_eq!(status, 200);
    let got = lines(got.as_str().expect("lines"));
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2]["error"]["code"], 9, "{got:?}");
    assert_eq!(got[2]["error"]["message"], "counting failed");
    let resp = http()
        .get(format!("{base}/v1/count/5?failAt=1"))
        .send()
        .await
        .expect("count");
    assert_eq!(resp.status(), 400, "FAILED_PRECONDITION");
    assert_eq!(
        lines(&resp.text().await.expect("text"))[0]["error"]["code"],
        9
    );
    // Server-Sent Events when asked for.
    let resp = http()
        .get(format!("{base}/v1/count/2"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("count");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(
        resp.text().await.expect("text"),
        "data: {\"n\":\"1\",\"pad\":\"\"}\n\ndata: {\"n\":\"2\",\"pad\":\"\"}\n\n"
    );

    // A stream of HttpBody: the raw bytes, with the first message's content type.
    let resp = http()
        .get(format!("{base}/v1/chunks/3"))
        .send()
        .await
        .expect("chunks");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(
        resp.text().await.expect("text"),
        "chunk-1\nchunk-2\nchunk-3\n"
    );

    // Client streaming: a run of JSON values, not an array.
    let resp = http()
        .post(format!("{base}/v1/sum"))
        .body("{\"n\": 1}\n{\"n\": \"2\"} {\"n\": 39}")
        .send()
        .await
        .expect("sum");
    // Its one reply is a plain JSON message, as a unary call's.
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"n": "42", "pad": ""})
    );
    // A bad message cancels the call: 400, naming it.
    let resp = http()
        .post(format!("{base}/v1/sum"))
        .body("{\"n\": 1}\n{\"m\": 2}")
        .send()
        .await
        .expect("sum");
    assert_eq!(resp.status(), 400);
    let got: Value = resp.json().await.expect("json");
    assert_eq!(got["code"], 3, "{got}");
    assert!(
        got["message"].as_str().expect("message").contains("\"m\""),
        "{got}"
    );

    // Bidi: each message answered as it comes.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(1);
    // Over HTTP/2, so that both directions are open at once.
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let resp = tokio::spawn(
        h2.post(format!("{base}/v1/chat"))
            .body(reqwest::Body::wrap_stream(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .send(),
    );
    tx.send(Ok(Bytes::from_static(b"{\"n\": 1}\n")))
        .await
        .expect("send");
    let mut resp = resp.await.expect("task").expect("chat");
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.expect("chunk").expect("a line");
    assert_eq!(
        lines(std::str::from_utf8(&first).expect("utf8")),
        vec![json!({"result": {"n": "2", "pad": ""}})]
    );
    // The first answer came before the second message was sent.
    tx.send(Ok(Bytes::from_static(b"{\"n\": 21}\n")))
        .await
        .expect("send");
    drop(tx);
    let mut rest = Vec::new();
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(
        lines(std::str::from_utf8(&rest).expect("utf8")),
        vec![json!({"result": {"n": "42", "pad": ""}})]
    );
}

/// The lab, and a gateway in front of it that knows it from its descriptor set.
async fn lab_from_its_set(dir: &std::path::Path) -> (Lab, common::GatewayOnly) {
    let (set, pool) = lab_set(dir, "");
    let lab = Lab::start(&set, pool).await;
    let path = dir.join("lab.binpb");
    std::fs::write(&path, &set).expect("write set");
    let gw = common::gateway_only(
        &lab.url,
        config(Sources {
            descriptor_sets: vec![path],
            ..Sources::default()
        }),
    )
    .await;
    (lab, gw)
}

/// A gateway in front of the backend at `url` that asks it for its services, started.
async fn reflecting(url: &str) -> common::GatewayOnly {
    let gw = Arc::new(
        Gateway::new(
            url,
            config(Sources {
                reflect: true,
                ..Sources::default()
            }),
        )
        .expect("gateway"),
    );
    gw.reflect_at_start()
        .await
        .expect("the backend answers reflection");
    common::serve_gateway(gw).await
}

fn config(sources: Sources) -> GatewayConfig {
    GatewayConfig {
        sources,
        ..GatewayConfig::default()
    }
}

#[tokio::test]
async fn a_service_from_its_descriptor_set_is_served_whole() {
    let dir = tempfile::tempdir().expect("dir");
    let (_lab, gw) = lab_from_its_set(dir.path()).await;
    let base = format!("http://{}", gw.addr);
    unary_checks(&base).await;
    streaming_checks(&base).await;
}

#[tokio::test]
async fn an_http_config_adds_and_replaces_rules() {
    let dir = tempfile::tempdir().expect("dir");
    let (set, pool) = lab_set(dir.path(), "");
    let lab = Lab::start(&set, pool).await;
    let path = dir.path().join("lab.binpb");
    std::fs::write(&path, &set).expect("write set");
    let rules = dir.path().join("api.yaml");
    std::fs::write(
        &rules,
        r#"
type: google.api.Service
config_version: 3
http:
  rules:
  - selector: lab.v1.Lab.Unbound
    get: /v2/unbound/{name}
  - selector: lab.v1.Lab.Echo
    post: /v2/echo
    body: "*"
    additional_bindings:
    - put: /v2/echo/{name}
      body: nested
"#,
    )
    .expect("write rules");
    let gw = common::gateway_only(
        &lab.url,
        config(Sources {
            descriptor_sets: vec![path],
            http_config: Some(rules),
            ..Sources::default()
        }),
    )
    .await;
    let base = format!("http://{}", gw.addr);
    // A method with no annotation gets the configured rule (and so is not auto-mapped).
    let (status, got) = call(&base, "GET", "/v2/unbound/u1?text=hi", None).await;
    assert_eq!(status, 200, "{got}");
    assert_has(&got, &json!({"name": "u1", "text": "hi"}), "");
    let (_, doc) = call(&base, "GET", "/openapi.json", None).await;
    let paths = doc["paths"].as_object().expect("paths");
    assert!(
        paths.contains_key("/v2/unbound/{name}"),
        "{:?}",
        paths.keys()
    );
    assert!(
        !paths.contains_key("/lab.v1.Lab/Unbound"),
        "{:?}",
        paths.keys()
    );
    // A configured rule replaces the annotation, additional bindings and all.
    let (status, got) = call(&base, "POST", "/v2/echo", Some(json!({"name": "e"}))).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["name"], "e");
    let (status, got) = call(&base, "PUT", "/v2/echo/e2", Some(json!({"label": "l"}))).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["nested"]["label"], "l");
    // (`things/t1:echo` still matches Patch's `{name=things/*}`, on PATCH only.)
    assert_eq!(
        call(&base, "POST", "/v1/things/t1:echo", Some(json!({})))
            .await
            .0,
        405
    );
    // The other annotations stand.
    assert_eq!(call(&base, "GET", "/v1/count/1", None).await.0, 200);

    // A config that does not read fails the start, naming the file.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "http:\n  rules:\n  - get: /x\n").expect("write");
    let e = Gateway::new(
        &lab.url,
        config(Sources {
            http_config: Some(bad),
            ..Sources::default()
        }),
    )
    .err()
    .expect("a rule with no selector");
    assert!(e.to_string().contains("bad.yaml"), "{e}");
    assert!(e.to_string().contains("selector"), "{e}");
}

#[tokio::test]
async fn a_service_found_over_reflection_is_served_the_same() {
    let dir = tempfile::tempdir().expect("dir");
    let (set, pool) = lab_set(dir.path(), "");
    let lab = Lab::start(&set, pool).await;
    let served = reflecting(&lab.url).await;
    let base = format!("http://{}", served.addr);
    unary_checks(&base).await;
    streaming_checks(&base).await;
    // The OpenAPI document covers the reflected service.
    let (_, doc) = call(&base, "GET", "/openapi.json", None).await;
    let count = &doc["paths"]["/v1/count/{to}"]["get"]["responses"]["200"]["content"];
    assert!(
        count["application/json"]["schema"]["properties"]["result"].is_object(),
        "a stream's lines: {count}"
    );
    assert!(count["text/event-stream"].is_object(), "{count}");
    let download = &doc["paths"]["/v1/{name}/content"]["get"]["responses"]["200"];
    assert_eq!(
        download["content"]["*/*"]["schema"]["format"], "binary",
        "{download}"
    );
}

#[tokio::test]
async fn a_backend_that_does_not_answer_reflection_fails_the_start_naming_it() {
    let dead = common::dead_address().await;
    let gw = Gateway::new(
        &format!("http://{dead}"),
        config(Sources {
            reflect: true,
            ..Sources::default()
        }),
    )
    .expect("gateway");
    let e = gw.reflect_at_start().await.expect_err("nothing answers");
    assert!(e.to_string().contains(&dead.to_string()), "{e}");
}

#[tokio::test]
async fn a_method_gone_from_the_backend_reloads_the_routes() {
    let dir = tempfile::tempdir().expect("dir");
    let (old_set, old_pool) = lab_set(
        dir.path(),
        r#"rpc Old(Tick) returns (Tick) { option (google.api.http) = { get: "/v1/old/{n}" }; }"#,
    );
    let lab = Lab::start(&old_set, old_pool).await;
    let served = reflecting(&lab.url).await;
    let base = format!("http://{}", served.addr);
    assert_eq!(call(&base, "GET", "/v1/old/1", None).await.0, 200);
    assert_eq!(call(&base, "GET", "/v1/fresh/1", None).await.0, 404);

    // The backend restarts with Fresh in place of Old.
    let (new_set, new_pool) = lab_set(
        dir.path(),
        r#"rpc Fresh(Tick) returns (Tick) { option (google.api.http) = { get: "/v1/fresh/{n}" }; }"#,
    );
    lab.become_(&new_set, new_pool);
    // The table still routes Old; the backend answers UNIMPLEMENTED, and that reloads it.
    let (status, got) = call(&base, "GET", "/v1/old/1", None).await;
    assert_eq!(status, 501, "{got}");
    let routed = async {
        loop {
            if call(&base, "GET", "/v1/fresh/1", None).await.0 == 200 {
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), routed)
        .await
        .expect("Fresh is routed after the reload");
    assert_eq!(call(&base, "GET", "/v1/old/1", None).await.0, 404);
}

#[tokio::test]
async fn several_backends_each_serve_their_services() {
    let dir = tempfile::tempdir().expect("dir");
    let (set, pool) = lab_set(dir.path(), "");
    let lab = Lab::start(&set, pool).await;
    let ours = common::TestServer::start().await;
    let path = dir.path().join("lab.binpb");
    std::fs::write(&path, &set).expect("write set");
    let gw = common::gateway_over(
        &[
            format!("lab.v1={}", lab.url),
            format!("http://{}", ours.grpc_addr()),
        ],
        config(Sources {
            descriptor_sets: vec![path],
            ..Sources::default()
        }),
    )
    .await;
    let base = format!("http://{}", gw.addr);
    let (status, got) = call(
        &base,
        "POST",
        "/lab.v1.Lab/Unbound",
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(status, 200, "{got}");
    let (status, got) = call(&base, "GET", "/compute/v1/images?folderId=f1", None).await;
    assert_eq!(status, 200, "{got}");
    assert!(got.get("images").is_some(), "{got}");
    ours.stop().await;
}

#[tokio::test]
async fn a_slow_reader_holds_the_stream_back_and_a_client_that_leaves_cancels_it() {
    let dir = tempfile::tempdir().expect("dir");
    let (lab, gw) = lab_from_its_set(dir.path()).await;
    // A million 1 KiB messages (a gigabyte), of which the client reads one chunk.
    let mut resp = http()
        .get(format!("http://{}/v1/count/1000000?pad=1024", gw.addr))
        .send()
        .await
        .expect("count");
    assert_eq!(resp.status(), 200);
    resp.chunk().await.expect("chunk").expect("a first chunk");
    // The backend runs ahead only as far as the windows and buffers on the way allow.
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = lab.seen.counted.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    eprintln!("the backend ran {last} messages ahead of the reader");
    assert!(
        last < 20_000,
        "the backend sent {last} messages to a client that read one chunk"
    );
    // The client goes away: the backend's stream is cancelled.
    let cancelled = lab.seen.cancelled.notified();
    drop(resp);
    if !lab.seen.count_cancelled.load(Ordering::SeqCst) {
        tokio::time::timeout(Duration::from_secs(10), cancelled)
            .await
            .expect("the backend stream is cancelled");
    }
}

/// `serve` as a user runs it, with `--descriptor-set FILE`; its log lines, as they come.
struct Served {
    child: std::process::Child,
    http: String,
    log: std::sync::mpsc::Receiver<String>,
}

impl Served {
    fn start(set: &std::path::Path, data: &std::path::Path) -> Self {
        use std::io::BufRead as _;
        let (mut child, ready) = common::serve_process(
            &[
                "--descriptor-set".as_ref(),
                set.as_os_str(),
                "--data-dir".as_ref(),
                data.as_os_str(),
            ],
            std::process::Stdio::piped(),
        );
        let (tx, log) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            http: format!("http://{}", ready["http"].as_str().expect("http")),
            log,
        }
    }

    /// Sends SIGHUP and waits for the log line that says what the reload did.
    fn hangup(&self, expect: &str) -> String {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        loop {
            let line = self
                .log
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no log line saying {expect:?}"));
            if line.contains(expect) {
                return line;
            }
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sighup_reloads_the_descriptor_sets_and_a_bad_set_keeps_the_routes() {
    let dir = tempfile::tempdir().expect("dir");
    let old =
        r#"rpc Old(Tick) returns (Tick) { option (google.api.http) = { get: "/v1/old/{n}" }; }"#;
    let fresh = r#"rpc Fresh(Tick) returns (Tick) { option (google.api.http) = { get: "/v1/fresh/{n}" }; }"#;
    let path = dir.path().join("lab.binpb");
    std::fs::write(&path, lab_set(dir.path(), old).0).expect("write set");
    let served = Served::start(&path, &dir.path().join("data"));
    // Routed (to our own backend, which does not implement the lab: 501), or not routed (404).
    let base = served.http.clone();
    assert_eq!(call(&base, "GET", "/v1/old/1", None).await.0, 501);
    assert_eq!(call(&base, "GET", "/v1/fresh/1", None).await.0, 404);

    std::fs::write(&path, lab_set(dir.path(), fresh).0).expect("write set");
    served.hangup("the route table was reloaded");
    assert_eq!(call(&base, "GET", "/v1/fresh/1", None).await.0, 501);
    assert_eq!(call(&base, "GET", "/v1/old/1", None).await.0, 404);

    // A set that does not read: logged, and the routes stay as they were.
    std::fs::write(&path, b"not a descriptor set").expect("write");
    let line = served.hangup("the routes served are kept");
    assert!(line.contains("lab.binpb"), "{line}");
    assert_eq!(call(&base, "GET", "/v1/fresh/1", None).await.0, 501);
    assert_eq!(
        call(&base, "GET", "/compute/v1/images?folderId=f", None)
            .await
            .0,
        200
    );
}
