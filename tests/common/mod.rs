//! Starts the backend and the gateway on 127.0.0.1:0 (listeners bound before the servers are
//! spawned, so no test waits for a port), with a temporary data directory; stops them on
//! [`TestServer::stop`] or when dropped.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use compute_gateway::backend::{self, Backend, BackendConfig};
use compute_gateway::gateway::{self, Gateway, GatewayConfig, ListenerOptions};
use compute_gateway::json::Any;
use compute_gateway::pb::yandex::cloud::compute::v1::image_service_client::ImageServiceClient;
use compute_gateway::pb::yandex::cloud::operation::operation_service_client::OperationServiceClient;
use compute_gateway::pb::yandex::cloud::operation::{GetOperationRequest, Operation};
use compute_gateway::store::EmbeddedStore;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A running backend + gateway.
pub struct TestServer {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Options for a test server.
#[derive(Clone)]
pub struct Options {
    pub create_delay: Duration,
    pub gateway: GatewayConfig,
    pub listener: ListenerOptions,
    /// Connect the gateway to the backend the way `serve` does (an in-memory gRPC
    /// connection) instead of over the backend's TCP port.
    pub in_process: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            create_delay: Duration::from_millis(50),
            gateway: GatewayConfig::default(),
            listener: ListenerOptions::default(),
            in_process: false,
        }
    }
}

impl TestServer {
    /// A server with a fresh data directory.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// A server with a fresh data directory and these options.
    pub async fn start_with(options: Options) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut s = Self::start_in(tmp.path(), options).await;
        s._tmp = Some(tmp);
        s
    }

    /// A server on an existing data directory.
    pub async fn start_in(dir: &Path, options: Options) -> Self {
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let grpc_addr = grpc.local_addr().expect("addr");
        let http_addr = http.local_addr().expect("addr");
        let store = EmbeddedStore::open(dir).expect("open store");
        let be = Backend::new(
            Arc::new(store),
            BackendConfig {
                create_delay: options.create_delay,
                advertise_address: grpc_addr.to_string(),
                health: Default::default(),
                handshake_timeout: options.listener.header_read_timeout,
            },
        );
        be.recover().await.expect("recover");
        let (gw, local) = if options.in_process {
            let (upstream, local) = backend::in_process();
            let gw = Gateway::with_upstream(upstream, options.gateway).expect("gateway");
            (gw, Some(local))
        } else {
            let gw =
                Gateway::new(&format!("http://{grpc_addr}"), options.gateway).expect("gateway");
            (gw, None)
        };
        let gw = Arc::new(gw);
        let listener = options.listener.clone();
        let (stop, rx) = watch::channel(false);
        let wait = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let tasks = vec![
            tokio::spawn({
                let w = wait(rx.clone());
                async move {
                    match local {
                        Some(local) => backend::run_with_local(grpc, local, be, None, w).await,
                        None => backend::run(grpc, be, w).await,
                    }
                    .expect("backend runs")
                }
            }),
            tokio::spawn({
                let w = wait(rx);
                async move {
                    gateway::run_with(http, gw, listener, w)
                        .await
                        .expect("gateway runs")
                }
            }),
        ];
        Self {
            grpc_addr,
            http_addr,
            data_dir: dir.to_path_buf(),
            _tmp: None,
            stop,
            tasks,
        }
    }

    /// A gRPC channel to the backend.
    pub fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .expect("url")
            .connect_lazy()
    }

    pub fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel())
    }

    pub fn operations(&self) -> OperationServiceClient<Channel> {
        OperationServiceClient::new(self.channel())
    }

    /// `http://127.0.0.1:PORT` of the gateway.
    pub fn http(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Stops both servers and waits for them.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Polls an operation until it is done (the create runner finishes it after the configured
/// delay); fails after 10 s.
pub async fn wait_done(ops: &mut OperationServiceClient<Channel>, id: &str) -> Operation {
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
pub fn response<M: prost::Message + prost::Name + Default>(op: &Operation) -> M {
    use compute_gateway::pb::yandex::cloud::operation::operation::Result as R;
    match &op.result {
        Some(R::Response(any)) => unpack(any),
        other => panic!("operation {} has no response: {other:?}", op.id),
    }
}

pub fn unpack<M: prost::Message + prost::Name + Default>(any: &Any) -> M {
    any.unpack::<M>()
        .expect("decodes")
        .unwrap_or_else(|| panic!("Any holds {}", any.type_url))
}

/// A gateway alone on 127.0.0.1:0 in front of `backend_url`; stopped when dropped.
pub struct GatewayOnly {
    pub addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl Drop for GatewayOnly {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a [`GatewayOnly`].
pub async fn gateway_only(backend_url: &str, config: GatewayConfig) -> GatewayOnly {
    let gw = Arc::new(Gateway::new(backend_url, config).expect("gateway"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(gateway::run(listener, gw, std::future::pending()));
    GatewayOnly { addr, task }
}

/// An address nothing listens on: a port that was free a moment ago.
pub async fn dead_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
}
