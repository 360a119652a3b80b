//! The gateway's HTTP/2 connection to the backend, as a tower service for tonic's generated
//! clients.
//!
//! It speaks HTTP/2 with `h2` itself rather than through hyper's client or tonic's `Channel`.
//! Each of those puts a task between a call and the connection. tonic's `Channel` sends every
//! call through a `tower::buffer::Buffer` worker; that hop cost 3k–5k instructions per request.
//! hyper's HTTP/2 client hands each request to its connection task over a channel, spawns a
//! task to await the reply and, since a body waits for flow-control capacity that is assigned
//! only once the stream is open, a second task to send the body. Here the calling task itself
//! opens the stream, queues the whole body (h2 buffers data sent ahead of capacity, and
//! requests are bounded by the gateway's body limit) and awaits the reply. The only other task
//! is the connection's, which does the socket I/O. See `bench/RESULTS.md` for the figures.
//!
//! The connection is dialled on first use and dialled again after it breaks, by the first call
//! that finds it closed; calls meanwhile wait for that one dial. A dial that fails, and a call
//! whose connection breaks, fail with the transport error itself; tonic turns it into a status
//! that carries it as its source, which is how the gateway tells them (503) from a status the
//! backend sent.
//!
//! A call the backend did not process is sent once more: one it refused (RST_STREAM
//! REFUSED_STREAM), and one above the last stream id of its GOAWAY or opened after it. RFC 9113
//! §8.7 makes that safe whatever the call does, and it is what a backend that rotates its
//! connections (or restarts behind a proxy) needs to lose no calls. After a GOAWAY the retry goes
//! to a new connection; the calls still running on the old one finish there. Nothing else is
//! retried: a call the backend may have acted on fails with its error.
//!
//! Only unary calls go over it (the gateway's and the health check's): a call collects its
//! request body, one message, before it opens the stream, and keeps it for the retry.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;
use tonic::body::Body;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long one dial (TCP connect, TLS and HTTP/2 handshakes) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 PING interval on the backend connection, idle or not: a dead peer is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// How long a PING may wait for its answer before the connection is given up.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Flow-control windows the gateway grants the backend (hyper's client defaults): a large
/// reply, such as a long List page, is not held up by WINDOW_UPDATE round trips.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// A dial in progress.
pub type Dialing<'a> = Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Io>>> + Send + 'a>>;

/// Opens a byte stream to the backend.
pub trait Dial: Send + Sync + 'static {
    /// A new stream to the backend.
    fn dial(&self) -> Dialing<'_>;
}

/// A byte stream a connection runs on.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Plain TCP to `host:port`, with Nagle off (small unary messages must not wait).
pub struct Tcp(pub String);

impl Tcp {
    async fn connect(&self) -> std::io::Result<tokio::net::TcpStream> {
        let stream = tokio::net::TcpStream::connect(&self.0).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

impl Dial for Tcp {
    fn dial(&self) -> Dialing<'_> {
        Box::pin(async move { Ok(Box::new(self.connect().await?) as Box<dyn Io>) })
    }
}

/// TLS over [`Tcp`], ALPN `h2`, the server's certificate checked against `config`'s roots for
/// `server_name`.
pub struct Tls {
    /// The TCP connection it runs on.
    pub tcp: Tcp,
    /// The name the certificate must carry.
    pub server_name: rustls::pki_types::ServerName<'static>,
    /// Roots and protocol settings.
    pub config: Arc<rustls::ClientConfig>,
}

impl Dial for Tls {
    fn dial(&self) -> Dialing<'_> {
        Box::pin(async move {
            let stream = self.tcp.connect().await?;
            let tls = tokio_rustls::TlsConnector::from(self.config.clone())
                .connect(self.server_name.clone(), stream)
                .await?;
            Ok(Box::new(tls) as Box<dyn Io>)
        })
    }
}

/// A lazily dialled, redialled HTTP/2 connection to the backend. Cheap to clone.
#[derive(Clone)]
pub struct Upstream(Arc<Shared>);

struct Shared {
    /// Scheme and authority of every request (`:scheme`, `:authority`).
    origin: http::Uri,
    dial: Box<dyn Dial>,
    /// The connection calls use while it is open.
    current: Mutex<Option<Connection>>,
    /// Held by the one call that dials; the others wait for its result. Holds the last dial's
    /// failure, which the calls that waited for that dial share instead of each dialling again
    /// in turn (against a backend that drops connection attempts, one after another they would
    /// wait a dial timeout each).
    dialing: tokio::sync::Mutex<Option<String>>,
    /// Dials finished so far: a call that sees it move while it waits knows a dial ended.
    dials: AtomicU64,
    /// How long one dial may take.
    dial_timeout: Duration,
}

impl Upstream {
    /// A connection opened with `dial` when first needed; requests name `origin`.
    pub fn new(origin: http::Uri, dial: impl Dial) -> Self {
        Self::with_dial_timeout(origin, dial, DIAL_TIMEOUT)
    }

    /// The same with another dial timeout than the default 2 s.
    pub fn with_dial_timeout(origin: http::Uri, dial: impl Dial, dial_timeout: Duration) -> Self {
        Self(Arc::new(Shared {
            origin,
            dial: Box::new(dial),
            current: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(None),
            dials: AtomicU64::new(0),
            dial_timeout,
        }))
    }

    /// Scheme and authority of the backend, for tonic's clients.
    pub fn origin(&self) -> http::Uri {
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
    async fn connection(&self) -> Result<Connection, BoxError> {
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
            return Err(error.clone().into()); // the dial this call waited for failed
        }
        let timeout = self.dial_timeout;
        let dialled = tokio::time::timeout(timeout, self.handshake())
            .await
            .unwrap_or_else(|_| Err(format!("no connection within {timeout:?}").into()));
        self.dials.fetch_add(1, Ordering::AcqRel);
        match dialled {
            Ok(connection) => {
                *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(connection.clone());
                *last_failure = None;
                Ok(connection)
            }
            Err(e) => {
                tracing::warn!(error = %e, "backend connection failed");
                let error = format!("backend connection failed: {e}");
                *last_failure = Some(error.clone());
                Err(error.into())
            }
        }
    }

    /// Dials, shakes hands and starts the connection's task, which runs until the connection
    /// ends, the backend goes away or a keep-alive PING goes unanswered.
    async fn handshake(&self) -> Result<Connection, BoxError> {
        let io = self.dial.dial().await?;
        let (sender, mut connection) = h2::client::Builder::new()
            .enable_push(false)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(io)
            .await?;
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
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(())) // readiness is the connection's, awaited in `call`
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let shared = self.0.clone();
        Box::pin(async move {
            let (head, body) = request.into_parts();
            // A unary request: its one message, whole (the gateway bounds its size).
            let body = body.collect().await?;
            let first = Request {
                trailers: body.trailers().cloned(),
                message: body.to_bytes(),
                method: head.method,
                uri: head.uri,
                version: head.version,
                headers: head.headers,
            };
            let again = first.clone();
            match send(&shared.connection().await?, first).await {
                Err(e) if unprocessed(&e) => {
                    tracing::debug!(error = %e, "the backend did not process the call; sending it again");
                    Ok(send(&shared.connection().await?, again).await?)
                }
                result => Ok(result?),
            }
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

/// Whether the backend said it did not process the stream, so that it is safe to send again
/// whatever the method does (RFC 9113 §8.7): it went away before the stream (a GOAWAY whose
/// last stream id is below it, or any stream opened after the GOAWAY), or it refused it.
fn unprocessed(e: &h2::Error) -> bool {
    e.is_remote() && (e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM))
}

/// One attempt on `connection`. A GOAWAY retires the connection: the attempt after it dials a
/// new one.
async fn send(
    connection: &Connection,
    request: Request,
) -> Result<http::Response<Reply>, h2::Error> {
    let attempt = async {
        // Waits while the backend's limit of concurrent streams is reached.
        let mut sender = connection.sender.clone().ready().await?;
        let mut head = http::Request::new(());
        *head.method_mut() = request.method;
        *head.uri_mut() = request.uri;
        *head.version_mut() = request.version;
        *head.headers_mut() = request.headers;
        let empty = request.message.is_empty() && request.trailers.is_none();
        let (response, mut stream) = sender.send_request(head, empty)?;
        if !empty {
            stream.send_data(request.message, request.trailers.is_none())?;
            if let Some(trailers) = request.trailers {
                stream.send_trailers(trailers)?;
            }
        }
        Ok::<_, h2::Error>(response.await?.map(Reply::new))
    };
    attempt.await.inspect_err(|e| {
        if e.is_go_away() && e.is_remote() {
            connection.closed.store(true, Ordering::Release);
        }
    })
}

/// A reply's body: its DATA frames, each handed back to flow control as it is read, then its
/// trailers (where gRPC puts the status).
#[derive(Debug)]
pub struct Reply {
    stream: h2::RecvStream,
    data_done: bool,
}

impl Reply {
    fn new(stream: h2::RecvStream) -> Self {
        Self {
            stream,
            data_done: false,
        }
    }
}

impl HttpBody for Reply {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Fails only once the stream is gone, which the next poll reports.
                    let _ = self.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match ready!(self.stream.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::DuplexStream;
    use tokio::sync::mpsc;
    use tower::Service;

    /// Dials in memory: each dial hands the far end of a new pipe to the test's server.
    struct Pipe {
        dials: Arc<AtomicUsize>,
        accepted: mpsc::UnboundedSender<DuplexStream>,
    }

    impl Dial for Pipe {
        fn dial(&self) -> Dialing<'_> {
            self.dials.fetch_add(1, Ordering::SeqCst);
            let (near, far) = tokio::io::duplex(64 * 1024);
            let _ = self.accepted.send(far);
            Box::pin(async move { Ok(Box::new(near) as Box<dyn Io>) })
        }
    }

    /// How the test's HTTP/2 server treats a connection.
    #[derive(Clone, Copy, PartialEq)]
    enum Peer {
        /// Answers each request with its body followed by this many bytes.
        Answer(usize),
        /// Answers the first request, then holds the connection open without reading it again,
        /// as a hung peer does.
        HangAfterFirst,
        /// On the first connection, sends GOAWAY before reading any request; answers on the
        /// others.
        GoAwayOnFirstConnection,
        /// On the first connection, reads the first request and then starts a graceful shutdown
        /// (GOAWAY) while it holds that request; answers it once the test says so. Answers on
        /// the others.
        GoAwayWhileFirstRuns,
        /// Refuses the first request (RST_STREAM REFUSED_STREAM); answers the others.
        RefuseFirst,
        /// Reads each request, then resets it with INTERNAL_ERROR.
        FailEach,
        /// Reads each request and never answers; counts the requests the client reset.
        Hold,
    }

    /// A request's body, read whole.
    async fn read_body(request: http::Request<h2::RecvStream>) -> Vec<u8> {
        let mut body = request.into_body();
        let mut whole = Vec::new();
        while let Some(data) = body.data().await {
            let data = data.expect("request data");
            let _ = body.flow_control().release_capacity(data.len());
            whole.extend_from_slice(&data);
        }
        whole
    }

    /// Serves connection number `index` (from 0) on `io`; counts the requests it reads.
    async fn server(
        io: DuplexStream,
        index: usize,
        peer: Peer,
        requests: Arc<AtomicUsize>,
        release: Arc<tokio::sync::Notify>,
        cancelled: Arc<AtomicUsize>,
    ) {
        let mut connection = h2::server::handshake(io).await.expect("handshake");
        if peer == Peer::GoAwayWhileFirstRuns && index == 0 {
            let (request, mut respond) = connection.accept().await.expect("a call").expect("ok");
            requests.fetch_add(1, Ordering::SeqCst);
            let reply = read_body(request).await;
            connection.graceful_shutdown();
            tokio::spawn(async move {
                release.notified().await;
                let mut stream = respond
                    .send_response(http::Response::new(()), false)
                    .expect("respond");
                stream.send_data(reply.into(), true).expect("reply");
            });
            // Serves until the held call ends; no stream may open after the GOAWAY.
            assert!(connection.accept().await.is_none(), "a stream after GOAWAY");
            return;
        }
        if peer == Peer::GoAwayOnFirstConnection && index == 0 {
            connection.abrupt_shutdown(h2::Reason::NO_ERROR);
            while connection.accept().await.is_some() {}
            // Keeps the pipe open, so that the client reads the GOAWAY rather than a broken
            // pipe.
            return std::future::pending().await;
        }
        loop {
            let Some(Ok((request, mut respond))) = connection.accept().await else {
                return;
            };
            let seen = requests.fetch_add(1, Ordering::SeqCst);
            let mut reply = read_body(request).await;
            match peer {
                Peer::RefuseFirst if seen == 0 => {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                    continue;
                }
                Peer::FailEach => {
                    respond.send_reset(h2::Reason::INTERNAL_ERROR);
                    continue;
                }
                Peer::Hold => {
                    let cancelled = cancelled.clone();
                    tokio::spawn(async move {
                        let reason = std::future::poll_fn(|cx| respond.poll_reset(cx)).await;
                        if reason.ok() == Some(h2::Reason::CANCEL) {
                            cancelled.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                    continue;
                }
                Peer::Answer(padding) => reply.resize(reply.len() + padding, b'.'),
                _ => {}
            }
            let mut stream = respond
                .send_response(http::Response::new(()), false)
                .expect("respond");
            stream.send_data(reply.into(), true).expect("reply");
            if peer == Peer::HangAfterFirst {
                // Long enough to flush the reply, then never polled again.
                let _ = tokio::time::timeout(Duration::from_secs(1), connection.accept()).await;
                std::future::pending::<()>().await;
            }
        }
    }

    struct Harness {
        upstream: Upstream,
        dials: Arc<AtomicUsize>,
        requests: Arc<AtomicUsize>,
        /// Lets a held request be answered.
        release: Arc<tokio::sync::Notify>,
        /// Streams the client reset with CANCEL.
        cancelled: Arc<AtomicUsize>,
    }

    fn pipe_upstream(peer: Peer) -> Harness {
        let dials = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (accepted, mut pipes) = mpsc::unbounded_channel();
        let release = Arc::new(tokio::sync::Notify::new());
        let cancelled = Arc::new(AtomicUsize::new(0));
        let (counted, held, resets) = (requests.clone(), release.clone(), cancelled.clone());
        tokio::spawn(async move {
            let mut index = 0;
            while let Some(io) = pipes.recv().await {
                let (counted, held, resets) = (counted.clone(), held.clone(), resets.clone());
                tokio::spawn(server(io, index, peer, counted, held, resets));
                index += 1;
            }
        });
        let upstream = Upstream::new(
            http::Uri::from_static("http://backend.test/"),
            Pipe {
                dials: dials.clone(),
                accepted,
            },
        );
        Harness {
            upstream,
            dials,
            requests,
            release,
            cancelled,
        }
    }

    /// Calls with `payload` as the body; the whole reply body. A call that hangs fails after
    /// 10 s (at once under a paused clock).
    async fn call(upstream: &mut Upstream, payload: &'static [u8]) -> Result<Bytes, BoxError> {
        let request = http::Request::post("http://backend.test/svc/Method")
            .body(Body::new(Full::new(Bytes::from_static(payload))))
            .expect("request");
        let reply = async {
            let reply = upstream.call(request).await?;
            Ok::<_, BoxError>(reply.into_body().collect().await?.to_bytes())
        };
        tokio::time::timeout(Duration::from_secs(10), reply)
            .await
            .map_err(|_| "no reply within 10 s")?
    }

    #[tokio::test]
    async fn bodies_travel_whole_and_replies_beyond_the_flow_control_windows_arrive() {
        // 6 MB: more than the stream's window (2 MB) and the connection's (5 MB), so the reply
        // arrives only if the reader hands the window back as it reads.
        let mut h = pipe_upstream(Peer::Answer(6 << 20));
        for _ in 0..2 {
            let reply = call(&mut h.upstream, b"\0\0\0\0\x02hi")
                .await
                .expect("reply");
            assert_eq!(reply.len(), 7 + (6 << 20));
            assert_eq!(&reply[..7], b"\0\0\0\0\x02hi");
        }
        assert_eq!(h.dials.load(Ordering::SeqCst), 1, "one connection for both");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_answering_pings_is_dropped_and_the_next_call_redials() {
        for (peer, dials_after) in [(Peer::Answer(0), 1), (Peer::HangAfterFirst, 2)] {
            let mut h = pipe_upstream(peer);
            assert_eq!(
                &call(&mut h.upstream, b"one").await.expect("first")[..],
                b"one"
            );
            // Past one PING interval and its answer timeout.
            tokio::time::sleep(KEEP_ALIVE + KEEP_ALIVE_TIMEOUT + Duration::from_secs(1)).await;
            assert_eq!(
                &call(&mut h.upstream, b"two").await.expect("second")[..],
                b"two"
            );
            assert_eq!(h.dials.load(Ordering::SeqCst), dials_after);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_going_away_gets_no_new_calls() {
        let mut h = pipe_upstream(Peer::GoAwayWhileFirstRuns);
        let mut first = h.upstream.clone();
        let first = tokio::spawn(async move { call(&mut first, b"first").await });
        // The paused clock moves only once every task is idle: the GOAWAY has arrived and the
        // first call is held by the server.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(h.requests.load(Ordering::SeqCst), 1);
        // The connection is still open for the call it carries, but a new call must not be
        // opened on it: it goes to a new connection.
        assert_eq!(
            &call(&mut h.upstream, b"second").await.expect("answered")[..],
            b"second"
        );
        assert_eq!(h.dials.load(Ordering::SeqCst), 2);
        h.release.notify_one();
        let reply = first.await.expect("no panic").expect("answered");
        assert_eq!(
            &reply[..],
            b"first",
            "the call in flight finishes on the old connection"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_given_up_is_cancelled_at_the_backend() {
        let h = pipe_upstream(Peer::Hold);
        let mut upstream = h.upstream.clone();
        let call = tokio::spawn(async move { call(&mut upstream, b"slow").await });
        tokio::time::sleep(Duration::from_secs(1)).await; // every task idle: the server holds it
        assert_eq!(h.requests.load(Ordering::SeqCst), 1);
        assert_eq!(h.cancelled.load(Ordering::SeqCst), 0);
        // What a REST client that goes away, or the gateway's deadline, does to the call.
        call.abort();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(h.cancelled.load(Ordering::SeqCst), 1, "RST_STREAM CANCEL");
    }

    #[tokio::test]
    async fn calls_the_backend_did_not_process_are_sent_again_and_no_others() {
        // GOAWAY before the call: sent again on a new connection.
        let mut h = pipe_upstream(Peer::GoAwayOnFirstConnection);
        assert_eq!(
            &call(&mut h.upstream, b"one").await.expect("answered")[..],
            b"one"
        );
        assert_eq!(h.dials.load(Ordering::SeqCst), 2);
        assert_eq!(h.requests.load(Ordering::SeqCst), 1, "processed once");
        // And the connection after it stays in use.
        assert_eq!(
            &call(&mut h.upstream, b"two").await.expect("answered")[..],
            b"two"
        );
        assert_eq!(h.dials.load(Ordering::SeqCst), 2);

        // REFUSED_STREAM: sent again on the same connection.
        let mut h = pipe_upstream(Peer::RefuseFirst);
        assert_eq!(
            &call(&mut h.upstream, b"one").await.expect("answered")[..],
            b"one"
        );
        assert_eq!(h.dials.load(Ordering::SeqCst), 1);
        assert_eq!(h.requests.load(Ordering::SeqCst), 2);

        // A stream the backend read and then failed is not sent again: it may have acted on it.
        let mut h = pipe_upstream(Peer::FailEach);
        let error = call(&mut h.upstream, b"one").await.expect_err("reset");
        let reason = error
            .downcast_ref::<h2::Error>()
            .and_then(h2::Error::reason);
        assert_eq!(reason, Some(h2::Reason::INTERNAL_ERROR), "{error}");
        assert_eq!(h.requests.load(Ordering::SeqCst), 1, "sent once");
    }

    /// A backend that never answers a connection attempt (a firewall dropping SYNs).
    struct Blackhole(Arc<AtomicUsize>);

    impl Dial for Blackhole {
        fn dial(&self) -> Dialing<'_> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn calls_waiting_for_a_failed_dial_share_its_failure() {
        let dials = Arc::new(AtomicUsize::new(0));
        let upstream = Upstream::with_dial_timeout(
            http::Uri::from_static("http://backend.invalid/"),
            Blackhole(dials.clone()),
            Duration::from_millis(500),
        );
        let started = tokio::time::Instant::now();
        let calls = (0..20).map(|_| {
            let mut upstream = upstream.clone();
            tokio::spawn(async move { upstream.call(http::Request::new(Body::empty())).await })
        });
        for call in calls.collect::<Vec<_>>() {
            let error = call
                .await
                .expect("no panic")
                .expect_err("nothing to connect to");
            assert!(
                error.to_string().contains("no connection within 500ms"),
                "{error}"
            );
        }
        // One dial for all twenty, not twenty dials one after another.
        assert_eq!(dials.load(Ordering::SeqCst), 1);
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        // A later call dials afresh.
        let mut upstream = upstream.clone();
        assert!(
            upstream
                .call(http::Request::new(Body::empty()))
                .await
                .is_err()
        );
        assert_eq!(dials.load(Ordering::SeqCst), 2);
    }
}
