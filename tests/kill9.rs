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
//! With `CG_TEST_STORE=postgres` the server keeps its data in a fresh PostgreSQL database
//! instead of a data directory, and the same checks hold.
//!
//! **Replicas** (`replicas_on_postgresql_survive_sigkill_of_one`, skipped without PostgreSQL):
//! two `backend` processes on one database and one `gateway` with both. REST goes through the
//! gateway, gRPC straight to a backend (in turn, the way a client's balancer spreads calls).
//! Each cycle one backend, picked at random, is killed at a random moment, and the mutations
//! go on: each kind must be acknowledged a few times more while it is down. Only a call that
//! was in flight when the kill came may fail; one sent once the gateway has seen the backend
//! gone (`gateway_backend_up` 0, within milliseconds under this load) must succeed. The cycle then waits for every create the
//! dead replica left running to be finished by the survivor (its lease), checks everything as
//! above, and restarts the dead backend on its address. Prints the failures of each sort.
//!
//! `cargo test --test kill9` drives the debug binary; `cargo test --release --test kill9` the
//! release one. `KILL9_CYCLES`, `REPLICAS_CYCLES` and `KILL9_SEED` change the run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
mod common;

use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pg::TestDatabase;
use compute_gateway::json::FieldMask;
use compute_gateway::pb::yandex::cloud::access::{
    AccessBinding, ListAccessBindingsRequest, SetAccessBindingsRequest, Subject,
};
use compute_gateway::pb::yandex::cloud::compute::v1::image_service_client::ImageServiceClient;
use compute_gateway::pb::yandex::cloud::compute::v1::{
    CreateImageMetadata, CreateImageRequest, DeleteImageRequest, Image, ListImagesRequest,
    UpdateImageRequest, create_image_request, image,
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

/// A process of the test's, killed (if it still runs) when dropped.
struct Proc(Child);

impl Proc {
    /// SIGKILL, and waits until the process is gone.
    fn kill(&mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("reaped");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.kill();
        }
    }
}

/// Where the clients send: REST to `http`, gRPC to the addresses of `grpc` that are up.
#[derive(Clone)]
struct Target {
    http: String,
    grpc: Vec<String>,
}

/// How long a create takes, in every server of these tests.
const CREATE_DELAY_MS: &str = "30";

/// `serve` on ports 0, its data in `store` (`--data-dir DIR` or `--database-url URL`).
fn start(store: &[&std::ffi::OsStr]) -> (Proc, Target) {
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["--create-delay-ms".as_ref(), CREATE_DELAY_MS.as_ref()];
    args.extend_from_slice(store);
    let (child, ready) = common::serve_process(&args, Stdio::null());
    let target = Target {
        http: ready["http"].as_str().expect("http").to_string(),
        grpc: vec![ready["grpc"].as_str().expect("grpc").to_string()],
    };
    (Proc(child), target)
}

/// A `backend` on `database_url`, listening on `listen`; its process and address.
fn start_backend(database_url: &str, listen: &str) -> (Proc, String) {
    let (child, ready) = common::process(
        &[
            "backend".as_ref(),
            "--grpc-listen".as_ref(),
            listen.as_ref(),
            "--create-delay-ms".as_ref(),
            CREATE_DELAY_MS.as_ref(),
            "--database-url".as_ref(),
            database_url.as_ref(),
        ],
        Stdio::null(),
    );
    (
        Proc(child),
        ready["grpc"].as_str().expect("grpc").to_string(),
    )
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
        let mut images = c.images();
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
    /// Acknowledged in this cycle, sent after the killed server was gone.
    while_down: HashMap<Kind, u64>,
    total: HashMap<Kind, u64>,
    /// Calls that failed because they were in flight at a kill (the replicas test).
    in_flight_failures: u64,
    /// The first application error seen while the server was alive.
    error: Option<String>,
}

/// What the driver tells the workers of a cycle.
struct Run {
    /// [`UP`], [`KILLING`] or [`DEAD`].
    phase: AtomicU8,
    /// The index of the gRPC address calls keep off (the server being killed), or `usize::MAX`.
    down: AtomicUsize,
    /// The cycle is over: workers return before their next call.
    stop: AtomicBool,
    /// A failure of a call in flight at the kill is expected, and the worker goes on (the
    /// replicas test), instead of ending the worker's cycle (the single server's).
    go_on: bool,
    /// The store is shared (PostgreSQL): a create a killed server left running is finished,
    /// by whichever server is up, once its lease has run out, not at the next start.
    leases: bool,
}

/// Every server is up.
const UP: u8 = 0;
/// A server is being killed: calls may fail.
const KILLING: u8 = 1;
/// Its process is gone: a call sent now must succeed if another server is up.
const DEAD: u8 = 2;

impl Run {
    fn new(go_on: bool, leases: bool) -> Arc<Self> {
        Arc::new(Self {
            phase: AtomicU8::new(UP),
            down: AtomicUsize::new(usize::MAX),
            stop: AtomicBool::new(false),
            go_on,
            leases,
        })
    }
}

struct Clients {
    http: reqwest::Client,
    rest: String,
    images: Vec<ImageServiceClient<Channel>>,
    next: AtomicUsize,
    run: Arc<Run>,
}

impl Clients {
    fn new(t: &Target, run: Arc<Run>) -> Self {
        let images = t
            .grpc
            .iter()
            .map(|addr| {
                let channel = Channel::from_shared(format!("http://{addr}"))
                    .expect("url")
                    .connect_lazy();
                ImageServiceClient::new(channel)
            })
            .collect();
        Self {
            http: reqwest::Client::new(),
            rest: format!("http://{}", t.http),
            images,
            next: AtomicUsize::new(0),
            run,
        }
    }

    /// The gRPC client of the next server in turn, leaving out the one being killed.
    fn images(&self) -> ImageServiceClient<Channel> {
        let n = self.images.len();
        let down = self.run.down.load(Ordering::SeqCst);
        let mut i = self.next.fetch_add(1, Ordering::Relaxed) % n;
        if i == down && n > 1 {
            i = (i + 1) % n;
        }
        self.images[i].clone()
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
    progress: Arc<tokio::sync::Notify>,
) {
    let run = c.run.clone();
    const ROLES: [&str; 3] = ["viewer", "editor", "admin"];
    const SUBJECTS: [&str; 2] = ["u1", "u2"];
    for step in 0usize.. {
        if run.stop.load(Ordering::SeqCst) {
            return;
        }
        let rest = rng.next(2) == 0;
        let key = (rng.next(2) == 0).then(|| format!("c{cycle}-w{w}-s{step}"));
        // The images this worker owns that exist, as acknowledged.
        let mine: Vec<(String, Shape)> = {
            let l = ledger.lock().expect("ledger");
            let mut v: Vec<_> = l
                .images
                .iter()
                // Not one a failed call left uncertain (settled by the next check).
                .filter(|(_, t)| t.owner == w && t.pending.is_none())
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
        let phase_before = run.phase.load(Ordering::SeqCst);
        let result = mutation.send(&c, rest, key.as_deref()).await;
        let phase = run.phase.load(Ordering::SeqCst);
        let mut l = ledger.lock().expect("ledger");
        let (op_id, created) = match result {
            Ok(ok) => ok,
            // The only server is down: this worker's cycle is over.
            Err(_) if !run.go_on && phase > UP => return,
            // In flight when the kill came: it may or may not have landed (the next check
            // settles it).
            Err(_) if phase_before < DEAD && phase > UP => {
                l.in_flight_failures += 1;
                continue;
            }
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
        if phase_before == DEAD {
            *l.while_down.entry(mutation.kind()).or_default() += 1;
        }
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

/// Waits until no image of any folder is still being created; panics past `limit`.
async fn creates_finished(images: &mut ImageServiceClient<Channel>, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let mut creating = Vec::new();
        for w in 0..WORKERS {
            creating.extend(
                list_folder(images, &folder(w))
                    .await
                    .into_iter()
                    .filter(|i| i.status == image::Status::Creating as i32)
                    .map(|i| i.id),
            );
        }
        if creating.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still being created after {limit:?}: {creating:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks the servers (restarted, or the survivor) against the ledger (see the module doc);
/// returns the lost writes, each printed. `all_ops`: check every Operation ever acknowledged,
/// not only the fresh ones.
async fn verify(
    t: &Target,
    run: &Arc<Run>,
    ledger: &Mutex<Ledger>,
    rng: &Rng,
    all_ops: bool,
) -> u64 {
    let c = Clients::new(t, run.clone());
    let mut images = c.images();
    let mut ops = OperationServiceClient::new(
        Channel::from_shared(format!("http://{}", t.grpc[survivor(t, run)]))
            .expect("url")
            .connect_lazy(),
    );
    if run.leases {
        // The creates a killed server left running are finished once their lease expires
        // (2 s past due, checked every second).
        creates_finished(&mut images, Duration::from_secs(10)).await;
    }
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

/// Waits until the gateway at `http` reports the backend at `addr` down
/// (`gateway_backend_up` 0): a call failed to dial it, or its health check failed.
async fn gateway_sees_down(http: &str, addr: &str) {
    let series = format!("gateway_backend_up{{backend=\"http://{addr}/\"}} 0");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = client
            .get(format!("http://{http}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        if metrics.lines().any(|l| l == series) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never saw {addr} down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The index of a gRPC address that is up.
fn survivor(t: &Target, run: &Run) -> usize {
    let down = run.down.load(Ordering::SeqCst);
    (0..t.grpc.len())
        .find(|i| *i != down)
        .expect("a server is up")
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

/// The seed of this run's generator: `KILL9_SEED`, or the clock.
fn seed() -> u64 {
    let seed = std::env::var("KILL9_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(1)
        });
    eprintln!("kill9: seed {seed}");
    seed
}

fn cycles(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const KINDS: [Kind; 4] = [Kind::Create, Kind::Update, Kind::Bind, Kind::Delete];

/// Waits until `enough` says the ledger has enough (woken by each acknowledgement), failing
/// the test on an application error or after 60 s (a hang guard).
async fn until(
    ledger: &Mutex<Ledger>,
    progress: &tokio::sync::Notify,
    what: &str,
    seed: u64,
    enough: impl Fn(&Ledger) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        {
            let l = ledger.lock().expect("ledger");
            if let Some(e) = &l.error {
                panic!("an application error: {e} (seed {seed})");
            }
            if enough(&l) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: too little acknowledged in 60 s: {:?} (seed {seed})",
                l.per_cycle
            );
        }
        // Woken by the next acknowledgement or error (or, at the latest, for the deadline
        // check).
        let _ = tokio::time::timeout(Duration::from_secs(1), progress.notified()).await;
    }
}

/// Whether each kind was counted at least [`MIN_PER_KIND`] times.
fn each_kind(counts: &HashMap<Kind, u64>) -> bool {
    KINDS
        .iter()
        .all(|k| counts.get(k).copied().unwrap_or(0) >= MIN_PER_KIND)
}

/// Starts the workers of `cycle` against `t`.
fn workers(
    t: &Target,
    run: &Arc<Run>,
    cycle: usize,
    rng: &Arc<Rng>,
    ledger: &Arc<Mutex<Ledger>>,
    progress: &Arc<tokio::sync::Notify>,
) -> Vec<tokio::task::JoinHandle<()>> {
    {
        let mut l = ledger.lock().expect("ledger");
        l.per_cycle.clear();
        l.while_down.clear();
    }
    (0..WORKERS)
        .map(|w| {
            tokio::spawn(worker(
                w,
                cycle,
                Clients::new(t, run.clone()),
                rng.clone(),
                ledger.clone(),
                progress.clone(),
            ))
        })
        .collect()
}

/// Starts the workers of `cycle` and lets them run until each kind of mutation has been
/// acknowledged enough, then a random while longer: the moment of a kill. The workers, and what
/// wakes on each acknowledgement.
async fn up_to_the_kill(
    t: &Target,
    run: &Arc<Run>,
    cycle: usize,
    rng: &Arc<Rng>,
    ledger: &Arc<Mutex<Ledger>>,
    seed: u64,
) -> (Vec<tokio::task::JoinHandle<()>>, Arc<tokio::sync::Notify>) {
    let progress = Arc::new(tokio::sync::Notify::new());
    let handles = workers(t, run, cycle, rng, ledger, &progress);
    until(ledger, &progress, &format!("cycle {cycle}"), seed, |l| {
        each_kind(&l.per_cycle)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(rng.next(250))).await;
    (handles, progress)
}

/// The totals, printed; fails if anything was lost.
fn report(ledger: &Mutex<Ledger>, cycles: usize, lost: u64, seed: u64) {
    let l = ledger.lock().expect("ledger");
    let acknowledged: u64 = l.total.values().sum();
    let kinds: BTreeMap<_, _> = l
        .total
        .iter()
        .map(|(k, v)| (format!("{k:?}"), *v))
        .collect();
    println!(
        "cycles={cycles}, acknowledged writes={acknowledged}, lost writes={lost}, \
         calls failed in flight at a kill={}, by kind {kinds:?}",
        l.in_flight_failures
    );
    assert_eq!(lost, 0, "acknowledged writes were lost (seed {seed})");
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let cycles = cycles("KILL9_CYCLES", 20);
    let seed = seed();
    let rng = Arc::new(Rng(AtomicU64::new(seed)));
    let dir = tempfile::tempdir().expect("temp dir");
    // The data directory, or a database under CG_TEST_STORE=postgres.
    let db = common::pg::wanted_for_every_server()
        .then(TestDatabase::create)
        .flatten();
    let store: Vec<&std::ffi::OsStr> = match &db {
        Some(db) => vec!["--database-url".as_ref(), db.url.as_ref()],
        None => vec!["--data-dir".as_ref(), dir.path().as_os_str()],
    };
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut lost = 0;
    for cycle in 0..cycles {
        let (mut server, target) = start(&store);
        rt.block_on(async {
            let run = Run::new(false, db.is_some());
            if cycle > 0 {
                lost += verify(&target, &run, &ledger, &rng, false).await;
            }
            let (handles, _) = up_to_the_kill(&target, &run, cycle, &rng, &ledger, seed).await;
            run.phase.store(KILLING, Ordering::SeqCst);
            server.kill();
            run.phase.store(DEAD, Ordering::SeqCst);
            for h in handles {
                h.await.expect("worker");
            }
            if let Some(e) = &ledger.lock().expect("ledger").error {
                panic!("an application error while the server was up: {e} (seed {seed})");
            }
        });
    }
    let (_server, target) = start(&store);
    let run = Run::new(false, db.is_some());
    rt.block_on(async { lost += verify(&target, &run, &ledger, &rng, true).await });
    report(&ledger, cycles, lost, seed);
}

#[test]
fn replicas_on_postgresql_survive_sigkill_of_one() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let cycles = cycles("REPLICAS_CYCLES", 6);
    let seed = seed();
    let rng = Arc::new(Rng(AtomicU64::new(seed)));
    let mut backends = [
        start_backend(&db.url, "127.0.0.1:0"),
        start_backend(&db.url, "127.0.0.1:0"),
    ];
    let grpc: Vec<String> = backends.iter().map(|(_, addr)| addr.clone()).collect();
    let (gateway, ready) = common::process(
        &[
            "gateway".as_ref(),
            "--http-listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--backend".as_ref(),
            format!("http://{}", grpc[0]).as_ref(),
            "--backend".as_ref(),
            format!("http://{}", grpc[1]).as_ref(),
        ],
        Stdio::null(),
    );
    let _gateway = Proc(gateway);
    let target = Target {
        http: ready["http"].as_str().expect("http").to_string(),
        grpc,
    };
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut lost = 0;
    for cycle in 0..cycles {
        let run = Run::new(true, true);
        let doomed = rng.next(2) as usize;
        rt.block_on(async {
            let (handles, progress) =
                up_to_the_kill(&target, &run, cycle, &rng, &ledger, seed).await;
            run.down.store(doomed, Ordering::SeqCst);
            run.phase.store(KILLING, Ordering::SeqCst);
            backends[doomed].0.kill();
            // A call the gateway put on the dead backend's connection before it saw the
            // connection end may fail (nobody can tell whether the backend read it); once
            // the gateway has seen the backend gone, calls go to the survivor, and none
            // sent from then on may fail.
            gateway_sees_down(&target.http, &target.grpc[doomed]).await;
            run.phase.store(DEAD, Ordering::SeqCst);
            let what = format!("cycle {cycle}, backend {doomed} down");
            until(&ledger, &progress, &what, seed, |l| {
                each_kind(&l.while_down)
            })
            .await;
            run.stop.store(true, Ordering::SeqCst);
            for h in handles {
                h.await.expect("worker");
            }
            if let Some(e) = &ledger.lock().expect("ledger").error {
                panic!("an application error: {e} (seed {seed})");
            }
            lost += verify(&target, &run, &ledger, &rng, false).await;
        });
        // The replica comes back where the gateway expects it.
        backends[doomed] = start_backend(&db.url, &target.grpc[doomed]);
    }
    rt.block_on(async {
        lost += verify(&target, &Run::new(true, true), &ledger, &rng, true).await
    });
    report(&ledger, cycles, lost, seed);
}
