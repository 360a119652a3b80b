//! The embedded store on redb: one file, ACID, copy-on-write B-trees. Chosen over SQLite for
//! being pure Rust (no C toolchain in the build) with the same crash guarantees. Its parts:
//! the key layout and the reads over it (`layout.rs`), the one writer thread and its group
//! commit (`writer.rs`), and each write job's overlay of staged writes (`overlay.rs`).

mod layout;
mod overlay;
mod writer;

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, ReadableDatabase};

use super::{Store, StoreError, Tx, WriteJob};
use layout::{ALL_TABLES, err};
use writer::{Busy, write_loop};

/// Bytes of redb's page cache. Pages it misses come from the OS page cache. 8 MiB keeps serve's
/// peak RSS flat under many concurrent durable updates at the same CPU per request
/// (`bench/RESULTS.md`).
const CACHE_BYTES: usize = 8 << 20;

/// Opens the database: the file in the data directory, or a storage backend a test gives.
pub type Opener = Arc<dyn Fn() -> Result<Database, StoreError> + Send + Sync>;

/// The database, as the writer last opened it: `None` while it cannot be reopened. redb fails
/// every operation after an I/O error (a full disk) until the database is opened again, which
/// recovers it to its last commit; the writer does that after a failed batch.
pub(super) struct Current {
    db: RwLock<Option<Arc<Database>>>,
    open: Opener,
}

impl Current {
    /// The database to read or write now.
    pub(super) fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::Reopening)
    }

    /// Closes the database and opens it again. Readers wait meanwhile (for the reads in
    /// progress to end, and the open: milliseconds); `false` when it cannot be opened yet.
    pub(super) fn reopen(&self) -> bool {
        let mut slot = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(mut old) = slot.take() {
            // The reads in progress hold the database; each ends within its request.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(shared) if std::time::Instant::now() < deadline => {
                        old = shared;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => {
                        tracing::error!("the store cannot be reopened: reads still hold it");
                        return false;
                    }
                }
            }
        }
        match (self.open)() {
            Ok(db) => {
                tracing::info!("the store was reopened");
                *slot = Some(Arc::new(db));
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "the store cannot be reopened yet");
                false
            }
        }
    }
}

/// The redb-backed store in `<data-dir>/compute.redb`.
pub struct EmbeddedStore {
    db: Arc<Current>,
    /// The writer's queue; `None` once dropping.
    jobs: Option<mpsc::Sender<Box<dyn WriteJob>>>,
    /// The writer thread, joined on drop so the file is closed when the store is gone.
    writer: Option<JoinHandle<()>>,
    /// When the writer began the batch it is on, and whether the last one failed.
    busy: Arc<Busy>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`, creating the directory as needed.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let cannot_open =
            |path: &Path, e: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
                path: path.to_path_buf(),
                source: e.into(),
            };
        std::fs::create_dir_all(dir).map_err(|e| cannot_open(dir, e.into()))?;
        let path = dir.join("compute.redb");
        Self::open_with(Arc::new(move || {
            // A bounded page cache keeps memory flat as the data grows (redb's default is
            // 1 GiB).
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(&path)
                .map_err(|e| match StoreError::from_redb(e) {
                    StoreError::Engine(e) => StoreError::Open {
                        path: path.clone(),
                        source: e,
                    },
                    other => other,
                })
        }))
    }

    /// Opens the store on the database `open` opens (and opens again after an I/O failure):
    /// how a test puts the store on a storage backend that fails as it is told.
    ///
    /// Opening compacts the file: the pages that retention freed while the process ran are
    /// reused by later writes, but only a compaction (which needs the database to itself)
    /// gives them back to the file system. A failed compaction is logged and the store opens
    /// as it is.
    pub fn open_with(open: Opener) -> Result<Self, StoreError> {
        let mut db = open()?;
        let tx = db.begin_write().map_err(err)?;
        for table in ALL_TABLES {
            tx.open_table(table.def).map_err(err)?;
        }
        layout::backfill(&tx)?;
        tx.commit().map_err(err)?;
        compact(&mut db);
        let db = Arc::new(Current {
            db: RwLock::new(Some(Arc::new(db))),
            open,
        });
        let (jobs, queue) = mpsc::channel();
        let writer_db = db.clone();
        let busy = Arc::new(Busy::new());
        let writer_busy = busy.clone();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(&writer_db, &queue, &writer_busy))
            .map_err(StoreError::engine)?;
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

impl Store for EmbeddedStore {
    fn read(&self, f: &mut dyn FnMut(&dyn Tx) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let tx = self.db.get()?.begin_read().map_err(err)?;
        f(&tx)
    }

    fn submit(&self, job: Box<dyn WriteJob>) {
        let Some(jobs) = &self.jobs else {
            return job.finish(Err(StoreError::Closed));
        };
        if let Err(mpsc::SendError(job)) = jobs.send(job) {
            job.finish(Err(StoreError::Closed));
        }
    }

    fn writing_for(&self) -> Option<Duration> {
        self.busy.age()
    }

    fn writes_failed(&self) -> bool {
        self.busy.take_failed()
    }
}

/// Compacts `db` as far as it goes, logging how long it took and what it achieved.
fn compact(db: &mut Database) {
    let started = std::time::Instant::now();
    match db.compact() {
        Ok(true) => tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compacted the data file"
        ),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not compact the data file; serving it as it is")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{Receiver, Sender, channel};

    use super::*;
    use crate::pb::yandex::cloud::compute::v1::Image;
    use crate::pb::yandex::cloud::operation::Operation;
    use crate::store::{Commit, TxMut};

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

    /// Space freed while the store ran goes back to the file system when the store is next
    /// opened, and what was kept is all there.
    #[test]
    fn opening_compacts_the_space_deleted_records_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("compute.redb");
        let size = || std::fs::metadata(&file).expect("data file").len();
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let big = |i: usize| Image {
            description: "x".repeat(200),
            product_ids: (0..50).map(|p| format!("{i}-{p:0>40}")).collect(),
            ..image(&format!("i{i:05}"), "f", &format!("n{i}"))
        };
        for chunk in 0..20 {
            let report = submit(&store, move |tx| {
                for i in chunk * 100..(chunk + 1) * 100 {
                    tx.put_image(&big(i))?;
                }
                Ok(true)
            });
            assert!(report.recv().expect("finished").1.is_ok());
        }
        let report = submit(&store, |tx| {
            for i in 1..2000 {
                tx.delete_image(&format!("i{i:05}"))?;
            }
            Ok(true)
        });
        assert!(report.recv().expect("finished").1.is_ok());
        drop(store);
        let before = size();
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        let after = size();
        // 2,000 images of about 2.3 KB each: some 4.6 MB, of which one image is left.
        assert!(
            after * 4 < before,
            "the file was {before} bytes before the reopen and {after} after"
        );
        let ids = read(&store, |tx| {
            tx.folder_images("f")
                .expect("list")
                .into_iter()
                .map(|i| i.id)
                .collect::<Vec<_>>()
        });
        assert_eq!(ids, ["i00000"]);
    }

    /// A folder is scanned in each order from the index, after a cursor, in either direction,
    /// reading only as far as the visitor goes; renames and deletes keep the indexes right;
    /// a store written before the name and age indexes existed has them built on open.
    #[test]
    fn folders_scan_in_order_from_a_cursor_and_only_as_far_as_asked() {
        use super::layout::{FOLDER_IMAGES, IMAGES, key};
        use crate::store::{ImageCursor, ImageOrder};
        use prost::Message;
        let dir = tempfile::tempdir().expect("tempdir");
        let at = |id: &str, name: &str, secs: i64| Image {
            created_at: Some(crate::json::Timestamp {
                seconds: secs,
                nanos: 0,
            }),
            ..image(id, "f", name)
        };
        // id, name, age: the three orders all differ.
        let images = [
            at("i1", "charlie", 30),
            at("i2", "", 10),
            at("i3", "alpha", 20),
            at("i4", "bravo", 40),
        ];
        {
            // Written as a store before the name and age indexes did: the images and the
            // folder's id index.
            let store = EmbeddedStore::open(dir.path()).expect("open");
            let tx = store.db.get().expect("open").begin_write().expect("write");
            {
                let mut table = tx.open_table(IMAGES.def).expect("images");
                let mut by_id = tx.open_table(FOLDER_IMAGES.def).expect("by id");
                for i in &images {
                    table
                        .insert(i.id.as_str(), i.encode_to_vec().as_slice())
                        .expect("insert");
                    by_id
                        .insert(key("f", &i.id).as_str(), &[][..])
                        .expect("insert");
                }
            }
            tx.commit().expect("commit");
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        let scan = |order, desc, after: Option<ImageCursor>, stop_after: usize| {
            read(&store, |tx| {
                let mut ids = Vec::new();
                tx.folder_scan("f", order, desc, after.as_ref(), &mut |i| {
                    ids.push(i.id);
                    ids.len() < stop_after
                })
                .expect("scan");
                ids
            })
        };
        let cursor = |order, id: &str| {
            ImageCursor::of(order, images.iter().find(|i| i.id == id).expect("an image"))
        };
        assert_eq!(
            scan(ImageOrder::Name, false, None, 9),
            ["i2", "i3", "i4", "i1"]
        );
        assert_eq!(
            scan(ImageOrder::Name, true, None, 9),
            ["i1", "i4", "i3", "i2"]
        );
        assert_eq!(
            scan(ImageOrder::CreatedAt, false, None, 9),
            ["i2", "i3", "i1", "i4"]
        );
        let after_i3 = |order| Some(cursor(order, "i3"));
        assert_eq!(
            scan(ImageOrder::Name, false, after_i3(ImageOrder::Name), 9),
            ["i4", "i1"]
        );
        assert_eq!(
            scan(ImageOrder::Name, true, after_i3(ImageOrder::Name), 9),
            ["i2"]
        );
        assert_eq!(
            scan(
                ImageOrder::CreatedAt,
                true,
                after_i3(ImageOrder::CreatedAt),
                9
            ),
            ["i2"]
        );
        assert_eq!(
            scan(ImageOrder::Id, false, after_i3(ImageOrder::Id), 9),
            ["i4"]
        );
        // The visitor stops the scan: nothing past it is read.
        assert_eq!(scan(ImageOrder::Name, false, None, 2), ["i2", "i3"]);
        // Renames move an image in name order; a delete leaves every order.
        let rename = submit(&store, |tx| {
            let mut i1 = tx.image("i1")?.expect("i1");
            i1.name = "aardvark".into();
            tx.put_image(&i1)?;
            tx.delete_image("i4")?;
            Ok(true)
        });
        assert!(rename.recv().expect("done").1.is_ok());
        assert_eq!(scan(ImageOrder::Name, false, None, 9), ["i2", "i1", "i3"]);
        assert_eq!(
            scan(ImageOrder::CreatedAt, false, None, 9),
            ["i2", "i3", "i1"]
        );
        assert_eq!(scan(ImageOrder::Id, true, None, 9), ["i3", "i2", "i1"]);
    }

    /// A purge removes the done operations and idempotency records from before their cutoffs
    /// (and their index entries) and keeps a running create, whatever its age; a store written
    /// before the time indexes existed has them built when it opens.
    #[test]
    fn purge_removes_what_expired_and_an_older_store_is_indexed_on_open() {
        use super::layout::{IDEMPOTENCY, IMAGE_OPERATIONS, OPERATIONS, op_index_key};
        use crate::store::{Cutoffs, IdempotencyRecord, now_nanos};
        use prost::Message;
        let dir = tempfile::tempdir().expect("tempdir");
        let op = |id: &str, secs: i64, done: bool| Operation {
            id: id.into(),
            created_at: Some(crate::json::Timestamp {
                seconds: secs,
                nanos: 0,
            }),
            done,
            ..Default::default()
        };
        let ops = [
            op("old", 10, true),
            op("running", 20, false),
            op("new", 1000, true),
        ];
        {
            // Written as a store before the time indexes did: straight into the tables.
            let store = EmbeddedStore::open(dir.path()).expect("open");
            let tx = store.db.get().expect("open").begin_write().expect("write");
            {
                let mut table = tx.open_table(OPERATIONS.def).expect("operations");
                let mut history = tx.open_table(IMAGE_OPERATIONS.def).expect("history");
                for o in &ops {
                    table
                        .insert(o.id.as_str(), o.encode_to_vec().as_slice())
                        .expect("insert");
                    history
                        .insert(op_index_key("img", o).as_str(), &[][..])
                        .expect("insert");
                }
                let record = IdempotencyRecord {
                    fingerprint: vec![1],
                    operation_id: "new".into(),
                };
                tx.open_table(IDEMPOTENCY.def)
                    .expect("keys")
                    .insert("k", record.encode_to_vec().as_slice())
                    .expect("insert");
            }
            tx.commit().expect("commit");
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        let purge = |cutoffs: Cutoffs| {
            let (done, report) = channel();
            let job = submit(&store, move |tx| {
                done.send(tx.purge(cutoffs, 100)?).expect("test listens");
                Ok(true)
            });
            assert!(job.recv().expect("finished").1.is_ok());
            report.recv().expect("purged")
        };
        let history = || {
            read(&store, |tx| {
                tx.image_operations_page("img", None, 10)
                    .expect("history")
                    .into_iter()
                    .map(|(c, _)| c.operation_id)
                    .collect::<Vec<_>>()
            })
        };
        let second = 1_000_000_000u128;
        assert_eq!(
            purge(Cutoffs {
                operations: 100 * second,
                idempotency_keys: 0,
                tokens: 0,
            }),
            1,
            "the old done operation; the running create is kept"
        );
        assert_eq!(history(), ["new", "running"]);
        assert!(read(&store, |tx| tx.operation("old").expect("read")).is_none());
        assert!(read(&store, |tx| tx.idempotency("k").expect("read")).is_some());
        assert_eq!(
            purge(Cutoffs {
                operations: 100 * second,
                idempotency_keys: now_nanos() + second,
                tokens: 0,
            }),
            1,
            "the key, indexed when the store opened"
        );
        assert!(read(&store, |tx| tx.idempotency("k").expect("read")).is_none());
        assert_eq!(
            purge(Cutoffs {
                operations: 100 * second,
                idempotency_keys: now_nanos() + second,
                tokens: 0,
            }),
            0,
            "nothing is left to purge"
        );
        assert_eq!(history(), ["new", "running"]);
    }

    /// Jobs queued behind a busy writer make one transaction of at most `MAX_BATCH` jobs:
    /// inside it, a read transaction does not see the first job's write yet (nothing of the
    /// batch is committed); the job after the batch does (the batch committed first).
    #[test]
    fn queued_jobs_share_one_transaction_up_to_the_batch_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let committed = |db: &Arc<Current>, id: &str| {
            let read = db.get().expect("open").begin_read().expect("read");
            read.image(id).expect("image").is_some()
        };
        // A job that holds the writer until every job below is queued, so that the batches
        // after it are formed from a full queue, whatever the threads' timing.
        let (started, running) = channel::<()>();
        let (release, gate) = channel::<()>();
        let blocker = submit(&store, move |_| {
            started.send(()).expect("the test waits");
            gate.recv().expect("released");
            Ok(true)
        });
        running.recv().expect("the blocker runs");
        let first = submit(&store, move |tx| {
            tx.put_image(&image("a", "f", "alpha"))?;
            Ok(true)
        });
        let mut reports = vec![blocker, first];
        for n in 1..=crate::store::MAX_BATCH {
            let db = store.db.clone();
            reports.push(submit(&store, move |tx| {
                let in_first_batch = n < crate::store::MAX_BATCH;
                assert_eq!(
                    committed(&db, "a"),
                    !in_first_batch,
                    "job {n}: the first job's write is committed only after its batch"
                );
                tx.put_image(&image(&format!("i{n}"), "f", &format!("n{n}")))?;
                Ok(true)
            }));
        }
        release.send(()).expect("gate");
        for report in reports {
            let (ran, result) = report.recv().expect("finished");
            assert!(ran && result.is_ok(), "{result:?}");
        }
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
            let page_of = |tx: &mut dyn TxMut, before: Option<&str>, limit| {
                let cursor = before.map(|id| crate::store::OperationCursor {
                    created_nanos: u128::from(id[1..].parse::<u8>().expect("oN")) * 1_000_000_000,
                    operation_id: id.into(),
                });
                Ok::<_, StoreError>(
                    tx.image_operations_page("img", cursor.as_ref(), limit)?
                        .into_iter()
                        .map(|(c, _)| c.operation_id)
                        .collect::<Vec<_>>(),
                )
            };
            // Nothing staged in the range yet: the committed keys alone.
            assert_eq!(page_of(tx, None, 2)?, ["o4", "o3"]);
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
            // Another image's staged operation stays out; more staged than the page holds;
            // a page before a staged operation starts below it.
            tx.put_operation(&op("o9", 20), "other")?;
            tx.put_operation(&op("o6", 6), "img")?;
            assert_eq!(page_of(tx, None, 1)?, ["o5"]);
            assert_eq!(page_of(tx, None, 3)?, ["o5", "o6", "o4"]);
            assert_eq!(page_of(tx, Some("o6"), 2)?, ["o4", "o3"]);
            Ok(false)
        });
        let (ran, committed) = check.recv().expect("done");
        assert!(ran && committed.is_ok());
    }
}
