//! The database stopped and started again under a running server (`pg_ctlcluster`, as root on
//! the CI machine): while it is down, every call that needs it is 503 / UNAVAILABLE (never 500)
//! and health turns NOT_SERVING; once it is back, the same process serves again without a
//! restart, and nothing acknowledged is lost (a create acknowledged before the stop is
//! finished after the start).
//!
//! The test stops the machine's PostgreSQL, which every other PostgreSQL test uses, so it is
//! ignored by a plain `cargo test`; `.ci/run` runs it alone:
//! `cargo test --test pg_restart -- --ignored`.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::pg::TestDatabase;
use common::{Options, TestServer};
use compute_gateway::backend::HealthProbe;
use serde_json::{Value, json};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The machine's cluster, as Debian's postgresql-common names it.
struct Cluster {
    version: String,
}

impl Cluster {
    /// The `main` cluster of `/etc/postgresql/VERSION`, if `pg_ctlcluster` is there.
    fn find() -> Option<Self> {
        let version = std::fs::read_dir("/etc/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|v| std::path::Path::new(&format!("/etc/postgresql/{v}/main")).is_dir())?;
        Command::new("pg_ctlcluster").arg("--help").output().ok()?;
        Some(Self { version })
    }

    /// `pg_ctlcluster VERSION main ACTION`, which waits until it is done.
    fn ctl(&self, action: &str) {
        let out = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &self.version, "main", action])
            .output()
            .expect("pg_ctlcluster runs");
        assert!(
            out.status.success(),
            "pg_ctlcluster {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The cluster stopped; started again when dropped, whatever the test did.
struct Stopped<'a>(&'a Cluster, bool);

impl<'a> Stopped<'a> {
    fn new(cluster: &'a Cluster) -> Self {
        cluster.ctl("stop");
        Self(cluster, false)
    }

    fn start(&mut self) {
        self.0.ctl("start");
        self.1 = true;
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.ctl("start");
        }
    }
}

async fn health(s: &TestServer) -> Option<i32> {
    let mut client = HealthClient::new(s.channel());
    let check = client.check(HealthCheckRequest {
        service: "yandex.cloud.compute.v1.ImageService".into(),
    });
    match tokio::time::timeout(Duration::from_secs(5), check).await {
        Ok(Ok(r)) => Some(r.into_inner().status),
        _ => None,
    }
}

/// Waits (up to `limit`) until the server's health says `want`.
async fn until_health(s: &TestServer, want: ServingStatus, limit: Duration) {
    let deadline = Instant::now() + limit;
    while health(s).await != Some(want as i32) {
        assert!(Instant::now() < deadline, "health never {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn rest(
    http: &reqwest::Client,
    s: &TestServer,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(
        method.parse().expect("method"),
        format!("{}{path}", s.http()),
    );
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("a reply");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn create(name: &str) -> Value {
    json!({"folderId": "restart", "name": name, "uri": "https://example.com/i.img"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the machine's PostgreSQL, which the other tests use: run alone with --ignored"]
async fn the_database_restarting_is_503_meanwhile_and_heals_without_a_restart() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let cluster = Cluster::find().expect("a PostgreSQL cluster that pg_ctlcluster manages");
    let dir = tempfile::tempdir().expect("dir");
    let s = TestServer::start_in(
        dir.path(),
        Options {
            database_url: Some(db.url.clone()),
            create_delay: Duration::from_millis(300),
            health: HealthProbe {
                interval: Duration::from_millis(100),
                write_stall_limit: Duration::from_secs(10),
            },
            ..Options::default()
        },
    )
    .await;
    let s = Arc::new(s);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");

    // Acknowledged before the stop: an image, and a create still running when it comes.
    let (status, op) = rest(
        &http,
        &s,
        "POST",
        "/compute/v1/images",
        Some(create("before")),
    )
    .await;
    assert_eq!(status, 200, "{op}");
    let before = op["metadata"]["imageId"].as_str().expect("id").to_string();

    // A client creating images all along: every reply is 200 or 503.
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (s, http, stop, count) = (s.clone(), http.clone(), stop.clone(), count.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut unavailable = 0;
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let name = format!("during-{i}");
                let (status, body) =
                    rest(&http, &s, "POST", "/compute/v1/images", Some(create(&name))).await;
                match status {
                    200 => {
                        let id = body["metadata"]["imageId"].as_str().expect("id");
                        acknowledged.push(id.to_string());
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    503 => {
                        assert_eq!(body["code"], 14, "UNAVAILABLE: {body}");
                        unavailable += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    // A create whose commit was cut off may have landed: the same name again
                    // is refused, which is the client's to sort out.
                    409 => {}
                    _ => panic!("create {name}: {status} {body}"),
                }
            }
            (acknowledged, unavailable)
        })
    };

    let mut down = Stopped::new(&cluster);
    // Down: NOT_SERVING, and reads and writes are 503 with UNAVAILABLE.
    until_health(&s, ServingStatus::NotServing, Duration::from_secs(30)).await;
    let (status, body) = rest(
        &http,
        &s,
        "GET",
        &format!("/compute/v1/images/{before}"),
        None,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], 14, "{body}");
    let (status, _) = rest(&http, &s, "GET", "/readyz", None).await;
    assert_eq!(status, 503, "readyz follows the backend's health");

    // Back: the same process serves again.
    down.start();
    until_health(&s, ServingStatus::Serving, Duration::from_secs(30)).await;
    let (status, body) = rest(
        &http,
        &s,
        "GET",
        &format!("/compute/v1/images/{before}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The client's creates are acknowledged again, then it stops.
    let since = count.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    while count.load(Ordering::SeqCst) < since + 3 {
        assert!(
            Instant::now() < deadline,
            "no create acknowledged after the start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (acknowledged, unavailable) = writer.await.expect("the client");
    assert!(unavailable > 0, "the client saw the database down");

    // Nothing acknowledged is lost, and every create finishes (those whose completion fell
    // while the database was down included).
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in std::iter::once(&before).chain(&acknowledged) {
        loop {
            let (status, image) =
                rest(&http, &s, "GET", &format!("/compute/v1/images/{id}"), None).await;
            assert_eq!(status, 200, "acknowledged image {id}: {image}");
            if image["status"] == "READY" {
                break;
            }
            assert!(Instant::now() < deadline, "image {id} never READY: {image}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!(
        "pg_restart: {} creates acknowledged, {unavailable} refused with 503 while down",
        acknowledged.len() + 1
    );
    drop(down);
    Arc::try_unwrap(s)
        .unwrap_or_else(|_| panic!("the client is done"))
        .stop()
        .await;
}
