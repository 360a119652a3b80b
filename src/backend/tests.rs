//! The services called directly, as trait methods, over a store in a temporary directory: the
//! semantics of each method without a socket in between (the wire-level cases are in
//! `tests/grpc_images.rs`).

use std::sync::Arc;
use std::time::Duration;

use tonic::{Code, Request};

use super::images::Images;
use super::operations::Operations;
use super::{Backend, BackendConfig, HealthProbe};
use crate::json::FieldMask;
use crate::pb::yandex::cloud::compute::v1::image_service_server::ImageService;
use crate::pb::yandex::cloud::compute::v1::{
    CreateImageRequest, GetImageRequest, Image, UpdateImageRequest, create_image_request, image,
};
use crate::pb::yandex::cloud::operation::operation_service_server::OperationService;
use crate::pb::yandex::cloud::operation::{CancelOperationRequest, Operation, operation};
use crate::store::EmbeddedStore;

struct Fixture {
    backend: Backend,
    store: Arc<EmbeddedStore>,
    _dir: tempfile::TempDir,
}

/// A backend whose creates stay CREATING for `create_delay`.
fn fixture(create_delay: Duration) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
    Fixture {
        backend: backend_over(store.clone(), create_delay),
        store,
        _dir: dir,
    }
}

fn backend_over(store: Arc<EmbeddedStore>, create_delay: Duration) -> Backend {
    Backend::new(
        store,
        BackendConfig {
            create_delay,
            advertise_address: "127.0.0.1:1".into(),
            health: HealthProbe::default(),
            call_timeout: BackendConfig::DEFAULT_CALL_TIMEOUT,
            idle_timeout: BackendConfig::DEFAULT_IDLE_TIMEOUT,
            messages: Default::default(),
            spans: None,
            auth: Default::default(),
            retention: Default::default(),
        },
    )
}

fn create_request(name: &str) -> CreateImageRequest {
    CreateImageRequest {
        folder_id: "b1gfolder".into(),
        name: name.into(),
        description: "first".into(),
        labels: [("env".to_string(), "prod".to_string())].into(),
        source: Some(create_image_request::Source::Uri(
            "https://x/y.qcow2".into(),
        )),
        ..Default::default()
    }
}

fn with_key<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("idempotency-key", key.parse().expect("ascii"));
    request
}

fn image_of(op: &Operation) -> Image {
    match &op.result {
        Some(operation::Result::Response(any)) => {
            any.unpack::<Image>().expect("decodes").expect("an Image")
        }
        other => panic!("no image in {other:?}"),
    }
}

async fn get(backend: &Backend, id: &str) -> Result<Image, tonic::Status> {
    Images(backend.clone())
        .get(Request::new(GetImageRequest {
            image_id: id.into(),
        }))
        .await
        .map(tonic::Response::into_inner)
}

fn metadata_image_id(op: &Operation) -> String {
    op.metadata
        .as_ref()
        .and_then(|m| {
            m.unpack::<crate::pb::yandex::cloud::compute::v1::CreateImageMetadata>()
                .ok()
                .flatten()
        })
        .map(|m| m.image_id)
        .expect("create metadata")
}

#[tokio::test]
async fn update_changes_the_masked_fields_and_resets_the_absent_ones() {
    let f = fixture(Duration::from_secs(3600));
    let images = Images(f.backend.clone());
    let created = images
        .create(Request::new(create_request("seed")))
        .await
        .expect("created")
        .into_inner();
    let id = metadata_image_id(&created);
    let update = |paths: &[&str], name: &str| UpdateImageRequest {
        image_id: id.clone(),
        update_mask: Some(FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
        name: name.into(),
        ..Default::default()
    };
    // `name` and `labels` masked: the name changes, the labels (absent) are cleared, the
    // description (not masked) stays.
    let op = images
        .update(Request::new(update(&["name", "labels"], "renamed")))
        .await
        .expect("updated")
        .into_inner();
    assert!(op.done);
    let img = image_of(&op);
    assert_eq!(
        (
            img.name.as_str(),
            img.description.as_str(),
            img.labels.len()
        ),
        ("renamed", "first", 0)
    );
    assert_eq!(get(&f.backend, &id).await.expect("stored"), img);
    // A path that is not updatable is refused, naming the mask.
    let err = images
        .update(Request::new(update(&["folder_id"], "x")))
        .await
        .expect_err("not updatable");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("update_mask"), "{}", err.message());
}

#[tokio::test]
async fn a_retry_with_the_same_key_changes_nothing_twice() {
    let f = fixture(Duration::from_secs(3600));
    let images = Images(f.backend.clone());
    let first = images
        .create(with_key(create_request("once"), "k1"))
        .await
        .expect("created")
        .into_inner();
    let again = images
        .create(with_key(create_request("once"), "k1"))
        .await
        .expect("the same operation")
        .into_inner();
    assert_eq!(again.id, first.id);
    // The same key for another request is refused; without the key the name is taken.
    let other = images
        .create(with_key(create_request("other"), "k1"))
        .await
        .expect_err("key reused");
    assert_eq!(other.code(), Code::FailedPrecondition);
    let taken = images
        .create(Request::new(create_request("once")))
        .await
        .expect_err("one image named once");
    assert_eq!(taken.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn a_cancelled_create_removes_its_image_and_is_done_once() {
    let f = fixture(Duration::from_secs(3600));
    let op = Images(f.backend.clone())
        .create(Request::new(create_request("doomed")))
        .await
        .expect("created")
        .into_inner();
    let id = metadata_image_id(&op);
    assert_eq!(
        get(&f.backend, &id).await.expect("creating").status,
        image::Status::Creating as i32
    );
    let operations = Operations(f.backend.clone());
    let cancel = || {
        Request::new(CancelOperationRequest {
            operation_id: op.id.clone(),
        })
    };
    let cancelled = operations
        .cancel(cancel())
        .await
        .expect("cancelled")
        .into_inner();
    match cancelled.result {
        Some(operation::Result::Error(status)) => assert_eq!(status.code, Code::Cancelled as i32),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        get(&f.backend, &id).await.expect_err("gone").code(),
        Code::NotFound
    );
    let again = operations.cancel(cancel()).await.expect_err("already done");
    assert_eq!(again.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn creates_left_running_are_finished_by_the_next_start() {
    let f = fixture(Duration::from_secs(3600));
    let op = Images(f.backend.clone())
        .create(Request::new(create_request("interrupted")))
        .await
        .expect("created")
        .into_inner();
    // A new process over the same store: its recovery finishes the create.
    let next = backend_over(f.store.clone(), Duration::from_secs(3600));
    assert_eq!(next.recover().await.expect("recovered"), 1);
    let img = get(&next, &metadata_image_id(&op)).await.expect("stored");
    assert_eq!(img.status, image::Status::Ready as i32);
    let done = Operations(next.clone())
        .get(Request::new(
            crate::pb::yandex::cloud::operation::GetOperationRequest {
                operation_id: op.id.clone(),
            },
        ))
        .await
        .expect("operation")
        .into_inner();
    assert_eq!(image_of(&done), img);
    assert_eq!(next.recover().await.expect("nothing left"), 0);
}
