//! `yandex.cloud.operation.OperationService`: Get, and Cancel of a running create (see
//! `runner.rs`). Cancelling an Operation that is already done is FAILED_PRECONDITION: only a
//! running create can be cancelled.

use tonic::{Code, Request, Response, Status};

use super::state::{Backend, not_found};
use super::validate::validate_operation_id;
use crate::json::Timestamp;
use crate::pb::google::rpc;
use crate::pb::yandex::cloud::operation::operation_service_server::OperationService;
use crate::pb::yandex::cloud::operation::{
    CancelOperationRequest, GetOperationRequest, Operation, operation,
};

/// The OperationService implementation.
pub(super) struct Operations(pub(super) Backend);

#[tonic::async_trait]
impl OperationService for Operations {
    async fn get(&self, req: Request<GetOperationRequest>) -> Result<Response<Operation>, Status> {
        let r = req.into_inner();
        validate_operation_id(&r.operation_id)?;
        self.0
            .read(move |tx| {
                tx.operation(&r.operation_id)?
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
                    .operation(&r.operation_id)?
                    .ok_or_else(|| not_found("operation", &r.operation_id))?;
                if op.done {
                    return Err(Status::failed_precondition(format!(
                        "operation {} is already done and cannot be cancelled",
                        op.id
                    )));
                }
                let Some(create) = tx.running_create(&op.id)? else {
                    return Err(Status::failed_precondition(format!(
                        "operation {} cannot be cancelled",
                        op.id
                    )));
                };
                tx.delete_image(&create.image_id)?;
                tx.clear_running_create(&op.id)?;
                op.done = true;
                op.modified_at = Some(Timestamp::now());
                op.result = Some(operation::Result::Error(rpc::Status {
                    code: Code::Cancelled as i32,
                    message: "operation cancelled by the client".into(),
                    details: vec![],
                }));
                tx.put_operation(&op, &create.image_id)?;
                Ok(op)
            })
            .await?;
        self.0.runner().cancelled(&id);
        Ok(Response::new(op))
    }
}
