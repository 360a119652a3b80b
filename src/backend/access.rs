//! Access bindings of an image (ImageService's List/Set/UpdateAccessBindings): stored with the
//! image and removed with it; listed in (role, subject type, subject id) order.

use std::collections::{HashMap, HashSet};

use prost::Message;
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::page;
use super::state::{Backend, Recorded, not_found, require_on_image};
use super::tokens::Caller;
use crate::iam::Permission;
use crate::json::Any;
use crate::pb::yandex::cloud::access::{
    AccessBinding, AccessBindingAction, AccessBindingDelta, AccessBindingsOperationResult,
    ListAccessBindingsRequest, ListAccessBindingsResponse, SetAccessBindingsMetadata,
    SetAccessBindingsRequest, UpdateAccessBindingsMetadata, UpdateAccessBindingsRequest,
};
use crate::pb::yandex::cloud::compute::v1::Image;
use crate::pb::yandex::cloud::operation::{Operation, operation};
use crate::store::Tx;

/// The most access bindings an image holds: the most one SetAccessBindings may set, and a
/// total that UpdateAccessBindings cannot grow past. Each change rewrites the whole list on
/// the store's one writer, so the list's size bounds how long one request holds every write.
pub(super) const MAX_BINDINGS: usize = 1000;

/// Where a binding sorts, and what tells two bindings apart: role, subject type, subject id.
fn binding_key(b: &AccessBinding) -> (String, String, String) {
    let (id, ty) = b
        .subject
        .as_ref()
        .map(|s| (s.id.clone(), s.r#type.clone()))
        .unwrap_or_default();
    (b.role_id.clone(), ty, id)
}

/// The image, or NOT_FOUND.
fn image_in(tx: &dyn Tx, id: &str) -> Result<Image, Status> {
    tx.image(id)?.ok_or_else(|| not_found("image", id))
}

/// A done Operation whose response is the effective deltas.
fn done(mut op: Operation, effective_deltas: Vec<AccessBindingDelta>) -> Operation {
    op.done = true;
    op.result = Some(operation::Result::Response(Any::pack(
        &AccessBindingsOperationResult { effective_deltas },
    )));
    op
}

pub(super) async fn list(
    backend: &Backend,
    caller: &Caller,
    r: ListAccessBindingsRequest,
) -> Result<ListAccessBindingsResponse, Status> {
    super::validate::validate_list_bindings(&r.resource_id, r.page_size, &r.page_token)?;
    let after = page::decode("page_token", &r.page_token, 3)?
        .map(|p| (p[0].clone(), p[1].clone(), p[2].clone()));
    let size = page::size(r.page_size);
    backend
        .read(move |tx| {
            let image = image_in(tx, &r.resource_id)?;
            require_on_image(
                backend.access(),
                caller,
                tx,
                Permission::ImagesListAccessBindings,
                &image,
            )?;
            let keyed = tx
                .bindings(&r.resource_id)?
                .into_iter()
                .map(|b| (binding_key(&b), b))
                .collect();
            let (bindings, more) = page::after(keyed, after.as_ref(), false, size);
            let next_page_token = match bindings.last() {
                Some(((role, ty, id), _)) if more => page::encode(&[role, ty, id]),
                _ => String::new(),
            };
            Ok(ListAccessBindingsResponse {
                access_bindings: bindings.into_iter().map(|(_, b)| b).collect(),
                next_page_token,
            })
        })
        .await
}

pub(super) async fn set(
    backend: &Backend,
    md: &MetadataMap,
    caller: &Caller,
    r: SetAccessBindingsRequest,
) -> Result<Operation, Status> {
    super::validate::validate_set_bindings(&r)?;
    let bytes = r.encode_to_vec();
    backend
        .mutate(md, caller, "SetAccessBindings", bytes, move |tx, ctx| {
            let image = image_in(tx, &r.resource_id)?;
            ctx.require_on_image(tx, Permission::ImagesSetAccessBindings, &image)?;
            let old = tx.bindings(&r.resource_id)?;
            let mut seen = HashSet::new();
            let new: Vec<AccessBinding> = r
                .access_bindings
                .into_iter()
                .filter(|b| seen.insert(binding_key(b)))
                .collect();
            let old_keys: HashSet<_> = old.iter().map(binding_key).collect();
            let delta = |action: AccessBindingAction, b: &AccessBinding| AccessBindingDelta {
                action: action as i32,
                access_binding: Some(b.clone()),
            };
            let mut effective: Vec<AccessBindingDelta> = old
                .iter()
                .filter(|b| !seen.contains(&binding_key(b)))
                .map(|b| delta(AccessBindingAction::Remove, b))
                .collect();
            effective.extend(
                new.iter()
                    .filter(|b| !old_keys.contains(&binding_key(b)))
                    .map(|b| delta(AccessBindingAction::Add, b)),
            );
            tx.put_bindings(&r.resource_id, &new)?;
            let op = ctx.operation(
                "Set access bindings for image",
                Any::pack(&SetAccessBindingsMetadata {
                    resource_id: r.resource_id.clone(),
                }),
            );
            Ok((done(op, effective), Recorded::of(&image)))
        })
        .await
}

pub(super) async fn update(
    backend: &Backend,
    md: &MetadataMap,
    caller: &Caller,
    r: UpdateAccessBindingsRequest,
) -> Result<Operation, Status> {
    super::validate::validate_update_bindings(&r)?;
    let bytes = r.encode_to_vec();
    backend
        .mutate(md, caller, "UpdateAccessBindings", bytes, move |tx, ctx| {
            let image = image_in(tx, &r.resource_id)?;
            ctx.require_on_image(tx, Permission::ImagesSetAccessBindings, &image)?;
            // In place, by slot: a removed binding's slot empties, an added one goes last.
            let mut slots: Vec<Option<AccessBinding>> =
                tx.bindings(&r.resource_id)?.into_iter().map(Some).collect();
            let mut index: HashMap<_, usize> = slots
                .iter()
                .enumerate()
                .filter_map(|(i, b)| Some((binding_key(b.as_ref()?), i)))
                .collect();
            let mut effective = Vec::new();
            for d in r.access_binding_deltas {
                let Some(b) = &d.access_binding else {
                    continue;
                };
                let key = binding_key(b);
                match AccessBindingAction::try_from(d.action) {
                    Ok(AccessBindingAction::Add) if !index.contains_key(&key) => {
                        index.insert(key, slots.len());
                        slots.push(Some(b.clone()));
                        effective.push(d);
                    }
                    Ok(AccessBindingAction::Remove) => {
                        if let Some(i) = index.remove(&key) {
                            slots[i] = None;
                            effective.push(d);
                        }
                    }
                    _ => {}
                }
            }
            let bindings: Vec<AccessBinding> = slots.into_iter().flatten().collect();
            if bindings.len() > MAX_BINDINGS {
                return Err(Status::failed_precondition(format!(
                    "image {} would have {} access bindings; an image has at most {MAX_BINDINGS}",
                    r.resource_id,
                    bindings.len()
                )));
            }
            tx.put_bindings(&r.resource_id, &bindings)?;
            let op = ctx.operation(
                "Update access bindings for image",
                Any::pack(&UpdateAccessBindingsMetadata {
                    resource_id: r.resource_id.clone(),
                }),
            );
            Ok((done(op, effective), Recorded::of(&image)))
        })
        .await
}
