//! ImageService and OperationService over a real gRPC connection: every RPC, validation,
//! the Update cases of the reference page, pagination, filters, cancel, idempotency, access
//! binding deltas, and durability across a restart.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Options, TestServer, response, unpack, wait_done};
use compute_gateway::json::{FieldMask, Timestamp};
use compute_gateway::pb::google::rpc::{self, BadRequest};
use compute_gateway::pb::yandex::cloud::access::*;
use compute_gateway::pb::yandex::cloud::compute::v1::*;
use compute_gateway::pb::yandex::cloud::operation::{
    CancelOperationRequest, GetOperationRequest, Operation, operation,
};
use prost::Message;
use tonic::{Code, Request};

fn create_req(folder: &str, name: &str) -> CreateImageRequest {
    CreateImageRequest {
        folder_id: folder.into(),
        name: name.into(),
        source: Some(create_image_request::Source::DiskId("disk1".into())),
        ..Default::default()
    }
}

async fn create_ready(s: &TestServer, req: CreateImageRequest) -> Image {
    let op = s.images().create(req).await.expect("create").into_inner();
    let done = wait_done(&mut s.operations(), &op.id).await;
    response::<Image>(&done)
}

fn violations(status: &tonic::Status) -> Vec<String> {
    let body = rpc::Status::decode(status.details())
        .expect("grpc-status-details-bin is a google.rpc.Status");
    body.details
        .iter()
        .map(|a| {
            a.unpack::<BadRequest>()
                .expect("decodes")
                .expect("BadRequest")
        })
        .flat_map(|b| b.field_violations.into_iter().map(|v| v.field))
        .collect()
}

#[tokio::test]
async fn create_runs_asynchronously_and_completes_with_the_image() {
    let s = TestServer::start().await;
    let mut req = create_req("b1g", "img-a");
    req.family = "ubuntu-lts".into();
    req.labels = BTreeMap::from([("env".into(), "prod".into())]);
    req.product_ids = vec!["f2e".into()];
    req.pooled = true;
    req.hardware_generation = Some(HardwareGeneration {
        features: Some(hardware_generation::Features::Generation2Features(
            Generation2HardwareFeatures {
                secure_boot_template_id: "sb".into(),
                vtpm_enabled: true,
            },
        )),
    });
    let op = s.images().create(req).await.expect("create").into_inner();
    assert!(!op.done, "create is asynchronous");
    assert_eq!(op.description, "Create image");
    assert!(op.id.starts_with("epd") && op.id.len() == 20, "{}", op.id);
    let meta: CreateImageMetadata = unpack(op.metadata.as_ref().expect("metadata"));
    assert!(meta.image_id.starts_with("fd8") && meta.image_id.len() == 20);
    let creating = s
        .images()
        .get(GetImageRequest {
            image_id: meta.image_id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(creating.status, image::Status::Creating as i32);

    let done = wait_done(&mut s.operations(), &op.id).await;
    let img: Image = response(&done);
    assert_eq!(img.id, meta.image_id);
    assert_eq!(img.status, image::Status::Ready as i32);
    assert_eq!(
        (img.family.as_str(), img.pooled, img.product_ids.len()),
        ("ubuntu-lts", true, 1)
    );
    assert_eq!(
        img.os.as_ref().expect("os").r#type,
        os::Type::Linux as i32,
        "LINUX is the default os"
    );
    assert!(img.hardware_generation.is_some());
    let got = s
        .images()
        .get(GetImageRequest {
            image_id: img.id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got, img);
}

#[tokio::test]
async fn create_from_an_image_copies_it_and_a_missing_source_is_not_found() {
    let s = TestServer::start().await;
    let mut first = create_req("b1g", "base");
    first.min_disk_size = 10 << 30;
    first.os = Some(Os {
        r#type: os::Type::Windows as i32,
        nvidia: None,
    });
    first.product_ids = vec!["lic".into()];
    let base = create_ready(&s, first).await;
    assert_eq!((base.size, base.min_disk_size), (10 << 30, 10 << 30));
    let mut copy = create_req("b1g", "copy");
    copy.source = Some(create_image_request::Source::ImageId(base.id.clone()));
    let img = create_ready(&s, copy).await;
    assert_eq!(
        (img.size, img.storage_size, img.min_disk_size),
        (base.size, base.storage_size, base.min_disk_size)
    );
    assert_eq!(img.os, base.os);
    assert_eq!(
        base.os.as_ref().map(|o| o.r#type),
        Some(os::Type::Windows as i32),
        "the request's os is kept"
    );
    assert_eq!(img.product_ids, base.product_ids);

    // A clone's own min_disk_size and os win over the source's; its size is the source's. A
    // clone of that clone inherits the clone's min_disk_size, not its size.
    let mut bigger = create_req("b1g", "bigger");
    bigger.source = Some(create_image_request::Source::ImageId(base.id.clone()));
    bigger.min_disk_size = 20 << 30;
    bigger.os = Some(Os {
        r#type: os::Type::Linux as i32,
        nvidia: None,
    });
    let bigger = create_ready(&s, bigger).await;
    assert_eq!(
        (bigger.size, bigger.min_disk_size),
        (10 << 30, 20 << 30),
        "own min_disk_size, source's size"
    );
    assert_eq!(
        bigger.os.as_ref().map(|o| o.r#type),
        Some(os::Type::Linux as i32)
    );
    let mut again = create_req("b1g", "again");
    again.source = Some(create_image_request::Source::ImageId(bigger.id.clone()));
    let again = create_ready(&s, again).await;
    assert_eq!(
        (again.size, again.min_disk_size),
        (10 << 30, 20 << 30),
        "min_disk_size inherited from the source, not made its size"
    );

    let mut missing = create_req("b1g", "x");
    missing.source = Some(create_image_request::Source::ImageId("fd8nothere".into()));
    let err = s
        .images()
        .create(missing)
        .await
        .expect_err("missing source");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("fd8nothere"));
}

#[tokio::test]
async fn validation_names_the_field_and_rule() {
    let s = TestServer::start().await;
    let long = |n| "a".repeat(n);
    let cases: Vec<(&str, CreateImageRequest, &str)> = vec![
        (
            "no folder",
            CreateImageRequest {
                folder_id: String::new(),
                ..create_req("", "x")
            },
            "folder_id",
        ),
        ("long folder", create_req(&long(51), "x"), "folder_id"),
        ("bad name", create_req("b1g", "Bad Name"), "name"),
        ("name too long", create_req("b1g", &long(64)), "name"),
        ("name ends with dash", create_req("b1g", "abc-"), "name"),
        (
            "description",
            CreateImageRequest {
                description: long(257),
                ..create_req("b1g", "x")
            },
            "description",
        ),
        (
            "family",
            CreateImageRequest {
                family: "ab".into(),
                ..create_req("b1g", "x")
            },
            "family",
        ),
        (
            "family underscore",
            CreateImageRequest {
                family: "a_bc".into(),
                ..create_req("b1g", "x")
            },
            "family",
        ),
        (
            "min disk small",
            CreateImageRequest {
                min_disk_size: 4_194_303,
                ..create_req("b1g", "x")
            },
            "min_disk_size",
        ),
        (
            "min disk big",
            CreateImageRequest {
                min_disk_size: 4_398_046_511_105,
                ..create_req("b1g", "x")
            },
            "min_disk_size",
        ),
        (
            "min disk negative",
            CreateImageRequest {
                min_disk_size: -1,
                ..create_req("b1g", "x")
            },
            "min_disk_size",
        ),
        (
            "product id",
            CreateImageRequest {
                product_ids: vec![long(51)],
                ..create_req("b1g", "x")
            },
            "product_ids[0]",
        ),
        (
            "no source",
            CreateImageRequest {
                source: None,
                ..create_req("b1g", "x")
            },
            "source",
        ),
        (
            "empty disk id",
            CreateImageRequest {
                source: Some(create_image_request::Source::DiskId(String::new())),
                ..create_req("b1g", "x")
            },
            "disk_id",
        ),
        (
            "long snapshot id",
            CreateImageRequest {
                source: Some(create_image_request::Source::SnapshotId(long(51))),
                ..create_req("b1g", "x")
            },
            "snapshot_id",
        ),
        (
            "too many labels",
            CreateImageRequest {
                labels: (0..65).map(|i| (format!("k{i}"), "v".into())).collect(),
                ..create_req("b1g", "x")
            },
            "labels",
        ),
        (
            "label key",
            CreateImageRequest {
                labels: BTreeMap::from([("Env".into(), "x".into())]),
                ..create_req("b1g", "x")
            },
            "labels[\"Env\"]",
        ),
        (
            "label value",
            CreateImageRequest {
                labels: BTreeMap::from([("env".into(), "X".into())]),
                ..create_req("b1g", "x")
            },
            "labels[\"env\"]",
        ),
        (
            "label value long",
            CreateImageRequest {
                labels: BTreeMap::from([("env".into(), long(64))]),
                ..create_req("b1g", "x")
            },
            "labels[\"env\"]",
        ),
    ];
    for (what, req, field) in cases {
        let err = s.images().create(req).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}");
        assert!(err.message().contains(field), "{what}: {}", err.message());
        assert!(
            violations(&err).iter().any(|f| f == field),
            "{what}: {:?}",
            violations(&err)
        );
    }
    // Other requests.
    let err = s
        .images()
        .get(GetImageRequest {
            image_id: String::new(),
        })
        .await
        .expect_err("required");
    assert_eq!(
        (err.code(), violations(&err)),
        (Code::InvalidArgument, vec!["image_id".to_string()])
    );
    let err = s
        .images()
        .list(ListImagesRequest {
            folder_id: "b1g".into(),
            page_size: 1001,
            ..Default::default()
        })
        .await
        .expect_err("page size");
    assert_eq!(violations(&err), ["page_size"]);
    let err = s
        .images()
        .list(ListImagesRequest {
            folder_id: "b1g".into(),
            page_token: long(101),
            ..Default::default()
        })
        .await
        .expect_err("token");
    assert_eq!(violations(&err), ["page_token"]);
    let err = s
        .images()
        .list(ListImagesRequest {
            folder_id: "b1g".into(),
            filter: long(1001),
            ..Default::default()
        })
        .await
        .expect_err("filter");
    assert_eq!(violations(&err), ["filter"]);
    let err = s
        .images()
        .list(ListImagesRequest {
            folder_id: "b1g".into(),
            filter: "name = x".into(),
            ..Default::default()
        })
        .await
        .expect_err("filter");
    assert!(
        err.message().contains("filter: at position 8"),
        "{}",
        err.message()
    );
    let err = s
        .images()
        .list(ListImagesRequest {
            folder_id: "b1g".into(),
            order_by: "size".into(),
            ..Default::default()
        })
        .await
        .expect_err("order");
    assert_eq!(violations(&err), ["order_by"]);
    let err = s
        .images()
        .get_latest_by_family(GetImageLatestByFamilyRequest {
            folder_id: "b1g".into(),
            family: "A".into(),
        })
        .await
        .expect_err("family");
    assert_eq!(violations(&err), ["family"]);
    let err = s
        .operations()
        .get(GetOperationRequest {
            operation_id: String::new(),
        })
        .await
        .expect_err("op id");
    assert_eq!(violations(&err), ["operation_id"]);
    let err = s
        .images()
        .list_operations(ListImageOperationsRequest {
            image_id: "x".into(),
            page_size: -1,
            ..Default::default()
        })
        .await
        .expect_err("size");
    assert_eq!(violations(&err), ["page_size"]);
}

async fn update(s: &TestServer, req: UpdateImageRequest) -> Result<Image, tonic::Status> {
    let op = s.images().update(req).await?.into_inner();
    assert!(op.done, "update completes promptly");
    assert_eq!(op.description, "Update image");
    let meta: UpdateImageMetadata = unpack(op.metadata.as_ref().expect("metadata"));
    let img: Image = response(&op);
    assert_eq!(meta.image_id, img.id);
    Ok(img)
}

#[tokio::test]
async fn update_follows_the_reference_page() {
    let s = TestServer::start().await;
    let mut req = create_req("b1g", "orig");
    req.description = "d0".into();
    req.min_disk_size = 8 << 30;
    req.labels = BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]);
    let img = create_ready(&s, req).await;
    let id = img.id.clone();
    let base = || UpdateImageRequest {
        image_id: id.clone(),
        ..Default::default()
    };

    // Only masked fields change.
    let got = update(
        &s,
        UpdateImageRequest {
            update_mask: Some(FieldMask::new(["name"])),
            name: "renamed".into(),
            description: "ignored".into(),
            ..base()
        },
    )
    .await
    .expect("mask name");
    assert_eq!(
        (
            got.name.as_str(),
            got.description.as_str(),
            got.min_disk_size
        ),
        ("renamed", "d0", 8 << 30)
    );

    // A masked field absent from the request is reset to its default.
    let got = update(
        &s,
        UpdateImageRequest {
            update_mask: Some(FieldMask::new(["description", "min_disk_size"])),
            ..base()
        },
    )
    .await
    .expect("reset");
    assert_eq!(
        (
            got.name.as_str(),
            got.description.as_str(),
            got.min_disk_size
        ),
        ("renamed", "", 0)
    );
    assert_eq!(got.labels.len(), 2);

    // Labels are replaced as a whole.
    let got = update(
        &s,
        UpdateImageRequest {
            update_mask: Some(FieldMask::new(["labels"])),
            labels: BTreeMap::from([("c".into(), "3".into())]),
            ..base()
        },
    )
    .await
    .expect("labels");
    assert_eq!(
        got.labels,
        BTreeMap::from([("c".to_string(), "3".to_string())])
    );

    // No mask: every updatable field takes the request's value or its default.
    let got = update(
        &s,
        UpdateImageRequest {
            description: "only".into(),
            min_disk_size: 4 << 20,
            ..base()
        },
    )
    .await
    .expect("no mask");
    assert_eq!(
        (
            got.name.as_str(),
            got.description.as_str(),
            got.min_disk_size,
            got.labels.len()
        ),
        ("", "only", 4 << 20, 0)
    );
    assert_eq!(got.folder_id, "b1g", "non-updatable fields stay");

    // A mask that is present but empty means the same as no mask: every updatable field.
    let got = update(
        &s,
        UpdateImageRequest {
            update_mask: Some(FieldMask::new(Vec::<String>::new())),
            name: "all-of-it".into(),
            description: "every field".into(),
            min_disk_size: 8 << 20,
            labels: BTreeMap::from([("e".into(), "5".into())]),
            ..base()
        },
    )
    .await
    .expect("empty mask");
    assert_eq!(
        (
            got.name.as_str(),
            got.description.as_str(),
            got.min_disk_size,
            got.labels,
        ),
        (
            "all-of-it",
            "every field",
            8 << 20,
            BTreeMap::from([("e".to_string(), "5".to_string())])
        )
    );
    // And the no-mask case once more, so the next checks start from "only".
    update(
        &s,
        UpdateImageRequest {
            description: "only".into(),
            min_disk_size: 4 << 20,
            ..base()
        },
    )
    .await
    .expect("no mask again");

    // Unknown or non-updatable paths are rejected and change nothing.
    for path in [
        "family",
        "id",
        "folder_id",
        "nope",
        "labels.a",
        "minDiskSize",
    ] {
        let err = update(
            &s,
            UpdateImageRequest {
                update_mask: Some(FieldMask::new([path])),
                ..base()
            },
        )
        .await
        .expect_err(path);
        assert_eq!(err.code(), Code::InvalidArgument, "{path}");
        assert!(err.message().contains(path), "{path}: {}", err.message());
    }
    let now = s
        .images()
        .get(GetImageRequest {
            image_id: id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(now.description, "only");

    // Missing image.
    let err = update(
        &s,
        UpdateImageRequest {
            image_id: "fd8missing".into(),
            ..Default::default()
        },
    )
    .await
    .expect_err("missing");
    assert_eq!(err.code(), Code::NotFound);
    // Names are unique within a folder.
    create_ready(&s, create_req("b1g", "taken")).await;
    let err = update(
        &s,
        UpdateImageRequest {
            update_mask: Some(FieldMask::new(["name"])),
            name: "taken".into(),
            ..base()
        },
    )
    .await
    .expect_err("dup");
    assert_eq!(err.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn list_paginates_filters_and_orders() {
    let s = TestServer::start().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut req = create_req("b1g", &format!("img-{i}"));
        req.family = if i % 2 == 0 {
            "even".into()
        } else {
            "odd".into()
        };
        ids.push(create_ready(&s, req).await.id);
    }
    create_ready(&s, create_req("other", "elsewhere")).await;
    ids.sort();

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = s
            .images()
            .list(ListImagesRequest {
                folder_id: "b1g".into(),
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        pages += 1;
        assert!(page.images.len() <= 3);
        seen.extend(page.images.into_iter().map(|i| i.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        seen, ids,
        "id asc by default; no duplicates, no gaps, only the folder's images"
    );
    assert_eq!(pages, 3, "7 images in pages of 3: no empty page at the end");
    // A page that holds the rest exactly has no next page.
    let whole = s
        .images()
        .list(ListImagesRequest {
            folder_id: "b1g".into(),
            page_size: 7,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(whole.images.len(), 7);
    assert_eq!(whole.next_page_token, "", "nothing after the last image");

    let newest = s
        .images()
        .list(ListImagesRequest {
            folder_id: "b1g".into(),
            order_by: "createdAt desc".into(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(newest.images[0].name, "img-6");
    assert_eq!(newest.images[1].name, "img-5");
    let next = s
        .images()
        .list(ListImagesRequest {
            folder_id: "b1g".into(),
            order_by: "createdAt desc".into(),
            page_size: 2,
            page_token: newest.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(next.images[0].name, "img-4");
    let err = s
        .images()
        .list(ListImagesRequest {
            folder_id: "b1g".into(),
            page_token: newest.next_page_token,
            ..Default::default()
        })
        .await
        .expect_err("other order");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = s
        .images()
        .list(ListImagesRequest {
            folder_id: "b1g".into(),
            page_token: "garbage!".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert_eq!(violations(&err), ["page_token"]);

    for (filter, want) in [
        ("family = \"odd\"", 3),
        ("family != 'odd'", 4),
        ("name IN ('img-1', 'img-2', 'nope')", 2),
        ("name NOT IN ('img-1') AND family = 'odd'", 2),
        ("status = READY", 7),
        ("status = CREATING", 0),
    ] {
        let page = s
            .images()
            .list(ListImagesRequest {
                folder_id: "b1g".into(),
                filter: filter.into(),
                ..Default::default()
            })
            .await
            .expect(filter)
            .into_inner();
        assert_eq!(page.images.len(), want, "{filter}");
    }

    let latest = s
        .images()
        .get_latest_by_family(GetImageLatestByFamilyRequest {
            folder_id: "b1g".into(),
            family: "even".into(),
        })
        .await
        .expect("latest")
        .into_inner();
    assert_eq!(latest.name, "img-6");
    let err = s
        .images()
        .get_latest_by_family(GetImageLatestByFamilyRequest {
            folder_id: "other".into(),
            family: "even".into(),
        })
        .await
        .expect_err("none");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn delete_and_list_operations() {
    let s = TestServer::start().await;
    let img = create_ready(&s, create_req("b1g", "gone")).await;
    update(
        &s,
        UpdateImageRequest {
            image_id: img.id.clone(),
            update_mask: Some(FieldMask::new(["description"])),
            description: "x".into(),
            ..Default::default()
        },
    )
    .await
    .expect("update");
    let ops = s
        .images()
        .list_operations(ListImageOperationsRequest {
            image_id: img.id.clone(),
            ..Default::default()
        })
        .await
        .expect("ops")
        .into_inner();
    let names: Vec<&str> = ops
        .operations
        .iter()
        .map(|o| o.description.as_str())
        .collect();
    assert_eq!(names, ["Update image", "Create image"], "newest first");
    let first = s
        .images()
        .list_operations(ListImageOperationsRequest {
            image_id: img.id.clone(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("ops")
        .into_inner();
    let second = s
        .images()
        .list_operations(ListImageOperationsRequest {
            image_id: img.id.clone(),
            page_size: 1,
            page_token: first.next_page_token.clone(),
        })
        .await
        .expect("ops")
        .into_inner();
    assert_eq!(first.operations[0].id, ops.operations[0].id);
    assert_eq!(second.operations[0].id, ops.operations[1].id);
    assert!(second.next_page_token.is_empty());

    let op = s
        .images()
        .delete(DeleteImageRequest {
            image_id: img.id.clone(),
        })
        .await
        .expect("delete")
        .into_inner();
    assert!(op.done);
    let meta: DeleteImageMetadata = unpack(op.metadata.as_ref().expect("metadata"));
    assert_eq!(meta.image_id, img.id);
    match &op.result {
        Some(operation::Result::Response(any)) => {
            assert_eq!(any.type_url, "type.googleapis.com/google.protobuf.Empty")
        }
        other => panic!("{other:?}"),
    }
    let err = s
        .images()
        .get(GetImageRequest {
            image_id: img.id.clone(),
        })
        .await
        .expect_err("deleted");
    assert_eq!(err.code(), Code::NotFound);
    let err = s
        .images()
        .delete(DeleteImageRequest {
            image_id: img.id.clone(),
        })
        .await
        .expect_err("again");
    assert_eq!(err.code(), Code::NotFound);
    let fetched = s
        .operations()
        .get(GetOperationRequest {
            operation_id: op.id.clone(),
        })
        .await
        .expect("op stays")
        .into_inner();
    assert_eq!(fetched, op);
}

#[tokio::test]
async fn cancel_a_running_create_leaves_no_image() {
    let s = TestServer::start_with(Options {
        create_delay: std::time::Duration::from_secs(30),
        ..Default::default()
    })
    .await;
    let op = s
        .images()
        .create(create_req("b1g", "slow"))
        .await
        .expect("create")
        .into_inner();
    let meta: CreateImageMetadata = unpack(op.metadata.as_ref().expect("metadata"));
    let cancelled = s
        .operations()
        .cancel(CancelOperationRequest {
            operation_id: op.id.clone(),
        })
        .await
        .expect("cancel")
        .into_inner();
    assert!(cancelled.done);
    match &cancelled.result {
        Some(operation::Result::Error(e)) => assert_eq!(e.code, Code::Cancelled as i32),
        other => panic!("{other:?}"),
    }
    let err = s
        .images()
        .get(GetImageRequest {
            image_id: meta.image_id,
        })
        .await
        .expect_err("no image");
    assert_eq!(err.code(), Code::NotFound);
    let again = s
        .operations()
        .cancel(CancelOperationRequest {
            operation_id: op.id.clone(),
        })
        .await
        .expect_err("done");
    assert_eq!(again.code(), Code::FailedPrecondition);
    let stored = s
        .operations()
        .get(GetOperationRequest {
            operation_id: op.id,
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(stored, cancelled);
    let err = s
        .operations()
        .cancel(CancelOperationRequest {
            operation_id: "epdnothere".into(),
        })
        .await
        .expect_err("missing");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn idempotency_key_returns_the_same_operation() {
    let s = TestServer::start().await;
    let img = create_ready(&s, create_req("b1g", "idem")).await;
    let with_key = |req: UpdateImageRequest, key: &str| {
        let mut r = Request::new(req);
        r.metadata_mut()
            .insert("idempotency-key", key.parse().expect("ascii"));
        r
    };
    let req = UpdateImageRequest {
        image_id: img.id.clone(),
        update_mask: Some(FieldMask::new(["description"])),
        description: "one".into(),
        ..Default::default()
    };
    let first = s
        .images()
        .update(with_key(req.clone(), "k-1"))
        .await
        .expect("first")
        .into_inner();
    // Something else changes the image in between; the retry must not apply "one" again.
    update(
        &s,
        UpdateImageRequest {
            description: "two".into(),
            ..req.clone()
        },
    )
    .await
    .expect("other");
    let retry = s
        .images()
        .update(with_key(req.clone(), "k-1"))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retry, first);
    let now = s
        .images()
        .get(GetImageRequest {
            image_id: img.id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(now.description, "two");
    let err = s
        .images()
        .update(with_key(
            UpdateImageRequest {
                description: "three".into(),
                ..req
            },
            "k-1",
        ))
        .await
        .expect_err("reuse");
    assert_eq!(err.code(), Code::FailedPrecondition);

    let mut c = Request::new(create_req("b1g", "made-once"));
    c.metadata_mut()
        .insert("idempotency-key", "c-1".parse().expect("ascii"));
    let op1 = s.images().create(c).await.expect("create").into_inner();
    let mut c = Request::new(create_req("b1g", "made-once"));
    c.metadata_mut()
        .insert("idempotency-key", "c-1".parse().expect("ascii"));
    let op2 = s.images().create(c).await.expect("retry").into_inner();
    assert_eq!(op1.id, op2.id);
    let page = s
        .images()
        .list(ListImagesRequest {
            folder_id: "b1g".into(),
            filter: "name = 'made-once'".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.images.len(), 1);
}

/// An idempotency key belongs to its caller and method: the same key on another method, or
/// from another caller, is a request of its own (it acts, and never answers with the first
/// request's Operation); on the same method by the same caller it replays, or is refused when
/// the request differs.
#[tokio::test]
async fn an_idempotency_key_is_scoped_to_its_caller_and_method() {
    let s = TestServer::start().await;
    let img = create_ready(&s, create_req("b1g", "keyed")).await;
    let other = create_ready(&s, create_req("b1g", "other-callers")).await;
    fn keyed<T>(msg: T, token: &str) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut()
            .insert("idempotency-key", "same-key".parse().expect("ascii"));
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
        r
    }
    let describe = |id: &str, description: &str| UpdateImageRequest {
        image_id: id.into(),
        update_mask: Some(FieldMask::new(["description"])),
        description: description.into(),
        ..Default::default()
    };
    let first = s
        .images()
        .update(keyed(describe(&img.id, "first"), "alice"))
        .await
        .expect("update")
        .into_inner();
    assert!(first.done);

    // Another caller's key of the same name is theirs.
    let theirs = s
        .images()
        .update(keyed(describe(&other.id, "theirs"), "bob"))
        .await
        .expect("another caller's update")
        .into_inner();
    assert_ne!(theirs.id, first.id);
    assert_eq!(response::<Image>(&theirs).description, "theirs");

    // The same caller's key on another method: a Delete that deletes.
    let deleted = s
        .images()
        .delete(keyed(
            DeleteImageRequest {
                image_id: img.id.clone(),
            },
            "alice",
        ))
        .await
        .expect("delete")
        .into_inner();
    assert_ne!(deleted.id, first.id);
    let meta = deleted.metadata.as_ref().expect("metadata");
    assert_eq!(
        meta.type_url,
        "type.googleapis.com/yandex.cloud.compute.v1.DeleteImageMetadata"
    );
    let gone = s
        .images()
        .get(GetImageRequest {
            image_id: img.id.clone(),
        })
        .await
        .expect_err("the image was deleted");
    assert_eq!(gone.code(), Code::NotFound);

    // The same caller and method: a replay, or a refusal for another request.
    let replay = s
        .images()
        .update(keyed(describe(&img.id, "first"), "alice"))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replay.id, first.id);
    let err = s
        .images()
        .update(keyed(describe(&img.id, "second"), "alice"))
        .await
        .expect_err("another request under a used key");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("same-key"), "{}", err.message());
}

/// A name is held by one image of a folder at a time: a rename takes the new name and frees
/// the old one, and a delete frees its name.
#[tokio::test]
async fn renames_and_deletes_free_the_names_they_leave() {
    let s = TestServer::start().await;
    let img = create_ready(&s, create_req("b1g", "first")).await;
    let rename = |name: &str| UpdateImageRequest {
        image_id: img.id.clone(),
        update_mask: Some(FieldMask::new(["name"])),
        name: name.into(),
        ..Default::default()
    };
    update(&s, rename("second")).await.expect("rename");
    let err = s
        .images()
        .create(create_req("b1g", "second"))
        .await
        .expect_err("the new name is taken");
    assert_eq!(err.code(), Code::AlreadyExists);
    let again = create_ready(&s, create_req("b1g", "first")).await;
    assert_ne!(again.id, img.id, "the old name is free again");
    s.images()
        .delete(DeleteImageRequest {
            image_id: again.id.clone(),
        })
        .await
        .expect("delete");
    let third = create_ready(&s, create_req("b1g", "first")).await;
    assert_eq!(third.name, "first", "a deleted image's name is free");
    // A description-only update keeps the name taken.
    update(
        &s,
        UpdateImageRequest {
            update_mask: Some(FieldMask::new(["description"])),
            description: "same name".into(),
            ..rename("ignored")
        },
    )
    .await
    .expect("describe");
    let err = s
        .images()
        .create(create_req("b1g", "second"))
        .await
        .expect_err("still taken");
    assert_eq!(err.code(), Code::AlreadyExists);
}

/// `created_by` is a stable opaque subject derived from the bearer token (FNV-1a 64, whose
/// published vector for "a" is af63dc4c8601ec8c), never the token; `anonymous` without one.
/// An idempotency key is 1 to 128 characters.
#[tokio::test]
async fn operations_name_their_creator_and_keys_are_bounded() {
    let s = TestServer::start().await;
    let img = create_ready(&s, create_req("b1g", "who")).await;
    let update = |auth: Option<&str>, key: Option<String>| {
        let mut r = Request::new(UpdateImageRequest {
            image_id: img.id.clone(),
            update_mask: Some(FieldMask::new(["description"])),
            description: "by someone".into(),
            ..Default::default()
        });
        if let Some(a) = auth {
            r.metadata_mut()
                .insert("authorization", a.parse().expect("ascii"));
        }
        if let Some(k) = key {
            r.metadata_mut()
                .insert("idempotency-key", k.parse().expect("ascii"));
        }
        r
    };
    let by = |op: Operation| op.created_by;
    let op = s
        .images()
        .update(update(None, None))
        .await
        .expect("anonymous");
    assert_eq!(by(op.into_inner()), "anonymous");
    let op = s.images().update(update(Some("a"), None)).await.expect("a");
    assert_eq!(by(op.into_inner()), "ajeaf63dc4c8601ec8c");
    let one = s.images().update(update(Some("Bearer t1"), None)).await;
    let two = s.images().update(update(Some("Bearer t2"), None)).await;
    let (one, two) = (
        by(one.expect("t1").into_inner()),
        by(two.expect("t2").into_inner()),
    );
    assert_ne!(one, two, "two tokens, two subjects");
    assert!(!one.contains("t1"), "{one}");

    let longest = "k".repeat(128);
    s.images()
        .update(update(None, Some(longest)))
        .await
        .expect("a 128-character key");
    for bad in [String::new(), "k".repeat(129)] {
        let err = s
            .images()
            .update(update(None, Some(bad.clone())))
            .await
            .expect_err("a bad key");
        assert_eq!(err.code(), Code::InvalidArgument, "{} chars", bad.len());
        assert!(
            err.message().contains("idempotency-key"),
            "{}",
            err.message()
        );
    }
}

fn binding(role: &str, user: &str) -> AccessBinding {
    AccessBinding {
        role_id: role.into(),
        subject: Some(Subject {
            id: user.into(),
            r#type: "userAccount".into(),
        }),
    }
}

fn delta(action: AccessBindingAction, b: AccessBinding) -> AccessBindingDelta {
    AccessBindingDelta {
        action: action as i32,
        access_binding: Some(b),
    }
}

#[tokio::test]
async fn access_bindings_set_update_list() {
    let s = TestServer::start().await;
    let img = create_ready(&s, create_req("b1g", "shared")).await;
    let set = |bindings: Vec<AccessBinding>| SetAccessBindingsRequest {
        resource_id: img.id.clone(),
        access_bindings: bindings,
    };
    let op = s
        .images()
        .set_access_bindings(set(vec![binding("viewer", "u1"), binding("editor", "u2")]))
        .await
        .expect("set")
        .into_inner();
    let meta: SetAccessBindingsMetadata = unpack(op.metadata.as_ref().expect("metadata"));
    assert_eq!(meta.resource_id, img.id);
    let result: AccessBindingsOperationResult = response(&op);
    assert_eq!(result.effective_deltas.len(), 2);

    let op = s
        .images()
        .set_access_bindings(set(vec![binding("viewer", "u1"), binding("admin", "u3")]))
        .await
        .expect("set")
        .into_inner();
    let result: AccessBindingsOperationResult = response(&op);
    assert_eq!(
        result.effective_deltas,
        [
            delta(AccessBindingAction::Remove, binding("editor", "u2")),
            delta(AccessBindingAction::Add, binding("admin", "u3"))
        ]
    );

    let upd = UpdateAccessBindingsRequest {
        resource_id: img.id.clone(),
        access_binding_deltas: vec![
            delta(AccessBindingAction::Add, binding("viewer", "u1")), // already there: no effect
            delta(AccessBindingAction::Remove, binding("editor", "u9")), // absent: no effect
            delta(AccessBindingAction::Add, binding("viewer", "u4")),
            delta(AccessBindingAction::Remove, binding("admin", "u3")),
        ],
    };
    let op = s
        .images()
        .update_access_bindings(upd)
        .await
        .expect("update")
        .into_inner();
    let result: AccessBindingsOperationResult = response(&op);
    assert_eq!(
        result.effective_deltas,
        [
            delta(AccessBindingAction::Add, binding("viewer", "u4")),
            delta(AccessBindingAction::Remove, binding("admin", "u3"))
        ]
    );

    let list = |token: String| ListAccessBindingsRequest {
        resource_id: img.id.clone(),
        page_size: 1,
        page_token: token,
    };
    let p1 = s
        .images()
        .list_access_bindings(list(String::new()))
        .await
        .expect("list")
        .into_inner();
    let p2 = s
        .images()
        .list_access_bindings(list(p1.next_page_token.clone()))
        .await
        .expect("list")
        .into_inner();
    assert!(p2.next_page_token.is_empty());
    let all: BTreeSet<(String, String)> = p1
        .access_bindings
        .iter()
        .chain(&p2.access_bindings)
        .map(|b| {
            (
                b.role_id.clone(),
                b.subject.as_ref().expect("subject").id.clone(),
            )
        })
        .collect();
    assert_eq!(
        all,
        BTreeSet::from([
            ("viewer".into(), "u1".into()),
            ("viewer".into(), "u4".into())
        ])
    );

    let bad = UpdateAccessBindingsRequest {
        resource_id: img.id.clone(),
        access_binding_deltas: vec![],
    };
    let err = s
        .images()
        .update_access_bindings(bad)
        .await
        .expect_err("empty");
    assert_eq!(violations(&err), ["access_binding_deltas"]);
    let bad = UpdateAccessBindingsRequest {
        resource_id: img.id.clone(),
        access_binding_deltas: vec![AccessBindingDelta {
            action: 0,
            access_binding: Some(binding("", "u")),
        }],
    };
    let err = s
        .images()
        .update_access_bindings(bad)
        .await
        .expect_err("invalid");
    assert_eq!(
        violations(&err),
        [
            "access_binding_deltas[0].action",
            "access_binding_deltas[0].access_binding.role_id"
        ]
    );
    let err = s
        .images()
        .set_access_bindings(SetAccessBindingsRequest {
            resource_id: "fd8none".into(),
            access_bindings: vec![],
        })
        .await
        .expect_err("missing");
    assert_eq!(err.code(), Code::NotFound);
}

/// Runs one "process life" on `dir` in its own runtime: dropping the runtime ends every task,
/// so the store file is closed before the next life opens it.
fn life<F, Fut, T>(dir: &std::path::Path, f: F) -> T
where
    F: FnOnce(TestServer) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let options = Options {
            create_delay: std::time::Duration::from_secs(3600),
            ..Default::default()
        };
        f(TestServer::start_in(dir, options).await).await
    })
}

#[test]
fn everything_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ids = life(dir.path(), |s| async move {
        let mut images = s.images();
        let op = images
            .create(create_req("b1g", "left-running"))
            .await
            .expect("create")
            .into_inner();
        assert!(!op.done);
        let meta: CreateImageMetadata = unpack(op.metadata.as_ref().expect("metadata"));
        let mut req = create_req("b1g", "durable");
        req.source = Some(create_image_request::Source::SnapshotId("snap".into()));
        let op2 = images.create(req).await.expect("create").into_inner();
        let meta2: CreateImageMetadata = unpack(op2.metadata.as_ref().expect("metadata"));
        let labels = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let upd = UpdateImageRequest {
            image_id: meta2.image_id.clone(),
            update_mask: Some(FieldMask::new(["labels"])),
            labels,
            ..Default::default()
        };
        let up = images.update(upd).await.expect("update").into_inner();
        s.stop().await;
        vec![op.id, meta.image_id, meta2.image_id, up.id]
    });
    life(dir.path(), |s| async move {
        let op: Operation = s
            .operations()
            .get(GetOperationRequest {
                operation_id: ids[0].clone(),
            })
            .await
            .expect("op")
            .into_inner();
        assert!(
            op.done,
            "a create left running by the last process is finished on restart"
        );
        let img: Image = response(&op);
        assert_eq!(
            (img.id.as_str(), img.status),
            (ids[1].as_str(), image::Status::Ready as i32)
        );
        let durable = s
            .images()
            .get(GetImageRequest {
                image_id: ids[2].clone(),
            })
            .await
            .expect("image")
            .into_inner();
        assert_eq!(durable.labels.get("k").map(String::as_str), Some("v"));
        let up = s
            .operations()
            .get(GetOperationRequest {
                operation_id: ids[3].clone(),
            })
            .await
            .expect("op")
            .into_inner();
        assert!(up.done && up.created_at.is_some_and(|t: Timestamp| t.seconds > 0));
        s.stop().await;
    });
}
