//! `yandex.cloud.compute.v1.ImageService`: each method validates its request (`validate.rs`),
//! then runs against the store in one transaction. Semantics: api-facts §4 and §8, and the
//! Image.Update reference page.
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

use super::auth::caller_of;
use super::filter::{Filter, Order};
use super::ids::{IMAGE_ID_PREFIX, new_id};
use super::state::{Backend, OpContext, Recorded, not_found, require_on_image};
use super::tokens::Caller;
use super::validate::{self, UPDATABLE, invalid};
use super::{access, page};
use crate::iam::Permission;
use crate::json::{Any, Timestamp};
use crate::pb::yandex::cloud::access::{
    ListAccessBindingsRequest, ListAccessBindingsResponse, SetAccessBindingsRequest,
    UpdateAccessBindingsRequest,
};
use crate::pb::yandex::cloud::compute::v1::image_service_server::ImageService;
use crate::pb::yandex::cloud::compute::v1::{
    CreateImageMetadata, CreateImageRequest, DeleteImageMetadata, DeleteImageRequest,
    GetImageLatestByFamilyRequest, GetImageRequest, Image, ListImageOperationsRequest,
    ListImageOperationsResponse, ListImagesRequest, ListImagesResponse, Os, UpdateImageMetadata,
    UpdateImageRequest, create_image_request, image, os,
};
use crate::pb::yandex::cloud::operation::{Operation, operation};
use crate::store::{ImageCursor, ImageOrder, OperationCursor, RunningCreate, Tx, now_nanos};

/// The ImageService implementation.
pub(super) struct Images(pub(super) Backend);

impl Images {
    fn require_on_image(
        &self,
        caller: &Caller,
        tx: &dyn Tx,
        permission: Permission,
        image: &Image,
    ) -> Result<(), Status> {
        require_on_image(self.0.access(), caller, tx, permission, image)
    }

    fn require_in_folder(
        &self,
        caller: &Caller,
        permission: Permission,
        folder_id: &str,
    ) -> Result<(), Status> {
        self.0.access().require(
            caller,
            permission,
            &format!("folder {folder_id}"),
            folder_id,
            &[],
        )
    }
}

fn image_in(tx: &dyn Tx, id: &str) -> Result<Image, Status> {
    tx.image(id)?.ok_or_else(|| not_found("image", id))
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
    match tx.image_named(folder_id, name)? {
        Some(id) if id != except_id => Err(Status::already_exists(format!(
            "an image named {name:?} already exists in folder {folder_id}"
        ))),
        _ => Ok(()),
    }
}

fn op_done_with(mut op: Operation, response: Any) -> Operation {
    op.done = true;
    op.result = Some(operation::Result::Response(response));
    op
}

/// The image a Create makes, CREATING, with what its source gives it (see the module's notes).
/// Copying an image needs the permission to read it.
fn new_image(tx: &dyn Tx, r: &CreateImageRequest, ctx: &OpContext) -> Result<Image, Status> {
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
        os: r.os.clone(),
        pooled: r.pooled,
        hardware_generation: r.hardware_generation.clone(),
        ..Default::default()
    };
    if let Some(Source::ImageId(source_id)) = &r.source {
        let source = tx
            .image(source_id)?
            .ok_or_else(|| not_found("source image", source_id))?;
        ctx.require_on_image(tx, Permission::ImagesGet, &source)?;
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
    Ok(img)
}

/// Applies an Update: a masked field takes the request's value, which is the default when
/// absent; no mask (or an empty one) means every updatable field.
fn apply_update(img: &mut Image, r: &UpdateImageRequest) {
    let paths: BTreeSet<&str> = match &r.update_mask {
        Some(mask) if !mask.paths.is_empty() => mask.paths.iter().map(String::as_str).collect(),
        _ => UPDATABLE.into_iter().collect(),
    };
    for path in paths {
        match path {
            "name" => img.name = r.name.clone(),
            "description" => img.description = r.description.clone(),
            "min_disk_size" => img.min_disk_size = r.min_disk_size,
            "labels" => img.labels = r.labels.clone(),
            other => unreachable!("validate_update rejects path {other}"),
        }
    }
}

#[tonic::async_trait]
impl ImageService for Images {
    async fn get(&self, req: Request<GetImageRequest>) -> Result<Response<Image>, Status> {
        let caller = caller_of(req.extensions());
        let r = req.into_inner();
        validate::validate_image_id(&r.image_id)?;
        self.0
            .read(|tx| {
                let image = image_in(tx, &r.image_id)?;
                self.require_on_image(&caller, tx, Permission::ImagesGet, &image)?;
                Ok(image)
            })
            .await
            .map(Response::new)
    }

    async fn get_latest_by_family(
        &self,
        req: Request<GetImageLatestByFamilyRequest>,
    ) -> Result<Response<Image>, Status> {
        let caller = caller_of(req.extensions());
        let r = req.into_inner();
        validate::validate_latest_by_family(&r)?;
        self.require_in_folder(&caller, Permission::ImagesGetLatest, &r.folder_id)?;
        self.0
            .read(move |tx| {
                // Newest first, straight from the index, up to the first that qualifies.
                let mut latest = None;
                tx.folder_scan(&r.folder_id, ImageOrder::CreatedAt, true, None, &mut |i| {
                    if i.family == r.family && i.status == image::Status::Ready as i32 {
                        latest = Some(i);
                        return false;
                    }
                    true
                })?;
                latest.ok_or_else(|| {
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
        let caller = caller_of(req.extensions());
        let r = req.into_inner();
        validate::validate_list(&r)?;
        self.require_in_folder(&caller, Permission::ImagesList, &r.folder_id)?;
        let filter = Filter::parse(&r.filter).map_err(|e| invalid("filter", e))?;
        let order = Order::parse(&r.order_by).map_err(|e| invalid("order_by", e))?;
        let after = match page::decode_short("page_token", &r.page_token, 3)? {
            Some(p) if p[0] != order.tag() => {
                return Err(invalid("page_token", "was issued for another order_by"));
            }
            Some(p) => Some(ImageCursor {
                primary: p[1].clone(),
                id: p[2].clone(),
            }),
            None => None,
        };
        let size = page::size(r.page_size);
        self.0
            .read(move |tx| {
                // In order from the index, filtered as they come: a page reads about what it
                // returns (and a filter that matches little, as far as its matches).
                let mut images = Vec::new();
                let mut more = false;
                tx.folder_scan(
                    &r.folder_id,
                    order.field,
                    order.desc,
                    after.as_ref(),
                    &mut |i| {
                        if !filter.matches(&i) {
                            return true;
                        }
                        if images.len() == size {
                            more = true;
                            return false;
                        }
                        images.push(i);
                        true
                    },
                )?;
                more |= page::fit(&mut images, Message::encoded_len);
                let next_page_token = match images.last() {
                    Some(last) if more => {
                        let k = order.key(last);
                        page::encode_short(&[order.tag(), &k.primary, &k.id])
                    }
                    _ => String::new(),
                };
                Ok(ListImagesResponse {
                    images,
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
        let caller = caller_of(req.extensions());
        let (md, _, r) = req.into_parts();
        validate::validate_create(&r)?;
        let bytes = r.encode_to_vec();
        let create_delay = self.0.config().create_delay;
        let op = self
            .0
            .mutate(&md, &caller, "Create", bytes, move |tx, ctx| {
                ctx.require_in_folder(Permission::ImagesCreate, &r.folder_id)?;
                let img = new_image(tx, &r, &ctx)?;
                check_unique_name(tx, &img.folder_id, &img.name, "")?;
                tx.put_image(&img)?;
                let op = ctx.operation(
                    "Create image",
                    Any::pack(&CreateImageMetadata {
                        image_id: img.id.clone(),
                    }),
                );
                tx.put_running_create(&RunningCreate {
                    operation_id: op.id.clone(),
                    image_id: img.id.clone(),
                    due_nanos: (now_nanos() + create_delay.as_nanos()) as u64,
                })?;
                Ok((op, Recorded::of(&img)))
            })
            .await?;
        if !op.done {
            self.0.runner().start_create(op.id.clone());
        }
        Ok(Response::new(op))
    }

    async fn update(
        &self,
        req: Request<UpdateImageRequest>,
    ) -> Result<Response<Operation>, Status> {
        let caller = caller_of(req.extensions());
        let (md, _, r) = req.into_parts();
        validate::validate_update(&r)?;
        let bytes = r.encode_to_vec();
        let op = self
            .0
            .mutate(&md, &caller, "Update", bytes, move |tx, ctx| {
                let mut img = image_in(tx, &r.image_id)?;
                ctx.require_on_image(tx, Permission::ImagesUpdate, &img)?;
                apply_update(&mut img, &r);
                check_unique_name(tx, &img.folder_id, &img.name, &img.id)?;
                tx.put_image(&img)?;
                let op = ctx.operation(
                    "Update image",
                    Any::pack(&UpdateImageMetadata {
                        image_id: img.id.clone(),
                    }),
                );
                let recorded = Recorded::of(&img);
                Ok((op_done_with(op, Any::pack(&img)), recorded))
            })
            .await?;
        Ok(Response::new(op))
    }

    async fn delete(
        &self,
        req: Request<DeleteImageRequest>,
    ) -> Result<Response<Operation>, Status> {
        let caller = caller_of(req.extensions());
        let (md, _, r) = req.into_parts();
        validate::validate_image_id(&r.image_id)?;
        let bytes = r.encode_to_vec();
        let op = self
            .0
            .mutate(&md, &caller, "Delete", bytes, move |tx, ctx| {
                let img = image_in(tx, &r.image_id)?;
                ctx.require_on_image(tx, Permission::ImagesDelete, &img)?;
                if img.status == image::Status::Creating as i32 {
                    return Err(Status::failed_precondition(format!(
                        "image {} is still being created; cancel its create operation instead",
                        img.id
                    )));
                }
                tx.delete_image(&img.id)?;
                let op = ctx.operation(
                    "Delete image",
                    Any::pack(&DeleteImageMetadata {
                        image_id: img.id.clone(),
                    }),
                );
                Ok((op_done_with(op, Any::pack(&())), Recorded::of(&img)))
            })
            .await?;
        Ok(Response::new(op))
    }

    async fn list_operations(
        &self,
        req: Request<ListImageOperationsRequest>,
    ) -> Result<Response<ListImageOperationsResponse>, Status> {
        let caller = caller_of(req.extensions());
        let r = req.into_inner();
        validate::validate_list_operations(&r)?;
        let after = page::decode_short("page_token", &r.page_token, 2)?
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
            .read(|tx| {
                let image = image_in(tx, &r.image_id)?;
                self.require_on_image(&caller, tx, Permission::ImagesListOperations, &image)?;
                // Newest first, straight from the index; one extra tells whether a page follows.
                let mut ops = tx.image_operations_page(&r.image_id, after.as_ref(), size + 1)?;
                let mut more = ops.len() > size;
                ops.truncate(size);
                more |= page::fit(&mut ops, |(_, o)| o.encoded_len());
                let next_page_token = match ops.last() {
                    Some((c, _)) if more => {
                        page::encode_short(&[&c.created_nanos.to_string(), &c.operation_id])
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
        let caller = caller_of(req.extensions());
        access::list(&self.0, &caller, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn set_access_bindings(
        &self,
        req: Request<SetAccessBindingsRequest>,
    ) -> Result<Response<Operation>, Status> {
        let caller = caller_of(req.extensions());
        let (md, _, r) = req.into_parts();
        access::set(&self.0, &md, &caller, r)
            .await
            .map(Response::new)
    }

    async fn update_access_bindings(
        &self,
        req: Request<UpdateAccessBindingsRequest>,
    ) -> Result<Response<Operation>, Status> {
        let caller = caller_of(req.extensions());
        let (md, _, r) = req.into_parts();
        access::update(&self.0, &md, &caller, r)
            .await
            .map(Response::new)
    }
}
