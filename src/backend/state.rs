//! The state every service shares: a cheap-to-clone [`Backend`] handle over the store, its
//! settings and the create runner, with the three ways a service touches the store: a read
//! snapshot, a durable write, and a mutation that records its Operation and honours
//! `idempotency-key`.

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;
use tonic::metadata::MetadataMap;

use super::auth::{Access, Limiter, RateLimit};
use super::health::HealthProbe;
use super::ids::{OPERATION_ID_PREFIX, new_id};
use super::retention::Retention;
use super::runner::OperationRunner;
use super::storage;
use super::tokens::{Caller, Tokens};
use crate::iam::{Audience, AuthMode, IamConfig, Permission};
use crate::json::{Any, Timestamp};
use crate::pb::yandex::cloud::operation::Operation;
use crate::store::{IdempotencyRecord, OperationResource, Store, StoreError, Tx, TxMut};

/// Backend settings.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// How long a Create stays CREATING before its Operation completes.
    pub create_delay: Duration,
    /// The `host:port` that endpoint discovery hands out for every service id.
    pub advertise_address: String,
    /// How the store's health is checked.
    pub health: HealthProbe,
    /// How long done Operations and idempotency records are kept.
    pub retention: Retention,
    /// Longest a unary call may take, its request body's arrival included: a client that
    /// opens a stream and never sends the body has the call ended (DEADLINE_EXCEEDED) instead
    /// of holding the stream. A client's shorter `grpc-timeout` still wins. Streaming calls
    /// (health's Watch, reflection) are bounded only until their reply starts.
    pub call_timeout: Duration,
    /// A connection with no call in flight for this long is closed with GOAWAY.
    pub idle_timeout: Duration,
    /// The largest gRPC messages taken and sent.
    pub messages: MessageLimits,
    /// Where each call's span goes (`--otlp-endpoint`); `None` exports none.
    pub spans: Option<crate::telemetry::Spans>,
    /// Who may call, and what they may do.
    pub auth: AuthConfig,
}

/// The IAM settings (`--auth`, `--iam-config`, `--iam-audience`).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Whether calls need a token.
    pub mode: AuthMode,
    /// Folder bindings and accepted OAuth tokens.
    pub config: Arc<IamConfig>,
    /// Which `aud` the JWTs may carry.
    pub audience: Audience,
    /// Calls per caller (`--rate-limit`); `None` counts none.
    pub rate_limit: Option<RateLimit>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::None,
            config: Arc::default(),
            audience: Audience::Yandex,
            rate_limit: None,
        }
    }
}

/// The largest gRPC message, encoded, that the services take and send. A larger request is
/// refused from its length prefix, before it is read; a larger reply is never sent. Both are
/// OUT_OF_RANGE naming the limit (tonic's code; grpc-go answers RESOURCE_EXHAUSTED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// Requests: 4 MiB by default, as grpc-go, grpc-java and tonic.
    pub max_recv_bytes: usize,
    /// Replies: unlimited by default, as grpc-go and tonic (a List page is bounded by its
    /// page size).
    pub max_send_bytes: usize,
}

impl Default for MessageLimits {
    fn default() -> Self {
        Self {
            max_recv_bytes: 4 << 20,
            max_send_bytes: usize::MAX,
        }
    }
}

impl BackendConfig {
    /// No call of these services takes long (the store's stall limit is 10 s).
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
    /// Five minutes, as the REST port's idle timeout.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
}

/// The shared state of every service: a cheap-to-clone handle.
#[derive(Clone)]
pub struct Backend {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    config: BackendConfig,
    runner: OperationRunner,
    access: Arc<Access>,
}

impl Backend {
    /// A backend over `store`; call [`Backend::recover`] before serving.
    pub fn new(store: Arc<dyn Store>, config: BackendConfig) -> Self {
        let runner = OperationRunner::new(store.clone(), config.create_delay);
        let access = Arc::new(Access {
            mode: config.auth.mode,
            tokens: Tokens::new(
                store.clone(),
                config.auth.config.clone(),
                config.auth.audience.clone(),
            ),
            limiter: config.auth.rate_limit.map(Limiter::new),
        });
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                runner,
                access,
            }),
        }
    }

    /// Finishes the creates that were running when the process last stopped (see
    /// `runner.rs`); returns how many there were.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        self.inner.runner.recover().await
    }

    pub(super) fn config(&self) -> &BackendConfig {
        &self.inner.config
    }

    pub(super) fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub(super) fn runner(&self) -> &OperationRunner {
        &self.inner.runner
    }

    /// Tokens and permissions.
    pub(super) fn access(&self) -> &Arc<Access> {
        &self.inner.access
    }

    /// Runs `f` on a read snapshot (see [`storage::read`]).
    pub(super) async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&dyn Tx) -> Result<T, E>,
        E: From<StoreError>,
    {
        storage::read(&*self.inner.store, f)
    }

    /// Runs `f` in a durable write transaction (see [`storage::write`]).
    pub(super) async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut dyn TxMut) -> Result<T, E> + Send + 'static,
    {
        storage::write(&*self.inner.store, f).await
    }

    /// Runs a mutation that returns an Operation, honouring `idempotency-key`. A key belongs to
    /// its caller and method (as Stripe's belong to an account): another caller, or the same
    /// caller's call of another method, with the same key is a request of its own, and never
    /// sees this one's Operation. A retry with the same key and request returns the first
    /// Operation (as it is now) and changes nothing; the same key with another request is
    /// FAILED_PRECONDITION. The record keeps a SHA-256 of the request, not the request. Key,
    /// mutation and Operation commit together. `f` returns the new Operation and the image it
    /// is recorded against (id and folder; the folder is kept with the Operation, whose reads
    /// and cancels it authorizes). `f` checks the caller's permission on what it finds.
    pub(super) async fn mutate<F>(
        &self,
        md: &MetadataMap,
        caller: &Caller,
        method: &str,
        request: Vec<u8>,
        f: F,
    ) -> Result<Operation, Status>
    where
        F: FnOnce(&mut dyn TxMut, OpContext) -> Result<(Operation, Recorded), Status>
            + Send
            + 'static,
    {
        let ctx = OpContext {
            created_by: caller.id().to_string(),
            caller: caller.clone(),
            access: self.inner.access.clone(),
        };
        let key = idempotency_key(md)?.map(|key| {
            let scoped = format!("{}\0{method}\0{key}", ctx.created_by);
            (key, scoped)
        });
        let fingerprint = ring::digest::digest(&ring::digest::SHA256, &request)
            .as_ref()
            .to_vec();
        self.write(move |tx| {
            if let Some((key, scoped)) = &key
                && let Some(record) = tx.idempotency(scoped)?
            {
                if record.fingerprint != fingerprint {
                    return Err(Status::failed_precondition(format!(
                        "idempotency-key {key:?} was already used for a different request"
                    )));
                }
                // An Operation purged before its key (a retention shorter than the key's) is
                // gone for the retry too: the key starts afresh below.
                if let Some(op) = tx.operation(&record.operation_id)? {
                    return Ok(op);
                }
            }
            let (op, recorded) = f(tx, ctx)?;
            tx.put_operation(&op, &recorded.image_id)?;
            tx.put_operation_resource(
                &op.id,
                &OperationResource {
                    image_id: recorded.image_id,
                    folder_id: recorded.folder_id,
                },
            )?;
            if let Some((_, scoped)) = &key {
                let record = IdempotencyRecord {
                    fingerprint,
                    operation_id: op.id.clone(),
                };
                tx.put_idempotency(scoped, &record)?;
            }
            Ok(op)
        })
        .await
    }
}

/// The image a new Operation is recorded against.
pub(super) struct Recorded {
    pub(super) image_id: String,
    pub(super) folder_id: String,
}

impl Recorded {
    pub(super) fn of(image: &crate::pb::yandex::cloud::compute::v1::Image) -> Self {
        Self {
            image_id: image.id.clone(),
            folder_id: image.folder_id.clone(),
        }
    }
}

/// Who and when, for a new Operation; and whether the caller may make it.
pub(super) struct OpContext {
    created_by: String,
    caller: Caller,
    access: Arc<Access>,
}

impl OpContext {
    /// PERMISSION_DENIED unless the caller holds `permission` on `image` (by its folder's
    /// bindings or its own, read in `tx`).
    pub(super) fn require_on_image(
        &self,
        tx: &dyn Tx,
        permission: Permission,
        image: &crate::pb::yandex::cloud::compute::v1::Image,
    ) -> Result<(), Status> {
        require_on_image(&self.access, &self.caller, tx, permission, image)
    }

    /// PERMISSION_DENIED unless the caller holds `permission` in `folder_id`.
    pub(super) fn require_in_folder(
        &self,
        permission: Permission,
        folder_id: &str,
    ) -> Result<(), Status> {
        self.access.require(
            &self.caller,
            permission,
            &format!("folder {folder_id}"),
            folder_id,
            &[],
        )
    }

    /// A new Operation with its metadata; `done` and the result are the caller's to set.
    pub(super) fn operation(&self, description: &str, metadata: Any) -> Operation {
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

/// PERMISSION_DENIED unless `caller` holds `permission` on `image`, by its folder's bindings
/// or its own (read in `tx` only when the folder's do not grant it).
pub(super) fn require_on_image(
    access: &Access,
    caller: &Caller,
    tx: &dyn Tx,
    permission: Permission,
    image: &crate::pb::yandex::cloud::compute::v1::Image,
) -> Result<(), Status> {
    let resource = format!("image {}", image.id);
    if access
        .require(caller, permission, &resource, &image.folder_id, &[])
        .is_ok()
    {
        return Ok(());
    }
    let own = tx.bindings(&image.id)?;
    access.require(caller, permission, &resource, &image.folder_id, &own)
}

/// NOT_FOUND for a resource of `kind`.
pub(super) fn not_found(kind: &str, id: &str) -> Status {
    Status::not_found(format!("{kind} {id} not found"))
}
