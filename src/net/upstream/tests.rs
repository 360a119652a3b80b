use super::*;
use http_body_util::Full;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
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
    after_goaway: Arc<AtomicUsize>,
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
        // Serves until the held call ends, counting any stream opened after the GOAWAY (the
        // test asserts there are none: a panic here, in a task of its own, would be lost).
        while connection.accept().await.is_some() {
            after_goaway.fetch_add(1, Ordering::SeqCst);
        }
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
    /// Streams opened on a connection after its GOAWAY.
    after_goaway: Arc<AtomicUsize>,
}

fn pipe_upstream(peer: Peer) -> Harness {
    pipe_upstream_with(peer, UpstreamOptions::default())
}

fn pipe_upstream_with(peer: Peer, options: UpstreamOptions) -> Harness {
    let dials = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (accepted, mut pipes) = mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Notify::new());
    let cancelled = Arc::new(AtomicUsize::new(0));
    let after_goaway = Arc::new(AtomicUsize::new(0));
    let (counted, held, resets, late) = (
        requests.clone(),
        release.clone(),
        cancelled.clone(),
        after_goaway.clone(),
    );
    tokio::spawn(async move {
        let mut index = 0;
        while let Some(io) = pipes.recv().await {
            let (counted, held, resets, late) =
                (counted.clone(), held.clone(), resets.clone(), late.clone());
            tokio::spawn(server(io, index, peer, counted, held, resets, late));
            index += 1;
        }
    });
    let upstream = Upstream::new(
        http::Uri::from_static("http://backend.test/"),
        Pipe {
            dials: dials.clone(),
            accepted,
        },
        options,
    );
    Harness {
        upstream,
        dials,
        requests,
        release,
        cancelled,
        after_goaway,
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
    let options = UpstreamOptions {
        max_reply_bytes: 8 << 20,
        ..UpstreamOptions::default()
    };
    let mut h = pipe_upstream_with(Peer::Answer(6 << 20), options);
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
    // Every task idle again: the old connection's server has seen its last stream.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        h.after_goaway.load(Ordering::SeqCst),
        0,
        "a stream after GOAWAY"
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
    let reason = match error.downcast_ref::<UpstreamError>() {
        Some(UpstreamError::Broken(e)) => e.reason(),
        _ => None,
    };
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
    let upstream = Upstream::new(
        http::Uri::from_static("http://backend.invalid/"),
        Blackhole(dials.clone()),
        UpstreamOptions {
            dial_timeout: Duration::from_millis(500),
            ..UpstreamOptions::default()
        },
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

#[tokio::test]
async fn a_reply_over_the_limit_fails_and_is_not_read_to_its_end() {
    let options = UpstreamOptions {
        max_reply_bytes: 1 << 20,
        ..UpstreamOptions::default()
    };
    // The limit, plus the 5 bytes of gRPC framing the payload stands in for: taken.
    let mut h = pipe_upstream_with(Peer::Answer((1 << 20) + 5 - 3), options);
    let reply = call(&mut h.upstream, b"abc").await.expect("at the limit");
    assert_eq!(reply.len(), (1 << 20) + 5);
    // One byte more: refused, and the connection stays usable.
    let mut h = pipe_upstream_with(Peer::Answer((1 << 20) + 6 - 3), options);
    let error = call(&mut h.upstream, b"abc")
        .await
        .expect_err("over the limit");
    assert!(
        matches!(
            error.downcast_ref::<UpstreamError>(),
            Some(UpstreamError::ReplyTooLarge { limit }) if *limit == 1 << 20
        ),
        "{error}"
    );
    let reply = call(&mut h.upstream, b"")
        .await
        .expect("a reply within the limit");
    assert_eq!(reply.len(), (1 << 20) + 3);
    assert_eq!(h.dials.load(Ordering::SeqCst), 1, "one connection for both");
}

#[tokio::test(start_paused = true)]
async fn a_call_past_its_grpc_timeout_fails_with_the_deadline_and_is_cancelled() {
    let h = pipe_upstream(Peer::Hold);
    let mut upstream = h.upstream.clone();
    let request = http::Request::post("http://backend.test/svc/Method")
        .header("grpc-timeout", "250m")
        .body(Body::new(Full::new(Bytes::from_static(b"slow"))))
        .expect("request");
    let started = tokio::time::Instant::now();
    let error = upstream.call(request).await.expect_err("no reply");
    assert!(
        matches!(error, UpstreamError::Deadline(after) if after == Duration::from_millis(250)),
        "{error}"
    );
    assert_eq!(started.elapsed(), Duration::from_millis(250));
    tokio::time::sleep(Duration::from_secs(1)).await; // every task idle
    assert_eq!(h.cancelled.load(Ordering::SeqCst), 1, "RST_STREAM CANCEL");
}

#[tokio::test]
async fn a_call_on_a_connection_found_ended_opens_no_stream_and_may_go_again() {
    // A backend killed a moment ago: its connection has ended, and is not yet marked closed.
    let (near, _far) = tokio::io::duplex(64 * 1024);
    let (sender, connection) = h2::client::handshake(near).await.expect("handshake");
    drop(connection);
    let connection = Connection {
        sender,
        closed: Arc::new(AtomicBool::new(false)),
    };
    let request = Request {
        method: http::Method::POST,
        uri: http::Uri::from_static("http://backend.test/svc/Method"),
        version: http::Version::HTTP_2,
        headers: http::HeaderMap::new(),
        message: Bytes::from_static(b"one"),
        trailers: None,
    };
    let failed = send(&connection, request).await.expect_err("no connection");
    assert!(!failed.opened, "{}", failed.error);
    assert!(
        failed.unprocessed(),
        "safe to send again: no stream was opened"
    );
    assert!(
        connection.closed.load(Ordering::SeqCst),
        "the next call dials"
    );
}
