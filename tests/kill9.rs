//! Crash safety: the real binary (`serve`) under concurrent REST and gRPC mutations (create,
//! update, access bindings, delete; half of them with idempotency keys) is killed with SIGKILL
//! at random moments and restarted on the same data directory, at least 20 times. After every
//! restart: every acknowledged mutation is there with its final state, every acknowledged
//! Operation exists and is done, and idempotent retries return the original Operation.
//! Prints `cycles=…, acknowledged writes=…, lost writes=…`; lost must be 0.
//!
//! `cargo test --test kill9` drives the debug binary; `cargo test --release --test kill9` the
//! release one. `KILL9_CYCLES` and `KILL9_SEED` change the run.

use std::collections::{BTreeSet, HashMap};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use compute_gateway::json::FieldMask;
use compute_gateway::pb::yandex::cloud::access::{
    AccessBinding, ListAccessBindingsRequest, SetAccessBindingsRequest, Subject,
};
use compute_gateway::pb::yandex::cloud::compute::v1::image_service_client::ImageServiceClient;
use compute_gateway::pb::yandex::cloud::compute::v1::{
    CreateImageMetadata, CreateImageRequest, DeleteImageRequest, GetImageRequest,
    UpdateImageRequest, create_image_request,
};
use compute_gateway::pb::yandex::cloud::operation::GetOperationRequest;
use compute_gateway::pb::yandex::cloud::operation::operation_service_client::OperationServiceClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

/// A small deterministic generator, so a failing run can be replayed with its seed.
struct Rng(AtomicU64);

impl Rng {
    fn next(&self, n: u64) -> u64 {
        let mut x = self.0.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0.store(x, Ordering::Relaxed);
        x % n
    }
}

struct Server {
    child: Child,
    grpc: String,
    http: String,
}

fn start(dir: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_compute-gateway"))
        .args([
            "serve",
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--ready-file",
            "-",
        ])
        .args(["--create-delay-ms", "30", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the binary");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let ready: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
    Server {
        child,
        grpc: ready["grpc"].as_str().expect("grpc").to_string(),
        http: ready["http"].as_str().expect("http").to_string(),
    }
}

/// What an image must look like: its description and binding roles, or gone.
#[derive(Clone, Debug, PartialEq)]
enum State {
    Exists {
        description: String,
        roles: BTreeSet<String>,
    },
    Gone,
}

#[derive(Default)]
struct ImageTrack {
    acked: Option<State>,
    /// A mutation sent but not acknowledged when the process died: it may or may not have landed.
    pending: Option<State>,
}

/// A mutation retried after the restart with its idempotency key.
#[derive(Clone)]
enum Retry {
    Update {
        image_id: String,
        description: String,
    },
    Create {
        folder: String,
        name: String,
    },
}

#[derive(Default)]
struct Ledger {
    images: HashMap<String, ImageTrack>,
    acked_ops: Vec<String>,
    keyed: Vec<(String, Retry, String)>,
    acknowledged: u64,
}

struct Clients {
    http: reqwest::Client,
    rest: String,
    images: ImageServiceClient<Channel>,
}

impl Clients {
    fn new(s: &Server) -> Self {
        let channel = Channel::from_shared(format!("http://{}", s.grpc))
            .expect("url")
            .connect_lazy();
        Self {
            http: reqwest::Client::new(),
            rest: format!("http://{}", s.http),
            images: ImageServiceClient::new(channel),
        }
    }
}

fn roles(bindings: &[AccessBinding]) -> BTreeSet<String> {
    bindings.iter().map(|b| b.role_id.clone()).collect()
}

fn binding(role: &str) -> AccessBinding {
    AccessBinding {
        role_id: role.into(),
        subject: Some(Subject {
            id: "u1".into(),
            r#type: "userAccount".into(),
        }),
    }
}

/// Sends a REST mutation, with its `Idempotency-Key` if any, and returns the JSON reply;
/// `None` when the server did not answer (it may have been killed mid-request).
async fn rest_operation(req: reqwest::RequestBuilder, key: Option<&str>) -> Option<Value> {
    let req = match key {
        Some(k) => req.header("Idempotency-Key", k),
        None => req,
    };
    req.send().await.ok()?.json::<Value>().await.ok()
}

fn with_key<T>(msg: T, key: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(k) = key {
        r.metadata_mut()
            .insert("idempotency-key", k.parse().expect("ascii key"));
    }
    r
}

/// One client's run of mutations on its own images until a request fails (the kill).
async fn worker(
    id: usize,
    cycle: usize,
    c: Clients,
    rng: Arc<Rng>,
    ledger: Arc<Mutex<Ledger>>,
    mut mine: Vec<String>,
) -> Vec<String> {
    let folder = format!("b1gw{id}");
    for step in 0usize.. {
        let use_rest = rng.next(2) == 0;
        let key =
            (rng.next(2) == 0).then(|| format!("c{cycle}-w{id}-s{step}-{}", rng.next(1 << 30)));
        let action = if mine.len() < 2 { 0 } else { rng.next(4) };
        match action {
            0 => {
                let name = format!("w{id}-c{cycle}-s{step}");
                let op_id = if use_rest {
                    let req = c.http.post(format!("{}/compute/v1/images", c.rest)).body(json!({"folderId": folder, "name": name, "diskId": "d", "description": "v0"}).to_string());
                    let Some(op) = rest_operation(req, key.as_deref()).await else {
                        return mine;
                    };
                    let (Some(op_id), Some(image)) =
                        (op["id"].as_str(), op["metadata"]["imageId"].as_str())
                    else {
                        return mine;
                    };
                    mine.push(image.to_string());
                    op_id.to_string()
                } else {
                    let msg = CreateImageRequest {
                        folder_id: folder.clone(),
                        name: name.clone(),
                        description: "v0".into(),
                        source: Some(create_image_request::Source::DiskId("d".into())),
                        ..Default::default()
                    };
                    let mut images = c.images.clone();
                    let Ok(op) = images.create(with_key(msg, key.as_deref())).await else {
                        return mine;
                    };
                    let op = op.into_inner();
                    let meta: CreateImageMetadata = op
                        .metadata
                        .as_ref()
                        .and_then(|m| m.unpack().ok().flatten())
                        .expect("create metadata");
                    mine.push(meta.image_id);
                    op.id
                };
                let image = mine.last().expect("just pushed").clone();
                let mut l = ledger.lock().expect("ledger");
                l.images.entry(image).or_default().acked = Some(State::Exists {
                    description: "v0".into(),
                    roles: BTreeSet::new(),
                });
                l.acked_ops.push(op_id.clone());
                l.acknowledged += 1;
                if let Some(k) = key {
                    l.keyed.push((
                        k,
                        Retry::Create {
                            folder: folder.clone(),
                            name,
                        },
                        op_id,
                    ));
                }
            }
            1 | 2 => {
                let image = mine[rng.next(mine.len() as u64) as usize].clone();
                let description = format!("c{cycle}-s{step}");
                let target = {
                    let mut l = ledger.lock().expect("ledger");
                    let t = l.images.entry(image.clone()).or_default();
                    let Some(State::Exists { roles, .. }) = t.acked.clone() else {
                        continue;
                    };
                    let (target, roles) = if action == 1 {
                        (
                            State::Exists {
                                description: description.clone(),
                                roles: roles.clone(),
                            },
                            roles,
                        )
                    } else {
                        let mut r = roles.clone();
                        r.insert(format!("role-{step}"));
                        (
                            State::Exists {
                                description: match &t.acked {
                                    Some(State::Exists { description, .. }) => description.clone(),
                                    _ => unreachable!(),
                                },
                                roles: r.clone(),
                            },
                            r,
                        )
                    };
                    let _ = roles;
                    t.pending = Some(target.clone());
                    target
                };
                let State::Exists {
                    roles: new_roles, ..
                } = &target
                else {
                    unreachable!()
                };
                let result: Option<String> = if action == 1 {
                    if use_rest {
                        let req = c
                            .http
                            .patch(format!("{}/compute/v1/images/{image}", c.rest))
                            .body(
                                json!({"updateMask": "description", "description": description})
                                    .to_string(),
                            );
                        rest_operation(req, key.as_deref())
                            .await
                            .and_then(|op| op["id"].as_str().map(str::to_owned))
                    } else {
                        let msg = UpdateImageRequest {
                            image_id: image.clone(),
                            update_mask: Some(FieldMask::new(["description"])),
                            description: description.clone(),
                            ..Default::default()
                        };
                        let mut images = c.images.clone();
                        images
                            .update(with_key(msg, key.as_deref()))
                            .await
                            .ok()
                            .map(|op| op.into_inner().id)
                    }
                } else {
                    let bindings: Vec<AccessBinding> =
                        new_roles.iter().map(|r| binding(r)).collect();
                    let msg = SetAccessBindingsRequest {
                        resource_id: image.clone(),
                        access_bindings: bindings,
                    };
                    let mut images = c.images.clone();
                    images
                        .set_access_bindings(with_key(msg, None))
                        .await
                        .ok()
                        .map(|op| op.into_inner().id)
                };
                let Some(op_id) = result else { return mine };
                let mut l = ledger.lock().expect("ledger");
                let t = l.images.get_mut(&image).expect("tracked");
                t.acked = t.pending.take();
                l.acked_ops.push(op_id.clone());
                l.acknowledged += 1;
                if let (Some(k), 1) = (key, action) {
                    l.keyed.push((
                        k,
                        Retry::Update {
                            image_id: image.clone(),
                            description,
                        },
                        op_id,
                    ));
                }
            }
            _ => {
                let image = mine.swap_remove(rng.next(mine.len() as u64) as usize);
                ledger
                    .lock()
                    .expect("ledger")
                    .images
                    .entry(image.clone())
                    .or_default()
                    .pending = Some(State::Gone);
                let op_id = if use_rest {
                    let req = c
                        .http
                        .delete(format!("{}/compute/v1/images/{image}", c.rest));
                    rest_operation(req, None)
                        .await
                        .and_then(|op| op["id"].as_str().map(str::to_owned))
                } else {
                    let mut images = c.images.clone();
                    images
                        .delete(DeleteImageRequest {
                            image_id: image.clone(),
                        })
                        .await
                        .ok()
                        .map(|op| op.into_inner().id)
                };
                let Some(op_id) = op_id else { return mine };
                let mut l = ledger.lock().expect("ledger");
                let t = l.images.get_mut(&image).expect("tracked");
                t.acked = t.pending.take();
                l.acked_ops.push(op_id);
                l.acknowledged += 1;
            }
        }
    }
    mine
}

async fn actual(images: &mut ImageServiceClient<Channel>, id: &str) -> State {
    match images
        .get(GetImageRequest {
            image_id: id.into(),
        })
        .await
    {
        Err(s) if s.code() == tonic::Code::NotFound => State::Gone,
        Err(s) => panic!("get {id}: {s}"),
        Ok(img) => {
            let b = images
                .list_access_bindings(ListAccessBindingsRequest {
                    resource_id: id.into(),
                    page_size: 1000,
                    page_token: String::new(),
                })
                .await
                .expect("bindings")
                .into_inner();
            State::Exists {
                description: img.into_inner().description,
                roles: roles(&b.access_bindings),
            }
        }
    }
}

/// Checks everything acknowledged so far against the restarted server; returns lost writes.
async fn verify(s: &Server, ledger: &Mutex<Ledger>, rng: &Rng) -> u64 {
    let channel = Channel::from_shared(format!("http://{}", s.grpc))
        .expect("url")
        .connect_lazy();
    let mut images = ImageServiceClient::new(channel.clone());
    let mut ops = OperationServiceClient::new(channel);
    type Tracked = Vec<(String, Option<State>, Option<State>)>;
    let (tracked, acked_ops, keyed) = {
        let l = ledger.lock().expect("ledger");
        let tracked: Tracked = l
            .images
            .iter()
            .map(|(k, t)| (k.clone(), t.acked.clone(), t.pending.clone()))
            .collect();
        (tracked, l.acked_ops.clone(), l.keyed.clone())
    };
    let mut lost = 0;
    for (id, acked, pending) in tracked {
        let now = actual(&mut images, &id).await;
        let mut l = ledger.lock().expect("ledger");
        let t = l.images.get_mut(&id).expect("tracked");
        if pending.as_ref() == Some(&now) {
            t.acked = Some(now); // the unacknowledged write landed; that is allowed
        } else if acked.is_some() && acked != Some(now.clone()) {
            eprintln!("LOST: image {id}: acknowledged {acked:?}, found {now:?}");
            lost += 1;
        }
        t.pending = None;
    }
    for id in &acked_ops {
        match ops
            .get(GetOperationRequest {
                operation_id: id.clone(),
            })
            .await
        {
            Ok(op) => assert!(
                op.into_inner().done,
                "operation {id} still running after a restart"
            ),
            Err(e) => {
                eprintln!("LOST: operation {id}: {e}");
                lost += 1;
            }
        }
    }
    // Retry a sample of keyed mutations, over gRPC and REST alternately: same Operation back.
    let http = reqwest::Client::new();
    for _ in 0..keyed.len().min(6) {
        let (key, retry, op_id) = &keyed[rng.next(keyed.len() as u64) as usize];
        let got = match (retry, rng.next(2)) {
            (
                Retry::Update {
                    image_id,
                    description,
                },
                0,
            ) => {
                let msg = UpdateImageRequest {
                    image_id: image_id.clone(),
                    update_mask: Some(FieldMask::new(["description"])),
                    description: description.clone(),
                    ..Default::default()
                };
                images
                    .update(with_key(msg, Some(key)))
                    .await
                    .map(|o| o.into_inner().id)
                    .map_err(|e| e.to_string())
            }
            (
                Retry::Update {
                    image_id,
                    description,
                },
                _,
            ) => {
                let resp = http
                    .patch(format!("http://{}/compute/v1/images/{image_id}", s.http))
                    .header("Idempotency-Key", key)
                    .body(
                        json!({"updateMask": "description", "description": description})
                            .to_string(),
                    )
                    .send()
                    .await
                    .expect("REST retry");
                let op: Value = resp.json().await.expect("JSON");
                Ok(op["id"].as_str().unwrap_or_default().to_string())
            }
            (Retry::Create { folder, name }, _) => {
                let msg = CreateImageRequest {
                    folder_id: folder.clone(),
                    name: name.clone(),
                    description: "v0".into(),
                    source: Some(create_image_request::Source::DiskId("d".into())),
                    ..Default::default()
                };
                images
                    .create(with_key(msg, Some(key)))
                    .await
                    .map(|o| o.into_inner().id)
                    .map_err(|e| e.to_string())
            }
        };
        assert_eq!(
            got.as_deref(),
            Ok(op_id.as_str()),
            "retry with idempotency key {key}"
        );
    }
    lost
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let cycles: usize = std::env::var("KILL9_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("KILL9_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(1)
        });
    eprintln!("kill9: seed {seed}");
    let rng = Arc::new(Rng(AtomicU64::new(seed)));
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut lost = 0;
    let mut owned: Vec<Vec<String>> = vec![Vec::new(); 8];
    for cycle in 0..cycles {
        let mut server = start(dir.path());
        rt.block_on(async {
            if cycle > 0 {
                lost += verify(&server, &ledger, &rng).await;
            }
            // Each worker goes on with the images it owns that (now) exist.
            let handles: Vec<_> = owned
                .iter()
                .enumerate()
                .map(|(w, mine)| {
                    let mine: Vec<String> = {
                        let l = ledger.lock().expect("ledger");
                        mine.iter()
                            .filter(|id| {
                                matches!(
                                    l.images.get(*id).and_then(|t| t.acked.clone()),
                                    Some(State::Exists { .. })
                                )
                            })
                            .cloned()
                            .collect()
                    };
                    tokio::spawn(worker(
                        w,
                        cycle,
                        Clients::new(&server),
                        rng.clone(),
                        ledger.clone(),
                        mine,
                    ))
                })
                .collect();
            tokio::time::sleep(Duration::from_millis(100 + rng.next(300))).await;
            server.child.kill().expect("SIGKILL");
            server.child.wait().expect("reaped");
            for (w, h) in handles.into_iter().enumerate() {
                owned[w] = h.await.expect("worker");
            }
        });
    }
    let server = start(dir.path());
    rt.block_on(async { lost += verify(&server, &ledger, &rng).await });
    let mut server = server;
    server.child.kill().expect("kill");
    server.child.wait().expect("reaped");
    let acknowledged = ledger.lock().expect("ledger").acknowledged;
    println!("cycles={cycles}, acknowledged writes={acknowledged}, lost writes={lost}");
    assert!(
        acknowledged > cycles as u64,
        "the load did too little to mean anything: {acknowledged}"
    );
    assert_eq!(lost, 0, "acknowledged writes were lost (seed {seed})");
}
