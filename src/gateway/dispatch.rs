//! A route's call ([`Rpc`]): the typed call of its method, found once at startup by the
//! method's full name in the list build.rs generates from `proto/` (the only per-RPC list in the
//! crate).
//! Each typed call does the same generic thing: deserialize the canonical JSON once (pbjson),
//! make the unary call over the gateway's connection to the backend, render the reply.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstCodec;

use http::uri::PathAndQuery;
use prost_reflect::MethodDescriptor;

use super::client::BackendClient;
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
    typed: &'static TypedRpc,
}

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Rpc").field(&self.path()).finish()
    }
}

impl Rpc {
    /// The call of `method`; `Err` says why it has none.
    pub(crate) fn new(method: &MethodDescriptor) -> Result<Self, String> {
        if method.is_client_streaming() || method.is_server_streaming() {
            return Err("streaming methods have no HTTP binding here".into());
        }
        let typed = typed(method.full_name())
            .ok_or_else(|| "not a service compiled into this binary".to_string())?;
        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        Ok(Self {
            method: method.clone(),
            path: PathAndQuery::try_from(path.as_str()).map_err(|e| e.to_string())?,
            label: metrics::SharedString::from_owned(path),
            typed,
        })
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
        (self.typed.call)(client, self, request)
    }

    /// Deserializes the canonical JSON of the request into the typed request message and drops
    /// it: what a call does before it goes out, for tests and fuzzing without a backend.
    pub fn check(&self, json: serde_json::Value) -> Result<(), GatewayError> {
        (self.typed.check)(self, json)
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

/// A reply: its rendered JSON, and the metadata it came with.
pub(crate) struct Reply {
    /// The JSON body.
    pub(crate) body: Vec<u8>,
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
    serde_json::from_value(json).map_err(|e| {
        GatewayError::bad_request(format!(
            "invalid request for {}: {e}",
            rpc.method().input().full_name()
        ))
    })
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
        let mut req = tonic::Request::new(message);
        *req.metadata_mut() = request.metadata;
        // The deadline travels as `grpc-timeout`; the connection holds the call to it too.
        req.set_timeout(request.timeout);
        let mut grpc = client.grpc();
        let started = std::time::Instant::now();
        // A unary call, read as a stream of one message so that the reply's header metadata
        // and its trailers stay apart (tonic's `unary` merges them).
        let exchange = async {
            let (headers, mut stream, _) = grpc
                .server_streaming::<Req, Resp, _>(
                    req,
                    rpc.path.clone(),
                    ReplyCodec(ProstCodec::default()),
                )
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
        let (headers, message, trailers) = exchanged.map_err(GatewayError::from_call)?;
        let body = match request.output {
            Format::Json => render(
                &message,
                &rpc.method().output(),
                request.response_body.as_ref(),
                client.render_options(),
            )?,
            Format::Proto => proto_reply(
                &message,
                &rpc.method().output(),
                request.response_body.as_ref(),
            )?,
        };
        Ok(Reply {
            body,
            headers,
            trailers,
            format: request.output,
        })
    })
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
