//! 64 concurrent clients, half REST and half gRPC: no lost update on one shared image or on
//! many images (the final state is the last acknowledged write in the store's commit order,
//! which is the order of the Operations' timestamps: writes are serialised), no lost update
//! when clients change *different* fields of one image (a read-modify-write outside the write
//! transaction would lose them), no duplicate IDs, and pagination while creates are running
//! has no duplicates or gaps.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::TestServer;
use compute_gateway::json::FieldMask;
use compute_gateway::pb::yandex::cloud::compute::v1::{
    CreateImageMetadata, CreateImageRequest, GetImageRequest, ListImagesRequest,
    UpdateImageRequest, create_image_request,
};
use serde_json::{Value, json};

const CLIENTS: usize = 64;
const UPDATES: usize = 8;

struct Ack {
    image: String,
    description: String,
    /// `modified_at` of the Operation, set inside the serialised write transaction.
    committed_at: String,
}

async fn create(s: &TestServer, folder: &str, name: &str) -> String {
    let req = CreateImageRequest {
        folder_id: folder.into(),
        name: name.into(),
        source: Some(create_image_request::Source::DiskId("d".into())),
        ..Default::default()
    };
    let op = s.images().create(req).await.expect("create").into_inner();
    let meta: CreateImageMetadata = common::unpack(op.metadata.as_ref().expect("metadata"));
    meta.image_id
}

/// Client `i` updates `image`: odd clients over REST, even ones over gRPC.
async fn client(s: &TestServer, i: usize, images: Vec<String>) -> Vec<Ack> {
    let http = reqwest::Client::new();
    let mut acks = Vec::new();
    for n in 0..UPDATES {
        let image = images[n % images.len()].clone();
        let description = format!("client-{i}-update-{n}");
        let (ts, got) = if i % 2 == 1 {
            let op: Value = http
                .patch(format!("{}/compute/v1/images/{image}", s.http()))
                .body(json!({"updateMask": "description", "description": description}).to_string())
                .send()
                .await
                .expect("send")
                .json()
                .await
                .expect("json");
            (
                op["modifiedAt"].as_str().expect("modifiedAt").to_string(),
                op["response"]["description"]
                    .as_str()
                    .expect("response")
                    .to_string(),
            )
        } else {
            let req = UpdateImageRequest {
                image_id: image.clone(),
                update_mask: Some(FieldMask::new(["description"])),
                description: description.clone(),
                ..Default::default()
            };
            let op = s.images().update(req).await.expect("update").into_inner();
            let img: compute_gateway::pb::yandex::cloud::compute::v1::Image = common::response(&op);
            let ts = op
                .modified_at
                .expect("modified_at")
                .to_rfc3339()
                .expect("renders");
            (ts, img.description)
        };
        assert_eq!(
            got, description,
            "the Operation returns the image as this update left it"
        );
        acks.push(Ack {
            image,
            description,
            committed_at: ts,
        });
    }
    acks
}

fn sortable(ts: &str) -> compute_gateway::json::Timestamp {
    compute_gateway::json::Timestamp::from_rfc3339(ts).expect("valid timestamp")
}

async fn check_last_write_wins(s: &TestServer, acks: Vec<Ack>) {
    let mut last: HashMap<String, &Ack> = HashMap::new();
    let mut stamps = BTreeSet::new();
    for a in &acks {
        assert!(
            stamps.insert((sortable(&a.committed_at), a.image.clone())),
            "two commits at one instant on {}",
            a.image
        );
        let e = last.entry(a.image.clone()).or_insert(a);
        if sortable(&a.committed_at) > sortable(&e.committed_at) {
            *e = a;
        }
    }
    for (image, ack) in last {
        let got = s
            .images()
            .get(GetImageRequest {
                image_id: image.clone(),
            })
            .await
            .expect("get")
            .into_inner();
        assert_eq!(
            got.description, ack.description,
            "image {image}: final state is not the last acknowledged write"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_clients_on_one_image_lose_nothing() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let image = create(&s, "b1g", "shared").await;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let s = s.clone();
            let image = image.clone();
            tokio::spawn(async move { client(&s, i, vec![image]).await })
        })
        .collect();
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await.expect("client"));
    }
    assert_eq!(acks.len(), CLIENTS * UPDATES);
    check_last_write_wins(&s, acks).await;
    let ops = s
        .images()
        .list_operations(
            compute_gateway::pb::yandex::cloud::compute::v1::ListImageOperationsRequest {
                image_id: image,
                page_size: 1000,
                page_token: String::new(),
            },
        )
        .await
        .expect("ops")
        .into_inner();
    assert_eq!(
        ops.operations.len(),
        CLIENTS * UPDATES + 1,
        "every update recorded its Operation, plus the create"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_clients_on_their_own_images_lose_nothing_and_ids_are_unique() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let mine = vec![
                    create(&s, "b1g", &format!("own-{i}-a")).await,
                    create(&s, "b1g", &format!("own-{i}-b")).await,
                ];
                (mine.clone(), client(&s, i, mine).await)
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    let mut acks = Vec::new();
    for t in tasks {
        let (mine, a) = t.await.expect("client");
        for id in mine {
            assert!(ids.insert(id.clone()), "duplicate image id {id}");
        }
        acks.extend(a);
    }
    assert_eq!(ids.len(), CLIENTS * 2);
    check_last_write_wins(&s, acks).await;
}

/// The updatable fields, each with a value for client `i`'s update `n`: (mask path, REST JSON
/// body, the value as it reads back).
const FIELDS: [&str; 4] = ["name", "description", "labels", "min_disk_size"];

fn field_update(field: &str, i: usize, n: usize) -> (Value, String) {
    match field {
        "name" => {
            let v = format!("n-{i}-{n}");
            (json!({"updateMask": "name", "name": v}), v)
        }
        "description" => {
            let v = format!("client {i} update {n}");
            (json!({"updateMask": "description", "description": v}), v)
        }
        "labels" => {
            let v = format!("c{i}-{n}");
            (json!({"updateMask": "labels", "labels": {"by": v}}), v)
        }
        _ => {
            let v = ((4 + i * UPDATES + n) as i64) << 20;
            (
                json!({"updateMask": "minDiskSize", "minDiskSize": v.to_string()}),
                v.to_string(),
            )
        }
    }
}

/// How `field` reads back from an image.
fn field_of(img: &compute_gateway::pb::yandex::cloud::compute::v1::Image, field: &str) -> String {
    match field {
        "name" => img.name.clone(),
        "description" => img.description.clone(),
        "labels" => img.labels.get("by").cloned().unwrap_or_default(),
        _ => img.min_disk_size.to_string(),
    }
}

fn field_of_json(img: &Value, field: &str) -> String {
    let v = match field {
        "name" => &img["name"],
        "description" => &img["description"],
        "labels" => &img["labels"]["by"],
        _ => &img["minDiskSize"],
    };
    v.as_str().unwrap_or_default().to_string()
}

/// Many clients each change one field of one shared image (every field by clients over both
/// protocols): the last acknowledged value of each field survives the others' writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_to_different_fields_of_one_image_all_survive() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let image = create(&s, "b1g", "shared").await;
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let s = s.clone();
            let image = image.clone();
            tokio::spawn(async move {
                let field = FIELDS[i % FIELDS.len()];
                let rest = (i / FIELDS.len()) % 2 == 1;
                let http = reqwest::Client::new();
                let mut acks = Vec::new();
                for n in 0..UPDATES {
                    let (body, value) = field_update(field, i, n);
                    let (ts, got) = if rest {
                        let op: Value = http
                            .patch(format!("{}/compute/v1/images/{image}", s.http()))
                            .body(body.to_string())
                            .send()
                            .await
                            .expect("send")
                            .json()
                            .await
                            .expect("json");
                        assert_eq!(op["done"], true, "{op}");
                        (
                            op["modifiedAt"].as_str().expect("modifiedAt").to_string(),
                            field_of_json(&op["response"], field),
                        )
                    } else {
                        let mut req = UpdateImageRequest {
                            image_id: image.clone(),
                            update_mask: Some(FieldMask::new([field])),
                            ..Default::default()
                        };
                        match field {
                            "name" => req.name = value.clone(),
                            "description" => req.description = value.clone(),
                            "labels" => {
                                req.labels = [("by".to_string(), value.clone())].into();
                            }
                            _ => req.min_disk_size = value.parse().expect("size"),
                        }
                        let op = s.images().update(req).await.expect("update").into_inner();
                        let img: compute_gateway::pb::yandex::cloud::compute::v1::Image =
                            common::response(&op);
                        let ts = op.modified_at.expect("modified_at").to_rfc3339();
                        (ts.expect("renders"), field_of(&img, field))
                    };
                    assert_eq!(got, value, "the Operation shows this update's {field}");
                    acks.push((field, sortable(&ts), value));
                }
                acks
            })
        })
        .collect();
    let mut last: HashMap<&str, (compute_gateway::json::Timestamp, String)> = HashMap::new();
    for t in tasks {
        for (field, ts, value) in t.await.expect("client") {
            let e = last.entry(field).or_insert((ts, value.clone()));
            if ts > e.0 {
                *e = (ts, value);
            }
        }
    }
    assert_eq!(last.len(), FIELDS.len());
    let got = s
        .images()
        .get(GetImageRequest {
            image_id: image.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    for (field, (_, value)) in last {
        assert_eq!(
            field_of(&got, field),
            value,
            "{field}: the last acknowledged value was lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pagination_during_concurrent_creates_has_no_duplicates_or_gaps() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let mut before = BTreeSet::new();
    for i in 0..40 {
        before.insert(create(&s, "b1g", &format!("before-{i:02}")).await);
    }
    // Writers create as the walk lets them: after each page the walk grants two creates and
    // fetches the next page while they run, then waits for them before granting more. So
    // creates land both between page fetches (the tokens must still hold) and during them.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let (acked_tx, mut acked) = tokio::sync::watch::channel(0usize);
    let acked_tx = std::sync::Arc::new(acked_tx);
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let (s, gate, acked_tx) = (s.clone(), gate.clone(), acked_tx.clone());
            tokio::spawn(async move {
                let mut made = Vec::new();
                for n in 0..6 {
                    gate.acquire().await.expect("gate open").forget();
                    made.push(create(&s, "b1g", &format!("during-{w}-{n}")).await);
                    acked_tx.send_modify(|a| *a += 1);
                }
                made
            })
        })
        .collect();
    let mut granted = 0;
    for (walk, order) in ["", "createdAt desc", "name"].into_iter().enumerate() {
        // A third of the creates for each walk.
        let budget = (walk + 1) * 16 * 6 / 3;
        let at_start = *acked.borrow();
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let req = ListImagesRequest {
                folder_id: "b1g".into(),
                page_size: 3,
                page_token: token.clone(),
                order_by: order.into(),
                ..Default::default()
            };
            let page = s.images().list(req).await.expect("list").into_inner();
            seen.extend(page.images.into_iter().map(|i| i.id));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
            acked
                .wait_for(|a| *a >= granted)
                .await
                .expect("writers run");
            if granted + 2 <= budget {
                gate.add_permits(2);
                granted += 2;
            }
        }
        acked
            .wait_for(|a| *a >= granted)
            .await
            .expect("writers run");
        assert!(
            *acked.borrow() > at_start,
            "order {order:?}: no create was acknowledged during the walk"
        );
        let unique: BTreeSet<_> = seen.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "order {order:?}: duplicates in pagination"
        );
        assert!(
            before.is_subset(&unique),
            "order {order:?}: images that existed before the walk are missing"
        );
    }
    gate.add_permits(16 * 6 - granted);
    let mut all = before.clone();
    for w in writers {
        for id in w.await.expect("writer") {
            assert!(all.insert(id.clone()), "duplicate id {id}");
        }
    }
}
