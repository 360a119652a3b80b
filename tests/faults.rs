//! Slow and abusive clients, and a backend that is down, restarting, slow or returning garbage:
//! timeouts cut slow clients off, on both ports and before any request too, without starving
//! others; backend faults become 503/504 within
//! the configured time; the gateway recovers without a restart and leaks no tasks or sockets.
//! A TLS backend is reached only with the right roots and name. A write stuck in the store
//! turns the health checks NOT_SERVING until it finishes.

mod common;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Options, TestServer};
use compute_gateway::backend::{self, Backend, BackendConfig, HealthProbe};
use compute_gateway::gateway::{Gateway, GatewayConfig, ListenerOptions};
use compute_gateway::net::{self, BackendTls, Shutdown};
use compute_gateway::pb::yandex::cloud::compute::v1::GetImageRequest;
use compute_gateway::pb::yandex::cloud::compute::v1::image_service_client::ImageServiceClient;
use compute_gateway::store::{Commit, EmbeddedStore, Store, StoreError, TxMut, WriteJob};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn quick_listener() -> ListenerOptions {
    ListenerOptions {
        header_read_timeout: Duration::from_millis(400),
        max_concurrent_streams: 7,
        ..ListenerOptions::default()
    }
}

/// A server whose listeners use [`quick_listener`].
async fn quick_server() -> TestServer {
    TestServer::start_with(Options {
        listener: quick_listener(),
        ..Default::default()
    })
    .await
}

/// Reads until the peer closes (Ok(bytes)) or `limit` passes (Err).
fn read_until_closed(conn: &mut TcpStream, limit: Duration) -> Result<Vec<u8>, Duration> {
    let start = Instant::now();
    conn.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Ok(out), // reset: closed too
        }
        if start.elapsed() > limit {
            return Err(start.elapsed());
        }
    }
}

/// Sends a request head one byte every 40 ms and never finishes it. Returns how long the
/// connection lived once the server closes it, or `Err` if it is still open after `limit`.
async fn dribble_until_cut_off(addr: SocketAddr, limit: Duration) -> Result<Duration, Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = b"GET /compute/v1/images?folderId=b1g HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let start = Instant::now();
    let mut sent = 0usize;
    let mut buf = [0u8; 512];
    while start.elapsed() < limit {
        tokio::select! {
            read = conn.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Ok(start.elapsed()),
                Ok(_) => {} // an error reply before the close: keep reading
            },
            _ = tokio::time::sleep(Duration::from_millis(40)) => {
                let byte = head.get(sent).copied().unwrap_or(b'a');
                if conn.write_all(&[byte]).await.is_err() {
                    return Ok(start.elapsed());
                }
                sent += 1;
            }
        }
    }
    Err(start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_cut_off_by_the_header_timeout() {
    let s = quick_server().await;
    // 100 clients that would dribble a request head for 8 s; the 400 ms header timeout ends them.
    let slow: Vec<_> = (0..100)
        .map(|_| tokio::spawn(dribble_until_cut_off(s.http_addr, Duration::from_secs(8))))
        .collect();
    for t in slow {
        let lived = t.await.expect("slow client");
        assert!(
            lived.is_ok(),
            "a slowloris connection was still open after {lived:?} with a 400 ms header timeout"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_connections_do_not_starve_other_clients() {
    // A header timeout far beyond the test, so the unfinished connections stay open throughout.
    let s = TestServer::start_with(Options {
        listener: ListenerOptions {
            header_read_timeout: Duration::from_secs(120),
            ..ListenerOptions::default()
        },
        ..Default::default()
    })
    .await;
    // 100 connections: half never send a byte, half stop in the middle of a request head.
    let mut unfinished = Vec::new();
    for i in 0..100 {
        let conn = tokio::net::TcpStream::connect(s.http_addr)
            .await
            .expect("connect");
        if i % 2 == 1 {
            conn.writable().await.expect("writable");
            conn.try_write(b"GET /compute/v1/images?folderId=b1g HTTP/1.1\r\nHost: x\r\n")
                .expect("partial head");
        }
        unfinished.push(conn);
    }
    // A normal client, on a new connection each time, is served while all of them are open.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    for _ in 0..5 {
        let served = tokio::time::timeout(
            Duration::from_secs(10),
            http.get(format!("{}/compute/v1/images?folderId=b1g", s.http()))
                .send(),
        )
        .await
        .expect("a normal request is not held behind the unfinished connections")
        .expect("served");
        assert_eq!(served.status(), 200);
    }
    let mut buf = [0u8; 64];
    for conn in &unfinished {
        match conn.try_read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("an unfinished connection was answered or closed: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_an_idle_connection_is_closed() {
    let config = GatewayConfig {
        body_read_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let s = TestServer::start_with(Options {
        gateway: config,
        listener: quick_listener(),
        ..Default::default()
    })
    .await;
    let addr = s.http_addr;
    // Both timeouts here are well under the 5 s that `read_until_closed` waits, and the
    // defaults (10 s each) are well over it, so a close within 5 s is these timeouts at work.
    let (reply, idle) = tokio::task::spawn_blocking(move || {
        let mut conn = TcpStream::connect(addr).expect("connect");
        conn.write_all(
            b"POST /compute/v1/images HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"folder",
        )
        .expect("write");
        let reply = read_until_closed(&mut conn, Duration::from_secs(5))
            .expect("the server answers and closes");
        // A keep-alive connection that goes quiet after a complete exchange is closed too.
        let mut idle = TcpStream::connect(addr).expect("connect");
        idle.write_all(b"GET /compute/v1/images?folderId=b1g HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let closed = read_until_closed(&mut idle, Duration::from_secs(5));
        (String::from_utf8_lossy(&reply).into_owned(), closed)
    })
    .await
    .expect("exchange");
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"code\":4"), "{reply}");
    if let Err(lived) = idle {
        panic!("an idle keep-alive connection was still open after {lived:?}");
    }
}

#[tokio::test]
async fn http2_advertises_the_stream_limit() {
    let s = quick_server().await;
    let addr = s.http_addr;
    let settings = tokio::task::spawn_blocking(move || {
        let mut conn = TcpStream::connect(addr).expect("connect");
        conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .expect("preface");
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut head = [0u8; 9];
        conn.read_exact(&mut head).expect("frame header");
        assert_eq!(head[3], 4, "the server's first frame is SETTINGS");
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload).expect("settings");
        payload
            .chunks(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("exchange");
    assert!(
        settings.contains(&(3, 7)),
        "SETTINGS_MAX_CONCURRENT_STREAMS = 7 expected in {settings:?}"
    );
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Sockets this process holds (open file descriptors) with `ports` at either end, listeners
/// aside: the fds of one test's servers and clients, whatever sibling tests in this process
/// have open. Read from `/proc/self/fd` (socket inodes) and `/proc/self/net/tcp{,6}`.
fn sockets_on(ports: &[u16]) -> usize {
    let ours: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let port_of = |addr: &str| {
        addr.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    const LISTEN: &str = "0A";
    ["/proc/self/net/tcp", "/proc/self/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        })
        .filter(|row| row.len() > 9 && row[3] != LISTEN && ours.contains(&row[9]))
        .filter(|row| {
            [&row[1], &row[2]]
                .iter()
                .any(|a| port_of(a).is_some_and(|p| ports.contains(&p)))
        })
        .count()
}

/// Waits (bounded) until `f` returns at most `limit`.
async fn settles(what: &str, limit: usize, f: impl Fn() -> usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while f() > limit {
        assert!(
            Instant::now() < deadline,
            "{what}: {} > {limit} after 5 s",
            f()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start_gateway(backend_url: &str, timeout: Duration) -> (SocketAddr, common::GatewayOnly) {
    let config = GatewayConfig {
        request_timeout: timeout,
        ..Default::default()
    };
    let gw = common::gateway_only(backend_url, config).await;
    (gw.addr, gw)
}

async fn get(http: &reqwest::Client, addr: SocketAddr) -> (u16, Value, Duration) {
    let started = Instant::now();
    let r = http
        .get(format!("http://{addr}/compute/v1/images?folderId=b1g"))
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    (
        status,
        r.json().await.expect("JSON body"),
        started.elapsed(),
    )
}

/// A backend started by a test; [`RunningBackend::stop`] shuts it down and waits until it has.
struct RunningBackend {
    stop: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl RunningBackend {
    /// Graceful shutdown, awaited: its connections have closed, so no request reaches it after
    /// this returns. The gateway must let go of its connection for that to happen.
    async fn stop(self) {
        assert!(!self.task.is_finished(), "backend running");
        self.stop.trigger();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the backend stops within 5 s")
            .expect("no panic");
    }
}

async fn start_backend(listener: TcpListener, dir: &std::path::Path) -> RunningBackend {
    let store = Arc::new(EmbeddedStore::open(dir).expect("store"));
    start_backend_with(
        listener,
        store,
        HealthProbe::default(),
        None,
        Duration::from_secs(10),
    )
    .await
}

async fn start_backend_with(
    listener: TcpListener,
    store: Arc<EmbeddedStore>,
    health: HealthProbe,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    handshake_timeout: Duration,
) -> RunningBackend {
    let addr = listener.local_addr().expect("addr").to_string();
    let be = Backend::new(
        store,
        BackendConfig {
            create_delay: Duration::from_millis(10),
            advertise_address: addr,
            health,
            call_timeout: BackendConfig::DEFAULT_CALL_TIMEOUT,
            idle_timeout: BackendConfig::DEFAULT_IDLE_TIMEOUT,
            messages: Default::default(),
            spans: None,
            auth: Default::default(),
            retention: Default::default(),
        },
    );
    let stop = Shutdown::new();
    let incoming = net::incoming(
        listener,
        tls,
        net::ConnOptions {
            handshake_timeout,
            ..net::ConnOptions::named("grpc")
        },
        stop.clone(),
    );
    let serving = stop.clone();
    let task = tokio::spawn(async move {
        backend::serve(incoming, be, serving).await;
    });
    RunningBackend { stop, task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarting_backend_is_503_then_recovers_without_restarting_the_gateway() {
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let stop = start_backend(listener, dirs[0].path()).await;
    let (gw, _gw_stop) =
        start_gateway(&format!("http://127.0.0.1:{port}"), Duration::from_secs(10)).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let baseline_tasks = alive_tasks();

    assert_eq!(get(&http, gw).await.0, 200);
    // Both ends of the gateway's connection to the backend are in this process: the count
    // below can see a leak.
    assert!(sockets_on(&[port]) >= 2, "the gateway's backend connection");
    stop.stop().await;
    let mut saw_503 = false;
    for _ in 0..50 {
        let (status, body, took) = get(&http, gw).await;
        if status == 503 {
            assert_eq!(body["code"], 14);
            assert!(
                took < Duration::from_secs(5),
                "503 took {took:?}, not at once"
            );
            saw_503 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_503, "the gateway noticed the backend going away");
    // The backend comes back on the same port; the gateway reconnects by itself.
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("rebind the same port");
    let stop = start_backend(listener, dirs[1].path()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, _) = get(&http, gw).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery in 10 s (last status {status})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A burst of requests, then nothing left behind but the new backend's own work.
    for _ in 0..100 {
        assert_eq!(get(&http, gw).await.0, 200);
    }
    stop.stop().await;
    for _ in 0..50 {
        assert_eq!(get(&http, gw).await.0, 503);
    }
    settles("tasks", baseline_tasks + 2, alive_tasks).await;
    // No socket left to the backend's port or on the gateway's.
    settles("sockets", 0, || sockets_on(&[port, gw.port()])).await;
}

/// A gRPC server that answers every call after `delay` with `reply` bytes and the given
/// trailers (or, when `garbage` is set, with an HTTP/1.1 text response).
async fn fake_backend(
    delay: Duration,
    reply: Vec<u8>,
    status: &'static str,
    message: &'static str,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let reply = reply.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let reply = reply.clone();
                async move {
                    let _ = req.into_body().collect().await;
                    tokio::time::sleep(delay).await;
                    let mut frame = vec![0u8];
                    frame.extend_from_slice(&(reply.len() as u32).to_be_bytes());
                    frame.extend_from_slice(&reply);
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static(status));
                    trailers.insert("grpc-message", HeaderValue::from_static(message));
                    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                        Ok(Frame::data(Bytes::from(frame))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/grpc")
                            .body(StreamBody::new(tokio_stream::iter(frames)))
                            .expect("response"),
                    )
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_garbage_and_failing_backends_map_to_clear_statuses() {
    let http = reqwest::Client::new();
    // Slow: past the request timeout is 504, long before the backend would answer.
    let slow = fake_backend(Duration::from_secs(10), vec![], "0", "").await;
    let (gw, _s1) = start_gateway(&format!("http://{slow}"), Duration::from_millis(300)).await;
    let (status, body, took) = get(&http, gw).await;
    assert_eq!((status, body["code"].as_i64()), (504, Some(4)), "{body}");
    assert!(took < Duration::from_secs(5), "504 took {took:?}");

    // Garbage: a reply that is not a ListImagesResponse.
    let garbage = fake_backend(Duration::ZERO, vec![0xff, 0xff, 0xff, 0xff], "0", "").await;
    let (gw, _s2) = start_gateway(&format!("http://{garbage}"), Duration::from_secs(2)).await;
    let (status, body, _) = get(&http, gw).await;
    assert_eq!((status, body["code"].as_i64()), (503, Some(14)), "{body}");
    assert!(
        !body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("decode"),
        "no internals: {body}"
    );

    // Not gRPC at all: an HTTP/1.1 server.
    let text = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let text_addr = text.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = text.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                .await;
        }
    });
    // It never completes the HTTP/2 handshake, so this one ends at the request timeout.
    let (gw, _s3) = start_gateway(&format!("http://{text_addr}"), Duration::from_secs(1)).await;
    let (status, body, took) = get(&http, gw).await;
    assert!(
        matches!(
            (status, body["code"].as_i64()),
            (503, Some(14)) | (504, Some(4))
        ),
        "{status} {body}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // A backend that says UNAVAILABLE itself: its status and message pass through.
    let busy = fake_backend(Duration::ZERO, vec![], "14", "maintenance window").await;
    let (gw, _s4) = start_gateway(&format!("http://{busy}"), Duration::from_secs(2)).await;
    let (status, body, _) = get(&http, gw).await;
    assert_eq!(
        (status, body["code"].as_i64(), body["message"].as_str()),
        (503, Some(14), Some("maintenance window"))
    );
    let internal = fake_backend(Duration::ZERO, vec![], "13", "disk on fire").await;
    let (gw, _s5) = start_gateway(&format!("http://{internal}"), Duration::from_secs(2)).await;
    let (status, body, _) = get(&http, gw).await;
    assert_eq!(
        (status, body["code"].as_i64(), body["message"].as_str()),
        (500, Some(13), Some("disk on fire"))
    );
}

/// A test CA, and a certificate it issued for `localhost` and 127.0.0.1 (valid until 2126).
const FIXTURE_CA: &[u8] = include_bytes!("fixtures/tls-ca.pem");
const FIXTURE_CERT: &[u8] = include_bytes!("fixtures/tls-cert.pem");
const FIXTURE_KEY: &[u8] = include_bytes!("fixtures/tls-key.pem");

/// A backend serving gRPC over TLS with the fixture identity, on a port of its own; the data
/// directory lives as long as the returned guard.
async fn start_tls_backend(
    handshake_timeout: Duration,
) -> (SocketAddr, (RunningBackend, tempfile::TempDir)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let tls =
        net::Tls::from_pem(FIXTURE_CERT.to_vec(), FIXTURE_KEY.to_vec()).expect("fixture identity");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
    let backend = start_backend_with(
        listener,
        store,
        HealthProbe::default(),
        Some(tls.grpc_server()),
        handshake_timeout,
    )
    .await;
    (addr, (backend, dir))
}

fn backend_tls(server_name: &str) -> GatewayConfig {
    GatewayConfig {
        backend_tls: Some(BackendTls {
            config: net::client_config(FIXTURE_CA).expect("client config"),
            server_name: server_name.into(),
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_backend_is_reached_with_its_roots_and_name_only() {
    let (addr, _backend) = start_tls_backend(Duration::from_secs(10)).await;
    let port = addr.port();
    let http = reqwest::Client::new();

    // The certificate chains to the CA the gateway trusts, and its name matches.
    for host in ["localhost", "127.0.0.1"] {
        let gw =
            common::gateway_only(&format!("https://{host}:{port}"), backend_tls("localhost")).await;
        let (status, body, _) = get(&http, gw.addr).await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    // A name the certificate does not carry, and plaintext to a TLS port: 503, not a hang.
    let wrong_name = common::gateway_only(
        &format!("https://127.0.0.1:{port}"),
        backend_tls("backend.example"),
    )
    .await;
    let plaintext = common::gateway_only(
        &format!("http://127.0.0.1:{port}"),
        GatewayConfig::default(),
    )
    .await;
    for gw in [wrong_name.addr, plaintext.addr] {
        let (status, body, took) = get(&http, gw).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], 14);
        assert!(took < Duration::from_secs(3), "503 took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_grpc_connection_must_handshake_then_send_its_preface_in_time() {
    let (addr, _backend) = start_tls_backend(Duration::from_millis(400)).await;
    let connector =
        tokio_rustls::TlsConnector::from(net::client_config(FIXTURE_CA).expect("client config"));
    // Closed (or reset) within 5 s, against a 400 ms handshake timeout.
    async fn closed<S: tokio::io::AsyncRead + Unpin>(conn: &mut S) -> bool {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 256];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {} // the server's SETTINGS
                Err(_) => return false,
            }
        }
    }

    // No TLS handshake at all.
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    assert!(
        closed(&mut silent).await,
        "a connection with no handshake stayed open"
    );

    // A handshake, then nothing: no HTTP/2 preface.
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut quiet = connector.connect(name, tcp).await.expect("TLS handshake");
    assert_eq!(
        quiet.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "gRPC clients need h2 chosen by ALPN"
    );
    assert!(
        closed(&mut quiet).await,
        "a TLS connection with no preface stayed open"
    );
}

#[test]
fn bad_backend_urls_and_roots_fail_at_startup() {
    for url in [
        "ftp://127.0.0.1:1",
        "127.0.0.1:50051",
        "http://",
        "http://127.0.0.1:1/prefix",
        "not a url",
    ] {
        let err = Gateway::new(url, GatewayConfig::default()).err();
        assert!(
            err.is_some_and(|e| e.to_string().contains("invalid backend URL")),
            "{url}"
        );
    }
    let err = Gateway::new("https://127.0.0.1:1", GatewayConfig::default()).err();
    assert!(err.is_some_and(|e| e.to_string().contains("--backend-ca")));
    assert!(net::client_config(b"not pem").is_err());
    assert!(net::client_config(FIXTURE_KEY).is_err());
    assert!(Gateway::new("https://127.0.0.1:1", backend_tls("localhost")).is_ok());
}

/// A write job that holds the store's writer inside its transaction until released: what a
/// commit stuck on a hung disk looks like from outside.
struct StuckWrite(std::sync::Mutex<std::sync::mpsc::Receiver<()>>);

impl WriteJob for StuckWrite {
    fn run(&mut self, _: &mut dyn TxMut) -> Commit {
        let _ = self.0.lock().expect("lock").recv();
        Commit::No
    }
    fn finish(self: Box<Self>, _: Result<(), StoreError>) {}
}

async fn health_of(client: &mut HealthClient<tonic::transport::Channel>) -> ServingStatus {
    let reply = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check");
    ServingStatus::try_from(reply.into_inner().status).expect("status")
}

/// Polls the health check until it reports `want` (bounded: 5 s).
async fn health_becomes(client: &mut HealthClient<tonic::transport::Channel>, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = health_of(client).await;
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "health still {status:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_write_turns_health_not_serving_until_it_finishes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let probe = HealthProbe {
        interval: Duration::from_millis(20),
        write_stall_limit: Duration::from_millis(200),
    };
    let _stop = start_backend_with(
        listener,
        store.clone(),
        probe,
        None,
        Duration::from_secs(10),
    )
    .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel.clone());
    assert_eq!(health_of(&mut health).await, ServingStatus::Serving);

    let (release, held) = std::sync::mpsc::channel();
    store.submit(Box::new(StuckWrite(std::sync::Mutex::new(held))));
    let stuck_at = Instant::now();
    health_becomes(&mut health, ServingStatus::NotServing).await;
    assert!(
        stuck_at.elapsed() >= Duration::from_millis(200),
        "not before the limit"
    );
    // Reads do not wait for the writer: a Get still answers at once.
    let mut images = ImageServiceClient::new(channel);
    let missing = images
        .get(GetImageRequest {
            image_id: "fd8missing".into(),
        })
        .await
        .expect_err("no such image");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    release.send(()).expect("release the write");
    health_becomes(&mut health, ServingStatus::Serving).await;
}

#[tokio::test]
async fn connections_that_never_get_to_a_request_are_closed_on_both_ports() {
    // 400 ms to send the first request's head or the HTTP/2 preface and SETTINGS.
    let s = quick_server().await;
    let openings: [(&str, &[u8]); 3] = [
        ("nothing", b""),
        ("part of the HTTP/2 preface", b"PRI * HTTP/2.0\r\n"),
        (
            "the preface without SETTINGS",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ),
    ];
    for (port, addr) in [("REST", s.http_addr), ("gRPC", s.grpc_addr)] {
        for (what, opening) in openings {
            let closed = tokio::task::spawn_blocking(move || {
                let mut conn = TcpStream::connect(addr).expect("connect");
                conn.write_all(opening).expect("write");
                read_until_closed(&mut conn, Duration::from_secs(5))
            })
            .await
            .expect("client");
            assert!(
                closed.is_ok(),
                "the {port} port held a connection that sent {what} for {closed:?}"
            );
        }
    }
}

/// A READY image made over gRPC on the backend at `addr` alone; its id.
async fn image_on(addr: SocketAddr) -> String {
    use compute_gateway::pb::yandex::cloud::compute::v1::{
        CreateImageMetadata, CreateImageRequest, create_image_request,
    };
    use compute_gateway::pb::yandex::cloud::operation::operation_service_client::OperationServiceClient;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let op = ImageServiceClient::new(channel.clone())
        .create(CreateImageRequest {
            folder_id: "b1gpool".into(),
            source: Some(create_image_request::Source::DiskId("d".into())),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    common::wait_done(&mut OperationServiceClient::new(channel), &op.id).await;
    let meta: CreateImageMetadata = common::unpack(op.metadata.as_ref().expect("metadata"));
    meta.image_id
}

/// `gateway --backend A --backend B`: calls are spread over the backends that are up; a backend
/// that stops (GOAWAY, then refused connections) is skipped and no call fails for it; one that
/// was never there is skipped from the first call; and one that comes up on a dead address is
/// taken into the rotation once its health check answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_spreads_calls_over_its_backends_and_fails_over() {
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    let (la, lb) = (
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
    );
    let (a_addr, b_addr) = (
        la.local_addr().expect("addr"),
        lb.local_addr().expect("addr"),
    );
    let a = start_backend(la, dirs[0].path()).await;
    let b = start_backend(lb, dirs[1].path()).await;
    // An image that only A has: a GET of it says which backend answered (200 A, 404 B).
    let image_id = image_on(a_addr).await;
    let dead = common::dead_address().await;
    let urls: Vec<String> = [a_addr, b_addr, dead]
        .iter()
        .map(|a| format!("http://{a}"))
        .collect();
    let gw = common::gateway_over(&urls, GatewayConfig::default()).await;
    let http = reqwest::Client::new();
    let get = || {
        http.get(format!("http://{}/compute/v1/images/{image_id}", gw.addr))
            .send()
    };
    let mut by_status = std::collections::BTreeMap::new();
    for _ in 0..20 {
        let status = get().await.expect("get").status().as_u16();
        *by_status.entry(status).or_insert(0) += 1;
    }
    assert_eq!(
        by_status.keys().copied().collect::<Vec<_>>(),
        [200, 404],
        "both backends answer, and the dead one is never an error: {by_status:?}"
    );
    assert!(
        by_status[&200] >= 5 && by_status[&404] >= 5,
        "{by_status:?}"
    );

    // B goes away: every call goes to A, none fails.
    b.stop().await;
    for i in 0..20 {
        let status = get().await.expect("get").status();
        assert_eq!(status, 200, "call {i} after B stopped");
    }
    let health = http
        .get(format!("http://{}/healthz", gw.addr))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200, "one backend serves");

    // A backend comes up where nothing was: once its health check answers, it takes calls.
    let listener = TcpListener::bind(dead)
        .await
        .expect("the dead address is free");
    let c = start_backend(listener, dirs[2].path()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if get().await.expect("get").status() == 404 {
            break; // answered by the new backend, which has no such image
        }
        assert!(
            Instant::now() < deadline,
            "the new backend never took a call"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(gw);
    a.stop().await;
    c.stop().await;
}

/// A backend that reports NOT_SERVING (here: a write stuck past the store's limit) stops taking
/// calls from a gateway with several backends, and takes them again once it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_is_not_serving_is_skipped_until_it_serves_again() {
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    let stuck_store = Arc::new(EmbeddedStore::open(dirs[0].path()).expect("store"));
    let (lx, ly) = (
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
    );
    let (x_addr, y_addr) = (
        lx.local_addr().expect("addr"),
        ly.local_addr().expect("addr"),
    );
    let probe = HealthProbe {
        interval: Duration::from_millis(20),
        write_stall_limit: Duration::from_millis(200),
    };
    let x = start_backend_with(
        lx,
        stuck_store.clone(),
        probe,
        None,
        Duration::from_secs(10),
    )
    .await;
    let y = start_backend(ly, dirs[1].path()).await;
    let gw = common::gateway_over(
        &[format!("http://{x_addr}"), format!("http://{y_addr}")],
        GatewayConfig::default(),
    )
    .await;
    let http = reqwest::Client::new();
    // An image on Y only: a GET of it says which backend answered (200 Y, 404 X).
    let image_id = image_on(y_addr).await;
    let url = format!("http://{}/compute/v1/images/{image_id}", gw.addr);
    let statuses = |n: usize| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let mut out = Vec::new();
            for _ in 0..n {
                out.push(http.get(&url).send().await.expect("get").status().as_u16());
            }
            out
        }
    };
    assert!(
        statuses(10).await.contains(&404),
        "X takes calls while it serves"
    );

    let (release, held) = std::sync::mpsc::channel();
    stuck_store.submit(Box::new(StuckWrite(std::sync::Mutex::new(held))));
    // The gateway checks every backend every few seconds: X is skipped once it says so.
    let deadline = Instant::now() + Duration::from_secs(15);
    while statuses(10).await.contains(&404) {
        assert!(
            Instant::now() < deadline,
            "X still takes calls while NOT_SERVING"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    release.send(()).expect("release the write");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !statuses(10).await.contains(&404) {
        assert!(Instant::now() < deadline, "X never took calls again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(gw);
    x.stop().await;
    y.stop().await;
}
