//! Group commit: one writer thread owns every write transaction. It takes all the jobs queued
//! since its last commit (up to [`crate::store::MAX_BATCH`]), runs them one after another in one transaction,
//! commits it durably (one fsync for the whole batch) and only then reports to each job. So an
//! acknowledged write is on disk (`kill -9` loses nothing acknowledged), readers only ever see
//! durable state, and concurrent writers share the fsync and the commit work. Each job stages
//! its writes in an overlay (see `overlay.rs`) applied only when the job succeeds, so one job's
//! failure (or panic) rolls back that job alone.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redb::Database;

use super::Current;
use super::layout::{ALL_TABLES, err};
use super::overlay::{OpenTables, Staged};
use crate::store::{Commit, StoreError, WriteJob};

/// When the writer began its current batch: nanoseconds after `origin`, plus one; 0 between
/// batches. What the health probe reads to see a commit stuck on a hung disk.
pub(super) struct Busy {
    origin: Instant,
    since: AtomicU64,
    /// A batch failed (a full disk, an I/O error) since the health probe last asked.
    failed: AtomicBool,
}

impl Busy {
    pub(super) fn new() -> Self {
        Self {
            origin: Instant::now(),
            since: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        }
    }
    /// Whether a batch failed since the last call.
    pub(super) fn take_failed(&self) -> bool {
        self.failed.swap(false, Ordering::AcqRel)
    }
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
    /// How long the batch in progress has been running, if one is.
    pub(super) fn age(&self) -> Option<Duration> {
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

/// The writer: waits for a job, takes every job queued behind it, runs them in one durable
/// transaction, then reports to each. A batch that fails (a full disk, an I/O error) fails its
/// jobs alone: the database is reopened at once, back to its last commit, so that reads go on
/// and the next batch may succeed. Returns when the queue is closed and drained.
pub(super) fn write_loop(db: &Current, queue: &mpsc::Receiver<Box<dyn WriteJob>>, busy: &Busy) {
    while let Some(mut batch) = crate::store::next_batch(queue) {
        let started = Instant::now();
        busy.start();
        let outcome = match db.get() {
            Ok(open) => run_batch(&open, &mut batch),
            // Still closed after an earlier failure: try again now.
            Err(_) if db.reopen() => db.get().and_then(|open| run_batch(&open, &mut batch)),
            Err(e) => Err(e),
        };
        busy.stop();
        if let Err(e) = &outcome {
            busy.failed.store(true, Ordering::Release);
            tracing::error!(error = %e, jobs = batch.len(), "a store write failed; reopening");
            db.reopen();
        }
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
        let mut tables = OpenTables::new(
            ALL_TABLES
                .iter()
                .map(|t| tx.open_table(t.def).map_err(err))
                .collect::<Result<_, _>>()?,
        );
        for job in batch.iter_mut() {
            let mut staged = Staged::new(&mut tables);
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
