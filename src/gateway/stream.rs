//! Streaming methods over REST, in grpc-gateway's conventions so that its clients work
//! unchanged:
//!
//! - **Replies** (server and bidi streaming): `application/json`, one line per message,
//!   `{"result": <message>}\n`; a failure after the first message is a last line
//!   `{"error": <google.rpc.Status>}\n`. Until the first message the HTTP status is still open:
//!   a call that fails before it is answered with the error's status and that one
//!   `{"error": ...}` line. With `Accept: text/event-stream`, Server-Sent Events instead:
//!   `data: <message>\n\n` per message and `event: error\ndata: <Status>\n\n` for a failure.
//!   A stream of `google.api.HttpBody` is its raw bytes, with the first message's content type.
//!   Lines are always compact (`--pretty` would break the framing). Reply metadata comes back
//!   as headers; trailers are not forwarded (grpc-gateway does not either).
//! - **Requests** (client and bidi streaming): the body is a run of JSON values, one per
//!   message, separated by whitespace or newlines (what grpc-gateway's clients send), read as
//!   they arrive; each is bound as a unary body would be (path and query fields set in each).
//!   A body of `google.api.HttpBody` messages is its raw bytes, one message per chunk. One
//!   value larger than `--max-body-bytes`, or one that is not valid, cancels the call: 400
//!   before the first reply message, an error line after it.
//! - **Back-pressure and cancellation**: a message is read from the backend only when the
//!   client has taken the one before (hyper polls the body as the socket drains, and HTTP/2
//!   flow control holds the backend back), and a request message is sent only as the backend's
//!   window allows; nothing is queued without bound. A client that goes away drops the reply,
//!   which resets the backend's stream (CANCEL).
//! - The whole call is bounded by the gateway's `--request-timeout-ms` (or the client's
//!   shorter `grpc-timeout`), as a unary call is.

use std::convert::Infallible;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http::HeaderValue;
use http_body_util::BodyExt as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage as _, Value as PValue};
use tokio::sync::oneshot;

use super::client::BackendClient;
use super::dispatch::{DynamicCodec, Payload, Reply, Rpc};
use super::dynamic_json::DynamicJson;
use super::error::GatewayError;
use super::media::Format;
use super::response::{RenderOptions, render};
use crate::net::StreamingCall;

const HTTP_BODY: &str = "google.api.HttpBody";

/// How the messages of a reply stream are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `{"result": ...}\n` per message.
    Lines,
    /// `data: ...\n\n` per message.
    Events,
    /// The `data` of each `google.api.HttpBody`.
    Raw,
}

impl Framing {
    /// The framing of a reply of `output` messages for a client that sent `headers`.
    pub(crate) fn of(headers: &http::HeaderMap, output: &MessageDescriptor) -> Self {
        if output.full_name() == HTTP_BODY {
            return Self::Raw;
        }
        let events = headers
            .get_all(http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
            });
        if events { Self::Events } else { Self::Lines }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Events => "text/event-stream",
            Self::Lines | Self::Raw => "application/json",
        })
    }
}

/// The content type and data of a `google.api.HttpBody` message; `None` for any other.
pub(crate) fn http_body(message: &DynamicMessage) -> Option<(HeaderValue, Vec<u8>)> {
    if message.descriptor().full_name() != HTTP_BODY {
        return None;
    }
    let content_type = match message.get_field_by_name("content_type").as_deref() {
        Some(PValue::String(s)) if !s.is_empty() => {
            HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("application/octet-stream"))
        }
        _ => HeaderValue::from_static("application/octet-stream"),
    };
    let data = match message.get_field_by_name("data").as_deref() {
        Some(PValue::Bytes(b)) => b.to_vec(),
        _ => Vec::new(),
    };
    Some((content_type, data))
}

/// Whether a message type is `google.api.HttpBody`.
pub(crate) fn is_http_body(message: &MessageDescriptor) -> bool {
    message.full_name() == HTTP_BODY
}

/// The messages of a client stream, parsed from the request body as it arrives; a failure
/// goes to the receiver, and the messages stop (never ending the stream as if the client had
/// finished).
pub(crate) fn messages<P>(
    body: axum::body::Body,
    limit: usize,
    raw: bool,
    parse: P,
) -> (
    impl Stream<Item = DynamicMessage> + Send + 'static,
    oneshot::Receiver<GatewayError>,
)
where
    P: Fn(&[u8]) -> Result<DynamicMessage, GatewayError> + Send + 'static,
{
    let (failed, failure) = oneshot::channel();
    struct State<P> {
        body: axum::body::Body,
        buf: BytesMut,
        ended: bool,
        failed: Option<oneshot::Sender<GatewayError>>,
        parse: P,
    }
    let state = State {
        body,
        buf: BytesMut::new(),
        ended: false,
        failed: Some(failed),
        parse,
    };
    let stream = futures_util::stream::unfold(state, move |mut st| async move {
        loop {
            st.failed.as_ref()?;
            let fail = |st: &mut State<P>, e: GatewayError| {
                if let Some(tx) = st.failed.take() {
                    let _ = tx.send(e);
                }
            };
            if raw {
                // One HttpBody per chunk, as it comes.
                if st.ended {
                    return None;
                }
                match st.body.frame().await {
                    None => return None,
                    Some(Err(e)) => {
                        let e = GatewayError::bad_request(format!(
                            "could not read the request body: {e}"
                        ));
                        fail(&mut st, e);
                        continue;
                    }
                    Some(Ok(frame)) => {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        if data.is_empty() {
                            continue;
                        }
                        match (st.parse)(&data) {
                            Ok(m) => return Some((m, st)),
                            Err(e) => {
                                fail(&mut st, e);
                                continue;
                            }
                        }
                    }
                }
            }
            // The next whole JSON value in what has arrived, if there is one.
            let text = &st.buf[..];
            let start = text.iter().position(|b| !b.is_ascii_whitespace());
            if let Some(start) = start {
                let mut values = serde_json::Deserializer::from_slice(&text[start..])
                    .into_iter::<serde::de::IgnoredAny>();
                match values.next() {
                    Some(Ok(_)) => {
                        let end = start + values.byte_offset();
                        let value = st.buf.split_to(end);
                        match (st.parse)(&value[start..]) {
                            Ok(m) => return Some((m, st)),
                            Err(e) => {
                                fail(&mut st, e);
                                continue;
                            }
                        }
                    }
                    Some(Err(e)) if !e.is_eof() || st.ended => {
                        fail(
                            &mut st,
                            GatewayError::bad_request(format!(
                                "a request message is not valid JSON: {e}"
                            )),
                        );
                        continue;
                    }
                    _ => {}
                }
            } else if st.ended {
                return None;
            } else {
                st.buf.clear();
            }
            if st.buf.len() > limit {
                fail(&mut st, GatewayError::PayloadTooLarge { limit });
                continue;
            }
            match st.body.frame().await {
                None => st.ended = true,
                Some(Err(e)) => {
                    let e =
                        GatewayError::bad_request(format!("could not read the request body: {e}"));
                    fail(&mut st, e);
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        st.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    });
    (stream, failure)
}

/// One item of a reply stream: a message, or why the stream ended early.
type Item = Result<DynamicMessage, GatewayError>;

/// The next reply message, or the failure of the request stream, whichever comes first.
async fn next(
    replies: &mut tonic::Streaming<DynamicMessage>,
    failure: &mut Option<oneshot::Receiver<GatewayError>>,
) -> Option<Item> {
    let message = async {
        match replies.message().await {
            Ok(Some(m)) => Some(Ok(m)),
            Ok(None) => None,
            Err(status) => Some(Err(GatewayError::from_call(status))),
        }
    };
    match failure {
        None => message.await,
        Some(rx) => tokio::select! {
            biased;
            failed = rx => {
                *failure = None;
                match failed {
                    Ok(e) => Some(Err(e)),
                    // The requests ended well: only the replies are left.
                    Err(_) => replies_only(replies).await,
                }
            }
            m = message => m,
        },
    }
}

async fn replies_only(replies: &mut tonic::Streaming<DynamicMessage>) -> Option<Item> {
    match replies.message().await {
        Ok(Some(m)) => Some(Ok(m)),
        Ok(None) => None,
        Err(status) => Some(Err(GatewayError::from_call(status))),
    }
}

/// What a streaming call is sent with.
pub(crate) struct StreamCall {
    pub(crate) metadata: tonic::metadata::MetadataMap,
    pub(crate) timeout: std::time::Duration,
    pub(crate) framing: Framing,
    pub(crate) response_body: Option<prost_reflect::FieldDescriptor>,
    /// Where a failure of the request stream is told (client streaming).
    pub(crate) failure: Option<oneshot::Receiver<GatewayError>>,
}

/// Makes a streaming call with `requests`, and answers once the first reply message (or the
/// end, or a failure) is in: the rest streams on in the reply's body. A client stream's one
/// reply is answered as a unary call's.
pub(crate) async fn call<S>(
    client: &BackendClient,
    rpc: &Rpc,
    requests: S,
    call: StreamCall,
) -> Result<Reply, GatewayError>
where
    S: Stream<Item = DynamicMessage> + Send + 'static,
{
    let output = rpc.method().output();
    let mut request = tonic::Request::new(requests);
    *request.metadata_mut() = call.metadata;
    request.set_timeout(call.timeout);
    request.extensions_mut().insert(StreamingCall);
    let mut grpc = client.grpc_streaming();
    let mut failure = call.failure;
    let response = grpc.streaming(
        request,
        rpc.grpc_path().clone(),
        DynamicCodec(output.clone()),
    );
    let mut requests_done = false;
    let response = match &mut failure {
        None => response.await,
        Some(rx) => {
            tokio::pin!(response);
            tokio::select! {
                biased;
                failed = rx => match failed {
                    Ok(e) => return Err(e),
                    // The requests ended well: only the reply is left.
                    Err(_) => {
                        requests_done = true;
                        response.await
                    }
                },
                r = &mut response => r,
            }
        }
    };
    if requests_done {
        failure = None;
    }
    let (headers, mut replies, _) = response.map_err(GatewayError::from_call)?.into_parts();
    let first = next(&mut replies, &mut failure).await;
    let first = match first {
        Some(Err(e)) => return Err(e),
        other => other,
    };
    if !rpc.method().is_server_streaming() {
        // A client stream has one reply, rendered as a unary call's.
        let Some(Ok(reply)) = first else {
            return Err(GatewayError::Internal(format!(
                "{} sent no reply message",
                rpc.path()
            )));
        };
        match next(&mut replies, &mut failure).await {
            None => {}
            Some(Err(e)) => return Err(e),
            Some(Ok(_)) => {
                return Err(GatewayError::Internal(format!(
                    "{} sent more than one reply message",
                    rpc.path()
                )));
            }
        }
        let (body, content_type) = match http_body(&reply) {
            Some((content_type, data)) if call.response_body.is_none() => (data, content_type),
            _ => {
                let body = render(
                    &DynamicJson(&reply),
                    &output,
                    call.response_body.as_ref(),
                    client.render_options(),
                )?;
                (body, HeaderValue::from_static("application/json"))
            }
        };
        return Ok(Reply {
            body: Payload::Whole(body),
            content_type: Some(content_type),
            headers,
            trailers: None,
            format: Format::Json,
        });
    }
    let options = RenderOptions {
        pretty: false,
        ..client.render_options()
    };
    let mut content_type = call.framing.content_type();
    if call.framing == Framing::Raw
        && let Some(Ok(m)) = &first
        && let Some((ct, _)) = http_body(m)
    {
        content_type = ct;
    }
    let framing = call.framing;
    let response_body = call.response_body;
    let state = (first, replies, failure, false);
    let chunks = futures_util::stream::unfold(
        state,
        move |(mut pending, mut replies, mut failure, done)| {
            let output = output.clone();
            let response_body = response_body.clone();
            async move {
                if done {
                    return None;
                }
                let item = match pending.take() {
                    Some(item) => Some(item),
                    None => next(&mut replies, &mut failure).await,
                };
                let (chunk, done) = match item {
                    None => return None,
                    Some(Ok(m)) => {
                        match frame(&m, &output, response_body.as_ref(), options, framing) {
                            Ok(chunk) => (chunk, false),
                            Err(e) => (error_frame(&e, framing), true),
                        }
                    }
                    Some(Err(e)) => {
                        e.report();
                        (error_frame(&e, framing), true)
                    }
                };
                Some((Ok::<_, Infallible>(chunk), (None, replies, failure, done)))
            }
        },
    );
    Ok(Reply {
        body: Payload::Stream(axum::body::Body::from_stream(chunks)),
        content_type: Some(content_type),
        headers,
        trailers: None,
        format: Format::Json,
    })
}

/// One reply message, framed.
fn frame(
    message: &DynamicMessage,
    output: &MessageDescriptor,
    response_body: Option<&prost_reflect::FieldDescriptor>,
    options: RenderOptions,
    framing: Framing,
) -> Result<Bytes, GatewayError> {
    if framing == Framing::Raw {
        return Ok(http_body(message)
            .map(|(_, d)| d)
            .unwrap_or_default()
            .into());
    }
    let json = render(&DynamicJson(message), output, response_body, options)?;
    Ok(match framing {
        Framing::Lines => {
            let mut line = Vec::with_capacity(json.len() + 12);
            line.extend_from_slice(b"{\"result\":");
            line.extend_from_slice(&json);
            line.extend_from_slice(b"}\n");
            line.into()
        }
        Framing::Events | Framing::Raw => {
            let mut event = Vec::with_capacity(json.len() + 8);
            event.extend_from_slice(b"data: ");
            event.extend_from_slice(&json);
            event.extend_from_slice(b"\n\n");
            event.into()
        }
    })
}

/// A failure, framed: the last chunk of a stream.
pub(crate) fn error_frame(e: &GatewayError, framing: Framing) -> Bytes {
    let status = e.status_json();
    let mut out = Vec::with_capacity(status.len() + 24);
    match framing {
        Framing::Events => {
            out.extend_from_slice(b"event: error\ndata: ");
            out.extend_from_slice(&status);
            out.extend_from_slice(b"\n\n");
        }
        // A raw stream has no framing for it: a JSON line, as grpc-gateway writes one.
        Framing::Lines | Framing::Raw => {
            out.extend_from_slice(b"{\"error\":");
            out.extend_from_slice(&status);
            out.extend_from_slice(b"}\n");
        }
    }
    out.into()
}
