//! `yandex.cloud.operation.OperationService`: Get, and Cancel of a running create (see
//! `runner.rs`). Cancelling an Operation that is already done is FAILED_PRECONDITION: only a
//! running create can be cancelled.

use tonic::{Code, Request, Response, Status};

use super::auth::{Access, caller_of};
use super::state::{Backend, not_found};
use super::tokens::Caller;
use super::validate::validate_operation_id;
use crate::iam::Permission;
use crate::json::Timestamp;
use crate::pb::google::rpc;
use crate::pb::yandex::cloud::operation::operation_service_server::OperationService;
use crate::pb::yandex::cloud::operation::{
    CancelOperationRequest, GetOperationRequest, Operation, operation,
};
use crate::store::Tx;

/// The OperationService implementation.
pub(super) struct Operations(pub(super) Backend);

impl Operations {
    fn require(
        &self,
        caller: &Caller,
        tx: &dyn Tx,
        permission: Permission,
        op: &Operation,
    ) -> Result<(), Status> {
        require_on_operation(self.0.access(), caller, tx, permission, op)
    }
}

/// An Operation is its creator's, and otherwise needs `permission` on the resource it acts on:
/// by its folder's bindings (recorded when the Operation was made: the image may be gone
/// since) or by the image's own, while it exists.
fn require_on_operation(
    access: &Access,
    caller: &Caller,
    tx: &dyn Tx,
    permission: Permission,
    op: &Operation,
) -> Result<(), Status> {
    if matches!(caller, Caller::Subject(s) if s.id == op.created_by) {
        return Ok(());
    }
    let resource = tx.operation_resource(&op.id)?.unwrap_or_default();
    let what = format!("operation {}", op.id);
    let by_folder = access.require(caller, permission, &what, &resource.folder_id, &[]);
    if by_folder.is_ok() || resource.image_id.is_empty() {
        return by_folder;
    }
    let own = tx.bindings(&resource.image_id)?;
    access.require(caller, permission, &what, &resource.folder_id, &own)
}

#[tonic::async_trait]
impl OperationService for Operations {
    async fn get(&self, req: Request<GetOperationRequest>) -> Result<Response<Operation>, Status> {
        let caller = caller_of(req.extensions());
        let r = req.into_inner();
        validate_operation_id(&r.operation_id)?;
        self.0
            .read(|tx| {
                let op = tx
                    .operation(&r.operation_id)?
                    .ok_or_else(|| not_found("operation", &r.operation_id))?;
                self.require(&caller, tx, Permission::OperationsGet, &op)?;
                Ok(op)
            })
            .await
            .map(Response::new)
    }

    async fn cancel(
        &self,
        req: Request<CancelOperationRequest>,
    ) -> Result<Response<Operation>, Status> {
        let caller = caller_of(req.extensions());
        let r = req.into_inner();
        validate_operation_id(&r.operation_id)?;
        let id = r.operation_id.clone();
        let access = self.0.access().clone();
        let op = self
            .0
            .write(move |tx| {
                let mut op = tx
                    .operation(&r.operation_id)?
                    .ok_or_else(|| not_found("operation", &r.operation_id))?;
                require_on_operation(&access, &caller, tx, Permission::OperationsCancel, &op)?;
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
