//! Crash safety: the real binary (`serve`) under concurrent REST and gRPC mutations of every
//! kind (create, update, set access bindings, delete; half of each with an idempotency key) is
//! killed with SIGKILL at random moments and restarted on the same data directory, at least 20
//! times. Each cycle runs until every kind of mutation has been acknowledged a few times, then
//! lasts a random while longer before the kill.
//!
//! Any application error while the server is alive fails the test at once: only a failure
//! after the kill counts as the kill. After every restart, against a ledger of what was
//! acknowledged (and what was sent but not acknowledged, which may or may not have landed):
//! - each folder is listed whole: no phantom image (one nobody created), no id or name twice;
//! - each image is compared whole: name, description, labels and its access bindings (roles
//!   and subjects), or its absence;
//! - each Operation acknowledged since the last check is done, with a response and not an
//!   error (a create's names its image, an update's shows the update);
//! - each keyed mutation acknowledged since the last check is replayed with its key, over gRPC
//!   and REST in turn, and must return the same Operation.
//!
//! Prints `cycles=…, acknowledged writes=…, lost writes=…` and the count of each kind; lost
//! must be 0.
//!
//! Its limit: SIGKILL ends the process but keeps the kernel's page cache, so a write that
//! reached the page cache and was never fsynced survives it. This test cannot see a missing
//! fsync; power loss is out of its reach (README, "Durability").
//!
//! `cargo test --test kill9` drives the debug binary; `cargo test --release --test kill9` the
//! release one. `KILL9_CYCLES` and `KILL9_SEED` change the run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
mod common;

use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use compute_gateway::json::FieldMask;
use compute_gateway::pb::yandex::cloud::access::{
    AccessBinding, ListAccessBindingsRequest, SetAccessBindingsRequest, Subject,
};
use compute_gateway::pb::yandex::cloud::compute::v1::image_service_client::ImageServiceClient;
use compute_gateway::pb::yandex::cloud::compute::v1::{
    CreateImageMetadata, CreateImageRequest, DeleteImageRequest, Image, ListImagesRequest,
    UpdateImageRequest, create_image_request,
};
use compute_gateway::pb::yandex::cloud::operation::operation_service_client::OperationServiceClient;
use compute_gateway::pb::yandex::cloud::operation::{GetOperationRequest, operation};
use serde_json::{Value, json};
use tonic::transport::Channel;

const WORKERS: usize = 8;
/// Each kind of mutation must be acknowledged this many times in a cycle before its kill.
const MIN_PER_KIND: u64 = 3;

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
    let (child, ready) = common::serve_process(
        &[
            "--create-delay-ms".as_ref(),
            "30".as_ref(),
            "--data-dir".as_ref(),
            dir.as_os_str(),
        ],
        Stdio::null(),
    );
    Server {
        child,
        grpc: ready["grpc"].as_str().expect("grpc").to_string(),
        http: ready["http"].as_str().expect("http").to_string(),
    }
}

/// Everything a client controls of an image.
#[derive(Clone, Debug, PartialEq)]
struct Shape {
    name: String,
    description: String,
    labels: BTreeMap<String, String>,
    /// (role, subject id)
    bindings: BTreeSet<(String, String)>,
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    Exists(Shape),
    Gone,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Create,
    Update,
    Bind,
    Delete,
}

/// One mutation, as it can be sent (and replayed) over either protocol.
#[derive(Clone, Debug)]
enum Mutation {
    Create {
        folder: String,
        name: String,
    },
    Update {
        image: String,
        mask: Vec<&'static str>,
        name: String,
        description: String,
        labels: BTreeMap<String, String>,
    },
    Bind {
        image: String,
        bindings: BTreeSet<(String, String)>,
    },
    Delete {
        image: String,
    },
}

impl Mutation {
    fn kind(&self) -> Kind {
        match self {
            Self::Create { .. } => Kind::Create,
            Self::Update { .. } => Kind::Update,
            Self::Bind { .. } => Kind::Bind,
            Self::Delete { .. } => Kind::Delete,
        }
    }

    /// What the image looks like after this mutation, from what it looked like before.
    fn apply(&self, before: Option<&Shape>) -> State {
        match (self, before) {
            (Self::Create { name, .. }, _) => State::Exists(Shape {
                name: name.clone(),
                description: "v0".into(),
                labels: BTreeMap::new(),
                bindings: BTreeSet::new(),
            }),
            (
                Self::Update {
                    mask,
                    name,
                    description,
                    labels,
                    ..
                },
                Some(b),
            ) => {
                let mut s = b.clone();
                for field in mask {
                    match *field {
                        "name" => s.name = name.clone(),
                        "description" => s.description = description.clone(),
                        _ => s.labels = labels.clone(),
                    }
                }
                State::Exists(s)
            }
            (Self::Bind { bindings, .. }, Some(b)) => State::Exists(Shape {
                bindings: bindings.clone(),
                ..b.clone()
            }),
            (Self::Delete { .. }, _) | (_, None) => State::Gone,
        }
    }

    fn access_bindings(bindings: &BTreeSet<(String, String)>) -> Vec<AccessBinding> {
        bindings
            .iter()
            .map(|(role, subject)| AccessBinding {
                role_id: role.clone(),
                subject: Some(Subject {
                    id: subject.clone(),
                    r#type: "userAccount".into(),
                }),
            })
            .collect()
    }

    /// Sends it over REST; `Ok(Operation JSON)` or the error.
    async fn rest(&self, c: &Clients, key: Option<&str>) -> Result<Value, Failure> {
        let base = &c.rest;
        let req = match self {
            Self::Create { folder, name } => c
                .http
                .post(format!("{base}/compute/v1/images"))
                .body(
                    json!({"folderId": folder, "name": name, "diskId": "d", "description": "v0"})
                        .to_string(),
                ),
            Self::Update {
                image,
                mask,
                name,
                description,
                labels,
            } => c.http.patch(format!("{base}/compute/v1/images/{image}")).body(
                json!({"updateMask": mask.join(","), "name": name, "description": description,
                       "labels": labels})
                .to_string(),
            ),
            Self::Bind { image, bindings } => c
                .http
                .post(format!("{base}/compute/v1/images/{image}:setAccessBindings"))
                .body(
                    json!({"accessBindings": bindings.iter().map(|(r, s)| json!({"roleId": r, "subject": {"id": s, "type": "userAccount"}})).collect::<Vec<_>>()})
                        .to_string(),
                ),
            Self::Delete { image } => c.http.delete(format!("{base}/compute/v1/images/{image}")),
        };
        let req = match key {
            Some(k) => req.header("Idempotency-Key", k),
            None => req,
        };
        let resp = req
            .send()
            .await
            .map_err(|e| Failure::Transport(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| Failure::Transport(e.to_string()))?;
        let json: Value = serde_json::from_str(&body)
            .map_err(|e| Failure::Transport(format!("{status}: {e}: {body:.200}")))?;
        if status != 200 {
            return Err(Failure::Refused(format!("{status} {json}")));
        }
        Ok(json)
    }

    /// Sends it over gRPC; `Ok(Operation id)` or the error.
    async fn grpc(&self, c: &Clients, key: Option<&str>) -> Result<(String, String), Failure> {
        fn keyed<T>(msg: T, key: Option<&str>) -> tonic::Request<T> {
            let mut r = tonic::Request::new(msg);
            if let Some(k) = key {
                r.metadata_mut()
                    .insert("idempotency-key", k.parse().expect("ascii key"));
            }
            r
        }
        let mut images = c.images.clone();
        let reply = match self {
            Self::Create { folder, name } => {
                images
                    .create(keyed(
                        CreateImageRequest {
                            folder_id: folder.clone(),
                            name: name.clone(),
                            description: "v0".into(),
                            source: Some(create_image_request::Source::DiskId("d".into())),
                            ..Default::default()
                        },
                        key,
                    ))
                    .await
            }
            Self::Update {
                image,
                mask,
                name,
                description,
                labels,
            } => {
                images
                    .update(keyed(
                        UpdateImageRequest {
                            image_id: image.clone(),
                            update_mask: Some(FieldMask::new(mask.iter().copied())),
                            name: name.clone(),
                            description: description.clone(),
                            labels: labels.clone(),
                            ..Default::default()
                        },
                        key,
                    ))
                    .await
            }
            Self::Bind { image, bindings } => {
                images
                    .set_access_bindings(keyed(
                        SetAccessBindingsRequest {
                            resource_id: image.clone(),
                            access_bindings: Self::access_bindings(bindings),
                        },
                        key,
                    ))
                    .await
            }
            Self::Delete { image } => {
                images
                    .delete(keyed(
                        DeleteImageRequest {
                            image_id: image.clone(),
                        },
                        key,
                    ))
                    .await
            }
        };
        let op = reply
            .map_err(|s| Failure::Refused(format!("{:?}: {}", s.code(), s.message())))?
            .into_inner();
        let image = match self {
            Self::Create { .. } => {
                let meta: CreateImageMetadata = op
                    .metadata
                    .as_ref()
                    .and_then(|m| m.unpack().ok().flatten())
                    .expect("create metadata");
                meta.image_id
            }
            _ => String::new(),
        };
        Ok((op.id, image))
    }

    /// Sends it over `rest` or gRPC; the Operation id and, for a create, the new image's id.
    async fn send(
        &self,
        c: &Clients,
        rest: bool,
        key: Option<&str>,
    ) -> Result<(String, String), Failure> {
        if !rest {
            return self.grpc(c, key).await;
        }
        let op = self.rest(c, key).await?;
        let id = op["id"].as_str().expect("an Operation id").to_string();
        let image = op["metadata"]["imageId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok((id, image))
    }
}

#[derive(Debug)]
enum Failure {
    /// No reply: the process died (or, before the kill, crashed).
    Transport(String),
    /// An error reply.
    Refused(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "no reply: {e}"),
            Self::Refused(e) => write!(f, "refused: {e}"),
        }
    }
}

struct Acked {
    op_id: String,
    image: String,
    mutation: Mutation,
    key: Option<String>,
}

#[derive(Default)]
struct Track {
    acked: Option<State>,
    /// Sent but not acknowledged when the process died: may or may not have landed.
    pending: Option<State>,
    owner: usize,
}

#[derive(Default)]
struct Ledger {
    images: HashMap<String, Track>,
    /// Creates sent but not acknowledged: (folder, name) → owner. Names are unique per folder.
    pending_creates: HashMap<(String, String), usize>,
    /// Acknowledged since the last check.
    fresh: Vec<Acked>,
    /// Every acknowledged Operation, for the last check.
    all_ops: Vec<(String, String, Mutation)>,
    per_cycle: HashMap<Kind, u64>,
    total: HashMap<Kind, u64>,
    /// The first application error seen while the server was alive.
    error: Option<String>,
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

fn folder(worker: usize) -> String {
    format!("b1gw{worker}")
}

/// One client's mutations on its own folder until a request fails after the kill.
async fn worker(
    w: usize,
    cycle: usize,
    c: Clients,
    rng: Arc<Rng>,
    ledger: Arc<Mutex<Ledger>>,
    killed: Arc<AtomicBool>,
    progress: Arc<tokio::sync::Notify>,
) {
    const ROLES: [&str; 3] = ["viewer", "editor", "admin"];
    const SUBJECTS: [&str; 2] = ["u1", "u2"];
    for step in 0usize.. {
        let rest = rng.next(2) == 0;
        let key = (rng.next(2) == 0).then(|| format!("c{cycle}-w{w}-s{step}"));
        // The images this worker owns that exist, as acknowledged.
        let mine: Vec<(String, Shape)> = {
            let l = ledger.lock().expect("ledger");
            let mut v: Vec<_> = l
                .images
                .iter()
                .filter(|(_, t)| t.owner == w)
                .filter_map(|(id, t)| match &t.acked {
                    Some(State::Exists(s)) => Some((id.clone(), s.clone())),
                    _ => None,
                })
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let pick = if mine.len() < 3 { 0 } else { rng.next(4) };
        let unique = format!("w{w}-c{cycle}-s{step}");
        let mutation = if pick == 0 {
            Mutation::Create {
                folder: folder(w),
                name: unique.clone(),
            }
        } else {
            let image = mine[rng.next(mine.len() as u64) as usize].0.clone();
            match pick {
                1 => Mutation::Update {
                    image,
                    mask: [
                        vec!["description"],
                        vec!["description", "labels"],
                        vec!["name", "labels"],
                    ][rng.next(3) as usize]
                        .clone(),
                    name: unique.clone(),
                    description: format!("d-{unique}"),
                    labels: BTreeMap::from([("step".to_string(), step.to_string())]),
                },
                2 => Mutation::Bind {
                    image,
                    bindings: (0..rng.next(4))
                        .map(|_| {
                            (
                                ROLES[rng.next(3) as usize].to_string(),
                                SUBJECTS[rng.next(2) as usize].to_string(),
                            )
                        })
                        .collect(),
                },
                _ => Mutation::Delete { image },
            }
        };
        // Record what may land before it is sent.
        {
            let mut l = ledger.lock().expect("ledger");
            match &mutation {
                Mutation::Create { folder, name } => {
                    l.pending_creates.insert((folder.clone(), name.clone()), w);
                }
                Mutation::Update { image, .. }
                | Mutation::Bind { image, .. }
                | Mutation::Delete { image } => {
                    let t = l.images.get_mut(image).expect("tracked");
                    let before = match &t.acked {
                        Some(State::Exists(s)) => Some(s.clone()),
                        _ => None,
                    };
                    t.pending = Some(mutation.apply(before.as_ref()));
                }
            }
        }
        let result = mutation.send(&c, rest, key.as_deref()).await;
        let mut l = ledger.lock().expect("ledger");
        let (op_id, created) = match result {
            Ok(ok) => ok,
            Err(_) if killed.load(Ordering::SeqCst) => return,
            Err(Failure::Refused(e))
                if mutation.kind() == Kind::Delete && e.contains("still being created") =>
            {
                // Deleting an image whose create is running is refused by design: nothing
                // changed. (The per-kind minimum keeps a server that refuses every delete
                // from passing.)
                if let Mutation::Delete { image } = &mutation {
                    l.images.get_mut(image).expect("tracked").pending = None;
                }
                continue;
            }
            Err(e) => {
                let over = if rest { "REST" } else { "gRPC" };
                l.error
                    .get_or_insert(format!("worker {w}, {mutation:?} over {over}: {e}"));
                progress.notify_one();
                return;
            }
        };
        let image = match &mutation {
            Mutation::Create { folder, name } => {
                l.pending_creates.remove(&(folder.clone(), name.clone()));
                let t = l.images.entry(created.clone()).or_default();
                t.owner = w;
                t.acked = Some(mutation.apply(None));
                created
            }
            Mutation::Update { image, .. }
            | Mutation::Bind { image, .. }
            | Mutation::Delete { image } => {
                let t = l.images.get_mut(image).expect("tracked");
                t.acked = t.pending.take();
                image.clone()
            }
        };
        *l.per_cycle.entry(mutation.kind()).or_default() += 1;
        *l.total.entry(mutation.kind()).or_default() += 1;
        l.all_ops
            .push((op_id.clone(), image.clone(), mutation.clone()));
        l.fresh.push(Acked {
            op_id,
            image,
            mutation,
            key,
        });
        progress.notify_one();
    }
}

/// Every image of `folder`, paging through.
async fn list_folder(images: &mut ImageServiceClient<Channel>, folder: &str) -> Vec<Image> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = images
            .list(ListImagesRequest {
                folder_id: folder.into(),
                page_size: 100,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("list {folder}: {e}"))
            .into_inner();
        all.extend(page.images);
        token = page.next_page_token;
        if token.is_empty() {
            return all;
        }
    }
}

async fn shape_of(images: &mut ImageServiceClient<Channel>, img: &Image) -> Shape {
    let b = images
        .list_access_bindings(ListAccessBindingsRequest {
            resource_id: img.id.clone(),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("bindings of {}: {e}", img.id))
        .into_inner();
    Shape {
        name: img.name.clone(),
        description: img.description.clone(),
        labels: img.labels.clone().into_iter().collect(),
        bindings: b
            .access_bindings
            .iter()
            .map(|a| {
                (
                    a.role_id.clone(),
                    a.subject.as_ref().map(|s| s.id.clone()).unwrap_or_default(),
                )
            })
            .collect(),
    }
}

/// Checks the restarted server against the ledger (see the module doc); returns the lost
/// writes, each printed. `all_ops`: check every Operation ever acknowledged, not only the
/// fresh ones.
async fn verify(s: &Server, ledger: &Mutex<Ledger>, rng: &Rng, all_ops: bool) -> u64 {
    let channel = Channel::from_shared(format!("http://{}", s.grpc))
        .expect("url")
        .connect_lazy();
    let mut images = ImageServiceClient::new(channel.clone());
    let mut ops = OperationServiceClient::new(channel);
    let mut lost = 0;

    // Images: each folder whole, against the ledger.
    let mut seen = BTreeSet::new();
    for w in 0..WORKERS {
        let listed = list_folder(&mut images, &folder(w)).await;
        let mut names = BTreeSet::new();
        for img in &listed {
            assert!(seen.insert(img.id.clone()), "image {} listed twice", img.id);
            assert!(
                names.insert(img.name.clone()),
                "two images named {:?} in {}",
                img.name,
                folder(w)
            );
        }
        for img in listed {
            let now = State::Exists(shape_of(&mut images, &img).await);
            let mut l = ledger.lock().expect("ledger");
            if !l.images.contains_key(&img.id) {
                // Not acknowledged: it must be a create that was sent before the kill.
                let Some(owner) = l.pending_creates.remove(&(folder(w), img.name.clone())) else {
                    eprintln!(
                        "PHANTOM: image {} ({:?}) in {}",
                        img.id,
                        img.name,
                        folder(w)
                    );
                    lost += 1;
                    continue;
                };
                l.images.insert(
                    img.id.clone(),
                    Track {
                        acked: None,
                        pending: Some(now.clone()),
                        owner,
                    },
                );
            }
            let t = l.images.get_mut(&img.id).expect("tracked");
            lost += settle(&img.id, t, now);
        }
    }
    {
        let mut l = ledger.lock().expect("ledger");
        l.pending_creates.clear();
        let unlisted: Vec<String> = l
            .images
            .keys()
            .filter(|id| !seen.contains(*id))
            .cloned()
            .collect();
        for id in unlisted {
            let t = l.images.get_mut(&id).expect("tracked");
            lost += settle(&id, t, State::Gone);
        }
        // Gone for good: no need to track them further.
        l.images
            .retain(|_, t| !matches!(t.acked, Some(State::Gone) | None));
    }

    // Operations.
    let (fresh, checked): (Vec<Acked>, Vec<(String, String, Mutation)>) = {
        let mut l = ledger.lock().expect("ledger");
        let fresh = std::mem::take(&mut l.fresh);
        let checked = if all_ops {
            l.all_ops.clone()
        } else {
            fresh
                .iter()
                .map(|a| (a.op_id.clone(), a.image.clone(), a.mutation.clone()))
                .collect()
        };
        (fresh, checked)
    };
    for (op_id, image, mutation) in &checked {
        let op = match ops
            .get(GetOperationRequest {
                operation_id: op_id.clone(),
            })
            .await
        {
            Ok(op) => op.into_inner(),
            Err(e) => {
                eprintln!("LOST: operation {op_id} ({mutation:?}): {e}");
                lost += 1;
                continue;
            }
        };
        assert!(op.done, "operation {op_id} still running after a restart");
        let Some(operation::Result::Response(response)) = &op.result else {
            panic!("operation {op_id} ({mutation:?}) ended in {:?}", op.result);
        };
        match mutation {
            Mutation::Create { name, .. } => {
                let img: Image = response.unpack().ok().flatten().expect("an Image");
                assert_eq!(&img.id, image, "operation {op_id}: the create's image");
                let _ = name; // later updates may have renamed it before the create finished
            }
            Mutation::Update {
                mask,
                name,
                description,
                ..
            } => {
                let img: Image = response.unpack().ok().flatten().expect("an Image");
                assert_eq!(&img.id, image);
                if mask.contains(&"description") {
                    assert_eq!(&img.description, description, "operation {op_id}");
                }
                if mask.contains(&"name") {
                    assert_eq!(&img.name, name, "operation {op_id}");
                }
            }
            Mutation::Bind { .. } | Mutation::Delete { .. } => {}
        }
    }

    // Replays: every keyed mutation acknowledged since the last check, same Operation back.
    let c = Clients::new(s);
    let mut replayed = 0;
    for a in fresh.iter().filter(|a| a.key.is_some()) {
        let rest = rng.next(2) == 0;
        let got = a.mutation.send(&c, rest, a.key.as_deref()).await;
        match got {
            Ok((op_id, _)) => assert_eq!(
                op_id,
                a.op_id,
                "replay of {:?} with key {:?} over {}",
                a.mutation,
                a.key,
                if rest { "REST" } else { "gRPC" }
            ),
            Err(e) => panic!("replay of {:?} with key {:?}: {e}", a.mutation, a.key),
        }
        replayed += 1;
    }
    eprintln!(
        "kill9: checked {} operations, replayed {replayed} keyed mutations",
        checked.len()
    );
    lost
}

/// Compares what is there now with what was acknowledged (or sent, unacknowledged) for one
/// image; 1 if an acknowledged write was lost.
fn settle(id: &str, t: &mut Track, now: State) -> u64 {
    let pending = t.pending.take();
    if pending.as_ref() == Some(&now) || t.acked.as_ref() == Some(&now) {
        t.acked = Some(now); // an unacknowledged write that landed is allowed
        return 0;
    }
    eprintln!(
        "LOST: image {id}: acknowledged {:?}, in flight {pending:?}, found {now:?}",
        t.acked
    );
    t.acked = Some(now);
    1
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
    for cycle in 0..cycles {
        let mut server = start(dir.path());
        rt.block_on(async {
            if cycle > 0 {
                lost += verify(&server, &ledger, &rng, false).await;
            }
            ledger.lock().expect("ledger").per_cycle.clear();
            let killed = Arc::new(AtomicBool::new(false));
            let progress = Arc::new(tokio::sync::Notify::new());
            let handles: Vec<_> = (0..WORKERS)
                .map(|w| {
                    tokio::spawn(worker(
                        w,
                        cycle,
                        Clients::new(&server),
                        rng.clone(),
                        ledger.clone(),
                        killed.clone(),
                        progress.clone(),
                    ))
                })
                .collect();
            // Until each kind has been acknowledged enough (a hang guard of 60 s), then a
            // random while longer.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                {
                    let l = ledger.lock().expect("ledger");
                    if let Some(e) = &l.error {
                        panic!("an application error while the server was up: {e} (seed {seed})");
                    }
                    let enough = [Kind::Create, Kind::Update, Kind::Bind, Kind::Delete]
                        .iter()
                        .all(|k| l.per_cycle.get(k).copied().unwrap_or(0) >= MIN_PER_KIND);
                    if enough {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "cycle {cycle}: too little acknowledged in 60 s: {:?} (seed {seed})",
                        l.per_cycle
                    );
                }
                // Woken by the next acknowledgement or error (or, at the latest, for the
                // deadline check).
                let _ = tokio::time::timeout(Duration::from_secs(1), progress.notified()).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.next(250))).await;
            killed.store(true, Ordering::SeqCst);
            server.child.kill().expect("SIGKILL");
            server.child.wait().expect("reaped");
            for h in handles {
                h.await.expect("worker");
            }
            let l = ledger.lock().expect("ledger");
            if let Some(e) = &l.error {
                panic!("an application error while the server was up: {e} (seed {seed})");
            }
        });
    }
    let mut server = start(dir.path());
    rt.block_on(async { lost += verify(&server, &ledger, &rng, true).await });
    server.child.kill().expect("kill");
    server.child.wait().expect("reaped");
    let l = ledger.lock().expect("ledger");
    let acknowledged: u64 = l.total.values().sum();
    let kinds: BTreeMap<_, _> = l
        .total
        .iter()
        .map(|(k, v)| (format!("{k:?}"), *v))
        .collect();
    println!(
        "cycles={cycles}, acknowledged writes={acknowledged}, lost writes={lost}, by kind {kinds:?}"
    );
    assert_eq!(lost, 0, "acknowledged writes were lost (seed {seed})");
}
