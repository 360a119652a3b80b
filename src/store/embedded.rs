//! The embedded store on redb: one file, ACID, copy-on-write B-trees. Chosen over SQLite for
//! being pure Rust (no C toolchain in the build) with the same crash guarantees; values are the
//! protobuf encodings of the API messages.
//!
//! Group commit: each write transaction commits in memory (`Durability::None`), then waits
//! until an fsync covers it; one empty durable commit persists every commit before it, so
//! concurrent writers share one fsync and a write is acknowledged only once it is on disk
//! (`kill -9` loses nothing acknowledged). The price: another client may read a write in the
//! moment between its in-memory commit and its fsync.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{
    Commit, IdempotencyRecord, OperationCursor, RunningCreate, Store, StoreError, Tx, TxMut,
};
use crate::pb::yandex::cloud::access::{AccessBinding, ListAccessBindingsResponse};
use crate::pb::yandex::cloud::compute::v1::Image;
use crate::pb::yandex::cloud::operation::Operation;

type Table = TableDefinition<'static, &'static str, &'static [u8]>;

const IMAGES: Table = TableDefinition::new("images");
/// `folder_id \0 image_id` -> empty.
const FOLDER_IMAGES: Table = TableDefinition::new("folder_images");
/// `folder_id \0 name` -> image id, for names unique within a folder.
const FOLDER_NAMES: Table = TableDefinition::new("folder_names");
const OPERATIONS: Table = TableDefinition::new("operations");
/// `image_id \0 created_at nanos (zero-padded) \0 operation_id` -> empty.
const IMAGE_OPERATIONS: Table = TableDefinition::new("image_operations");
const BINDINGS: Table = TableDefinition::new("bindings");
const IDEMPOTENCY: Table = TableDefinition::new("idempotency");
const RUNNING: Table = TableDefinition::new("running_creates");

const ALL_TABLES: [Table; 8] = [
    IMAGES,
    FOLDER_IMAGES,
    FOLDER_NAMES,
    OPERATIONS,
    IMAGE_OPERATIONS,
    BINDINGS,
    IDEMPOTENCY,
    RUNNING,
];

/// Bytes of redb's page cache.
const CACHE_BYTES: usize = 16 << 20;

/// The redb-backed store in `<data-dir>/compute.redb`.
pub struct EmbeddedStore {
    db: Database,
    /// Number of write transactions committed (in memory) so far.
    committed: AtomicU64,
    /// How many of them are known durable. A std Mutex, held across the fsync on purpose:
    /// writers that queue on it while one syncs find their commit covered and return.
    durable: Mutex<u64>,
}

fn err<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError(e.to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`, creating the directory as needed.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("compute.redb");
        // A bounded page cache keeps memory flat as the data grows (redb's default is 1 GiB).
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(err)?;
        for table in ALL_TABLES {
            tx.open_table(table).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(Self {
            db,
            committed: AtomicU64::new(0),
            durable: Mutex::new(0),
        })
    }
}

/// An index key: a parent and a child, NUL-separated so a prefix scan of `parent\0` finds
/// exactly the parent's entries.
fn key(parent: &str, child: &str) -> String {
    format!("{parent}\0{child}")
}

fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|e| StoreError(format!("corrupt record: {e}")))
}

fn op_index_key(image_id: &str, op: &Operation) -> String {
    let nanos = op
        .created_at
        .map(|t| t.as_nanos())
        .unwrap_or_default()
        .max(0);
    format!("{image_id}\0{nanos:020}\0{}", op.id)
}

/// Reads shared by the read and write transactions.
trait Source {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn prefix(&self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Keys in `[lo, hi)`, from the highest down, at most `limit`.
    fn keys_rev(
        &self,
        table: Table,
        lo: &str,
        hi: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
}

fn scan_rev<T: ReadableTable<&'static str, &'static [u8]>>(
    t: &T,
    lo: &str,
    hi: &str,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for item in t.range(lo..hi).map_err(err)?.rev().take(limit) {
        let (k, _) = item.map_err(err)?;
        out.push(k.value().to_string());
    }
    Ok(out)
}

fn scan<T: ReadableTable<&'static str, &'static [u8]>>(
    t: &T,
    prefix: &str,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let mut out = Vec::new();
    for item in t.range(prefix..).map_err(err)? {
        let (k, v) = item.map_err(err)?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push((k.value().to_string(), v.value().to_vec()));
    }
    Ok(out)
}

/// Read and write transactions open tables through different types with the same methods.
macro_rules! source_for {
    ($txn:ty) => {
        impl Source for $txn {
            fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
                let t = self.open_table(table).map_err(err)?;
                Ok(t.get(key).map_err(err)?.map(|v| v.value().to_vec()))
            }
            fn prefix(
                &self,
                table: Table,
                prefix: &str,
            ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
                scan(&self.open_table(table).map_err(err)?, prefix)
            }
            fn keys_rev(
                &self,
                table: Table,
                lo: &str,
                hi: &str,
                limit: usize,
            ) -> Result<Vec<String>, StoreError> {
                scan_rev(&self.open_table(table).map_err(err)?, lo, hi, limit)
            }
        }
    };
}

source_for!(redb::ReadTransaction);
source_for!(redb::WriteTransaction);

impl<S: Source> Tx for S {
    fn image(&self, id: &str) -> Result<Option<Image>, StoreError> {
        self.get(IMAGES, id)?.map(|b| decode(&b)).transpose()
    }
    fn folder_images(&self, folder_id: &str) -> Result<Vec<Image>, StoreError> {
        let mut out = Vec::new();
        for (key, _) in self.prefix(FOLDER_IMAGES, &format!("{folder_id}\0"))? {
            let id = &key[folder_id.len() + 1..];
            if let Some(image) = self.image(id)? {
                out.push(image);
            }
        }
        Ok(out)
    }
    fn operation(&self, id: &str) -> Result<Option<Operation>, StoreError> {
        self.get(OPERATIONS, id)?.map(|b| decode(&b)).transpose()
    }
    fn image_named(&self, folder_id: &str, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .get(FOLDER_NAMES, &key(folder_id, name))?
            .map(|id| String::from_utf8_lossy(&id).into_owned()))
    }
    fn image_operations_page(
        &self,
        image_id: &str,
        before: Option<&OperationCursor>,
        limit: usize,
    ) -> Result<Vec<(OperationCursor, Operation)>, StoreError> {
        let lo = format!("{image_id}\0");
        let hi = match before {
            Some(c) => format!("{image_id}\0{:020}\0{}", c.created_nanos, c.operation_id),
            None => format!("{image_id}\u{1}"),
        };
        let mut out = Vec::new();
        for key in self.keys_rev(IMAGE_OPERATIONS, &lo, &hi, limit)? {
            let mut parts = key[lo.len()..].splitn(2, '\0');
            let nanos = parts
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_default();
            let op_id = parts.next().unwrap_or_default();
            if let Some(op) = self.operation(op_id)? {
                let cursor = OperationCursor {
                    created_nanos: nanos,
                    operation_id: op_id.to_string(),
                };
                out.push((cursor, op));
            }
        }
        Ok(out)
    }
    fn bindings(&self, image_id: &str) -> Result<Vec<AccessBinding>, StoreError> {
        Ok(self
            .get(BINDINGS, image_id)?
            .map(|b| decode::<ListAccessBindingsResponse>(&b))
            .transpose()?
            .map(|r| r.access_bindings)
            .unwrap_or_default())
    }
    fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.get(IDEMPOTENCY, key)?.map(|b| decode(&b)).transpose()
    }
    fn running_create(&self, operation_id: &str) -> Result<Option<RunningCreate>, StoreError> {
        self.get(RUNNING, operation_id)?
            .map(|b| decode(&b))
            .transpose()
    }
    fn running_creates(&self) -> Result<Vec<RunningCreate>, StoreError> {
        self.prefix(RUNNING, "")?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }
}

fn put(
    tx: &redb::WriteTransaction,
    table: Table,
    key: &str,
    value: &[u8],
) -> Result<(), StoreError> {
    tx.open_table(table)
        .map_err(err)?
        .insert(key, value)
        .map_err(err)?;
    Ok(())
}

fn remove(tx: &redb::WriteTransaction, table: Table, key: &str) -> Result<(), StoreError> {
    tx.open_table(table)
        .map_err(err)?
        .remove(key)
        .map_err(err)?;
    Ok(())
}

impl TxMut for redb::WriteTransaction {
    fn put_image(&mut self, image: &Image) -> Result<(), StoreError> {
        if let Some(old) = self.image(&image.id)?
            && old.name != image.name
            && !old.name.is_empty()
        {
            remove(self, FOLDER_NAMES, &key(&old.folder_id, &old.name))?;
        }
        if !image.name.is_empty() {
            put(
                self,
                FOLDER_NAMES,
                &key(&image.folder_id, &image.name),
                image.id.as_bytes(),
            )?;
        }
        put(self, IMAGES, &image.id, &image.encode_to_vec())?;
        put(self, FOLDER_IMAGES, &key(&image.folder_id, &image.id), &[])
    }
    fn delete_image(&mut self, id: &str) -> Result<(), StoreError> {
        if let Some(image) = self.image(id)? {
            remove(self, FOLDER_IMAGES, &key(&image.folder_id, &image.id))?;
            if !image.name.is_empty() {
                remove(self, FOLDER_NAMES, &key(&image.folder_id, &image.name))?;
            }
        }
        remove(self, IMAGES, id)?;
        remove(self, BINDINGS, id)
    }
    fn put_operation(&mut self, op: &Operation, image_id: &str) -> Result<(), StoreError> {
        put(self, OPERATIONS, &op.id, &op.encode_to_vec())?;
        put(self, IMAGE_OPERATIONS, &op_index_key(image_id, op), &[])
    }
    fn put_bindings(
        &mut self,
        image_id: &str,
        bindings: &[AccessBinding],
    ) -> Result<(), StoreError> {
        let record = ListAccessBindingsResponse {
            access_bindings: bindings.to_vec(),
            next_page_token: String::new(),
        };
        put(self, BINDINGS, image_id, &record.encode_to_vec())
    }
    fn put_idempotency(&mut self, key: &str, record: &IdempotencyRecord) -> Result<(), StoreError> {
        put(self, IDEMPOTENCY, key, &record.encode_to_vec())
    }
    fn put_running_create(&mut self, running: &RunningCreate) -> Result<(), StoreError> {
        put(
            self,
            RUNNING,
            &running.operation_id,
            &running.encode_to_vec(),
        )
    }
    fn clear_running_create(&mut self, operation_id: &str) -> Result<(), StoreError> {
        remove(self, RUNNING, operation_id)
    }
}

impl EmbeddedStore {
    /// Makes commit number `seq` durable. Group commit: the first caller fsyncs everything
    /// committed so far with one empty durable transaction; callers that queued meanwhile find
    /// their commit already covered.
    fn sync(&self, seq: u64) -> Result<(), StoreError> {
        let mut durable = self
            .durable
            .lock()
            .map_err(|_| StoreError("sync lock poisoned".into()))?;
        if *durable >= seq {
            return Ok(());
        }
        // Every commit numbered up to `target` finished before this load, so the durable
        // commit below (which persists all earlier non-durable ones) covers them.
        let target = self.committed.load(Ordering::Acquire);
        let started = std::time::Instant::now();
        let tx = self.db.begin_write().map_err(err)?;
        tx.commit().map_err(err)?;
        metrics::histogram!(crate::telemetry::STORE_COMMIT).record(started.elapsed().as_secs_f64());
        *durable = target;
        Ok(())
    }
}

impl Store for EmbeddedStore {
    fn read(&self, f: &mut dyn FnMut(&dyn Tx) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        f(&tx)
    }

    /// Commits in memory at once (redb `Durability::None`), then waits for a group fsync that
    /// covers it: an acknowledged write is on disk, and concurrent writers share one fsync.
    fn write(
        &self,
        f: &mut dyn FnMut(&mut dyn TxMut) -> Result<Commit, StoreError>,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().map_err(err)?;
        tx.set_durability(Durability::None).map_err(err)?;
        match f(&mut tx)? {
            Commit::Yes => {
                tx.commit().map_err(err)?;
                let seq = self.committed.fetch_add(1, Ordering::AcqRel) + 1;
                self.sync(seq)
            }
            Commit::No => tx.abort().map_err(err),
        }
    }
}
