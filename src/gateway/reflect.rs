//! The descriptors a backend serves, asked for over gRPC server reflection
//! (`grpc.reflection.v1`, or `v1alpha` when the backend answers UNIMPLEMENTED to v1; both
//! speak the same messages): the list of its services, the file that defines each, then every
//! import not known yet, file by file, on one stream. The files come back encoded, as the
//! server holds them, so that their options (`google.api.http`) stay when the server keeps
//! them (grpc-go's reflection does; servers that rebuild their files from structs, as
//! tonic-reflection does, drop them, and their methods are then reachable only auto-mapped).
//!
//! Bounded: the whole exchange within [`TIMEOUT`], at most [`MAX_FILES`] files, each reply
//! within the connection's reply limit.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use http::uri::PathAndQuery;
use tonic_prost::ProstCodec;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

use super::client::BackendClient;
use super::sources::RawFile;

/// Longest one backend's reflection may take.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);
/// Most files taken from one backend.
const MAX_FILES: usize = 10_000;

const V1: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
const V1ALPHA: &str = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

/// The encoded files of the services `client`'s backend lists, those `wanted` (by full name),
/// and of their imports but those `known` (by file name) already.
pub(crate) async fn files(
    client: &BackendClient,
    wanted: &(dyn Fn(&str) -> bool + Sync),
    known: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Vec<Vec<u8>>, tonic::Status> {
    let exchange = async {
        match session(client, V1, wanted, known).await {
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                session(client, V1ALPHA, wanted, known).await
            }
            done => done,
        }
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(format!(
                "reflection did not finish within {TIMEOUT:?}"
            )))
        })
}

/// One reflection stream: a request, then its reply, in turn.
struct Session {
    requests: tokio::sync::mpsc::Sender<ServerReflectionRequest>,
    replies: tonic::Streaming<ServerReflectionResponse>,
}

impl Session {
    async fn ask(&mut self, request: MessageRequest) -> Result<MessageResponse, tonic::Status> {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        if self.requests.send(request).await.is_err() {
            return Err(tonic::Status::unavailable("the reflection stream closed"));
        }
        let reply = self
            .replies
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unavailable("the reflection stream ended early"))?;
        match reply.message_response {
            Some(MessageResponse::ErrorResponse(e)) => Err(tonic::Status::new(
                tonic::Code::from_i32(e.error_code),
                e.error_message,
            )),
            Some(reply) => Ok(reply),
            None => Err(tonic::Status::internal("an empty reflection reply")),
        }
    }
}

async fn session(
    client: &BackendClient,
    path: &'static str,
    wanted: &(dyn Fn(&str) -> bool + Sync),
    known: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Vec<Vec<u8>>, tonic::Status> {
    let (requests, rx) = tokio::sync::mpsc::channel(1);
    let mut grpc = client.grpc_streaming();
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request.extensions_mut().insert(crate::net::StreamingCall);
    let replies = grpc.streaming(
        request,
        PathAndQuery::from_static(path),
        ProstCodec::<ServerReflectionRequest, ServerReflectionResponse>::default(),
    );
    // The stream's headers come once the first request is on its way.
    requests
        .send(ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        })
        .await
        .map_err(|_| tonic::Status::unavailable("the reflection stream closed"))?;
    let mut replies = replies.await?.into_inner();
    let services = match replies.message().await? {
        Some(ServerReflectionResponse {
            message_response: Some(MessageResponse::ListServicesResponse(list)),
            ..
        }) => list.service,
        Some(ServerReflectionResponse {
            message_response: Some(MessageResponse::ErrorResponse(e)),
            ..
        }) => {
            return Err(tonic::Status::new(
                tonic::Code::from_i32(e.error_code),
                e.error_message,
            ));
        }
        _ => return Err(tonic::Status::internal("no list of services")),
    };
    let mut session = Session { requests, replies };
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    let mut imports = VecDeque::new();
    for service in services {
        let name = service.name;
        if name.starts_with("grpc.reflection.") || !wanted(&name) {
            continue;
        }
        let reply = session
            .ask(MessageRequest::FileContainingSymbol(name))
            .await?;
        take(reply, &mut files, &mut seen, &mut imports)?;
    }
    let mut asked = HashSet::new();
    while let Some(import) = imports.pop_front() {
        // A server may have sent the import already, with the file that needs it.
        if known(&import) || seen.contains(&import) || !asked.insert(import.clone()) {
            continue;
        }
        let reply = session.ask(MessageRequest::FileByFilename(import)).await?;
        take(reply, &mut files, &mut seen, &mut imports)?;
    }
    Ok(files)
}

/// Keeps the files of a reply that are new, and queues their imports.
fn take(
    reply: MessageResponse,
    files: &mut Vec<Vec<u8>>,
    seen: &mut HashSet<String>,
    imports: &mut VecDeque<String>,
) -> Result<(), tonic::Status> {
    let MessageResponse::FileDescriptorResponse(found) = reply else {
        return Err(tonic::Status::internal("a reply that is not a file"));
    };
    for file in found.file_descriptor_proto {
        let raw = <RawFile as prost::Message>::decode(file.as_slice())
            .map_err(|e| tonic::Status::internal(format!("a file does not decode: {e}")))?;
        if !seen.insert(raw.name) {
            continue;
        }
        if files.len() >= MAX_FILES {
            return Err(tonic::Status::resource_exhausted(format!(
                "the backend has more than {MAX_FILES} files"
            )));
        }
        imports.extend(raw.dependency);
        files.push(file);
    }
    Ok(())
}
