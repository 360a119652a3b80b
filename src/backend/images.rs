//! `yandex.cloud.compute.v1.ImageService`: validates each request, then runs it against the
//! store in one transaction. Semantics: api-facts §4 and §8, and the Image.Update reference page.
//!
//! Choices where the API is silent:
//! - Image names are unique within a folder (ALREADY_EXISTS), as Compute resources are.
//! - Disk, snapshot and URI sources cannot be inspected here, so an image made from one has
//!   `size` = `storage_size` = the requested `min_disk_size`, or 4 MiB (the smallest valid disk)
//!   when none is given. An `image_id` source copies its sizes, os, product ids and hardware
//!   generation unless the request sets them.
//! - An empty `update_mask` (present, no paths) means the same as none: every updatable field.
//! - Deleting an image that is still CREATING is FAILED_PRECONDITION: cancel its Operation.
//! - GetLatestByFamily: the newest READY image (by `created_at`, then id) of that family.

use std::collections::BTreeSet;

use prost::Message;
use tonic::{Request, Response, Status};

use super::filter::{Filter, Order};
use super::validate::{Violations, invalid};
use super::{Backend, IMAGE_ID_PREFIX, internal, new_id, not_found, operations, page};
use crate::json::{Any, Timestamp};
use crate::pb::yandex::cloud::access::{
    AccessBinding, AccessBindingAction, AccessBindingDelta, AccessBindingsOperationResult,
    ListAccessBindingsRequest, ListAccessBindingsResponse, SetAccessBindingsMetadata,
    SetAccessBindingsRequest, UpdateAccessBindingsMetadata, UpdateAccessBindingsRequest,
};
use crate::pb::yandex::cloud::compute::v1::image_service_server::ImageService;
use crate::pb::yandex::cloud::compute::v1::{
    CreateImageMetadata, CreateImageRequest, DeleteImageMetadata, DeleteImageRequest,
    GetImageLatestByFamilyRequest, GetImageRequest, Image, ListImageOperationsRequest,
    ListImageOperationsResponse, ListImagesRequest, ListImagesResponse, Os, UpdateImageMetadata,
    UpdateImageRequest, create_image_request, image, os,
};
use crate::pb::yandex::cloud::operation::{Operation, operation};
use crate::store::{OperationCursor, RunningCreate, Tx};

/// The fields Update may change, by proto name.
const UPDATABLE: [&str; 4] = ["name", "description", "min_disk_size", "labels"];

/// The ImageService implementation.
pub struct Images(pub Backend);

fn image_in(tx: &dyn Tx, id: &str) -> Result<Image, Status> {
    tx.image(id)
        .map_err(internal)?
        .ok_or_else(|| not_found("image", id))
}

/// ALREADY_EXISTS when another image of the folder has this (non-empty) name.
fn check_unique_name(
    tx: &dyn Tx,
    folder_id: &str,
    name: &str,
    except_id: &str,
) -> Result<(), Status> {
    if name.is_empty() {
        return Ok(());
    }
    match tx.image_named(folder_id, name).map_err(internal)? {
        Some(id) if id != except_id => Err(Status::already_exists(format!(
            "an image named {name:?} already exists in folder {folder_id}"
        ))),
        _ => Ok(()),
    }
}

fn validate_create(r: &CreateImageRequest) -> Result<(), Status> {
    let mut v = Violations::default();
    v.id("folder_id", &r.folder_id, 50);
    v.name("name", &r.name);
    v.max_len("description", &r.description, 256);
    v.labels("labels", r.labels.iter());
    v.family("family", &r.family);
    v.min_disk_size("min_disk_size", r.min_disk_size);
    for (i, p) in r.product_ids.iter().enumerate() {
        v.id(&format!("product_ids[{i}]"), p, 50);
    }
    use create_image_request::Source;
    match &r.source {
        None => v.add(
            "source",
            "exactly one of image_id, disk_id, snapshot_id or uri must be set",
        ),
        Some(Source::ImageId(s)) => v.id("image_id", s, 50),
        Some(Source::DiskId(s)) => v.id("disk_id", s, 50),
        Some(Source::SnapshotId(s)) => v.id("snapshot_id", s, 50),
        Some(Source::Uri(s)) => v.required("uri", s),
    }
    v.check()
}

fn validate_update(r: &UpdateImageRequest) -> Result<(), Status> {
    let mut v = Violations::default();
    v.id("image_id", &r.image_id, 50);
    v.name("name", &r.name);
    v.max_len("description", &r.description, 256);
    v.min_disk_size("min_disk_size", r.min_disk_size);
    v.labels("labels", r.labels.iter());
    if let Some(mask) = &r.update_mask {
        for path in &mask.paths {
            if !UPDATABLE.contains(&path.as_str()) {
                v.add(
                    "update_mask",
                    format!(
                        "path {:?} cannot be updated; updatable fields are name, description, min_disk_size, labels",
                        super::validate::clip(path)
                    ),
                );
            }
        }
    }
    v.check()
}

fn validate_image_id(id: &str) -> Result<(), Status> {
    let mut v = Violations::default();
    v.id("image_id", id, 50);
    v.check()
}

fn validate_resource_id(id: &str) -> Violations {
    let mut v = Violations::default();
    v.id("resource_id", id, 64);
    v
}

fn validate_binding(v: &mut Violations, field: &str, b: Option<&AccessBinding>) {
    let Some(b) = b else {
        v.add(field, "is required");
        return;
    };
    v.id(&format!("{field}.role_id"), &b.role_id, 64);
    match &b.subject {
        None => v.add(format!("{field}.subject"), "is required"),
        Some(s) => {
            v.id(&format!("{field}.subject.id"), &s.id, 100);
            v.id(&format!("{field}.subject.type"), &s.r#type, 100);
        }
    }
}

fn binding_key(b: &AccessBinding) -> (String, String, String) {
    let (id, ty) = b
        .subject
        .as_ref()
        .map(|s| (s.id.clone(), s.r#type.clone()))
        .unwrap_or_default();
    (b.role_id.clone(), ty, id)
}

fn op_done_with(mut op: Operation, response: Any) -> Operation {
    op.done = true;
    op.result = Some(operation::Result::Response(response));
    op
}

#[tonic::async_trait]
impl ImageService for Images {
    async fn get(&self, req: Request<GetImageRequest>) -> Result<Response<Image>, Status> {
        let r = req.into_inner();
        validate_image_id(&r.image_id)?;
        self.0
            .read(move |tx| image_in(tx, &r.image_id))
            .await
            .map(Response::new)
    }

    async fn get_latest_by_family(
        &self,
        req: Request<GetImageLatestByFamilyRequest>,
    ) -> Result<Response<Image>, Status> {
        let r = req.into_inner();
        let mut v = Violations::default();
        v.id("folder_id", &r.folder_id, 50);
        v.required("family", &r.family);
        v.family("family", &r.family);
        v.check()?;
        self.0
            .read(move |tx| {
                tx.folder_images(&r.folder_id)
                    .map_err(internal)?
                    .into_iter()
                    .filter(|i| i.family == r.family && i.status == image::Status::Ready as i32)
                    .max_by_key(|i| (i.created_at.map(|t| t.as_nanos()), i.id.clone()))
                    .ok_or_else(|| {
                        Status::not_found(format!(
                            "no READY image of family {:?} in folder {}",
                            r.family, r.folder_id
                        ))
                    })
            })
            .await
            .map(Response::new)
    }

    async fn list(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let r = req.into_inner();
        let mut v = Violations::default();
        v.id("folder_id", &r.folder_id, 50);
        v.page_size("page_size", r.page_size);
        v.max_len("page_token", &r.page_token, 100);
        v.max_len("filter", &r.filter, 1000);
        v.max_len("order_by", &r.order_by, 100);
        v.check()?;
        let filter = Filter::parse(&r.filter).map_err(|e| invalid("filter", e))?;
        let order = Order::parse(&r.order_by).map_err(|e| invalid("order_by", e))?;
        let after = page::decode("page_token", &r.page_token, 3)?;
        if let Some(after) = &after
            && after[0] != order.tag()
        {
            return Err(invalid("page_token", "was issued for another order_by"));
        }
        let size = page::size(r.page_size);
        self.0
            .read(move |tx| {
                let mut images: Vec<(String, String, Image)> = tx
                    .folder_images(&r.folder_id)
                    .map_err(internal)?
                    .into_iter()
                    .filter(|i| filter.matches(i))
                    .map(|i| {
                        let (k, id) = order.key(&i);
                        (k, id, i)
                    })
                    .collect();
                images.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
                if order.desc {
                    images.reverse();
                }
                if let Some(after) = &after {
                    let last = (&after[1], &after[2]);
                    images.retain(|(k, id, _)| {
                        if order.desc {
                            (k, id) < last
                        } else {
                            (k, id) > last
                        }
                    });
                }
                let more = images.len() > size;
                images.truncate(size);
                let next_page_token = match images.last() {
                    Some((k, id, _)) if more => page::encode(&[&order.tag(), k, id]),
                    _ => String::new(),
                };
                Ok(ListImagesResponse {
                    images: images.into_iter().map(|(_, _, i)| i).collect(),
                    next_page_token,
                })
            })
            .await
            .map(Response::new)
    }

    async fn create(
        &self,
        req: Request<CreateImageRequest>,
    ) -> Result<Response<Operation>, Status> {
        let (md, _, r) = req.into_parts();
        validate_create(&r)?;
        let bytes = r.encode_to_vec();
        let op = self
            .0
            .mutate(&md, "Create", bytes, move |tx, ctx| {
                use create_image_request::Source;
                let mut img = Image {
                    id: new_id(IMAGE_ID_PREFIX),
                    folder_id: r.folder_id.clone(),
                    created_at: Some(Timestamp::now()),
                    name: r.name.clone(),
                    description: r.description.clone(),
                    labels: r.labels.clone(),
                    family: r.family.clone(),
                    min_disk_size: r.min_disk_size,
                    product_ids: r.product_ids.clone(),
                    status: image::Status::Creating as i32,
                    os: r.os,
                    pooled: r.pooled,
                    hardware_generation: r.hardware_generation.clone(),
                    ..Default::default()
                };
                if let Some(Source::ImageId(source_id)) = &r.source {
                    let source = tx
                        .image(source_id)
                        .map_err(internal)?
                        .ok_or_else(|| not_found("source image", source_id))?;
                    img.size = source.size;
                    img.storage_size = source.storage_size;
                    if img.min_disk_size == 0 {
                        img.min_disk_size = source.min_disk_size;
                    }
                    img.os = img.os.or(source.os);
                    if img.product_ids.is_empty() {
                        img.product_ids = source.product_ids;
                    }
                    if img.hardware_generation.is_none() {
                        img.hardware_generation = source.hardware_generation;
                    }
                } else {
                    img.size = if r.min_disk_size != 0 {
                        r.min_disk_size
                    } else {
                        4_194_304
                    };
                    img.storage_size = img.size;
                }
                if img.min_disk_size == 0 {
                    img.min_disk_size = img.size;
                }
                if img.os.is_none() {
                    img.os = Some(Os {
                        r#type: os::Type::Linux as i32,
                        nvidia: None,
                    });
                }
                check_unique_name(tx, &img.folder_id, &img.name, "")?;
                tx.put_image(&img).map_err(internal)?;
                let op = ctx.operation(
                    "Create image",
                    Any::pack(&CreateImageMetadata {
                        image_id: img.id.clone(),
                    }),
                );
                tx.put_running_create(&RunningCreate {
                    operation_id: op.id.clone(),
                    image_id: img.id.clone(),
                })
                .map_err(internal)?;
                Ok((op, img.id))
            })
            .await?;
        if !op.done {
            operations::spawn_create_runner(&self.0, op.id.clone());
        }
        Ok(Response::new(op))
    }

    async fn update(
        &self,
        req: Request<UpdateImageRequest>,
    ) -> Result<Response<Operation>, Status> {
        let (md, _, r) = req.into_parts();
        validate_update(&r)?;
        let bytes = r.encode_to_vec();
        let op = self
            .0
            .mutate(&md, "Update", bytes, move |tx, ctx| {
                let mut img = image_in(tx, &r.image_id)?;
                let paths: BTreeSet<&str> = match &r.update_mask {
                    Some(mask) if !mask.paths.is_empty() => {
                        mask.paths.iter().map(String::as_str).collect()
                    }
                    _ => UPDATABLE.into_iter().collect(),
                };
                // A masked field takes the request's value, which is the default when absent.
                for path in paths {
                    match path {
                        "name" => img.name = r.name.clone(),
                        "description" => img.description = r.description.clone(),
                        "min_disk_size" => img.min_disk_size = r.min_disk_size,
                        "labels" => img.labels = r.labels.clone(),
                        other => unreachable!("validate_update rejects path {other}"),
                    }
                }
                check_unique_name(tx, &img.folder_id, &img.name, &img.id)?;
                tx.put_image(&img).map_err(internal)?;
                let op = ctx.operation(
                    "Update image",
                    Any::pack(&UpdateImageMetadata {
                        image_id: img.id.clone(),
                    }),
                );
                Ok((op_done_with(op, Any::pack(&img)), img.id))
            })
            .await?;
        Ok(Response::new(op))
    }

    async fn delete(
        &self,
        req: Request<DeleteImageRequest>,
    ) -> Result<Response<Operation>, Status> {
        let (md, _, r) = req.into_parts();
        validate_image_id(&r.image_id)?;
        let bytes = r.encode_to_vec();
        let op = self
            .0
            .mutate(&md, "Delete", bytes, move |tx, ctx| {
                let img = image_in(tx, &r.image_id)?;
                if img.status == image::Status::Creating as i32 {
                    return Err(Status::failed_precondition(format!(
                        "image {} is still being created; cancel its create operation instead",
                        img.id
                    )));
                }
                tx.delete_image(&img.id).map_err(internal)?;
                let op = ctx.operation(
                    "Delete image",
                    Any::pack(&DeleteImageMetadata {
                        image_id: img.id.clone(),
                    }),
                );
                Ok((op_done_with(op, Any::pack(&())), img.id))
            })
            .await?;
        Ok(Response::new(op))
    }

    async fn list_operations(
        &self,
        req: Request<ListImageOperationsRequest>,
    ) -> Result<Response<ListImageOperationsResponse>, Status> {
        let r = req.into_inner();
        let mut v = Violations::default();
        v.id("image_id", &r.image_id, 50);
        v.page_size("page_size", r.page_size);
        v.max_len("page_token", &r.page_token, 100);
        v.check()?;
        let after = page::decode("page_token", &r.page_token, 2)?
            .map(|parts| {
                let created_nanos = parts[0].parse().map_err(|_| {
                    invalid("page_token", "is not a page token returned by this service")
                })?;
                Ok::<_, Status>(OperationCursor {
                    created_nanos,
                    operation_id: parts[1].clone(),
                })
            })
            .transpose()?;
        let size = page::size(r.page_size);
        self.0
            .read(move |tx| {
                image_in(tx, &r.image_id)?;
                // Newest first, straight from the index; one extra tells whether a page follows.
                let mut ops = tx
                    .image_operations_page(&r.image_id, after.as_ref(), size + 1)
                    .map_err(internal)?;
                let more = ops.len() > size;
                ops.truncate(size);
                let next_page_token = match ops.last() {
                    Some((c, _)) if more => {
                        page::encode(&[&c.created_nanos.to_string(), &c.operation_id])
                    }
                    _ => String::new(),
                };
                Ok(ListImageOperationsResponse {
                    operations: ops.into_iter().map(|(_, o)| o).collect(),
                    next_page_token,
                })
            })
            .await
            .map(Response::new)
    }

    async fn list_access_bindings(
        &self,
        req: Request<ListAccessBindingsRequest>,
    ) -> Result<Response<ListAccessBindingsResponse>, Status> {
        let r = req.into_inner();
        let mut v = validate_resource_id(&r.resource_id);
        v.page_size("page_size", r.page_size);
        v.max_len("page_token", &r.page_token, 2000);
        v.check()?;
        let after = page::decode("page_token", &r.page_token, 3)?;
        let size = page::size(r.page_size);
        self.0
            .read(move |tx| {
                image_in(tx, &r.resource_id)?;
                let mut bindings = tx.bindings(&r.resource_id).map_err(internal)?;
                bindings.sort_by_key(binding_key);
                if let Some(after) = &after {
                    let last = (after[0].clone(), after[1].clone(), after[2].clone());
                    bindings.retain(|b| binding_key(b) > last);
                }
                let more = bindings.len() > size;
                bindings.truncate(size);
                let next_page_token = match bindings.last() {
                    Some(b) if more => {
                        let (role, ty, id) = binding_key(b);
                        page::encode(&[&role, &ty, &id])
                    }
                    _ => String::new(),
                };
                Ok(ListAccessBindingsResponse {
                    access_bindings: bindings,
                    next_page_token,
                })
            })
            .await
            .map(Response::new)
    }

    async fn set_access_bindings(
        &self,
        req: Request<SetAccessBindingsRequest>,
    ) -> Result<Response<Operation>, Status> {
        let (md, _, r) = req.into_parts();
        let mut v = validate_resource_id(&r.resource_id);
        if r.access_bindings.len() > 1000 {
            v.add(
                "access_bindings",
                format!(
                    "must have at most 1000 elements, got {}",
                    r.access_bindings.len()
                ),
            );
        } else {
            for (i, b) in r.access_bindings.iter().enumerate() {
                validate_binding(&mut v, &format!("access_bindings[{i}]"), Some(b));
            }
        }
        v.check()?;
        let bytes = r.encode_to_vec();
        let op = self
            .0
            .mutate(&md, "SetAccessBindings", bytes, move |tx, ctx| {
                image_in(tx, &r.resource_id)?;
                let old = tx.bindings(&r.resource_id).map_err(internal)?;
                let mut new: Vec<AccessBinding> = Vec::new();
                for b in r.access_bindings {
                    if !new.contains(&b) {
                        new.push(b);
                    }
                }
                let delta = |action: AccessBindingAction, b: &AccessBinding| AccessBindingDelta {
                    action: action as i32,
                    access_binding: Some(b.clone()),
                };
                let mut effective: Vec<AccessBindingDelta> = old
                    .iter()
                    .filter(|b| !new.contains(b))
                    .map(|b| delta(AccessBindingAction::Remove, b))
                    .collect();
                effective.extend(
                    new.iter()
                        .filter(|b| !old.contains(b))
                        .map(|b| delta(AccessBindingAction::Add, b)),
                );
                tx.put_bindings(&r.resource_id, &new).map_err(internal)?;
                let op = ctx.operation(
                    "Set access bindings for image",
                    Any::pack(&SetAccessBindingsMetadata {
                        resource_id: r.resource_id.clone(),
                    }),
                );
                let result = AccessBindingsOperationResult {
                    effective_deltas: effective,
                };
                Ok((op_done_with(op, Any::pack(&result)), r.resource_id))
            })
            .await?;
        Ok(Response::new(op))
    }

    async fn update_access_bindings(
        &self,
        req: Request<UpdateAccessBindingsRequest>,
    ) -> Result<Response<Operation>, Status> {
        let (md, _, r) = req.into_parts();
        let mut v = validate_resource_id(&r.resource_id);
        let n = r.access_binding_deltas.len();
        if !(1..=1000).contains(&n) {
            v.add(
                "access_binding_deltas",
                format!("must have 1 to 1000 elements, got {n}"),
            );
        } else {
            for (i, d) in r.access_binding_deltas.iter().enumerate() {
                let field = format!("access_binding_deltas[{i}]");
                if !matches!(
                    AccessBindingAction::try_from(d.action),
                    Ok(AccessBindingAction::Add | AccessBindingAction::Remove)
                ) {
                    v.add(format!("{field}.action"), "is required: ADD or REMOVE");
                }
                validate_binding(
                    &mut v,
                    &format!("{field}.access_binding"),
                    d.access_binding.as_ref(),
                );
            }
        }
        v.check()?;
        let bytes = r.encode_to_vec();
        let op = self
            .0
            .mutate(&md, "UpdateAccessBindings", bytes, move |tx, ctx| {
                image_in(tx, &r.resource_id)?;
                let mut bindings = tx.bindings(&r.resource_id).map_err(internal)?;
                let mut effective = Vec::new();
                for d in r.access_binding_deltas {
                    let Some(b) = d.access_binding.clone() else {
                        continue;
                    };
                    let present = bindings.iter().position(|x| *x == b);
                    match (AccessBindingAction::try_from(d.action), present) {
                        (Ok(AccessBindingAction::Add), None) => {
                            bindings.push(b);
                            effective.push(d);
                        }
                        (Ok(AccessBindingAction::Remove), Some(i)) => {
                            bindings.remove(i);
                            effective.push(d);
                        }
                        _ => {}
                    }
                }
                tx.put_bindings(&r.resource_id, &bindings)
                    .map_err(internal)?;
                let op = ctx.operation(
                    "Update access bindings for image",
                    Any::pack(&UpdateAccessBindingsMetadata {
                        resource_id: r.resource_id.clone(),
                    }),
                );
                let result = AccessBindingsOperationResult {
                    effective_deltas: effective,
                };
                Ok((op_done_with(op, Any::pack(&result)), r.resource_id))
            })
            .await?;
        Ok(Response::new(op))
    }
}
