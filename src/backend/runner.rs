//! The runner of asynchronous creates. A create's Operation finishes after the configured delay
//! (image READY, response = Image) or when cancelled (see `operations.rs`: image removed, error
//! = CANCELLED); either way exactly once, in one transaction. A create left running by a stopped
//! process is finished at the next start ([`OperationRunner::recover`]).
//!
//! Its due time is stored with it, which makes the record a lease: the process that started a
//! create finishes it on time, and any process on the same store (a replica on the same
//! PostgreSQL database) finishes one that is [`LEASE`] overdue, because the process that
//! started it is gone ([`OperationRunner::take_over`]). Finishing twice is harmless: the second
//! finds the create no longer running.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tonic::Code;

use super::storage;
use crate::json::{Any, Timestamp};
use crate::pb::google::rpc;
use crate::pb::yandex::cloud::compute::v1::image;
use crate::pb::yandex::cloud::operation::operation;
use crate::store::{Store, StoreError};

/// How long past its due time a create waits for the process that started it, before any
/// other process on the store finishes it.
pub(super) const LEASE: Duration = Duration::from_secs(2);

/// The creates running in this process, each with a way to wake its task early. Cheap to
/// clone.
#[derive(Clone)]
pub(super) struct OperationRunner(Arc<Inner>);

struct Inner {
    store: Arc<dyn Store>,
    /// How long a create stays CREATING.
    delay: Duration,
    /// A std Mutex: it is held only to insert, remove or look up one entry, never across an
    /// `.await`.
    running: Mutex<HashMap<String, Arc<Notify>>>,
}

impl OperationRunner {
    /// A runner over `store` whose creates take `delay`.
    pub(super) fn new(store: Arc<dyn Store>, delay: Duration) -> Self {
        Self(Arc::new(Inner {
            store,
            delay,
            running: Mutex::new(HashMap::new()),
        }))
    }

    fn running(&self) -> MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.0.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the task that completes a create after the configured delay, unless cancelled
    /// first. Starting one that already runs (an idempotent retry of the create) does nothing.
    pub(super) fn start_create(&self, operation_id: String) {
        let notify = {
            let mut running = self.running();
            if running.contains_key(&operation_id) {
                return;
            }
            let notify = Arc::new(Notify::new());
            running.insert(operation_id.clone(), notify.clone());
            notify
        };
        let runner = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(runner.0.delay) => {}
                () = notify.notified() => return,
            }
            runner.running().remove(&operation_id);
            if let Err(e) = runner.finish_create(&operation_id).await {
                tracing::error!(operation_id, error = %e, "could not complete create");
            }
        });
    }

    /// Finishes, until `shutdown`, the creates of this store that are [`LEASE`] past due: those
    /// whose process stopped before finishing them. Checks every half lease.
    pub(super) async fn take_over(self, shutdown: crate::net::Shutdown) {
        let stop = shutdown.requested();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(LEASE / 2) => {}
            }
            let now = crate::store::now_nanos();
            let running = match storage::read(&*self.0.store, |tx| tx.running_creates()) {
                Ok(running) => running,
                Err(e) => {
                    tracing::debug!(error = %e, "running creates not read; trying again");
                    continue;
                }
            };
            for r in running {
                let overdue = u128::from(r.due_nanos) + LEASE.as_nanos() < now;
                if overdue && !self.running().contains_key(&r.operation_id) {
                    tracing::warn!(
                        operation_id = %r.operation_id,
                        "finishing a create its process left (its lease expired)"
                    );
                    if let Err(e) = self.finish_create(&r.operation_id).await {
                        tracing::error!(operation_id = %r.operation_id, error = %e, "could not complete create");
                    }
                }
            }
        }
    }

    /// Stops the task of a create whose Operation was cancelled (the cancel itself is already
    /// committed).
    pub(super) fn cancelled(&self, operation_id: &str) {
        if let Some(notify) = self.running().remove(operation_id) {
            notify.notify_one();
        }
    }

    /// Finishes the creates that were running when the process last stopped: each image
    /// becomes READY and its Operation completes, so no Operation is left running forever.
    /// Returns how many there were.
    ///
    /// On a shared store (several replicas on one database) a running create may be another
    /// live replica's: only those past their lease are finished here, as [`Self::take_over`]
    /// does; the rest are left to their replica, or to the take-over once their lease ends.
    pub(super) async fn recover(&self) -> Result<usize, StoreError> {
        let mut running = storage::read(&*self.0.store, |tx| tx.running_creates())?;
        if self.0.store.shared() {
            let now = crate::store::now_nanos();
            running.retain(|r| u128::from(r.due_nanos) + LEASE.as_nanos() < now);
        }
        for r in &running {
            self.finish_create(&r.operation_id).await?;
        }
        Ok(running.len())
    }

    /// Completes a running create: image READY, Operation done with the Image. A no-op when
    /// the Operation is already done (cancelled, or finished by an earlier run).
    async fn finish_create(&self, operation_id: &str) -> Result<(), StoreError> {
        let operation_id = operation_id.to_string();
        storage::write(&*self.0.store, move |tx| {
            let Some(mut op) = tx.operation(&operation_id)? else {
                return Ok(());
            };
            let Some(create) = tx.running_create(&operation_id)? else {
                return Ok(());
            };
            tx.clear_running_create(&operation_id)?;
            if op.done {
                return Ok(());
            }
            op.done = true;
            op.modified_at = Some(Timestamp::now());
            match tx.image(&create.image_id)? {
                Some(mut img) => {
                    img.status = image::Status::Ready as i32;
                    tx.put_image(&img)?;
                    op.result = Some(operation::Result::Response(Any::pack(&img)));
                }
                None => {
                    op.result = Some(operation::Result::Error(rpc::Status {
                        code: Code::Aborted as i32,
                        message: format!(
                            "image {} disappeared while it was being created",
                            create.image_id
                        ),
                        details: vec![],
                    }));
                }
            }
            tx.put_operation(&op, &create.image_id)
        })
        .await
    }
}
