//! The store in PostgreSQL (`--database-url`): the same [`Store`] traits and semantics as the
//! embedded store, in tables several replicas can share.
//!
//! - **Schema** (`schema.sql`) is migrated at start, under a session advisory lock, so that
//!   replicas starting together migrate once; `cg_schema_migrations` records the versions.
//! - **Reads** run in a `REPEATABLE READ, READ ONLY` transaction: one snapshot, as the
//!   embedded store's. The [`Tx`] calls are synchronous, so a read blocks its thread for its
//!   round trips: on tokio's multi-threaded runtime through `block_in_place` (the runtime moves
//!   its other tasks to another thread meanwhile); on a current-thread runtime (tests) on a
//!   scoped thread of its own.
//! - **Writes** run on the store's writer thread, the jobs queued together in one transaction
//!   (group commit, as the embedded store does: one flush for the batch), each job under a
//!   savepoint so that one that declines, fails or panics loses only its own writes (a panic
//!   is [`StoreError::JobLost`] to its caller). Each transaction takes a transaction-scoped
//!   advisory lock first: writes are serialised across every replica of the database, so a
//!   job's read-modify-write (a folder-unique name, an idempotency key, an update) sees every
//!   write committed before it, as with the embedded store's single writer. The unique index
//!   on a folder's names backs that up.
//! - A lost connection is [`StoreError::Unavailable`] (UNAVAILABLE to clients, health
//!   NOT_SERVING after failed writes); the pool makes new connections as the database comes
//!   back, without a restart.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::collections::HashMap;

use postgres::Statement;
use prost::Message as _;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{
    Commit, Cutoffs, IdempotencyRecord, ImageCursor, ImageOrder, IssuedToken, OperationCursor,
    OperationResource, RunningCreate, ServiceAccountKey, Store, StoreError, Tx, TxMut, WriteJob,
    bindings_of, bindings_record, decode, now_nanos,
};
use crate::pb::yandex::cloud::access::AccessBinding;
use crate::pb::yandex::cloud::compute::v1::Image;
use crate::pb::yandex::cloud::operation::Operation;

mod tls;

/// The migrations, in order: (version, SQL).
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("schema.sql"))];

/// The advisory lock key of migrations, and of writes (`cg` in ASCII, and one more).
const MIGRATION_LOCK: i64 = 0x6367_0001;
const WRITE_LOCK: i64 = 0x6367_0002;

/// Images read per round trip of a folder scan.
const SCAN_BATCH: i64 = 64;

type Pool = r2d2::Pool<Connector>;

/// A connection of the pool, and the statements it has prepared: each statement of this
/// module is prepared once per connection, so that running it again is one round trip, not
/// two.
struct Conn {
    client: postgres::Client,
    prepared: HashMap<String, Statement>,
}

/// Makes the pool's connections. Connections are not tested when taken from the pool (a round
/// trip each time): a transaction begins on one instead, and one found broken (the database
/// restarted) is dropped and the next taken (see [`begin`]).
struct Connector {
    config: postgres::Config,
    tls: MakeRustlsConnect,
}

impl r2d2::ManageConnection for Connector {
    type Connection = Conn;
    type Error = ConnectError;

    fn connect(&self) -> Result<Conn, ConnectError> {
        Ok(Conn {
            client: self
                .config
                .connect(self.tls.clone())
                .map_err(ConnectError)?,
            prepared: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), ConnectError> {
        conn.client.simple_query("").map(drop).map_err(ConnectError)
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.client.is_closed()
    }
}

/// Settings of the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Most connections held (reads share them; the writer holds one while it writes).
    pub pool_size: u32,
    /// Longest a read or write waits for a connection (the database being down, or every
    /// connection busy) before it fails as unavailable.
    pub connect_timeout: Duration,
    /// The CA certificates (PEM) the database's certificate must chain to (`--database-ca`);
    /// see [`tls`] for how it goes with the URL's `sslmode`.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            ca_file: None,
        }
    }
}

/// The store in a PostgreSQL database.
pub struct PostgresStore {
    /// Taken only when the store drops.
    db: Option<Arc<Db>>,
    jobs: Option<mpsc::Sender<Box<dyn WriteJob>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// When the write in progress began.
    writing_since: Arc<Mutex<Option<Instant>>>,
    failed: Arc<AtomicBool>,
}

/// Why a connection could not be made, with its causes (the pool keeps only the message: "error
/// performing TLS handshake" alone would not say that the certificate's name is wrong).
#[derive(Debug)]
struct ConnectError(postgres::Error);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = std::error::Error::source(&self.0);
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl std::error::Error for ConnectError {}

/// A lost or refused connection, a pool that found none in time: retry later.
fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable(Arc::new(e))
}

/// A failure of a statement: unavailable when the connection is the cause, an engine fault
/// otherwise.
fn err(e: postgres::Error) -> StoreError {
    if connection_lost(&e) {
        unavailable(e)
    } else {
        StoreError::engine(e)
    }
}

/// Whether `e` is the connection's failure rather than the statement's.
fn connection_lost(e: &postgres::Error) -> bool {
    e.is_closed()
        || e.code().is_some_and(|c| {
            let class = &c.code()[..2];
            // 08: connection exception; 57: operator intervention (shutdown); 53: resources.
            matches!(class, "08" | "57" | "53")
        })
        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

/// How long a call waits for a connection while the database is known to be unreachable: a
/// client gets its 503 at once rather than after [`PostgresOptions::connect_timeout`], and
/// each call still tries, so the first one after the database is back succeeds.
const WAIT_WHILE_DOWN: Duration = Duration::from_millis(250);

/// The pool, and whether the database was found unreachable (no connection to be had, none
/// held) by the last call that tried.
struct Db {
    pool: Pool,
    down: AtomicBool,
}

/// A pooled connection on which the transaction `begin` (its statement) has begun. A
/// connection the database dropped (a restart since it was last used) fails at once and
/// harmlessly: nothing has run on it. It is dropped and the next one taken, up to the pool's
/// size; the pool then makes new ones.
fn begin(
    db: &Db,
    mode: Mode,
    begin: &'static str,
) -> Result<r2d2::PooledConnection<Connector>, StoreError> {
    let result = begin_on(db, mode, begin);
    // Unreachable, not merely busy: no call got a connection, and the pool holds none (every
    // connection busy is an overload, whose calls keep the whole wait).
    let unreachable =
        matches!(result, Err(StoreError::Unavailable(_))) && db.pool.state().connections == 0;
    if db.down.swap(unreachable, Ordering::Relaxed) != unreachable {
        tracing::warn!(
            reachable = !unreachable,
            "the database {}",
            if unreachable {
                "cannot be reached"
            } else {
                "is back"
            }
        );
    }
    result
}

fn begin_on(
    db: &Db,
    mode: Mode,
    begin: &'static str,
) -> Result<r2d2::PooledConnection<Connector>, StoreError> {
    let pool = &db.pool;
    let wait = if db.down.load(Ordering::Relaxed) {
        WAIT_WHILE_DOWN
    } else {
        pool.connection_timeout()
    };
    let mut lost = None;
    for _ in 0..=pool.max_size() {
        let mut conn = mode.run(|| pool.get_timeout(wait)).map_err(unavailable)?;
        match mode.run(|| conn.client.batch_execute(begin)) {
            Ok(()) => return Ok(conn),
            Err(e) if connection_lost(&e) => {
                // Broken: the pool closes it rather than keep it (closing is a statement).
                mode.run(move || drop(conn));
                lost = Some(e);
            }
            Err(e) => {
                mode.run(move || drop(conn));
                return Err(err(e));
            }
        }
    }
    Err(lost.map_or(StoreError::Closed, err))
}

/// Nanoseconds as the database keeps them (until the year 2262).
fn nanos(n: u128) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Where a statement may block: inline (a plain thread, or inside `block_in_place`), or, on a
/// current-thread tokio runtime (whose one thread must not block on another runtime), on a
/// scoped thread of its own.
#[derive(Clone, Copy)]
enum Mode {
    Inline,
    Scoped,
}

impl Mode {
    fn run<T: Send>(self, op: impl FnOnce() -> T + Send) -> T {
        match self {
            Self::Inline => op(),
            Self::Scoped => std::thread::scope(|s| {
                s.spawn(op)
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            }),
        }
    }
}

/// Runs `f` where it may block (see the module's documentation), telling it how statements
/// are to run.
fn blocking<T>(f: impl FnOnce(Mode) -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
            tokio::task::block_in_place(|| f(Mode::Inline))
        }
        Ok(_) => f(Mode::Scoped),
        Err(_) => f(Mode::Inline),
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`, or key=value
    /// settings), migrates its schema and starts the writer.
    pub fn open(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let (config, tls) =
            tls::settings(url, options.ca_file.as_deref()).map_err(|e| StoreError::Open {
                path: "--database-url".into(),
                source: Arc::new(std::io::Error::other(e)),
            })?;
        let manager = Connector { config, tls };
        let pool = blocking(|mode| {
            mode.run(|| {
                r2d2::Pool::builder()
                    .max_size(options.pool_size.max(2))
                    .min_idle(Some(1))
                    .connection_timeout(options.connect_timeout)
                    .test_on_check_out(false)
                    .build(manager)
            })
        })
        .map_err(|e| StoreError::Open {
            path: "--database-url".into(),
            source: Arc::new(e),
        })?;
        blocking(|mode| mode.run(|| migrate(&pool)))?;
        let db = Arc::new(Db {
            pool,
            down: AtomicBool::new(false),
        });
        let (jobs, queue) = mpsc::channel::<Box<dyn WriteJob>>();
        let writing_since = Arc::new(Mutex::new(None));
        let failed = Arc::new(AtomicBool::new(false));
        let writer = {
            let (db, since, failed) = (db.clone(), writing_since.clone(), failed.clone());
            std::thread::Builder::new()
                .name("postgres-writer".into())
                .spawn(move || {
                    // The jobs queued together share a transaction.
                    while let Some(batch) = super::next_batch(&queue) {
                        let jobs = batch.len();
                        let started = Instant::now();
                        *since.lock().unwrap_or_else(|p| p.into_inner()) = Some(started);
                        let outcome = write(&db, batch);
                        *since.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        metrics::histogram!(crate::telemetry::STORE_COMMIT)
                            .record(started.elapsed().as_secs_f64());
                        metrics::histogram!(crate::telemetry::STORE_BATCH).record(jobs as f64);
                        if outcome.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                    }
                })
                .map_err(StoreError::other)?
        };
        Ok(Self {
            db: Some(db),
            jobs: Some(jobs),
            writer: Some(writer),
            writing_since,
            failed,
        })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer after the jobs already queued.
        self.jobs = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        // Closing a connection is a statement too (see `blocking`).
        if let Some(db) = self.db.take() {
            blocking(|mode| mode.run(move || drop(db)));
        }
    }
}

/// Applies the migrations not applied yet, once across replicas.
fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut conn = pool.get().map_err(unavailable)?;
    let client = &mut conn.client;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(err)?;
    let result = (|| {
        // Quiet: "already exists, skipping" on every start but the first is not news.
        client
            .batch_execute(
                "SET client_min_messages TO warning;
                 CREATE TABLE IF NOT EXISTS cg_schema_migrations (
                     version integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .map_err(err)?;
        for (version, sql) in MIGRATIONS {
            let done = client
                .query_opt(
                    "SELECT 1 FROM cg_schema_migrations WHERE version = $1",
                    &[version],
                )
                .map_err(err)?
                .is_some();
            if done {
                continue;
            }
            let mut t = client.transaction().map_err(err)?;
            t.batch_execute(sql).map_err(err)?;
            t.execute(
                "INSERT INTO cg_schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .map_err(err)?;
            t.commit().map_err(err)?;
            tracing::info!(version, "database schema migrated");
        }
        Ok(())
    })();
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    result
}

/// Runs a batch of write jobs in one transaction (group commit: one flush to disk for all),
/// each under a savepoint, so that a job that declines, fails or panics loses only its own
/// writes; every job hears the outcome of the commit.
fn write(db: &Db, batch: Vec<Box<dyn WriteJob>>) -> Result<(), StoreError> {
    let mut lost = vec![false; batch.len()];
    let mut batch = batch;
    let mut conn = match begin(db, Mode::Inline, "BEGIN") {
        Ok(conn) => Some(conn),
        Err(e) => {
            tracing::error!(error = %e, jobs = batch.len(), "a database write failed");
            for job in batch {
                job.finish(Err(e.clone()));
            }
            return Err(e);
        }
    };
    let mut tx = Pg {
        conn: RefCell::new(conn.as_deref_mut().expect("taken above")),
        mode: Mode::Inline,
    };
    let committed = (|| -> Result<(), StoreError> {
        tx.exec("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
        for (job, lost) in batch.iter_mut().zip(lost.iter_mut()) {
            tx.simple("SAVEPOINT job")?;
            let ran = catch_unwind(AssertUnwindSafe(|| job.run(&mut tx)));
            match ran {
                Ok(Commit::Yes) => tx.simple("RELEASE SAVEPOINT job")?,
                Ok(Commit::No) => tx.simple("ROLLBACK TO SAVEPOINT job")?,
                Err(_) => {
                    *lost = true;
                    tx.simple("ROLLBACK TO SAVEPOINT job")?;
                }
            }
        }
        tx.simple("COMMIT")
    })();
    if committed.is_err() {
        // Nothing of it is kept; on a broken connection this fails too, and the pool drops it.
        let _ = tx.simple("ROLLBACK");
    }
    drop(conn.take());
    if let Err(e) = &committed {
        tracing::error!(error = %e, jobs = batch.len(), "a database write failed");
    }
    for (job, lost) in batch.into_iter().zip(lost) {
        job.finish(match (&committed, lost) {
            (Err(e), _) => Err(e.clone()),
            (Ok(()), true) => Err(StoreError::JobLost),
            (Ok(()), false) => Ok(()),
        });
    }
    committed
}

impl Store for PostgresStore {
    fn read(&self, f: &mut dyn FnMut(&dyn Tx) -> Result<(), StoreError>) -> Result<(), StoreError> {
        blocking(|mode| {
            // A checkout may make a connection: it runs where statements do.
            let Some(db) = &self.db else {
                return Err(StoreError::Closed);
            };
            let mut conn = begin(
                db,
                mode,
                "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            )?;
            let tx = Pg {
                conn: RefCell::new(&mut conn),
                mode,
            };
            // The transaction is ended here, even when `f` panics (after a failed statement,
            // COMMIT rolls back); the connection goes back to the pool, or is closed if
            // broken, where statements run.
            let read = catch_unwind(AssertUnwindSafe(|| f(&tx)));
            let _ = tx.simple("COMMIT");
            mode.run(move || drop(conn));
            read.unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
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
        self.writing_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|since| since.elapsed())
    }

    fn writes_failed(&self) -> bool {
        self.failed.swap(false, Ordering::Relaxed)
    }

    fn shared(&self) -> bool {
        true
    }
}

/// A connection in a transaction, read-only or not, and where its statements run. `RefCell`:
/// the [`Tx`] calls take `&self`, a statement takes the connection mutably; the calls never
/// nest.
struct Pg<'a> {
    conn: RefCell<&'a mut Conn>,
    mode: Mode,
}

type Params<'p> = &'p [&'p (dyn postgres::types::ToSql + Sync)];

impl Pg<'_> {
    /// Runs `op` with `sql` prepared on this connection (once: kept for the next time).
    fn prepared<T: Send>(
        &self,
        sql: &str,
        op: impl FnOnce(&mut postgres::Client, &Statement) -> Result<T, postgres::Error> + Send,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.borrow_mut();
        let Conn { client, prepared } = &mut **conn;
        self.mode
            .run(|| {
                let statement = match prepared.get(sql) {
                    Some(s) => s.clone(),
                    None => {
                        let s = client.prepare(sql)?;
                        prepared.insert(sql.to_string(), s.clone());
                        s
                    }
                };
                op(client, &statement)
            })
            .map_err(err)
    }

    /// Runs `sql` (no parameters) as a simple query.
    fn simple(&self, sql: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.borrow_mut();
        let client = &mut conn.client;
        self.mode.run(|| client.batch_execute(sql)).map_err(err)
    }

    fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<postgres::Row>, StoreError> {
        self.prepared(sql, |c, s| c.query(s, params))
    }

    fn query_opt(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<postgres::Row>, StoreError> {
        self.prepared(sql, |c, s| c.query_opt(s, params))
    }

    fn one<M: prost::Message + Default>(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<M>, StoreError> {
        let row = self.query_opt(sql, params)?;
        row.map(|r| decode::<M>(r.get::<_, &[u8]>(0))).transpose()
    }

    fn all<M: prost::Message + Default>(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<M>, StoreError> {
        let rows = self.query(sql, params)?;
        rows.iter()
            .map(|r| decode::<M>(r.get::<_, &[u8]>(0)))
            .collect()
    }

    fn exec(&self, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
        self.prepared(sql, |c, s| c.execute(s, params))
    }
}

impl Tx for Pg<'_> {
    fn image(&self, id: &str) -> Result<Option<Image>, StoreError> {
        self.one("SELECT body FROM cg_images WHERE id = $1", &[&id])
    }

    fn folder_images(&self, folder_id: &str) -> Result<Vec<Image>, StoreError> {
        self.all(
            "SELECT body FROM cg_images WHERE folder_id = $1 ORDER BY id",
            &[&folder_id],
        )
    }

    fn folder_scan(
        &self,
        folder_id: &str,
        order: ImageOrder,
        descending: bool,
        after: Option<&ImageCursor>,
        visit: &mut dyn FnMut(Image) -> bool,
    ) -> Result<(), StoreError> {
        let primary = match order {
            ImageOrder::Id => "''::text COLLATE \"C\"",
            ImageOrder::Name => "name",
            ImageOrder::CreatedAt => "created_key",
        };
        let (cmp, dir) = if descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        let from_start = format!(
            "SELECT body, {primary}, id FROM cg_images WHERE folder_id = $1 \
             ORDER BY {primary} {dir}, id {dir} LIMIT $2"
        );
        let from_cursor = format!(
            "SELECT body, {primary}, id FROM cg_images WHERE folder_id = $1 \
             AND ({primary}, id) {cmp} ($3::text, $4::text) \
             ORDER BY {primary} {dir}, id {dir} LIMIT $2"
        );
        let mut cursor = after.cloned();
        loop {
            let rows = match &cursor {
                None => self.query(&from_start, &[&folder_id, &SCAN_BATCH])?,
                Some(c) => {
                    self.query(&from_cursor, &[&folder_id, &SCAN_BATCH, &c.primary, &c.id])?
                }
            };
            let full = rows.len() as i64 == SCAN_BATCH;
            for row in &rows {
                let image: Image = decode(row.get::<_, &[u8]>(0))?;
                cursor = Some(ImageCursor {
                    primary: row.get::<_, String>(1),
                    id: row.get::<_, String>(2),
                });
                if !visit(image) {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    fn operation(&self, id: &str) -> Result<Option<Operation>, StoreError> {
        self.one("SELECT body FROM cg_operations WHERE id = $1", &[&id])
    }

    fn image_named(&self, folder_id: &str, name: &str) -> Result<Option<String>, StoreError> {
        let row = self.query_opt(
            "SELECT id FROM cg_images WHERE folder_id = $1 AND name = $2",
            &[&folder_id, &name],
        )?;
        Ok(row.map(|r| r.get::<_, String>(0)))
    }

    fn image_operations_page(
        &self,
        image_id: &str,
        before: Option<&OperationCursor>,
        limit: usize,
    ) -> Result<Vec<(OperationCursor, Operation)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match before {
            None => self.query(
                "SELECT body, created_nanos, id FROM cg_operations WHERE image_id = $1 \
                 ORDER BY created_nanos DESC, id DESC LIMIT $2",
                &[&image_id, &limit],
            )?,
            Some(c) => self.query(
                "SELECT body, created_nanos, id FROM cg_operations WHERE image_id = $1 \
                 AND (created_nanos, id) < ($3, $4::text) \
                 ORDER BY created_nanos DESC, id DESC LIMIT $2",
                &[&image_id, &limit, &nanos(c.created_nanos), &c.operation_id],
            )?,
        };
        rows.iter()
            .map(|r| {
                let op: Operation = decode(r.get::<_, &[u8]>(0))?;
                let cursor = OperationCursor {
                    created_nanos: r.get::<_, i64>(1).max(0) as u128,
                    operation_id: r.get::<_, String>(2),
                };
                Ok((cursor, op))
            })
            .collect()
    }

    fn bindings(&self, image_id: &str) -> Result<Vec<AccessBinding>, StoreError> {
        Ok(self
            .query_opt(
                "SELECT body FROM cg_access_bindings WHERE image_id = $1",
                &[&image_id],
            )?
            .map(|r| bindings_of(r.get::<_, &[u8]>(0)))
            .transpose()?
            .unwrap_or_default())
    }

    fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.one(
            "SELECT body FROM cg_idempotency_keys WHERE key = $1",
            &[&key.as_bytes()],
        )
    }

    fn running_creates(&self) -> Result<Vec<RunningCreate>, StoreError> {
        self.all(
            "SELECT body FROM cg_running_creates ORDER BY operation_id",
            &[],
        )
    }

    fn running_create(&self, operation_id: &str) -> Result<Option<RunningCreate>, StoreError> {
        self.one(
            "SELECT body FROM cg_running_creates WHERE operation_id = $1",
            &[&operation_id],
        )
    }

    fn operation_resource(
        &self,
        operation_id: &str,
    ) -> Result<Option<OperationResource>, StoreError> {
        self.one(
            "SELECT body FROM cg_operation_resources WHERE operation_id = $1",
            &[&operation_id],
        )
    }

    fn service_account_key(&self, id: &str) -> Result<Option<ServiceAccountKey>, StoreError> {
        self.one(
            "SELECT body FROM cg_service_account_keys WHERE id = $1",
            &[&id],
        )
    }

    fn service_account_keys(&self) -> Result<Vec<ServiceAccountKey>, StoreError> {
        self.all("SELECT body FROM cg_service_account_keys ORDER BY id", &[])
    }

    fn issued_token(&self, hash: &str) -> Result<Option<IssuedToken>, StoreError> {
        self.one("SELECT body FROM cg_iam_tokens WHERE hash = $1", &[&hash])
    }
}

impl TxMut for Pg<'_> {
    fn put_image(&mut self, image: &Image) -> Result<(), StoreError> {
        let created = ImageCursor::of(ImageOrder::CreatedAt, image).primary;
        self.exec(
            "INSERT INTO cg_images (id, folder_id, name, created_key, body) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET folder_id = EXCLUDED.folder_id, \
             name = EXCLUDED.name, created_key = EXCLUDED.created_key, body = EXCLUDED.body",
            &[
                &image.id,
                &image.folder_id,
                &image.name,
                &created,
                &image.encode_to_vec(),
            ],
        )
        .map(drop)
    }

    fn delete_image(&mut self, id: &str) -> Result<(), StoreError> {
        self.exec("DELETE FROM cg_images WHERE id = $1", &[&id])?;
        self.exec("DELETE FROM cg_access_bindings WHERE image_id = $1", &[&id])
            .map(drop)
    }

    fn put_operation(&mut self, op: &Operation, image_id: &str) -> Result<(), StoreError> {
        let created = nanos(OperationCursor::created_nanos_of(op));
        self.exec(
            "INSERT INTO cg_operations (id, image_id, created_nanos, done, body) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET image_id = EXCLUDED.image_id, \
             created_nanos = EXCLUDED.created_nanos, done = EXCLUDED.done, body = EXCLUDED.body",
            &[&op.id, &image_id, &created, &op.done, &op.encode_to_vec()],
        )
        .map(drop)
    }

    fn put_bindings(
        &mut self,
        image_id: &str,
        bindings: &[AccessBinding],
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO cg_access_bindings (image_id, body) VALUES ($1, $2) \
             ON CONFLICT (image_id) DO UPDATE SET body = EXCLUDED.body",
            &[&image_id, &bindings_record(bindings)],
        )
        .map(drop)
    }

    fn put_idempotency(&mut self, key: &str, record: &IdempotencyRecord) -> Result<(), StoreError> {
        // The time it was first recorded stays: retention counts from then.
        self.exec(
            "INSERT INTO cg_idempotency_keys (key, recorded_nanos, body) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET body = EXCLUDED.body",
            &[
                &key.as_bytes(),
                &nanos(now_nanos()),
                &record.encode_to_vec(),
            ],
        )
        .map(drop)
    }

    fn put_running_create(&mut self, running: &RunningCreate) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO cg_running_creates (operation_id, body) VALUES ($1, $2) \
             ON CONFLICT (operation_id) DO UPDATE SET body = EXCLUDED.body",
            &[&running.operation_id, &running.encode_to_vec()],
        )
        .map(drop)
    }

    fn clear_running_create(&mut self, operation_id: &str) -> Result<(), StoreError> {
        self.exec(
            "DELETE FROM cg_running_creates WHERE operation_id = $1",
            &[&operation_id],
        )
        .map(drop)
    }

    fn touch(&mut self) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO cg_meta (key, value) VALUES ('health', $1) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&nanos(now_nanos())],
        )
        .map(drop)
    }

    fn put_operation_resource(
        &mut self,
        operation_id: &str,
        resource: &OperationResource,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO cg_operation_resources (operation_id, body) VALUES ($1, $2) \
             ON CONFLICT (operation_id) DO UPDATE SET body = EXCLUDED.body",
            &[&operation_id, &resource.encode_to_vec()],
        )
        .map(drop)
    }

    fn put_service_account_key(&mut self, key: &ServiceAccountKey) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO cg_service_account_keys (id, body) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body",
            &[&key.id, &key.encode_to_vec()],
        )
        .map(drop)
    }

    fn delete_service_account_key(&mut self, id: &str) -> Result<bool, StoreError> {
        self.exec("DELETE FROM cg_service_account_keys WHERE id = $1", &[&id])
            .map(|n| n > 0)
    }

    fn put_issued_token(&mut self, hash: &str, token: &IssuedToken) -> Result<(), StoreError> {
        let expires = i64::try_from(token.expires_nanos).unwrap_or(i64::MAX);
        self.exec(
            "INSERT INTO cg_iam_tokens (hash, expires_nanos, body) VALUES ($1, $2, $3) \
             ON CONFLICT (hash) DO UPDATE SET body = EXCLUDED.body",
            &[&hash, &expires, &token.encode_to_vec()],
        )
        .map(drop)
    }

    fn purge(&mut self, cutoffs: Cutoffs, limit: usize) -> Result<usize, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Done operations only: a create still running stays, whatever its age.
        let operations: i64 = self
            .query(
                "WITH gone AS (DELETE FROM cg_operations WHERE id IN ( \
                     SELECT id FROM cg_operations WHERE created_nanos < $1 AND done \
                     ORDER BY created_nanos LIMIT $2) RETURNING id), \
                 resources AS (DELETE FROM cg_operation_resources \
                     WHERE operation_id IN (SELECT id FROM gone)) \
                 SELECT count(*) FROM gone",
                &[&nanos(cutoffs.operations), &limit],
            )?
            .first()
            .map_or(0, |r| r.get(0));
        let keys = self.exec(
            "DELETE FROM cg_idempotency_keys WHERE key IN ( \
                 SELECT key FROM cg_idempotency_keys WHERE recorded_nanos < $1 \
                 ORDER BY recorded_nanos LIMIT $2)",
            &[&nanos(cutoffs.idempotency_keys), &limit],
        )?;
        let tokens = self.exec(
            "DELETE FROM cg_iam_tokens WHERE hash IN ( \
                 SELECT hash FROM cg_iam_tokens WHERE expires_nanos < $1 \
                 ORDER BY expires_nanos LIMIT $2)",
            &[&nanos(cutoffs.tokens), &limit],
        )?;
        Ok(operations.max(0) as usize + (keys + tokens) as usize)
    }
}
