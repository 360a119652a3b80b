//! Starts `serve` with the product's own wiring ([`Server`]) on 127.0.0.1:0 (listeners bound
//! before the servers are spawned, so no test waits for a port), with a temporary data
//! directory; stops it on [`TestServer::stop`] or when dropped. [`gateway_only`] does the same
//! for the `gateway` command.

#![allow(dead_code)]

pub(crate) mod pg;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use compute_gateway::backend::{AuthConfig, BackendConfig, HealthProbe, MessageLimits, Retention};
use compute_gateway::gateway::{self, Gateway, GatewayConfig, ListenerOptions};
use compute_gateway::json::Any;
use compute_gateway::net::{self, Shutdown};
use compute_gateway::pb::yandex::cloud::compute::v1::image_service_client::ImageServiceClient;
use compute_gateway::pb::yandex::cloud::operation::operation_service_client::OperationServiceClient;
use compute_gateway::pb::yandex::cloud::operation::{GetOperationRequest, Operation};
use compute_gateway::serve::{ServeConfig, Server};
use compute_gateway::store::{EmbeddedStore, Opener, PostgresOptions, PostgresStore, Store};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A running `serve`: backend + gateway.
pub(crate) struct TestServer {
    pub(crate) grpc_addr: SocketAddr,
    pub(crate) http_addr: SocketAddr,
    pub(crate) data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    shutdown: Shutdown,
    tasks: Vec<JoinHandle<()>>,
    /// The PostgreSQL database of this server, dropped after it (see [`pg`]).
    database: Option<pg::TestDatabase>,
}

/// Options for a test server.
#[derive(Clone)]
pub(crate) struct Options {
    pub(crate) create_delay: Duration,
    /// The backend's limit on one gRPC call.
    pub(crate) call_timeout: Duration,
    /// How long done Operations and idempotency keys are kept.
    pub(crate) retention: Retention,
    /// How the backend checks its store.
    pub(crate) health: HealthProbe,
    /// The gRPC services' message size limits.
    pub(crate) grpc_messages: MessageLimits,
    /// Who may call.
    pub(crate) auth: AuthConfig,
    /// Opens the store's database (default: the file in the data directory).
    pub(crate) store: Option<Opener>,
    /// Keep the data in this PostgreSQL database instead (default: with
    /// `CG_TEST_STORE=postgres`, a fresh one for a server with a data directory of its own).
    pub(crate) database_url: Option<String>,
    pub(crate) gateway: GatewayConfig,
    pub(crate) listener: ListenerOptions,
    /// Serve REST from a gateway of its own (the `gateway` command's wiring) in front of the
    /// gRPC port over TCP, instead of from `serve`'s gateway and its in-process connection.
    pub(crate) gateway_over_tcp: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            create_delay: Duration::from_millis(50),
            call_timeout: BackendConfig::DEFAULT_CALL_TIMEOUT,
            retention: Default::default(),
            store: None,
            database_url: None,
            health: HealthProbe::default(),
            grpc_messages: MessageLimits::default(),
            auth: AuthConfig::default(),
            gateway: GatewayConfig::default(),
            listener: ListenerOptions::default(),
            gateway_over_tcp: false,
        }
    }
}

impl TestServer {
    /// A server with a fresh data directory.
    pub(crate) async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// A server with a fresh data directory and these options.
    pub(crate) async fn start_with(mut options: Options) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        // A server with a data directory of its own starts empty: on PostgreSQL too.
        let database = (options.store.is_none()
            && options.database_url.is_none()
            && pg::wanted_for_every_server())
        .then(pg::TestDatabase::create)
        .flatten();
        if let Some(db) = &database {
            options.database_url = Some(db.url.clone());
        }
        let mut s = Self::start_in(tmp.path(), options).await;
        s._tmp = Some(tmp);
        s.database = database;
        s
    }

    /// A server on an existing data directory, wired as `serve` wires it.
    pub(crate) async fn start_in(dir: &Path, options: Options) -> Self {
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let grpc_addr = grpc.local_addr().expect("addr");
        let mut http_addr = http.local_addr().expect("addr");
        let store: Arc<dyn Store> = match (&options.database_url, &options.store) {
            (Some(url), _) => Arc::new(
                PostgresStore::open(url, PostgresOptions::default()).expect("open the database"),
            ),
            (None, Some(open)) => {
                Arc::new(EmbeddedStore::open_with(open.clone()).expect("open store"))
            }
            (None, None) => Arc::new(EmbeddedStore::open(dir).expect("open store")),
        };
        let config = ServeConfig {
            backend: BackendConfig {
                create_delay: options.create_delay,
                advertise_address: grpc_addr.to_string(),
                health: options.health,
                call_timeout: options.call_timeout,
                idle_timeout: options.listener.idle_timeout,
                messages: options.grpc_messages,
                spans: options.gateway.spans.clone(),
                auth: options.auth.clone(),
                retention: options.retention,
            },
            gateway: options.gateway.clone(),
            listener: options.listener.clone(),
            // Both listeners are bounded alike.
            grpc_connections: net::ConnOptions {
                name: "grpc",
                ..options.listener.connections()
            },
            tls: None,
        };
        let server = Server::new(store, config).await.expect("serve starts");
        let shutdown = Shutdown::new();
        let mut tasks = vec![tokio::spawn({
            let shutdown = shutdown.clone();
            async move { server.run(grpc, http, shutdown).await.expect("serve runs") }
        })];
        if options.gateway_over_tcp {
            let (addr, task) = spawn_gateway(
                &[format!("http://{grpc_addr}")],
                options.gateway,
                options.listener,
                shutdown.clone(),
            )
            .await;
            http_addr = addr;
            tasks.push(task);
        }
        Self {
            grpc_addr,
            http_addr,
            data_dir: dir.to_path_buf(),
            _tmp: None,
            shutdown,
            tasks,
            database: None,
        }
    }

    /// A gRPC channel to the backend.
    pub(crate) fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .expect("url")
            .connect_lazy()
    }

    pub(crate) fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel())
    }

    pub(crate) fn operations(&self) -> OperationServiceClient<Channel> {
        OperationServiceClient::new(self.channel())
    }

    /// Whether its data is in PostgreSQL (else in the embedded store of `data_dir`).
    pub(crate) fn on_postgres(&self) -> bool {
        self.database.is_some()
    }

    /// The backend's gRPC address.
    #[allow(dead_code)]
    pub(crate) fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// `http://127.0.0.1:PORT` of the gateway.
    pub(crate) fn http(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Stops both servers and waits for them.
    pub(crate) async fn stop(mut self) {
        self.shutdown.trigger();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Polls an operation until it is done (the create runner finishes it after the configured
/// delay); fails after 10 s.
pub(crate) async fn wait_done(ops: &mut OperationServiceClient<Channel>, id: &str) -> Operation {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let op = ops
            .get(GetOperationRequest {
                operation_id: id.to_string(),
            })
            .await
            .expect("get operation")
            .into_inner();
        if op.done {
            return op;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "operation {id} not done in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Unpacks the response of a done Operation.
pub(crate) fn response<M: prost::Message + prost::Name + Default>(op: &Operation) -> M {
    use compute_gateway::pb::yandex::cloud::operation::operation::Result as R;
    match &op.result {
        Some(R::Response(any)) => unpack(any),
        other => panic!("operation {} has no response: {other:?}", op.id),
    }
}

pub(crate) fn unpack<M: prost::Message + prost::Name + Default>(any: &Any) -> M {
    any.unpack::<M>()
        .expect("decodes")
        .unwrap_or_else(|| panic!("Any holds {}", any.type_url))
}

/// A gateway alone on 127.0.0.1:0 in front of `backend_url`; stopped when dropped.
pub(crate) struct GatewayOnly {
    pub(crate) addr: SocketAddr,
    shutdown: Shutdown,
    task: JoinHandle<()>,
}

impl Drop for GatewayOnly {
    fn drop(&mut self) {
        self.shutdown.trigger();
        self.task.abort();
    }
}

/// Starts a [`GatewayOnly`].
pub(crate) async fn gateway_only(backend_url: &str, config: GatewayConfig) -> GatewayOnly {
    gateway_over(&[backend_url.to_string()], config).await
}

/// Starts a [`GatewayOnly`] in front of several backends.
#[allow(dead_code)]
pub(crate) async fn gateway_over(backend_urls: &[String], config: GatewayConfig) -> GatewayOnly {
    let shutdown = Shutdown::new();
    let (addr, task) = spawn_gateway(
        backend_urls,
        config,
        ListenerOptions::default(),
        shutdown.clone(),
    )
    .await;
    GatewayOnly {
        addr,
        shutdown,
        task,
    }
}

/// Serves an existing gateway on 127.0.0.1:0 (its reloads included) until dropped.
#[allow(dead_code)]
pub(crate) async fn serve_gateway(gw: Arc<Gateway>) -> GatewayOnly {
    let shutdown = Shutdown::new();
    let options = ListenerOptions::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = net::incoming(listener, None, options.connections(), shutdown.clone());
    let task = tokio::spawn(gateway::serve(incoming, gw, options, shutdown.clone()));
    GatewayOnly {
        addr,
        shutdown,
        task,
    }
}

/// The `gateway` command's wiring on 127.0.0.1:0, until `shutdown`.
async fn spawn_gateway(
    backend_urls: &[String],
    config: GatewayConfig,
    options: ListenerOptions,
    shutdown: Shutdown,
) -> (SocketAddr, JoinHandle<()>) {
    let gw = Arc::new(Gateway::balancing(backend_urls, config).expect("gateway"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = net::incoming(listener, None, options.connections(), shutdown.clone());
    let task = tokio::spawn(gateway::serve(incoming, gw, options, shutdown));
    (addr, task)
}

/// The release-less binary's `serve` on ports 0 with `args` added, as a process of its own
/// (so that it can be signalled or killed), and the addresses its ready line gives
/// (`{"grpc": …, "http": …}`). Its stderr goes where `stderr` says.
pub(crate) fn serve_process(
    args: &[&std::ffi::OsStr],
    stderr: std::process::Stdio,
) -> (std::process::Child, serde_json::Value) {
    let listen: [&std::ffi::OsStr; 5] = [
        "serve".as_ref(),
        "--grpc-listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--http-listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ];
    let all: Vec<&std::ffi::OsStr> = listen.iter().copied().chain(args.iter().copied()).collect();
    process(&all, stderr)
}

/// The binary run with `args` (a command and its flags, listeners included) and
/// `--ready-file -`, once its ready line says where it listens.
pub(crate) fn process(
    args: &[&std::ffi::OsStr],
    stderr: std::process::Stdio,
) -> (std::process::Child, serde_json::Value) {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_compute-gateway"))
        .args(args)
        .args(["--ready-file", "-"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start the binary");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let ready = serde_json::from_str(&line).unwrap_or_else(|e| {
        let _ = child.kill();
        panic!("ready line {line:?} of {args:?}: {e}")
    });
    (child, ready)
}

/// An address nothing listens on: a port that was free a moment ago.
pub(crate) async fn dead_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
}

/// What a [`recording_backend`] saw of its last call.
#[derive(Default)]
#[allow(dead_code)]
pub(crate) struct Recorded {
    pub(crate) path: String,
    pub(crate) message: Vec<u8>,
    pub(crate) metadata: Vec<(String, String)>,
}

/// A gRPC server that records one unary call and answers with `reply` (an encoded message).
#[allow(dead_code)]
pub(crate) async fn recording_backend(reply: Vec<u8>) -> (String, Arc<std::sync::Mutex<Recorded>>) {
    use bytes::{Buf, Bytes};
    use http::{HeaderMap, HeaderValue, Request, Response};
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::{Frame, Incoming};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::convert::Infallible;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(std::sync::Mutex::new(Recorded::default()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            let reply = reply.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let record = record.clone();
                let reply = reply.clone();
                async move {
                    let path = req.uri().path().to_string();
                    let metadata = req
                        .headers()
                        .iter()
                        .filter(|(k, _)| {
                            !k.as_str().starts_with("grpc-")
                                && !["te", "content-type", "user-agent"].contains(&k.as_str())
                        })
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
                        .collect();
                    let mut body = req.into_body().collect().await.expect("body").to_bytes();
                    body.advance(5); // gRPC frame: flag + length
                    *record.lock().expect("lock") = Recorded {
                        path,
                        message: body.to_vec(),
                        metadata,
                    };
                    let mut frame = vec![0u8];
                    frame.extend_from_slice(&(reply.len() as u32).to_be_bytes());
                    frame.extend_from_slice(&reply);
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                        Ok(Frame::data(Bytes::from(frame))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    let resp = Response::builder()
                        .header("content-type", "application/grpc")
                        .body(StreamBody::new(tokio_stream::iter(frames)))
                        .expect("response");
                    Ok::<_, Infallible>(resp)
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}
