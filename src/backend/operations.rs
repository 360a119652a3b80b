//! `yandex.cloud.operation.OperationService` and the runner that completes asynchronous creates.
//! A create's Operation finishes after the configured delay (image READY, response = Image) or
//! when cancelled (image removed, error = CANCELLED); either way exactly once, in one
//! transaction. Cancelling an Operation that is already done is FAILED_PRECONDITION: only a
//! running create can be cancelled.

use std::sync::Arc;

use tokio::sync::Notify;
use tonic::{Code, Request, Response, Status};

use super::validate::Violations;
use super::{Backend, internal, not_found};
use crate::json::{Any, Timestamp};
use crate::pb::google::rpc;
use crate::pb::yandex::cloud::compute::v1::image;
use crate::pb::yandex::cloud::operation::operation_service_server::OperationService;
use crate::pb::yandex::cloud::operation::{
    CancelOperationRequest, GetOperationRequest, Operation, operation,
};

/// The OperationService implementation.
pub struct Operations(pub Backend);

fn validate_operation_id(id: &str) -> Result<(), Status> {
    let mut v = Violations::default();
    v.id("operation_id", id, 50);
    v.check()
}

#[tonic::async_trait]
impl OperationService for Operations {
    async fn get(&self, req: Request<GetOperationRequest>) -> Result<Response<Operation>, Status> {
        let r = req.into_inner();
        validate_operation_id(&r.operation_id)?;
        self.0
            .read(move |tx| {
                tx.operation(&r.operation_id)
                    .map_err(internal)?
                    .ok_or_else(|| not_found("operation", &r.operation_id))
            })
            .await
            .map(Response::new)
    }

    async fn cancel(
        &self,
        req: Request<CancelOperationRequest>,
    ) -> Result<Response<Operation>, Status> {
        let r = req.into_inner();
        validate_operation_id(&r.operation_id)?;
        let id = r.operation_id.clone();
        let op = self
            .0
            .write(move |tx| {
                let mut op = tx
                    .operation(&r.operation_id)
                    .map_err(internal)?
                    .ok_or_else(|| not_found("operation", &r.operation_id))?;
                if op.done {
                    return Err(Status::failed_precondition(format!(
                        "operation {} is already done and cannot be cancelled",
                        op.id
                    )));
                }
                let Some(create) = tx.running_create(&op.id).map_err(internal)? else {
                    return Err(Status::failed_precondition(format!(
                        "operation {} cannot be cancelled",
                        op.id
                    )));
                };
                tx.delete_image(&create.image_id).map_err(internal)?;
                tx.clear_running_create(&op.id).map_err(internal)?;
                op.done = true;
                op.modified_at = Some(Timestamp::now());
                op.result = Some(operation::Result::Error(rpc::Status {
                    code: Code::Cancelled as i32,
                    message: "operation cancelled by the client".into(),
                    details: vec![],
                }));
                tx.put_operation(&op, &create.image_id).map_err(internal)?;
                Ok(op)
            })
            .await?;
        if let Some(notify) = self
            .0
            .inner
            .running
            .lock()
            .expect("running map lock")
            .remove(&id)
        {
            notify.notify_one();
        }
        Ok(Response::new(op))
    }
}

/// Starts the task that completes a create after the configured delay, unless cancelled first.
pub(super) fn spawn_create_runner(backend: &Backend, operation_id: String) {
    let notify = {
        let mut running = backend.inner.running.lock().expect("running map lock");
        if running.contains_key(&operation_id) {
            return; // an idempotent retry of a create that already has its runner
        }
        let notify = Arc::new(Notify::new());
        running.insert(operation_id.clone(), notify.clone());
        notify
    };
    let backend = backend.clone();
    let delay = backend.inner.config.create_delay;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = notify.notified() => return,
        }
        backend
            .inner
            .running
            .lock()
            .expect("running map lock")
            .remove(&operation_id);
        if let Err(e) = finish_create(&backend, &operation_id).await {
            tracing::error!(operation_id, error = %e.message(), "could not complete create");
        }
    });
}

/// Completes a running create: image READY, Operation done with the Image. A no-op when the
/// Operation is already done (cancelled, or finished by an earlier run).
pub(super) async fn finish_create(backend: &Backend, operation_id: &str) -> Result<(), Status> {
    let operation_id = operation_id.to_string();
    backend
        .write(move |tx| {
            let Some(mut op) = tx.operation(&operation_id).map_err(internal)? else {
                return Ok(());
            };
            let Some(create) = tx.running_create(&operation_id).map_err(internal)? else {
                return Ok(());
            };
            tx.clear_running_create(&operation_id).map_err(internal)?;
            if op.done {
                return Ok(());
            }
            op.done = true;
            op.modified_at = Some(Timestamp::now());
            match tx.image(&create.image_id).map_err(internal)? {
                Some(mut img) => {
                    img.status = image::Status::Ready as i32;
                    tx.put_image(&img).map_err(internal)?;
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
            tx.put_operation(&op, &create.image_id).map_err(internal)
        })
        .await
}
