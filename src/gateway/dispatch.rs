//! A route's call ([`Rpc`]): the typed call of its method, found once at startup by the
//! method's full name in the list build.rs generates from `proto/` (the only per-RPC list in the
//! crate), or, for a method of a service loaded at run time (`--descriptor-set`), the dynamic
//! call: the same steps with `prost_reflect::DynamicMessage` in place of generated types.
//! Each call does the same thing: deserialize the canonical JSON once, make the unary call over
//! the gateway's connection to the backend, render the reply.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstCodec;

use http::uri::PathAndQuery;
use prost_reflect::{DynamicMessage, MethodDescriptor};

use super::client::BackendClient;
use super::dynamic_json::DynamicJson;
use super::error::GatewayError;
use super::media::{Format, proto_reply};
use super::response::render;
use crate::net::UpstreamError;

/// The method a route calls, shared by all of its routes: the method, its gRPC path and its
/// call, found once at startup.
pub struct Rpc {
    method: MethodDescriptor,
    /// `/package.Service/Method`.
    path: PathAndQuery,
    /// The same, as a metric label value.
    label: metrics::SharedString,
    /// The compiled-in method's typed call; `None` for a method known only from descriptors.
    typed: Option<&'static TypedRpc>,
}

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Rpc").field(&self.path()).finish()
    }
}

impl Rpc {
    /// The call of `method` (transcoded dynamically even when compiled in, with `dynamic`);
    /// `Err` says why it has none.
    pub(crate) fn new(method: &MethodDescriptor, dynamic: bool) -> Result<Self, String> {
        let streaming = method.is_client_streaming() || method.is_server_streaming();
        // Streaming calls are transcoded dynamically (see `stream.rs`).
        let typed = typed(method.full_name()).filter(|_| !streaming && !dynamic);
        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        Ok(Self {
            method: method.clone(),
            path: PathAndQuery::try_from(path.as_str()).map_err(|e| e.to_string())?,
            label: metrics::SharedString::from_owned(path),
            typed,
        })
    }

    /// Whether its call is compiled in (else it is transcoded dynamically).
    pub fn is_typed(&self) -> bool {
        self.typed.is_some()
    }

    /// Whether either side of the call is a stream.
    pub fn is_streaming(&self) -> bool {
        self.method.is_client_streaming() || self.method.is_server_streaming()
    }

    /// `/package.Service/Method`, as the call's path.
    pub(crate) fn grpc_path(&self) -> &PathAndQuery {
        &self.path
    }

    /// The method.
    pub fn method(&self) -> &MethodDescriptor {
        &self.method
    }

    /// `/package.Service/Method`.
    pub fn path(&self) -> &str {
        self.path.path()
    }

    /// `/package.Service/Method`, as a metric label value.
    pub(crate) fn label(&self) -> &metrics::SharedString {
        &self.label
    }

    /// Makes the call: deserializes the request, sends it over `client`, renders the reply.
    pub(crate) fn call<'a>(
        &'a self,
        client: &'a BackendClient,
        request: Transcoded,
    ) -> Calling<'a> {
        match self.typed {
            Some(typed) => (typed.call)(client, self, request),
            None => dynamic_call(client, self, request),
        }
    }

    /// Deserializes the canonical JSON of the request into the typed request message and drops
    /// it: what a call does before it goes out, for tests and fuzzing without a backend.
    pub fn check(&self, json: serde_json::Value) -> Result<(), GatewayError> {
        match self.typed {
            Some(typed) => (typed.check)(self, json),
            None => dynamic_request(self, json).map(drop),
        }
    }
}

/// A request ready to send.
pub(crate) struct Transcoded {
    /// The canonical JSON of the request message.
    pub(crate) json: serde_json::Value,
    /// Metadata forwarded from the HTTP headers.
    pub(crate) metadata: tonic::metadata::MetadataMap,
    /// The call's deadline.
    pub(crate) timeout: std::time::Duration,
    /// The format of the reply.
    pub(crate) output: Format,
    /// The top-level response field to send as the body, if the rule names one.
    pub(crate) response_body: Option<prost_reflect::FieldDescriptor>,
}

/// A reply's body: whole, or a stream of rendered messages (see `stream.rs`).
pub(crate) enum Payload {
    /// The rendered reply.
    Whole(Vec<u8>),
    /// The rendered messages of a stream, as they come.
    Stream(axum::body::Body),
}

/// A reply: its rendered body, and the metadata it came with.
pub(crate) struct Reply {
    /// The body.
    pub(crate) body: Payload,
    /// Its content type when the reply says (a `google.api.HttpBody`, a stream), else the
    /// format's.
    pub(crate) content_type: Option<http::HeaderValue>,
    /// The reply's header metadata.
    pub(crate) headers: tonic::metadata::MetadataMap,
    /// Its trailers, but for the status.
    pub(crate) trailers: Option<tonic::metadata::MetadataMap>,
    /// The body's format.
    pub(crate) format: Format,
}

/// A call in progress: the reply, or why there is none.
pub(crate) type Calling<'a> =
    Pin<Box<dyn Future<Output = Result<Reply, GatewayError>> + Send + 'a>>;

/// The typed call of one method, and its request check.
pub(crate) struct TypedRpc {
    /// Deserializes, calls and renders.
    pub(crate) call: for<'a> fn(&'a BackendClient, &'a Rpc, Transcoded) -> Calling<'a>,
    /// Deserializes only.
    pub(crate) check: fn(&Rpc, serde_json::Value) -> Result<(), GatewayError>,
}

include!(concat!(env!("OUT_DIR"), "/typed_rpcs.rs"));

/// The typed call of a compiled-in method, by full name (`package.Service.Method`).
fn typed(full_name: &str) -> Option<&'static TypedRpc> {
    TYPED_RPCS
        .iter()
        .find(|(name, _)| *name == full_name)
        .map(|(_, typed)| typed)
}

/// The typed request from its canonical JSON (pbjson); a failure is the client's 400.
fn parse<Req: DeserializeOwned>(rpc: &Rpc, json: serde_json::Value) -> Result<Req, GatewayError> {
    serde_json::from_value(json).map_err(|e| invalid_request(rpc, e))
}

/// A request message that does not deserialize: the client's 400, naming the message type.
pub(super) fn invalid_request(rpc: &Rpc, e: impl std::fmt::Display) -> GatewayError {
    GatewayError::bad_request(format!(
        "invalid request for {}: {e}",
        rpc.method().input().full_name()
    ))
}

fn check<Req: DeserializeOwned>(rpc: &Rpc, json: serde_json::Value) -> Result<(), GatewayError> {
    parse::<Req>(rpc, json).map(drop)
}

fn call<'a, Req, Resp>(client: &'a BackendClient, rpc: &'a Rpc, request: Transcoded) -> Calling<'a>
where
    Req: prost::Message + DeserializeOwned + Send + Sync + 'static,
    Resp: prost::Message + Serialize + Default + Send + Sync + 'static,
{
    Box::pin(async move {
        let message: Req = parse(rpc, request.json)?;
        let (output, response_body) = (request.output, request.response_body.clone());
        let (headers, reply, trailers) = exchange(
            client,
            rpc,
            message,
            request.metadata,
            request.timeout,
            ReplyCodec(ProstCodec::<Req, Resp>::default()),
        )
        .await?;
        let body = match output {
            Format::Json => render(
                &reply,
                &rpc.method().output(),
                response_body.as_ref(),
                client.render_options(),
            )?,
            Format::Proto => proto_reply(&reply, &rpc.method().output(), response_body.as_ref())?,
        };
        Ok(Reply {
            body: Payload::Whole(body),
            content_type: None,
            headers,
            trailers,
            format: output,
        })
    })
}

/// The unary call itself, whatever the message types: the reply's header metadata, its
/// message and its trailers.
async fn exchange<Req, Resp, C>(
    client: &BackendClient,
    rpc: &Rpc,
    message: Req,
    metadata: tonic::metadata::MetadataMap,
    timeout: std::time::Duration,
    codec: C,
) -> Result<
    (
        tonic::metadata::MetadataMap,
        Resp,
        Option<tonic::metadata::MetadataMap>,
    ),
    GatewayError,
>
where
    Req: Send + Sync + 'static,
    Resp: Send + Sync + 'static,
    C: Codec<Encode = Req, Decode = Resp> + Send + 'static,
{
    let mut req = tonic::Request::new(message);
    *req.metadata_mut() = metadata;
    // The deadline travels as `grpc-timeout`; the connection holds the call to it too.
    req.set_timeout(timeout);
    let mut grpc = client.grpc();
    let started = std::time::Instant::now();
    // A unary call, read as a stream of one message so that the reply's header metadata and
    // its trailers stay apart (tonic's `unary` merges them).
    let exchange = async {
        let (headers, mut stream, _) = grpc
            .server_streaming(req, rpc.path.clone(), codec)
            .await?
            .into_parts();
        let Some(message) = stream.message().await? else {
            return Err(UpstreamError::undecodable(tonic::Status::internal(
                "the backend sent no reply message",
            )));
        };
        let trailers = stream.trailers().await?;
        Ok((headers, message, trailers))
    };
    let exchanged = exchange.await;
    metrics::histogram!(crate::telemetry::BACKEND_DURATION, "grpc_method" => rpc.label().clone())
        .record(started.elapsed().as_secs_f64());
    exchanged.map_err(GatewayError::from_call)
}

/// The request message of a method known only from descriptors, from its canonical JSON.
pub(super) fn dynamic_request(
    rpc: &Rpc,
    json: serde_json::Value,
) -> Result<DynamicMessage, GatewayError> {
    DynamicMessage::deserialize(rpc.method().input(), json).map_err(|e| invalid_request(rpc, e))
}

fn dynamic_call<'a>(client: &'a BackendClient, rpc: &'a Rpc, request: Transcoded) -> Calling<'a> {
    Box::pin(async move {
        let message = dynamic_request(rpc, request.json)?;
        let output = rpc.method().output();
        let (headers, reply, trailers) = exchange(
            client,
            rpc,
            message,
            request.metadata,
            request.timeout,
            DynamicCodec(output.clone()),
        )
        .await?;
        let response_body = request.response_body.as_ref();
        if response_body.is_none()
            && let Some((content_type, data)) = super::stream::http_body(&reply)
        {
            return Ok(Reply {
                body: Payload::Whole(data),
                content_type: Some(content_type),
                headers,
                trailers,
                format: request.output,
            });
        }
        let body = match request.output {
            Format::Json => render(
                &DynamicJson(&reply),
                &output,
                response_body,
                client.render_options(),
            )?,
            Format::Proto => proto_reply(&reply, &output, response_body)?,
        };
        Ok(Reply {
            body: Payload::Whole(body),
            content_type: None,
            headers,
            trailers,
            format: request.output,
        })
    })
}

/// The codec of a method known only from descriptors: requests are encoded as any message
/// is; replies are decoded by the output type's descriptor, and one that does not decode is
/// the backend's fault ([`UpstreamError::Undecodable`]).
pub(super) struct DynamicCodec(pub(super) prost_reflect::MessageDescriptor);

pub(super) struct DynamicEncoder;

impl tonic::codec::Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: DynamicMessage,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        prost::Message::encode(&item, dst)
            .map_err(|e| tonic::Status::internal(format!("encoding the request: {e}")))
    }
}

pub(super) struct DynamicDecoder(prost_reflect::MessageDescriptor);

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, tonic::Status> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| UpstreamError::undecodable(tonic::Status::internal(e.to_string())))
    }
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;
    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }
    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder(self.0.clone())
    }
}

/// Prost's codec, with a reply that does not decode reported as the backend's fault
/// ([`UpstreamError::Undecodable`]) rather than as a status the backend sent.
struct ReplyCodec<Req, Resp>(ProstCodec<Req, Resp>);

struct ReplyDecoder<D>(D);

impl<D: Decoder<Error = tonic::Status>> Decoder for ReplyDecoder<D> {
    type Item = D::Item;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D::Item>, tonic::Status> {
        self.0.decode(src).map_err(UpstreamError::undecodable)
    }
    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

impl<Req, Resp> Codec for ReplyCodec<Req, Resp>
where
    Req: prost::Message + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    type Encode = Req;
    type Decode = Resp;
    type Encoder = <ProstCodec<Req, Resp> as Codec>::Encoder;
    type Decoder = ReplyDecoder<<ProstCodec<Req, Resp> as Codec>::Decoder>;
    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }
    fn decoder(&mut self) -> Self::Decoder {
        ReplyDecoder(self.0.decoder())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_of_the_embedded_services_has_a_typed_call() {
        let pool = crate::pb::descriptor_pool();
        let mut methods = 0;
        for service in pool.services() {
            for method in service.methods() {
                assert!(
                    typed(method.full_name()).is_some(),
                    "{}",
                    method.full_name()
                );
                methods += 1;
            }
        }
        assert_eq!(methods, TYPED_RPCS.len());
        assert!(typed("yandex.cloud.compute.v1.ImageService.Nope").is_none());
    }
}

#[cfg(test)]
mod parity {
    use super::*;

    /// The reply of every golden case (every RPC of the API), rendered by the typed path and by
    /// the dynamic one: the same bytes.
    #[test]
    fn typed_and_dynamic_replies_render_alike() {
        let fixtures: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/transcoding.json"))
                .expect("fixtures");
        let pool = crate::pb::descriptor_pool();
        let mut differ = Vec::new();
        for case in fixtures.as_array().expect("cases") {
            let any: crate::json::Any =
                serde_json::from_value(case["backend_reply"].clone()).expect("reply");
            let desc = pool
                .get_message_by_name(any.type_name())
                .expect("reply type");
            let typed = String::from_utf8(serde_json::to_vec(&any).expect("typed")).expect("utf8");
            // The typed bytes after `{"@type":"…",`, as `{…}`.
            let typed = format!(
                "{{{}",
                &typed[typed.find(',').map_or(typed.len() - 1, |i| i + 1)..]
            );
            let decoded =
                DynamicMessage::decode(desc.clone(), any.value.as_slice()).expect("decode");
            let dynamic =
                String::from_utf8(serde_json::to_vec(&DynamicJson(&decoded)).expect("bytes"))
                    .expect("utf8");
            if typed != dynamic {
                differ.push(format!(
                    "{}:\n typed   {typed}\n dynamic {dynamic}",
                    case["name"]
                ));
            }
        }
        assert!(differ.is_empty(), "{}", differ.join("\n"));
    }
}
