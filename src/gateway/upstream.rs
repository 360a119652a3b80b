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
//! Only unary calls go over it (the gateway's and the health check's): a call sends its whole
//! request body before it awaits the response headers.

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

/// One HTTP/2 connection: a handle to open streams on, and whether its task has ended.
#[derive(Clone)]
struct Connection {
    sender: h2::client::SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

impl Shared {
    fn open(&self) -> Option<h2::client::SendRequest<Bytes>> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .filter(|c| !c.closed.load(Ordering::Acquire))
            .map(|c| c.sender.clone())
    }

    /// The open connection, dialling one if there is none.
    async fn sender(&self) -> Result<h2::client::SendRequest<Bytes>, BoxError> {
        if let Some(sender) = self.open() {
            return Ok(sender);
        }
        let dials_before = self.dials.load(Ordering::Acquire);
        let mut last_failure = self.dialing.lock().await;
        if let Some(sender) = self.open() {
            return Ok(sender); // another call dialled while this one waited
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
                let sender = connection.sender.clone();
                *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(connection);
                *last_failure = None;
                Ok(sender)
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
            // Waits while the backend's limit of concurrent streams is reached.
            let mut sender = shared.sender().await?.ready().await?;
            let (head, mut body) = request.into_parts();
            let no_body = body.is_end_stream();
            let (response, mut stream) =
                sender.send_request(http::Request::from_parts(head, ()), no_body)?;
            if !no_body {
                let mut ended = false;
                while let Some(frame) = body.frame().await {
                    match frame?.into_data() {
                        Ok(data) => stream.send_data(data, false)?,
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                stream.send_trailers(trailers)?;
                                ended = true;
                                break;
                            }
                        }
                    }
                }
                if !ended {
                    stream.send_data(Bytes::new(), true)?;
                }
            }
            Ok(response.await?.map(Reply::new))
        })
    }
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

    /// An HTTP/2 server on `io` that answers each request with its body followed by `padding`
    /// bytes. After the first answer it goes on serving if `answer_pings`; otherwise it holds the
    /// connection open without reading it again, as a hung peer does.
    async fn server(io: DuplexStream, padding: usize, answer_pings: bool) {
        let mut connection = h2::server::handshake(io).await.expect("handshake");
        loop {
            let Some(Ok((request, mut respond))) = connection.accept().await else {
                return;
            };
            let mut body = request.into_body();
            let mut reply = Vec::new();
            while let Some(data) = body.data().await {
                let data = data.expect("request data");
                let _ = body.flow_control().release_capacity(data.len());
                reply.extend_from_slice(&data);
            }
            reply.resize(reply.len() + padding, b'.');
            let mut stream = respond
                .send_response(http::Response::new(()), false)
                .expect("respond");
            stream.send_data(reply.into(), true).expect("reply");
            if !answer_pings {
                // Long enough to flush the reply, then never polled again.
                let _ = tokio::time::timeout(Duration::from_secs(1), connection.accept()).await;
                std::future::pending::<()>().await;
            }
        }
    }

    fn pipe_upstream(padding: usize, answer_pings: bool) -> (Upstream, Arc<AtomicUsize>) {
        let dials = Arc::new(AtomicUsize::new(0));
        let (accepted, mut pipes) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(io) = pipes.recv().await {
                tokio::spawn(server(io, padding, answer_pings));
            }
        });
        let upstream = Upstream::new(
            http::Uri::from_static("http://backend.test/"),
            Pipe {
                dials: dials.clone(),
                accepted,
            },
        );
        (upstream, dials)
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
        let (mut upstream, dials) = pipe_upstream(6 << 20, true);
        for _ in 0..2 {
            let reply = call(&mut upstream, b"\0\0\0\0\x02hi").await.expect("reply");
            assert_eq!(reply.len(), 7 + (6 << 20));
            assert_eq!(&reply[..7], b"\0\0\0\0\x02hi");
        }
        assert_eq!(dials.load(Ordering::SeqCst), 1, "one connection for both");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_answering_pings_is_dropped_and_the_next_call_redials() {
        for (answer_pings, dials_after) in [(true, 1), (false, 2)] {
            let (mut upstream, dials) = pipe_upstream(0, answer_pings);
            assert_eq!(
                &call(&mut upstream, b"one").await.expect("first")[..],
                b"one"
            );
            // Past one PING interval and its answer timeout.
            tokio::time::sleep(KEEP_ALIVE + KEEP_ALIVE_TIMEOUT + Duration::from_secs(1)).await;
            assert_eq!(
                &call(&mut upstream, b"two").await.expect("second")[..],
                b"two"
            );
            assert_eq!(
                dials.load(Ordering::SeqCst),
                dials_after,
                "answer_pings: {answer_pings}"
            );
        }
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
