//! The HTTP/2 client to a backend, as a tower service for tonic's generated clients.
//!
//! It speaks HTTP/2 with `h2` itself rather than through hyper's client or tonic's `Channel`.
//! Each of those puts a task between a call and the connection. tonic's `Channel` sends every
//! call through a `tower::buffer::Buffer` worker; hyper's HTTP/2 client hands each request to
//! its connection task over a channel, spawns a task to await the reply and a second one to send
//! the body. Here the calling task itself opens the stream, queues the whole body (h2 buffers
//! data sent ahead of capacity, and requests are bounded by the caller) and awaits the reply.
//! The only other task is the connection's, which does the socket I/O. `bench/RESULTS.md` has
//! the figures.
//!
//! The connection is dialled on first use and dialled again after it breaks, by the first call
//! that finds it closed; calls meanwhile wait for that one dial. Every failure on this side is
//! an [`UpstreamError`], which tonic keeps as the source of the status it makes, so that a
//! caller tells it apart from a status the backend sent.
//!
//! A call the backend did not process is sent once more: one it refused (RST_STREAM
//! REFUSED_STREAM), and one above the last stream id of its GOAWAY or opened after it. RFC 9113
//! §8.7 makes that safe whatever the call does, and it is what a backend that rotates its
//! connections (or restarts behind a proxy) needs to lose no calls. After a GOAWAY the retry goes
//! to a new connection; the calls still running on the old one finish there. Nothing else is
//! retried: a call the backend may have acted on fails with its error.
//!
//! A call's `grpc-timeout` is its deadline here too: past it, the call fails with
//! [`UpstreamError::Deadline`] whether it waits for a dial, for the reply or for the rest of it.
//! A reply is read up to [`UpstreamOptions::max_reply_bytes`] and no further.
//!
//! A unary call (the gateway's and the health check's) collects its request body, one message,
//! before it opens the stream, and keeps it for the retry. A streaming call (marked with
//! [`StreamingCall`] in its extensions: client, server or bidi streaming, and reflection) sends
//! its body as it comes, within the stream's flow-control window (a backend that reads slowly
//! slows the sender down; nothing is queued without bound), is never sent again, and its reply
//! is bounded per message by the caller's decoder rather than in total.

mod dial;
mod error;
mod pool;
mod reply;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tonic::body::Body;

pub use dial::{BackendTls, UrlError};
pub(crate) use dial::{Dial, Dialing, Io};
pub use error::{DialError, UpstreamError};
pub(crate) use pool::Pool;

pub(crate) use reply::Reply;

/// Marks a streaming call in a request's extensions (see the module's documentation).
#[derive(Debug, Clone, Copy)]
pub struct StreamingCall;

/// What the backend sees as the caller's software (a client's own agent travels as the
/// `grpcgateway-user-agent` metadata).
const USER_AGENT: &str = concat!("compute-gateway/", env!("CARGO_PKG_VERSION"));

/// HTTP/2 PING interval on the backend connection, idle or not: a dead peer is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// How long a PING may wait for its answer before the connection is given up.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Flow-control windows granted to the backend (hyper's client defaults): a large reply, such
/// as a long List page, is not held up by WINDOW_UPDATE round trips.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// Limits of an [`Upstream`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct UpstreamOptions {
    /// How long one dial (TCP connect, TLS and HTTP/2 handshakes) may take.
    pub(crate) dial_timeout: Duration,
    /// The largest reply message taken, in bytes; a larger one fails the call with
    /// [`UpstreamError::ReplyTooLarge`] as soon as its bytes pass the limit.
    pub(crate) max_reply_bytes: usize,
}

impl Default for UpstreamOptions {
    /// A 2 s dial; replies up to 4 MiB, gRPC's default receive limit.
    fn default() -> Self {
        Self {
            dial_timeout: Duration::from_secs(2),
            max_reply_bytes: 4 << 20,
        }
    }
}

/// A lazily dialled, redialled HTTP/2 connection to a backend. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Upstream(Arc<Shared>);

struct Shared {
    /// Scheme and authority of every request (`:scheme`, `:authority`).
    origin: http::Uri,
    dial: Box<dyn Dial>,
    options: UpstreamOptions,
    /// The connection calls use while it is open.
    current: Mutex<Option<Connection>>,
    /// Held by the one call that dials; the others wait for its result. Holds the last dial's
    /// failure, which the calls that waited for that dial share instead of each dialling again
    /// in turn (against a backend that drops connection attempts, one after another they would
    /// wait a dial timeout each).
    dialing: tokio::sync::Mutex<Option<DialError>>,
    /// Dials finished so far: a call that sees it move while it waits knows a dial ended.
    dials: AtomicU64,
}

impl Upstream {
    /// A connection opened with `dial` when first needed; requests name `origin`.
    pub(crate) fn new(origin: http::Uri, dial: impl Dial, options: UpstreamOptions) -> Self {
        Self::from_parts(origin, Box::new(dial), options)
    }

    /// A connection to the backend at `url` (`http://host:port`, or `https://host:port` checked
    /// with `tls`). Nothing is dialled yet; a URL that cannot be dialled fails here.
    pub(crate) fn from_url(
        url: &str,
        tls: Option<&BackendTls>,
        options: UpstreamOptions,
    ) -> Result<Self, UrlError> {
        let (origin, dial) = dial::parse(url, tls)?;
        Ok(Self::from_parts(origin, dial, options))
    }

    fn from_parts(origin: http::Uri, dial: Box<dyn Dial>, options: UpstreamOptions) -> Self {
        Self(Arc::new(Shared {
            origin,
            dial,
            options,
            current: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(None),
            dials: AtomicU64::new(0),
        }))
    }

    /// Scheme and authority of the backend, for tonic's clients.
    pub(crate) fn origin(&self) -> http::Uri {
        self.0.origin.clone()
    }
}

/// One HTTP/2 connection: a handle to open streams on, and whether new calls must stay off it.
#[derive(Clone)]
struct Connection {
    sender: h2::client::SendRequest<Bytes>,
    /// Set when its task ends, or as soon as the backend sends GOAWAY (the calls already on it
    /// still finish).
    closed: Arc<AtomicBool>,
}

impl Shared {
    fn open(&self) -> Option<Connection> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .filter(|c| !c.closed.load(Ordering::Acquire))
            .cloned()
    }

    /// The open connection, dialling one if there is none.
    async fn connection(&self) -> Result<Connection, UpstreamError> {
        if let Some(connection) = self.open() {
            return Ok(connection);
        }
        let dials_before = self.dials.load(Ordering::Acquire);
        let mut last_failure = self.dialing.lock().await;
        if let Some(connection) = self.open() {
            return Ok(connection); // another call dialled while this one waited
        }
        if let Some(error) = last_failure.as_ref()
            && self.dials.load(Ordering::Acquire) != dials_before
        {
            return Err(UpstreamError::Dial(error.clone())); // the dial this call waited for failed
        }
        let timeout = self.options.dial_timeout;
        let dialled = tokio::time::timeout(timeout, self.handshake())
            .await
            .unwrap_or(Err(DialError::TimedOut(timeout)));
        self.dials.fetch_add(1, Ordering::AcqRel);
        match dialled {
            Ok(connection) => {
                *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(connection.clone());
                *last_failure = None;
                Ok(connection)
            }
            Err(error) => {
                *last_failure = Some(error.clone());
                let error = UpstreamError::Dial(error);
                tracing::warn!(%error, "backend connection failed");
                Err(error)
            }
        }
    }

    /// Dials, shakes hands and starts the connection's task, which runs until the connection
    /// ends, the backend goes away or a keep-alive PING goes unanswered.
    async fn handshake(&self) -> Result<Connection, DialError> {
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| DialError::Failed(e.into());
        let io = self.dial.dial().await.map_err(|e| failed(e.into()))?;
        let (sender, mut connection) = h2::client::Builder::new()
            .enable_push(false)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| failed(e.into()))?;
        let ping_pong = connection.ping_pong().expect("taken once, here");
        let closed = Arc::new(AtomicBool::new(false));
        let marker = closed.clone();
        tokio::spawn(async move {
            tokio::select! {
                ended = &mut connection => match ended {
                    Ok(()) => tracing::debug!("backend connection closed"),
                    Err(e) => tracing::debug!(error = %e, "backend connection closed"),
                },
                () = keep_alive(ping_pong) => {
                    tracing::warn!("backend connection: no answer to a PING, closing it");
                }
            }
            marker.store(true, Ordering::Release);
            // Dropping the connection fails the calls still on it with a transport error.
        });
        Ok(Connection { sender, closed })
    }
}

/// Returns when a PING, sent every [`KEEP_ALIVE`], goes unanswered for [`KEEP_ALIVE_TIMEOUT`].
async fn keep_alive(mut ping_pong: h2::PingPong) {
    loop {
        tokio::time::sleep(KEEP_ALIVE).await;
        match tokio::time::timeout(KEEP_ALIVE_TIMEOUT, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "backend connection: PING failed");
                return;
            }
            Err(_) => return,
        }
    }
}

impl tower::Service<http::Request<Body>> for Upstream {
    type Response = http::Response<Reply>;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        Poll::Ready(Ok(())) // readiness is the connection's, awaited in `call`
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let shared = self.0.clone();
        Box::pin(async move {
            let (mut head, body) = request.into_parts();
            head.headers.insert(
                http::header::USER_AGENT,
                http::HeaderValue::from_static(USER_AGENT),
            );
            // The call's deadline covers everything from here to the end of the reply.
            let mut deadline = head
                .headers
                .get("grpc-timeout")
                .and_then(|v| super::parse_grpc_timeout(v.as_bytes()))
                .map(|after| (Box::pin(tokio::time::sleep(after)), after));
            if head.extensions.get::<StreamingCall>().is_some() {
                let attempt = async {
                    let connection = shared.connection().await?;
                    Ok::<_, UpstreamError>(send_streaming(&connection, head, body).await?)
                };
                let head = match &mut deadline {
                    None => attempt.await?,
                    Some((sleep, after)) => tokio::select! {
                        head = attempt => head?,
                        () = sleep.as_mut() => return Err(UpstreamError::Deadline(*after)),
                    },
                };
                return Ok(head.map(|stream| Reply::new(stream, usize::MAX, deadline)));
            }
            // A unary request: its one message, whole (the caller bounds its size).
            let body = body
                .collect()
                .await
                .map_err(|e| UpstreamError::Request(Arc::new(e)))?;
            let first = Request {
                trailers: body.trailers().cloned(),
                message: body.to_bytes(),
                method: head.method,
                uri: head.uri,
                version: head.version,
                headers: head.headers,
            };
            let attempts = async {
                let again = first.clone();
                match send(&shared.connection().await?, first).await {
                    Err(e) if e.unprocessed() => {
                        tracing::debug!(error = %e.error, "the backend did not process the call; sending it again");
                        Ok(send(&shared.connection().await?, again)
                            .await
                            .map_err(|e| e.error)?)
                    }
                    result => Ok::<_, UpstreamError>(result.map_err(|e| e.error)?),
                }
            };
            let head = match &mut deadline {
                None => attempts.await?,
                Some((sleep, after)) => tokio::select! {
                    head = attempts => head?,
                    () = sleep.as_mut() => return Err(UpstreamError::Deadline(*after)),
                },
            };
            let limit = shared.options.max_reply_bytes;
            Ok(head.map(|stream| Reply::new(stream, limit, deadline)))
        })
    }
}

/// One attempt's request, kept whole so that it can be sent again.
#[derive(Clone)]
struct Request {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
    message: Bytes,
    trailers: Option<http::HeaderMap>,
}

/// A failed attempt, and whether its stream was opened at all.
struct Failed {
    error: h2::Error,
    /// The stream was handed to the connection: its frames may have reached the backend.
    opened: bool,
}

impl Failed {
    /// Whether the backend certainly did not process the stream, so that it is safe to send
    /// again whatever the method does: the connection had ended before the stream was opened
    /// on it (a backend that died a moment ago, whose connection was not yet marked closed),
    /// or the backend said so (RFC 9113 §8.7): it went away before the stream (a GOAWAY whose
    /// last stream id is below it, or any stream opened after the GOAWAY), or it refused it.
    fn unprocessed(&self) -> bool {
        let e = &self.error;
        !self.opened
            || (e.is_remote() && (e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM)))
    }
}

/// One attempt on `connection`, up to the reply's head. A GOAWAY retires the connection, as
/// does a connection found ended: the attempt after it dials a new one.
async fn send(
    connection: &Connection,
    request: Request,
) -> Result<http::Response<h2::RecvStream>, Failed> {
    let not_opened = |error: h2::Error| {
        // The connection ended (or is going away) under this call: none is opened on it again.
        if error.is_io() || error.is_go_away() || error.is_remote() {
            connection.closed.store(true, Ordering::Release);
        }
        Failed {
            error,
            opened: false,
        }
    };
    // Waits while the backend's limit of concurrent streams is reached.
    let mut sender = connection
        .sender
        .clone()
        .ready()
        .await
        .map_err(not_opened)?;
    let mut head = http::Request::new(());
    *head.method_mut() = request.method;
    *head.uri_mut() = request.uri;
    *head.version_mut() = request.version;
    *head.headers_mut() = request.headers;
    let empty = request.message.is_empty() && request.trailers.is_none();
    let (response, mut stream) = sender.send_request(head, empty).map_err(not_opened)?;
    let attempt = async {
        if !empty {
            stream.send_data(request.message, request.trailers.is_none())?;
            if let Some(trailers) = request.trailers {
                stream.send_trailers(trailers)?;
            }
        }
        response.await
    };
    attempt.await.map_err(|error| {
        if error.is_go_away() && error.is_remote() {
            connection.closed.store(true, Ordering::Release);
        }
        Failed {
            error,
            opened: true,
        }
    })
}

/// A streaming call on `connection`, up to the reply's head: the body goes on being sent, frame
/// by frame, by a task of its own, within the stream's window. A body that fails resets the
/// stream; a stream the backend closed ends the sending.
async fn send_streaming(
    connection: &Connection,
    head: http::request::Parts,
    body: Body,
) -> Result<http::Response<h2::RecvStream>, h2::Error> {
    let mut sender = connection.sender.clone().ready().await?;
    let mut request = http::Request::new(());
    *request.method_mut() = head.method;
    *request.uri_mut() = head.uri;
    *request.version_mut() = head.version;
    *request.headers_mut() = head.headers;
    let (response, stream) = sender.send_request(request, false)?;
    tokio::spawn(pump(body, stream));
    response.await.inspect_err(|e| {
        if e.is_go_away() && e.is_remote() {
            connection.closed.store(true, Ordering::Release);
        }
    })
}

/// Sends `body` on `stream` as the window allows, then ends the stream.
async fn pump(mut body: Body, mut stream: h2::SendStream<Bytes>) {
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(_) => {
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
        };
        let mut data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = stream.send_trailers(trailers);
                    return;
                }
                continue;
            }
        };
        while !data.is_empty() {
            stream.reserve_capacity(data.len());
            match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(granted)) if granted > 0 => {
                    let chunk = data.split_to(granted.min(data.len()));
                    if stream.send_data(chunk, false).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                // The stream is closed or reset: the backend is done with it.
                _ => return,
            }
        }
    }
    let _ = stream.send_data(Bytes::new(), true);
}

#[cfg(test)]
mod tests;
