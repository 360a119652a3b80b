//! The embedded store on redb: one file, ACID, copy-on-write B-trees. Chosen over SQLite for
//! being pure Rust (no C toolchain in the build) with the same crash guarantees; values are the
//! protobuf encodings of the API messages.
//!
//! Group commit: one writer thread owns every write transaction. It takes all the jobs queued
//! since its last commit (up to [`MAX_BATCH`]), runs them one after another in one transaction,
//! commits it durably (one fsync for the whole batch) and only then reports to each job. So an
//! acknowledged write is on disk (`kill -9` loses nothing acknowledged), readers only ever see
//! durable state, and concurrent writers share the fsync and the commit work. Each job stages
//! its writes in an overlay ([`Staged`]) that it reads through; the overlay is applied to the
//! transaction only when the job succeeds, so one job's failure (or panic) rolls back that job
//! alone.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{
    Commit, IdempotencyRecord, OperationCursor, RunningCreate, Store, StoreError, Tx, TxMut,
    WriteJob,
};
use crate::pb::yandex::cloud::access::{AccessBinding, ListAccessBindingsResponse};
use crate::pb::yandex::cloud::compute::v1::Image;
use crate::pb::yandex::cloud::operation::Operation;

/// A table: its redb definition and a small id the write overlay groups entries by.
#[derive(Clone, Copy)]
struct Table {
    id: u8,
    def: TableDefinition<'static, &'static str, &'static [u8]>,
}

const fn table(id: u8, name: &'static str) -> Table {
    Table {
        id,
        def: TableDefinition::new(name),
    }
}

const IMAGES: Table = table(0, "images");
/// `folder_id \0 image_id` -> empty.
const FOLDER_IMAGES: Table = table(1, "folder_images");
/// `folder_id \0 name` -> image id, for names unique within a folder.
const FOLDER_NAMES: Table = table(2, "folder_names");
const OPERATIONS: Table = table(3, "operations");
/// `image_id \0 created_at nanos (zero-padded) \0 operation_id` -> empty.
const IMAGE_OPERATIONS: Table = table(4, "image_operations");
const BINDINGS: Table = table(5, "bindings");
const IDEMPOTENCY: Table = table(6, "idempotency");
const RUNNING: Table = table(7, "running_creates");

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

/// The most jobs one transaction takes: bounds the work a commit holds back from its first job.
const MAX_BATCH: usize = 256;

/// Bytes of redb's page cache. Pages it misses come from the OS page cache. 8 MiB keeps serve
/// at about 40 MB peak RSS under 128 concurrent durable updates (16 MiB: about 50 MB) at the
/// same CPU per request.
const CACHE_BYTES: usize = 8 << 20;

/// The redb-backed store in `<data-dir>/compute.redb`.
pub struct EmbeddedStore {
    db: Arc<Database>,
    /// The writer's queue; `None` once dropping.
    jobs: Option<mpsc::Sender<Box<dyn WriteJob>>>,
    /// The writer thread, joined on drop so the file is closed when the store is gone.
    writer: Option<JoinHandle<()>>,
    /// When the writer began the batch it is on (see [`Busy`]).
    busy: Arc<Busy>,
}

/// When the writer began its current batch: nanoseconds after `origin`, plus one; 0 between
/// batches.
struct Busy {
    origin: Instant,
    since: AtomicU64,
}

impl Busy {
    fn start(&self) {
        let nanos = self
            .origin
            .elapsed()
            .as_nanos()
            .min(u128::from(u64::MAX - 1)) as u64;
        self.since.store(nanos + 1, Ordering::Release);
    }
    fn stop(&self) {
        self.since.store(0, Ordering::Release);
    }
    fn age(&self) -> Option<Duration> {
        match self.since.load(Ordering::Acquire) {
            0 => None,
            since => Some(
                self.origin
                    .elapsed()
                    .saturating_sub(Duration::from_nanos(since - 1)),
            ),
        }
    }
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
            tx.open_table(table.def).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        let db = Arc::new(db);
        let (jobs, queue) = mpsc::channel();
        let writer_db = db.clone();
        let busy = Arc::new(Busy {
            origin: Instant::now(),
            since: AtomicU64::new(0),
        });
        let writer_busy = busy.clone();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(&writer_db, &queue, &writer_busy))
            .map_err(|e| StoreError(format!("cannot start the store writer: {e}")))?;
        Ok(Self {
            db,
            jobs: Some(jobs),
            writer: Some(writer),
            busy,
        })
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer after the jobs already queued.
        self.jobs = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer: waits for a job, takes every job queued behind it, runs them in one durable
/// transaction, then reports to each. Returns when the queue is closed and drained.
fn write_loop(db: &Database, queue: &mpsc::Receiver<Box<dyn WriteJob>>, busy: &Busy) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        busy.start();
        let outcome = run_batch(db, &mut batch);
        busy.stop();
        metrics::histogram!(crate::telemetry::STORE_COMMIT).record(started.elapsed().as_secs_f64());
        metrics::histogram!(crate::telemetry::STORE_BATCH).record(batch.len() as f64);
        for job in batch {
            job.finish(outcome.clone());
        }
    }
}

fn run_batch(db: &Database, batch: &mut [Box<dyn WriteJob>]) -> Result<(), StoreError> {
    let tx = db.begin_write().map_err(err)?;
    {
        // Every table is opened once per batch, not once per read or write.
        let mut tables = OpenTables(
            ALL_TABLES
                .iter()
                .map(|t| tx.open_table(t.def).map_err(err))
                .collect::<Result<_, _>>()?,
        );
        for job in batch.iter_mut() {
            let mut staged = Staged {
                tables: &mut tables,
                writes: Vec::new(),
            };
            match catch_unwind(AssertUnwindSafe(|| job.run(&mut staged))) {
                Ok(Commit::Yes) => staged.apply()?,
                Ok(Commit::No) => {}
                // The job's staged writes are dropped; the others of the batch go on. Its
                // `finish` still runs: it reports the missing result.
                Err(_) => tracing::error!("a store write job panicked; its writes were dropped"),
            }
        }
    }
    tx.commit().map_err(err)
}

/// The tables of a write transaction, open for one batch, indexed by [`Table::id`].
struct OpenTables<'t>(Vec<redb::Table<'t, &'static str, &'static [u8]>>);

impl Source for OpenTables<'_> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let t = &self.0[usize::from(table.id)];
        Ok(t.get(key).map_err(err)?.map(|v| v.value().to_vec()))
    }
    fn prefix(&self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        scan(&self.0[usize::from(table.id)], prefix)
    }
    fn keys_rev(
        &self,
        table: Table,
        lo: &str,
        hi: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        scan_rev(&self.0[usize::from(table.id)], lo, hi, limit)
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

/// Reads of committed state open each table per read: a read transaction is short.
impl Source for redb::ReadTransaction {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.open_table(table.def).map_err(err)?;
        Ok(t.get(key).map_err(err)?.map(|v| v.value().to_vec()))
    }
    fn prefix(&self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        scan(&self.open_table(table.def).map_err(err)?, prefix)
    }
    fn keys_rev(
        &self,
        table: Table,
        lo: &str,
        hi: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        scan_rev(&self.open_table(table.def).map_err(err)?, lo, hi, limit)
    }
}

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

/// The fields of a stored Image that its index entries are made of: decoding only these
/// (prost skips the other fields) is what `put_image` needs to know of the old record.
#[derive(Clone, PartialEq, ::prost::Message)]
struct IndexedFields {
    #[prost(string, tag = "2")]
    folder_id: String,
    #[prost(string, tag = "4")]
    name: String,
}

/// One job's view of the batch's transaction: reads see the transaction (the batch's earlier
/// jobs included) with this job's own staged writes on top; writes are staged, in order, and
/// reach the transaction only through [`Staged::apply`].
struct Staged<'a, 't> {
    tables: &'a mut OpenTables<'t>,
    /// `(table, key, Some(value) to insert | None to remove)`, oldest first.
    writes: Vec<(Table, String, Option<Vec<u8>>)>,
}

impl Staged<'_, '_> {
    fn put(&mut self, table: Table, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.writes.push((table, key.to_string(), Some(value)));
        Ok(())
    }

    fn remove(&mut self, table: Table, key: &str) -> Result<(), StoreError> {
        self.writes.push((table, key.to_string(), None));
        Ok(())
    }

    /// The staged writes of `table` whose keys satisfy `within`, oldest first.
    fn staged<'s>(
        &'s self,
        table: Table,
        within: impl Fn(&str) -> bool + 's,
    ) -> impl Iterator<Item = (&'s str, Option<&'s Vec<u8>>)> + 's {
        self.writes
            .iter()
            .filter(move |(t, k, _)| t.id == table.id && within(k))
            .map(|(_, k, v)| (k.as_str(), v.as_ref()))
    }

    /// Writes the staged changes into the batch's transaction, in order.
    fn apply(self) -> Result<(), StoreError> {
        for (table, key, value) in self.writes {
            let t = &mut self.tables.0[usize::from(table.id)];
            match value {
                Some(v) => t.insert(key.as_str(), v.as_slice()).map_err(err)?,
                None => t.remove(key.as_str()).map_err(err)?,
            };
        }
        Ok(())
    }
}

impl Source for Staged<'_, '_> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.staged(table, |k| k == key).last() {
            Some((_, value)) => Ok(value.cloned()),
            None => self.tables.get(table, key),
        }
    }

    fn prefix(&self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut merged: BTreeMap<String, Vec<u8>> =
            self.tables.prefix(table, prefix)?.into_iter().collect();
        for (key, value) in self.staged(table, |k| k.starts_with(prefix)) {
            match value {
                Some(v) => merged.insert(key.to_string(), v.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().collect())
    }

    fn keys_rev(
        &self,
        table: Table,
        lo: &str,
        hi: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let in_range = |k: &str| lo <= k && k < hi;
        // Enough committed keys that the staged removals cannot leave the page short.
        let extra = self.staged(table, in_range).count();
        let mut merged: BTreeSet<String> = self
            .tables
            .keys_rev(table, lo, hi, limit + extra)?
            .into_iter()
            .collect();
        for (key, value) in self.staged(table, in_range) {
            match value {
                Some(_) => merged.insert(key.to_string()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().rev().take(limit).collect())
    }
}

impl TxMut for Staged<'_, '_> {
    fn put_image(&mut self, image: &Image) -> Result<(), StoreError> {
        let old = self
            .get(IMAGES, &image.id)?
            .map(|b| decode::<IndexedFields>(&b))
            .transpose()?;
        // The index entries change only when the name (or, never in practice, the folder)
        // does: an update that keeps them writes the image table alone.
        let (old_folder, old_name) = old
            .as_ref()
            .map_or(("", ""), |o| (o.folder_id.as_str(), o.name.as_str()));
        let moved = old.is_none() || old_folder != image.folder_id;
        if moved || old_name != image.name {
            if !old_name.is_empty() {
                self.remove(FOLDER_NAMES, &key(old_folder, old_name))?;
            }
            if !image.name.is_empty() {
                self.put(
                    FOLDER_NAMES,
                    &key(&image.folder_id, &image.name),
                    image.id.as_bytes().to_vec(),
                )?;
            }
        }
        if moved {
            if old.is_some() {
                self.remove(FOLDER_IMAGES, &key(old_folder, &image.id))?;
            }
            self.put(FOLDER_IMAGES, &key(&image.folder_id, &image.id), Vec::new())?;
        }
        self.put(IMAGES, &image.id, image.encode_to_vec())
    }
    fn delete_image(&mut self, id: &str) -> Result<(), StoreError> {
        if let Some(image) = self.image(id)? {
            self.remove(FOLDER_IMAGES, &key(&image.folder_id, &image.id))?;
            if !image.name.is_empty() {
                self.remove(FOLDER_NAMES, &key(&image.folder_id, &image.name))?;
            }
        }
        self.remove(IMAGES, id)?;
        self.remove(BINDINGS, id)
    }
    fn put_operation(&mut self, op: &Operation, image_id: &str) -> Result<(), StoreError> {
        self.put(OPERATIONS, &op.id, op.encode_to_vec())?;
        self.put(IMAGE_OPERATIONS, &op_index_key(image_id, op), Vec::new())
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
        self.put(BINDINGS, image_id, record.encode_to_vec())
    }
    fn put_idempotency(&mut self, key: &str, record: &IdempotencyRecord) -> Result<(), StoreError> {
        self.put(IDEMPOTENCY, key, record.encode_to_vec())
    }
    fn put_running_create(&mut self, running: &RunningCreate) -> Result<(), StoreError> {
        self.put(RUNNING, &running.operation_id, running.encode_to_vec())
    }
    fn clear_running_create(&mut self, operation_id: &str) -> Result<(), StoreError> {
        self.remove(RUNNING, operation_id)
    }
}

impl Store for EmbeddedStore {
    fn read(&self, f: &mut dyn FnMut(&dyn Tx) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        f(&tx)
    }

    fn submit(&self, job: Box<dyn WriteJob>) {
        let Some(jobs) = &self.jobs else {
            return job.finish(Err(StoreError("the store is closed".into())));
        };
        if let Err(mpsc::SendError(job)) = jobs.send(job) {
            job.finish(Err(StoreError("the store writer has stopped".into())));
        }
    }

    fn writing_for(&self) -> Option<Duration> {
        self.busy.age()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{Receiver, Sender, channel};

    use super::*;

    type Body = Box<dyn FnOnce(&mut dyn TxMut) -> Result<bool, StoreError> + Send>;

    /// A test job: runs `body` (commit when it returns `Ok(true)`), then reports the commit
    /// outcome (and whether `run` finished) on a channel.
    struct TestJob {
        body: Option<Body>,
        ran: bool,
        done: Sender<(bool, Result<(), StoreError>)>,
    }

    impl WriteJob for TestJob {
        fn run(&mut self, tx: &mut dyn TxMut) -> Commit {
            let body = self.body.take().expect("run once");
            let keep = body(tx).expect("store call");
            self.ran = true;
            if keep { Commit::Yes } else { Commit::No }
        }
        fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
            self.done.send((self.ran, committed)).expect("test listens");
        }
    }

    fn submit(
        store: &EmbeddedStore,
        body: impl FnOnce(&mut dyn TxMut) -> Result<bool, StoreError> + Send + 'static,
    ) -> Receiver<(bool, Result<(), StoreError>)> {
        let (done, report) = channel();
        store.submit(Box::new(TestJob {
            body: Some(Box::new(body)),
            ran: false,
            done,
        }));
        report
    }

    fn image(id: &str, folder: &str, name: &str) -> Image {
        Image {
            id: id.into(),
            folder_id: folder.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    fn read<T>(store: &EmbeddedStore, f: impl Fn(&dyn Tx) -> T) -> T {
        let mut out = None;
        store
            .read(&mut |tx| {
                out = Some(f(tx));
                Ok(())
            })
            .expect("read");
        out.expect("ran")
    }

    /// Jobs queued behind a busy writer share one transaction: each sees the writes of the
    /// jobs before it, a job that declines or panics loses only its own writes, and every job
    /// hears the outcome.
    #[test]
    fn a_batch_commits_together_and_a_failing_job_rolls_back_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        // Hold the writer inside a first job until the others are queued.
        let (release, gate) = channel::<()>();
        let first = submit(&store, move |tx| {
            gate.recv().expect("released");
            tx.put_image(&image("a", "f", "alpha"))?;
            Ok(true)
        });
        let sees_a = submit(&store, |tx| {
            assert!(
                tx.image("a")?.is_some(),
                "a job sees the batch's earlier writes"
            );
            tx.put_image(&image("b", "f", "beta"))?;
            Ok(true)
        });
        let declines = submit(&store, |tx| {
            tx.put_image(&image("c", "f", "gamma"))?;
            tx.delete_image("a")?;
            assert!(
                tx.image("c")?.is_some(),
                "a job reads its own staged writes"
            );
            assert!(tx.image("a")?.is_none());
            Ok(false)
        });
        let panics = submit(&store, |tx| {
            tx.put_image(&image("d", "f", "delta"))?;
            panic!("a bug in one job");
        });
        let after = submit(&store, |tx| {
            assert!(
                tx.image("a")?.is_some(),
                "the declined job's delete is gone"
            );
            assert!(
                tx.image("c")?.is_none(),
                "the declined job's insert is gone"
            );
            assert!(
                tx.image("d")?.is_none(),
                "the panicked job's insert is gone"
            );
            tx.put_image(&image("e", "f", "epsilon"))?;
            Ok(true)
        });
        release.send(()).expect("gate");
        for (report, ran) in [
            (first, true),
            (sees_a, true),
            (declines, true),
            (panics, false),
            (after, true),
        ] {
            let (did_run, committed) = report.recv().expect("finished");
            assert_eq!(did_run, ran);
            assert!(committed.is_ok(), "{committed:?}");
        }
        let ids = read(&store, |tx| {
            tx.folder_images("f")
                .expect("list")
                .into_iter()
                .map(|i| i.id)
                .collect::<Vec<_>>()
        });
        assert_eq!(ids, ["a", "b", "e"]);
        assert_eq!(
            read(&store, |tx| tx.image_named("f", "gamma").expect("name")),
            None
        );
    }

    #[test]
    fn indexed_fields_decode_from_a_stored_image() {
        let img = Image {
            description: "other fields are skipped".into(),
            ..image("fd8x", "b1gfolder", "the-name")
        };
        let fields: IndexedFields = decode(&img.encode_to_vec()).expect("decodes");
        assert_eq!(fields.folder_id, "b1gfolder");
        assert_eq!(fields.name, "the-name");
    }

    /// Prefix scans and reverse pages inside a job merge its staged writes with the
    /// committed keys: staged inserts show up and staged removals do not.
    #[test]
    fn staged_writes_merge_into_scans_and_pages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let op = |id: &str, secs: i64| Operation {
            id: id.into(),
            created_at: Some(crate::json::Timestamp {
                seconds: secs,
                nanos: 0,
            }),
            ..Default::default()
        };
        let setup = submit(&store, move |tx| {
            for (i, id) in ["o1", "o2", "o3", "o4"].into_iter().enumerate() {
                tx.put_operation(&op(id, i as i64 + 1), "img")?;
            }
            tx.put_image(&image("x", "f", "one"))?;
            tx.put_image(&image("y", "f", "two"))?;
            Ok(true)
        });
        assert!(setup.recv().expect("done").1.is_ok());
        let check = submit(&store, move |tx| {
            tx.delete_image("x")?;
            tx.put_image(&image("z", "f", "three"))?;
            let ids: Vec<_> = tx.folder_images("f")?.into_iter().map(|i| i.id).collect();
            assert_eq!(ids, ["y", "z"]);
            // A staged operation heads the page, ahead of the committed ones.
            tx.put_operation(&op("o5", 10), "img")?;
            let page: Vec<_> = tx
                .image_operations_page("img", None, 2)?
                .into_iter()
                .map(|(c, _)| c.operation_id)
                .collect();
            assert_eq!(page, ["o5", "o4"]);
            Ok(false)
        });
        let (ran, committed) = check.recv().expect("done");
        assert!(ran && committed.is_ok());
    }
}
