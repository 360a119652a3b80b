//! The gRPC backend: `ImageService`, `OperationService` and `ApiEndpointService` over a
//! [`Store`], with server reflection (v1 and v1alpha) and `grpc.health.v1.Health`.
//! It knows nothing of HTTP; the gateway reaches it over gRPC like any other client.

mod endpoints;
mod filter;
mod images;
mod observe;
mod operations;
mod page;
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, rustls};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::first_bytes::{FirstBytes, accept_tls};
use crate::gateway::upstream::{Dial, Dialing, Io, Upstream};
use crate::json::{Any, Timestamp};
use crate::pb::yandex::cloud::compute::v1::image_service_server::ImageServiceServer;
use crate::pb::yandex::cloud::endpoint::api_endpoint_service_server::ApiEndpointServiceServer;
use crate::pb::yandex::cloud::operation::Operation;
use crate::pb::yandex::cloud::operation::operation_service_server::OperationServiceServer;
use crate::store::{Commit, IdempotencyRecord, Store, StoreError, Tx, TxMut, WriteJob};

/// Backend settings.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// How long a Create stays CREATING before its Operation completes.
    pub create_delay: Duration,
    /// The `host:port` that endpoint discovery hands out for every service id.
    pub advertise_address: String,
    /// How the store's health is checked.
    pub health: HealthProbe,
    /// A new gRPC connection is closed unless it sends the HTTP/2 preface and SETTINGS within
    /// this time; over TLS it has this time for the handshake, then this time again for the
    /// preface. grpc-go bounds the same stretch with its `ConnectionTimeout`, 120 s by
    /// default; `serve` and `backend` use 10 s, like the REST listener's header-read timeout.
    pub handshake_timeout: Duration,
}

/// The store probe behind `grpc.health.v1.Health` (and so the gateway's `/readyz`): every
/// `interval` it reads the store and looks at the write in progress. A failed read, or a write
/// transaction running longer than `write_stall_limit` (a commit stuck on a hung disk: every
/// write waits behind it), turns every service NOT_SERVING until the store recovers.
#[derive(Clone, Copy, Debug)]
pub struct HealthProbe {
    /// Time between two checks.
    pub interval: Duration,
    /// Longest a write transaction may run before the store counts as unhealthy.
    pub write_stall_limit: Duration,
}

impl Default for HealthProbe {
    /// A check every 5 s; a write stuck for 10 s is unhealthy (a durable batch normally takes
    /// milliseconds).
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            write_stall_limit: Duration::from_secs(10),
        }
    }
}

/// The shared state of every service: a cheap-to-clone handle.
#[derive(Clone)]
pub struct Backend {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    config: BackendConfig,
    /// Wakes the runner of a create when its Operation is cancelled. A std Mutex: it is held
    /// only to insert, remove or look up one entry, never across an `.await`.
    running: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Backend {
    /// A backend over `store`; call [`Backend::recover`] before serving.
    pub fn new(store: Arc<dyn Store>, config: BackendConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                running: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Finishes the creates that were running when the process last stopped: each image
    /// becomes READY and its Operation completes, so no Operation is left running forever.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let running = self
            .read(|tx| tx.running_creates().map_err(internal))
            .await
            .map_err(|s| StoreError(s.message().to_string()))?;
        let n = running.len();
        for r in running {
            operations::finish_create(self, &r.operation_id)
                .await
                .map_err(|s| StoreError(s.message().to_string()))?;
        }
        Ok(n)
    }

    /// Runs `f` on a read snapshot. Inline on the async task: a read of cached pages takes
    /// microseconds, less than a hand-off to a blocking thread would.
    async fn read<T, F>(&self, f: F) -> Result<T, Status>
    where
        F: FnOnce(&dyn Tx) -> Result<T, Status>,
    {
        let mut f = Some(f);
        let mut out = None;
        self.inner
            .store
            .read(&mut |tx| {
                if let Some(f) = f.take() {
                    out = Some(f(tx));
                }
                Ok(())
            })
            .map_err(internal)?;
        out.unwrap_or_else(|| Err(internal(StoreError("the read did not run".into()))))
    }

    /// Runs `f` in a durable write transaction (shared with concurrent writes: group commit)
    /// and answers once that transaction is on disk; an `Err` rolls back `f`'s writes only.
    async fn write<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn TxMut) -> Result<T, Status> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.inner.store.submit(Box::new(Job {
            f: Some(f),
            result: None,
            reply,
        }));
        answer
            .await
            .unwrap_or_else(|_| Err(internal(StoreError("the store writer went away".into()))))
    }

    /// Runs a mutation that returns an Operation, honouring `idempotency-key`: a retry with the
    /// same key and request returns the first Operation (as it is now) and changes nothing; the
    /// same key with another request is FAILED_PRECONDITION. Key, mutation and Operation commit
    /// together.
    async fn mutate<F>(
        &self,
        md: &MetadataMap,
        method: &str,
        request: Vec<u8>,
        f: F,
    ) -> Result<Operation, Status>
    where
        F: FnOnce(&mut dyn TxMut, OpContext) -> Result<(Operation, String), Status>
            + Send
            + 'static,
    {
        let key = idempotency_key(md)?;
        let ctx = OpContext {
            created_by: created_by(md),
        };
        let mut fingerprint = method.as_bytes().to_vec();
        fingerprint.push(0);
        fingerprint.extend_from_slice(&request);
        self.write(move |tx| {
            if let Some(key) = &key
                && let Some(record) = tx.idempotency(key).map_err(internal)?
            {
                if record.fingerprint != fingerprint {
                    return Err(Status::failed_precondition(format!(
                        "idempotency-key {key:?} was already used for a different request"
                    )));
                }
                return tx
                    .operation(&record.operation_id)
                    .map_err(internal)?
                    .ok_or_else(|| {
                        Status::internal("idempotency record points at a missing operation")
                    });
            }
            let (op, image_id) = f(tx, ctx)?;
            tx.put_operation(&op, &image_id).map_err(internal)?;
            if let Some(key) = &key {
                let record = IdempotencyRecord {
                    fingerprint,
                    operation_id: op.id.clone(),
                };
                tx.put_idempotency(key, &record).map_err(internal)?;
            }
            Ok(op)
        })
        .await
    }
}

/// A [`Backend::write`] queued on the store.
struct Job<T, F> {
    f: Option<F>,
    result: Option<Result<T, Status>>,
    reply: tokio::sync::oneshot::Sender<Result<T, Status>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&mut dyn TxMut) -> Result<T, Status> + Send,
{
    fn run(&mut self, tx: &mut dyn TxMut) -> Commit {
        let Some(f) = self.f.take() else {
            return Commit::No;
        };
        let result = f(tx);
        let commit = if result.is_ok() {
            Commit::Yes
        } else {
            Commit::No
        };
        self.result = Some(result);
        commit
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let answer = match (committed, self.result) {
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(internal(StoreError("the write job did not finish".into()))),
            (Err(e), _) => Err(internal(e)),
        };
        // The caller may have gone (a cancelled request); the write stands either way.
        let _ = self.reply.send(answer);
    }
}

/// Who and when, for a new Operation.
pub(crate) struct OpContext {
    created_by: String,
}

impl OpContext {
    /// A new Operation with its metadata; `done` and the result are the caller's to set.
    fn operation(&self, description: &str, metadata: Any) -> Operation {
        let now = Timestamp::now();
        Operation {
            id: new_id(OPERATION_ID_PREFIX),
            description: description.to_string(),
            created_at: Some(now),
            created_by: self.created_by.clone(),
            modified_at: Some(now),
            done: false,
            metadata: Some(metadata),
            result: None,
        }
    }
}

/// ID prefixes: 3 fixed letters, then 17 base32 characters, 20 in all, like the real API.
pub const IMAGE_ID_PREFIX: &str = "fd8";
/// See [`IMAGE_ID_PREFIX`].
pub const OPERATION_ID_PREFIX: &str = "epd";

/// A new ID: the prefix, 10 characters of the time in milliseconds, then 7 random ones (35
/// bits), all from an alphabet in ASCII order. IDs made later sort later, so the store's
/// B-trees take new records at their right edge: a batch of writes dirties (copies, then
/// fsyncs) a few pages instead of one page per record, as random IDs did. The IDs look like
/// the real API's and promise nothing about their order; they only reveal the creation time
/// that the resource shows anyway.
fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let random = uuid::Uuid::new_v4().as_u128();
    let mut id = String::with_capacity(20);
    id.push_str(prefix);
    for i in (0..10).rev() {
        id.push(ALPHABET[((millis >> (i * 5)) & 31) as usize] as char);
    }
    for i in 0..7 {
        id.push(ALPHABET[((random >> (i * 5)) & 31) as usize] as char);
    }
    id
}

fn idempotency_key(md: &MetadataMap) -> Result<Option<String>, Status> {
    let Some(value) = md.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| Status::invalid_argument("idempotency-key must be printable ASCII"))?;
    if key.is_empty() || key.len() > 128 {
        return Err(Status::invalid_argument(
            "idempotency-key must be 1 to 128 characters long",
        ));
    }
    Ok(Some(key.to_string()))
}

/// `created_by` of new Operations: the subject of the bearer token. There is no IAM here, so
/// the subject is a stable opaque ID derived from the token (never the token itself), or
/// `anonymous` without one.
fn created_by(md: &MetadataMap) -> String {
    let Some(token) = md.get("authorization").and_then(|v| v.to_str().ok()) else {
        return "anonymous".into();
    };
    // FNV-1a: stable across runs and versions, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in token.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("aje{h:016x}")
}

/// Logs a storage failure and returns INTERNAL without its details.
fn internal(e: StoreError) -> Status {
    tracing::error!(error = %e, "storage failure");
    Status::new(Code::Internal, "internal storage error")
}

fn not_found(kind: &str, id: &str) -> Status {
    Status::not_found(format!("{kind} {id} not found"))
}

/// Serves every service on `listener` (plaintext) until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    backend: Backend,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    run_with(listener, backend, None, shutdown).await
}

/// Serves every service on `listener`, over TLS when `tls` is set, until `shutdown` resolves.
pub async fn run_with(
    listener: TcpListener,
    backend: Backend,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_all(listener, None, backend, tls, shutdown).await
}

/// [`run_with`], and also the in-process connections (see [`in_process`]).
pub async fn run_with_local(
    listener: TcpListener,
    local: LocalListener,
    backend: Backend,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_all(listener, Some(local), backend, tls, shutdown).await
}

/// The server end of [`in_process`]: the connections its [`Upstream`] dials.
pub struct LocalListener(tokio::sync::mpsc::UnboundedReceiver<tokio::io::DuplexStream>);

/// Bytes each direction of an in-process connection buffers.
const LOCAL_PIPE_BYTES: usize = 256 << 10;

/// A gRPC connection to a backend in the same process, and the listener to serve it with
/// [`run_with_local`]. It is a real gRPC connection (HTTP/2, the same client and server
/// stacks and codecs as over TCP) carried by an in-memory pipe instead of loopback TCP, which
/// spares `serve` the kernel's TCP work on both ends of every call. Being in memory it is
/// plaintext even when the public listeners use TLS.
pub fn in_process() -> (Upstream, LocalListener) {
    let (connections, listener) = tokio::sync::mpsc::unbounded_channel();
    let origin = http::Uri::from_static("http://in-process.invalid/");
    (
        Upstream::new(origin, LocalDial(connections)),
        LocalListener(listener),
    )
}

/// Dials [`in_process`] connections: one pipe each, its server end handed to the listener.
struct LocalDial(tokio::sync::mpsc::UnboundedSender<tokio::io::DuplexStream>);

impl Dial for LocalDial {
    fn dial(&self) -> Dialing<'_> {
        let (client, server) = tokio::io::duplex(LOCAL_PIPE_BYTES);
        let sent = self.0.send(server).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "the in-process backend has stopped",
            )
        });
        Box::pin(async move { sent.map(|()| Box::new(client) as Box<dyn Io>) })
    }
}

async fn serve_all(
    listener: TcpListener,
    local: Option<LocalListener>,
    backend: Backend,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ImageServiceServer<images::Images>>()
        .await;
    health
        .set_serving::<OperationServiceServer<operations::Operations>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    // One shutdown signal for every server and the store probe.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let on_stop = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    tokio::spawn(probe_store(backend.clone(), health, stopped.clone()));

    // A PING after two hours without a frame, 20 s to answer: grpc-go's server defaults, so
    // a peer that vanished without closing does not hold its connection for ever.
    let mut server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(2 * 60 * 60)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .layer(observe::ObserveLayer);
    let services = add_services(&mut server, &backend, health_service.clone());
    let handshake_timeout = backend.inner.config.handshake_timeout;
    let public: std::pin::Pin<Box<dyn Future<Output = _> + Send>> = match tls {
        None => {
            let incoming = TcpListenerStream::new(listener).map(move |conn| {
                conn.map(|s| {
                    let _ = s.set_nodelay(true);
                    FirstBytes::new(s, handshake_timeout)
                })
            });
            Box::pin(services.serve_with_incoming_shutdown(incoming, on_stop(stopped.clone())))
        }
        Some(config) => {
            let incoming = tls_handshakes(listener, config, handshake_timeout, stopped.clone());
            Box::pin(services.serve_with_incoming_shutdown(incoming, on_stop(stopped.clone())))
        }
    };
    let Some(LocalListener(connections)) = local else {
        return public.await;
    };
    let mut local_server = tonic::transport::Server::builder().layer(observe::ObserveLayer);
    let local = add_services(&mut local_server, &backend, health_service)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnboundedReceiverStream::new(connections)
                .map(Ok::<_, std::io::Error>),
            on_stop(stopped),
        );
    tokio::try_join!(public, local).map(|_| ())
}

/// The TLS connections made on `listener` until `stopped`. Each handshake runs in a task of
/// its own and must finish within `timeout`; then the HTTP/2 preface has `timeout` too, as on
/// a plaintext listener. (tonic's own TLS bounds the handshake only.)
fn tls_handshakes(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    timeout: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> impl tokio_stream::Stream<Item = std::io::Result<FirstBytes<TlsStream<TcpStream>>>> {
    let (done, handshaken) = tokio::sync::mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        let stop = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        tokio::pin!(stop);
        loop {
            let tcp = tokio::select! {
                tcp = crate::gateway::server::accept(&listener) => tcp,
                () = &mut stop => break,
            };
            let acceptor = acceptor.clone();
            let done = done.clone();
            tokio::spawn(async move {
                if let Some(tls) = accept_tls(&acceptor, tcp, timeout).await {
                    let _ = done.send(Ok(tls)).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(handshaken)
}

/// Every service of the backend on one server.
fn add_services<L>(
    server: &mut tonic::transport::Server<L>,
    backend: &Backend,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> tonic::transport::server::Router<L>
where
    L: Clone,
{
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the embedded descriptor sets are valid");
    server
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ImageServiceServer::new(images::Images(backend.clone())))
        .add_service(OperationServiceServer::new(operations::Operations(
            backend.clone(),
        )))
        .add_service(ApiEndpointServiceServer::new(endpoints::Endpoints(
            backend.clone(),
        )))
}

/// Keeps the health service following the store, as [`HealthProbe`] says, until `stopped`.
async fn probe_store(
    backend: Backend,
    health: tonic_health::server::HealthReporter,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let probe = backend.inner.config.health;
    let mut serving = true;
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(probe.interval) => {}
        }
        let read = backend.read(|_| Ok(())).await;
        let stalled = backend
            .inner
            .store
            .writing_for()
            .filter(|age| *age > probe.write_stall_limit);
        let ok = read.is_ok() && stalled.is_none();
        if ok != serving {
            serving = ok;
            let status = if ok {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            tracing::warn!(
                serving = ok,
                read_error = read.err().map(|e| e.message().to_string()),
                write_stalled_ms = stalled.map(|d| d.as_millis() as u64),
                "store health changed"
            );
            health.set_service_status("", status).await;
            health
                .set_service_status("yandex.cloud.compute.v1.ImageService", status)
                .await;
            health
                .set_service_status("yandex.cloud.operation.OperationService", status)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IDs keep the real API's shape (prefix + 17 lowercase base32 characters), differ, and
    /// sort in creation order across milliseconds (what keeps the store's inserts local).
    #[test]
    fn ids_have_the_api_shape_and_sort_by_creation() {
        let first = new_id(OPERATION_ID_PREFIX);
        assert_eq!(first.len(), 20);
        assert!(first.starts_with("epd"));
        assert!(
            first[3..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b)),
            "{first}"
        );
        std::thread::sleep(Duration::from_millis(2));
        let later: Vec<String> = (0..100).map(|_| new_id(OPERATION_ID_PREFIX)).collect();
        assert!(later.iter().all(|id| *id > first), "{first} vs {later:?}");
        let distinct: std::collections::BTreeSet<_> = later.iter().collect();
        assert_eq!(distinct.len(), later.len());
    }
}
