//! Durable state behind one trait: images, operations, access bindings, idempotency records and
//! the creates still running. A mutation and its Operation commit in one transaction, so an
//! acknowledged write survives `kill -9`. The embedded implementation is [`EmbeddedStore`]
//! (redb); a PostgreSQL-compatible one can implement the same traits for stateless replicas.

mod embedded;
mod postgres;

use std::path::PathBuf;
use std::sync::Arc;

pub use embedded::{EmbeddedStore, Opener};
pub use postgres::{PostgresOptions, PostgresStore};

use crate::pb::yandex::cloud::access::AccessBinding;
use crate::pb::yandex::cloud::compute::v1::Image;
use crate::pb::yandex::cloud::operation::Operation;

/// A storage failure. Never a client's mistake. Cheap to clone: every job of a failed batch
/// hears the same failure.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// The store cannot be opened or created at this path.
    Open {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The engine failed: I/O (a full disk, a failing device) or an engine fault.
    Engine(Arc<dyn std::error::Error + Send + Sync>),
    /// A stored record does not decode: a damaged file, or one of an incompatible version.
    Corrupt(prost::DecodeError),
    /// The store is closed, or its writer has stopped.
    Closed,
    /// The disk is full (or over quota): the write was not made. Reads go on; writes work
    /// again once there is space.
    Full,
    /// The store's file is being reopened after an I/O failure, or cannot be reopened yet.
    Reopening,
    /// A write job ended without a result (it panicked); its writes were dropped.
    JobLost,
    /// The database cannot be reached (it is down, restarting, or out of connections): nothing
    /// was written; a retry later may succeed.
    Unavailable(Arc<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// An engine failure.
    pub(crate) fn engine(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Engine(Arc::new(e))
    }

    /// A failure of redb: [`StoreError::Full`] for an I/O error that says the disk is full or
    /// over quota, [`StoreError::Reopening`] for redb's refusal of everything after an earlier
    /// I/O error (until the database is reopened), an engine failure otherwise.
    pub fn from_redb(e: impl Into<redb::Error>) -> Self {
        match e.into() {
            redb::Error::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                ) =>
            {
                Self::Full
            }
            redb::Error::PreviousIo => Self::Reopening,
            other => Self::engine(other),
        }
    }

    /// An error of some other kind met while opening a store (for [`Opener`]s).
    pub fn other(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::engine(e)
    }

    /// Whether the client may simply retry later: the store is out of space or reopening,
    /// not broken.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Full | Self::Reopening | Self::Unavailable(_))
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Open { path, source } => {
                write!(f, "storage error: cannot open {}: {source}", path.display())
            }
            Self::Engine(e) => write!(f, "storage error: {e}"),
            Self::Corrupt(e) => write!(f, "storage error: corrupt record: {e}"),
            Self::Closed => f.write_str("storage error: the store is closed"),
            Self::Full => f.write_str("storage error: no space left on the store's disk"),
            Self::Reopening => {
                f.write_str("storage error: the store is reopening after an I/O failure")
            }
            Self::JobLost => f.write_str("storage error: the write job did not finish"),
            Self::Unavailable(e) => write!(f, "storage error: the database is unavailable: {e}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Open { source, .. } | Self::Engine(source) | Self::Unavailable(source) => {
                Some(&**source)
            }
            Self::Corrupt(e) => Some(e),
            Self::Closed | Self::JobLost | Self::Full | Self::Reopening => None,
        }
    }
}

/// Whether a write job keeps its changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Keep them: they commit (durably) with the job's batch.
    Yes,
    /// Drop them; the other jobs of the batch are not affected.
    No,
}

/// One mutation, queued with [`Store::submit`]. The store runs it in a write transaction that
/// it may share with other queued jobs (group commit); a job sees the writes of the jobs run
/// before it, and its own writes are kept only when [`WriteJob::run`] returns [`Commit::Yes`].
pub trait WriteJob: Send {
    /// Reads and stages writes. Runs at most once, on the store's writer.
    fn run(&mut self, tx: &mut dyn TxMut) -> Commit;
    /// Called exactly once, after `run` (or instead of it, when the job could not run), with
    /// whether the transaction that holds its writes is durable. Nothing a job did may be
    /// acknowledged before this.
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

/// What an `Idempotency-Key` was first used for. Its key in the store is the caller's subject,
/// the method and the client's key, NUL-separated.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct IdempotencyRecord {
    /// The SHA-256 of the encoded request: a retry must match it.
    #[prost(bytes = "vec", tag = "1")]
    pub fingerprint: Vec<u8>,
    /// The Operation the first request returned.
    #[prost(string, tag = "2")]
    pub operation_id: String,
}

/// Where an operation sits in an image's history: newest first by creation time, then by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationCursor {
    /// `created_at` in nanoseconds since the epoch (0 for earlier times).
    pub created_nanos: u128,
    /// The operation's id.
    pub operation_id: String,
}

impl OperationCursor {
    /// The non-negative creation time an operation is indexed by.
    pub(crate) fn created_nanos_of(op: &Operation) -> u128 {
        op.created_at
            .map(|t| t.as_nanos())
            .unwrap_or_default()
            .max(0) as u128
    }
}

/// An order of a folder's images; each is kept by an index, so a page costs what it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageOrder {
    /// By id.
    Id,
    /// By name, then id (unnamed images first).
    Name,
    /// By creation time, then id.
    CreatedAt,
}

/// Where an image sits in an [`ImageOrder`]: its primary key (empty by id; the name; the
/// creation time as 24 digits that sort as numbers) and its id. Neither contains a NUL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageCursor {
    /// The key of the order.
    pub primary: String,
    /// The image's id, which breaks ties.
    pub id: String,
}

impl ImageCursor {
    /// The place of `image` in `order`.
    pub fn of(order: ImageOrder, image: &Image) -> Self {
        Self::from_fields(order, &image.id, &image.name, image.created_at.as_ref())
    }

    pub(crate) fn from_fields(
        order: ImageOrder,
        id: &str,
        name: &str,
        created_at: Option<&crate::json::Timestamp>,
    ) -> Self {
        let primary = match order {
            ImageOrder::Id => String::new(),
            ImageOrder::Name => name.to_string(),
            ImageOrder::CreatedAt => {
                let nanos = created_at.map(|t| t.as_nanos()).unwrap_or_default();
                // Offset so every representable time is a non-negative number of 24 digits.
                format!("{:024}", nanos + 100_000_000_000_000_000_000)
            }
        };
        Self {
            primary,
            id: id.to_string(),
        }
    }
}

/// The public half of a service account's authorized key, as `iam create-key` stored it.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ServiceAccountKey {
    /// The key id: a JWT's `kid`.
    #[prost(string, tag = "1")]
    pub id: String,
    /// The service account it signs for: a JWT's `iss`.
    #[prost(string, tag = "2")]
    pub service_account_id: String,
    /// When it was made, RFC 3339.
    #[prost(string, tag = "3")]
    pub created_at: String,
    /// `RSA_2048`.
    #[prost(string, tag = "4")]
    pub key_algorithm: String,
    /// The public key, PEM (SubjectPublicKeyInfo).
    #[prost(string, tag = "5")]
    pub public_key: String,
}

/// The resource an Operation acts on: what its reads and cancels are authorized against.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct OperationResource {
    /// The image.
    #[prost(string, tag = "1")]
    pub image_id: String,
    /// Its folder.
    #[prost(string, tag = "2")]
    pub folder_id: String,
}

/// An IAM token this server issued, stored under the SHA-256 of the token (never the token).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct IssuedToken {
    /// Whose it is.
    #[prost(string, tag = "1")]
    pub subject_id: String,
    /// `serviceAccount` or `userAccount`.
    #[prost(string, tag = "2")]
    pub subject_type: String,
    /// When it stops being accepted, in nanoseconds since the epoch.
    #[prost(uint64, tag = "3")]
    pub expires_nanos: u64,
    /// Revoked before it expired.
    #[prost(bool, tag = "4")]
    pub revoked: bool,
}

/// A create whose Operation is not done yet.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RunningCreate {
    /// The Operation.
    #[prost(string, tag = "1")]
    pub operation_id: String,
    /// The image it creates.
    #[prost(string, tag = "2")]
    pub image_id: String,
    /// When it is to finish, in nanoseconds since the epoch (0 in records from before this
    /// field: due long ago).
    #[prost(uint64, tag = "3")]
    pub due_nanos: u64,
}

/// Reads within one consistent snapshot.
pub trait Tx {
    /// One image.
    fn image(&self, id: &str) -> Result<Option<Image>, StoreError>;
    /// Every image of a folder, in id order.
    fn folder_images(&self, folder_id: &str) -> Result<Vec<Image>, StoreError>;
    /// The images of a folder in `order` (from the last when `descending`), starting after
    /// `after` (exclusive), each handed to `visit` until it returns false: a page reads the
    /// images it looks at, not the folder.
    fn folder_scan(
        &self,
        folder_id: &str,
        order: ImageOrder,
        descending: bool,
        after: Option<&ImageCursor>,
        visit: &mut dyn FnMut(Image) -> bool,
    ) -> Result<(), StoreError>;
    /// One operation.
    fn operation(&self, id: &str) -> Result<Option<Operation>, StoreError>;
    /// The image of a folder with this (non-empty) name, if any.
    fn image_named(&self, folder_id: &str, name: &str) -> Result<Option<String>, StoreError>;
    /// Up to `limit` operations recorded against an image, newest first, starting after
    /// `before` (exclusive), each with its cursor.
    fn image_operations_page(
        &self,
        image_id: &str,
        before: Option<&OperationCursor>,
        limit: usize,
    ) -> Result<Vec<(OperationCursor, Operation)>, StoreError>;
    /// The access bindings of an image, in the order they were set.
    fn bindings(&self, image_id: &str) -> Result<Vec<AccessBinding>, StoreError>;
    /// The record of an idempotency key.
    fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError>;
    /// Creates whose Operation is still running.
    fn running_creates(&self) -> Result<Vec<RunningCreate>, StoreError>;
    /// The running create of this Operation, if it is one.
    fn running_create(&self, operation_id: &str) -> Result<Option<RunningCreate>, StoreError>;
    /// The resource an Operation acts on, as recorded when it was made (it may be gone since).
    fn operation_resource(
        &self,
        operation_id: &str,
    ) -> Result<Option<OperationResource>, StoreError>;
    /// A service account key by id.
    fn service_account_key(&self, id: &str) -> Result<Option<ServiceAccountKey>, StoreError>;
    /// Every service account key, by id.
    fn service_account_keys(&self) -> Result<Vec<ServiceAccountKey>, StoreError>;
    /// An issued token by the hex SHA-256 of the token.
    fn issued_token(&self, hash: &str) -> Result<Option<IssuedToken>, StoreError>;
}

/// Reads and writes within one transaction.
pub trait TxMut: Tx {
    /// Inserts or replaces an image.
    fn put_image(&mut self, image: &Image) -> Result<(), StoreError>;
    /// Removes an image and its access bindings (its operations stay readable).
    fn delete_image(&mut self, id: &str) -> Result<(), StoreError>;
    /// Inserts or replaces an operation recorded against `image_id`.
    fn put_operation(&mut self, op: &Operation, image_id: &str) -> Result<(), StoreError>;
    /// Replaces the access bindings of an image.
    fn put_bindings(
        &mut self,
        image_id: &str,
        bindings: &[AccessBinding],
    ) -> Result<(), StoreError>;
    /// Records an idempotency key.
    fn put_idempotency(&mut self, key: &str, record: &IdempotencyRecord) -> Result<(), StoreError>;
    /// Marks a create as running.
    fn put_running_create(&mut self, running: &RunningCreate) -> Result<(), StoreError>;
    /// Marks a create as finished.
    fn clear_running_create(&mut self, operation_id: &str) -> Result<(), StoreError>;
    /// Writes a small record of its own: the health probe's test that writes commit again.
    fn touch(&mut self) -> Result<(), StoreError>;
    /// Records the resource a new Operation acts on (purged with the Operation).
    fn put_operation_resource(
        &mut self,
        operation_id: &str,
        resource: &OperationResource,
    ) -> Result<(), StoreError>;
    /// Inserts or replaces a service account key.
    fn put_service_account_key(&mut self, key: &ServiceAccountKey) -> Result<(), StoreError>;
    /// Removes a service account key; whether there was one.
    fn delete_service_account_key(&mut self, id: &str) -> Result<bool, StoreError>;
    /// Inserts or replaces an issued token under the hex SHA-256 of the token.
    fn put_issued_token(&mut self, hash: &str, token: &IssuedToken) -> Result<(), StoreError>;
    /// Removes up to `limit` done operations, up to `limit` idempotency records and up to
    /// `limit` issued tokens from before their cutoffs (the oldest are not necessarily first);
    /// returns how many it removed. An operation leaves its image's history with it; a running
    /// create stays.
    fn purge(&mut self, cutoffs: Cutoffs, limit: usize) -> Result<usize, StoreError>;
}

/// What [`TxMut::purge`] removes: records from before these times, in nanoseconds since the
/// epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Done operations created before this.
    pub operations: u128,
    /// Idempotency records made before this.
    pub idempotency_keys: u128,
    /// Issued tokens that expired before this.
    pub tokens: u128,
}

/// Decodes a stored record.
pub(crate) fn decode<M: prost::Message + Default>(bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(StoreError::Corrupt)
}

/// How an image's access bindings are stored, in both stores: a `ListAccessBindingsResponse`
/// with no page token.
pub(crate) fn bindings_record(bindings: &[AccessBinding]) -> Vec<u8> {
    use prost::Message as _;
    crate::pb::yandex::cloud::access::ListAccessBindingsResponse {
        access_bindings: bindings.to_vec(),
        next_page_token: String::new(),
    }
    .encode_to_vec()
}

/// The access bindings of a record written by [`bindings_record`].
pub(crate) fn bindings_of(record: &[u8]) -> Result<Vec<AccessBinding>, StoreError> {
    decode::<crate::pb::yandex::cloud::access::ListAccessBindingsResponse>(record)
        .map(|r| r.access_bindings)
}

/// The most jobs one write transaction takes, in either store: bounds the work a commit holds
/// back from its first job.
pub(crate) const MAX_BATCH: usize = 256;

/// The writer's next batch: waits for a job, then takes the jobs queued behind it (up to
/// [`MAX_BATCH`]), to run in one transaction. `None` once the queue is closed and drained.
pub(crate) fn next_batch(
    queue: &std::sync::mpsc::Receiver<Box<dyn WriteJob>>,
) -> Option<Vec<Box<dyn WriteJob>>> {
    let mut batch = vec![queue.recv().ok()?];
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Now, in nanoseconds since the epoch (0 before it).
pub(crate) fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// A transactional store. Writes are serialised: a read-modify-write inside a [`WriteJob`]
/// never loses a concurrent update.
pub trait Store: Send + Sync + 'static {
    /// Runs `f` on a read snapshot of committed state. Cheap enough (cached pages) to call
    /// from an async task.
    fn read(&self, f: &mut dyn FnMut(&dyn Tx) -> Result<(), StoreError>) -> Result<(), StoreError>;
    /// Queues a write job; returns at once. The job's [`WriteJob::finish`] reports the outcome.
    fn submit(&self, job: Box<dyn WriteJob>);
    /// How long the write transaction in progress has been running, if one is: a commit stuck
    /// on a hung disk shows here, while reads still work.
    fn writing_for(&self) -> Option<std::time::Duration> {
        None
    }
    /// Whether a write transaction failed (a full disk, an I/O error) since the last call;
    /// the call starts the count again.
    fn writes_failed(&self) -> bool {
        false
    }
    /// Whether other processes may be using the store at the same time (several replicas on
    /// one database), so that a running create may belong to one of them.
    fn shared(&self) -> bool {
        false
    }
}
