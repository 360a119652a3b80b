//! A mixed-load generator for compute-gateway: every ImageService and OperationService RPC, half
//! over REST and half over gRPC, from `--concurrency` clients for `--duration` seconds. Reports
//! requests, errors by protocol and code, p50/p99 latency, and (with `--pid`) the server's RSS
//! and (with `--data-dir`) the size of its data files, sampled every `--sample` seconds. Used by tests/soak/soak.sh; runs only against loopback.
//!
//! ```sh
//! cargo run --release --example loadgen -- --http 127.0.0.1:8080 --grpc 127.0.0.1:50051 \
//!     --duration 60 --concurrency 32 --pid $(pgrep -f compute-gateway)
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use compute_gateway::json::FieldMask;
use compute_gateway::pb::yandex::cloud::access::{
    AccessBinding, ListAccessBindingsRequest, SetAccessBindingsRequest, Subject,
};
use compute_gateway::pb::yandex::cloud::compute::v1::image_service_client::ImageServiceClient;
use compute_gateway::pb::yandex::cloud::compute::v1::*;
use compute_gateway::pb::yandex::cloud::operation::operation_service_client::OperationServiceClient;
use compute_gateway::pb::yandex::cloud::operation::{CancelOperationRequest, GetOperationRequest};
use serde_json::{Value, json};
use tonic::transport::Channel;

struct Args {
    http: String,
    grpc: String,
    duration: Duration,
    concurrency: usize,
    pid: Option<u32>,
    data_dir: Option<std::path::PathBuf>,
    sample: Duration,
}

fn args() -> Args {
    let mut a = Args {
        http: "127.0.0.1:8080".into(),
        grpc: "127.0.0.1:50051".into(),
        duration: Duration::from_secs(30),
        concurrency: 16,
        pid: None,
        data_dir: None,
        sample: Duration::from_secs(5),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let [k, v] = pair else {
            panic!("flags come in pairs: --name value")
        };
        match k.as_str() {
            "--http" => a.http = v.clone(),
            "--grpc" => a.grpc = v.clone(),
            "--duration" => a.duration = Duration::from_secs_f64(v.parse().expect("seconds")),
            "--concurrency" => a.concurrency = v.parse().expect("a count"),
            "--pid" => a.pid = Some(v.parse().expect("a pid")),
            "--data-dir" => a.data_dir = Some(v.into()),
            "--sample" => a.sample = Duration::from_secs_f64(v.parse().expect("seconds")),
            other => panic!("unknown flag {other}"),
        }
    }
    for addr in [&a.http, &a.grpc] {
        assert!(
            addr.starts_with("127.") || addr.starts_with("localhost") || addr.starts_with("[::1]"),
            "loopback targets only: {addr}"
        );
    }
    a
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Bytes on disk of the files directly in `dir` (the store's data file and its neighbours).
fn data_kib(dir: &std::path::Path) -> Option<u64> {
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir).ok()? {
        let meta = entry.ok()?.metadata().ok()?;
        if meta.is_file() {
            bytes += meta.len();
        }
    }
    Some(bytes / 1024)
}

#[derive(Default)]
struct Stats {
    latencies_us: Vec<u32>,
    outcomes: BTreeMap<String, u64>,
}

impl Stats {
    fn record(&mut self, started: Instant, outcome: String) {
        self.latencies_us
            .push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
        *self.outcomes.entry(outcome).or_default() += 1;
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    images: ImageServiceClient<Channel>,
    ops: OperationServiceClient<Channel>,
    folder: String,
    mine: Vec<String>,
    last_op: Option<String>,
    seq: u64,
}

impl Client {
    async fn rest(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (String, Option<Value>) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let json = resp.json::<Value>().await.ok();
                // An error is labelled with its google.rpc code too, so that the soak can tell
                // an expected 400 (FAILED_PRECONDITION) from a client mistake.
                let code = json.as_ref().and_then(|j| j["code"].as_i64());
                let outcome = match code {
                    Some(code) if status != 200 => format!("rest {status} code {code}"),
                    _ => format!("rest {status}"),
                };
                (outcome, json)
            }
            Err(e) => (
                format!(
                    "rest transport error ({})",
                    if e.is_timeout() { "timeout" } else { "connect" }
                ),
                None,
            ),
        }
    }

    fn grpc<T>(r: Result<tonic::Response<T>, tonic::Status>) -> (String, Option<T>) {
        match r {
            Ok(v) => ("grpc OK".to_string(), Some(v.into_inner())),
            Err(s) => (format!("grpc {:?}", s.code()), None),
        }
    }

    fn image(&self, n: u64) -> Option<String> {
        (!self.mine.is_empty()).then(|| self.mine[(n as usize) % self.mine.len()].clone())
    }

    /// One request of the mix; returns its outcome label.
    async fn step(&mut self) -> String {
        self.seq += 1;
        let n = self.seq;
        let rest = n.is_multiple_of(2);
        let mut pick = (n / 2) % 20;
        // Keep each client's images between 4 and 24: create when short, delete when long.
        if self.mine.len() < 4 {
            pick = 0;
        } else if self.mine.len() > 24 && pick <= 1 {
            pick = 19;
        }
        let image = self.image(n);
        match (pick, image) {
            (0..=1, _) | (_, None) => {
                let name = format!("load-{}-{n}", self.folder);
                if rest {
                    let (o, body) = self.rest(reqwest::Method::POST, "/compute/v1/images", Some(json!({"folderId": self.folder, "name": name, "family": "load", "diskId": "d"}))).await;
                    if let Some(b) = body
                        && let Some(id) = b["metadata"]["imageId"].as_str()
                    {
                        self.mine.push(id.to_string());
                        self.last_op = b["id"].as_str().map(str::to_owned);
                    }
                    o
                } else {
                    let req = CreateImageRequest {
                        folder_id: self.folder.clone(),
                        name,
                        family: "load".into(),
                        source: Some(create_image_request::Source::SnapshotId("s".into())),
                        ..Default::default()
                    };
                    let (o, op) = Self::grpc(self.images.create(req).await);
                    if let Some(op) = op {
                        if let Some(meta) = op
                            .metadata
                            .as_ref()
                            .and_then(|m| m.unpack::<CreateImageMetadata>().ok().flatten())
                        {
                            self.mine.push(meta.image_id);
                        }
                        self.last_op = Some(op.id);
                    }
                    o
                }
            }
            (2..=5, Some(id)) => {
                if rest {
                    self.rest(
                        reqwest::Method::GET,
                        &format!("/compute/v1/images/{id}"),
                        None,
                    )
                    .await
                    .0
                } else {
                    Self::grpc(self.images.get(GetImageRequest { image_id: id }).await).0
                }
            }
            (6..=10, Some(id)) => {
                let description = format!("update {n}");
                if rest {
                    let (o, body) = self.rest(reqwest::Method::PATCH, &format!("/compute/v1/images/{id}"), Some(json!({"updateMask": "description,labels", "description": description, "labels": {"n": n.to_string()}}))).await;
                    self.last_op = body
                        .and_then(|b| b["id"].as_str().map(str::to_owned))
                        .or(self.last_op.take());
                    o
                } else {
                    let req = UpdateImageRequest {
                        image_id: id,
                        update_mask: Some(FieldMask::new(["description"])),
                        description,
                        ..Default::default()
                    };
                    Self::grpc(self.images.update(req).await).0
                }
            }
            (11..=12, _) => {
                if rest {
                    self.rest(
                        reqwest::Method::GET,
                        &format!(
                            "/compute/v1/images?folderId={}&pageSize=10&filter=family%3D%22load%22",
                            self.folder
                        ),
                        None,
                    )
                    .await
                    .0
                } else {
                    Self::grpc(
                        self.images
                            .list(ListImagesRequest {
                                folder_id: self.folder.clone(),
                                page_size: 10,
                                order_by: "createdAt desc".into(),
                                ..Default::default()
                            })
                            .await,
                    )
                    .0
                }
            }
            (13, Some(id)) => {
                if rest {
                    self.rest(
                        reqwest::Method::GET,
                        &format!("/compute/v1/images/{id}/operations?pageSize=5"),
                        None,
                    )
                    .await
                    .0
                } else {
                    Self::grpc(
                        self.images
                            .list_operations(ListImageOperationsRequest {
                                image_id: id,
                                page_size: 5,
                                page_token: String::new(),
                            })
                            .await,
                    )
                    .0
                }
            }
            (14, _) => {
                if rest {
                    self.rest(
                        reqwest::Method::GET,
                        &format!(
                            "/compute/v1/images:latestByFamily?folderId={}&family=load",
                            self.folder
                        ),
                        None,
                    )
                    .await
                    .0
                } else {
                    Self::grpc(
                        self.images
                            .get_latest_by_family(GetImageLatestByFamilyRequest {
                                folder_id: self.folder.clone(),
                                family: "load".into(),
                            })
                            .await,
                    )
                    .0
                }
            }
            (15, Some(id)) => {
                let binding = AccessBinding {
                    role_id: format!("role-{}", n % 3),
                    subject: Some(Subject {
                        id: "u".into(),
                        r#type: "userAccount".into(),
                    }),
                };
                if rest {
                    self.rest(reqwest::Method::POST, &format!("/compute/v1/images/{id}:setAccessBindings"), Some(json!({"accessBindings": [{"roleId": binding.role_id, "subject": {"id": "u", "type": "userAccount"}}]}))).await.0
                } else {
                    Self::grpc(
                        self.images
                            .set_access_bindings(SetAccessBindingsRequest {
                                resource_id: id,
                                access_bindings: vec![binding],
                            })
                            .await,
                    )
                    .0
                }
            }
            (16, Some(id)) => {
                if rest {
                    self.rest(
                        reqwest::Method::GET,
                        &format!("/compute/v1/images/{id}:listAccessBindings"),
                        None,
                    )
                    .await
                    .0
                } else {
                    Self::grpc(
                        self.images
                            .list_access_bindings(ListAccessBindingsRequest {
                                resource_id: id,
                                page_size: 10,
                                page_token: String::new(),
                            })
                            .await,
                    )
                    .0
                }
            }
            (17, _) => {
                let op = self.last_op.clone().unwrap_or_else(|| "epdnothere".into());
                if rest {
                    self.rest(reqwest::Method::GET, &format!("/operations/{op}"), None)
                        .await
                        .0
                } else {
                    Self::grpc(self.ops.get(GetOperationRequest { operation_id: op }).await).0
                }
            }
            (18, _) => {
                // Cancel of a (usually finished) operation: FAILED_PRECONDITION is its normal answer.
                let op = self.last_op.clone().unwrap_or_else(|| "epdnothere".into());
                if rest {
                    self.rest(
                        reqwest::Method::POST,
                        &format!("/operations/{op}:cancel"),
                        None,
                    )
                    .await
                    .0
                } else {
                    Self::grpc(
                        self.ops
                            .cancel(CancelOperationRequest { operation_id: op })
                            .await,
                    )
                    .0
                }
            }
            (_, Some(_)) => {
                // Delete one image (keeps the data set bounded over a long soak).
                let id = self.mine.swap_remove((n as usize) % self.mine.len());
                if rest {
                    self.rest(
                        reqwest::Method::DELETE,
                        &format!("/compute/v1/images/{id}"),
                        None,
                    )
                    .await
                    .0
                } else {
                    Self::grpc(
                        self.images
                            .delete(DeleteImageRequest { image_id: id })
                            .await,
                    )
                    .0
                }
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let channel = Channel::from_shared(format!("http://{}", a.grpc))
        .expect("grpc url")
        .connect_lazy();
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let rss_start = a.pid.and_then(rss_kib);
    let mut samples = Vec::new();
    let workers: Vec<_> = (0..a.concurrency)
        .map(|w| {
            let mut c = Client {
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("client"),
                base: format!("http://{}", a.http),
                images: ImageServiceClient::new(channel.clone()),
                ops: OperationServiceClient::new(channel.clone()),
                folder: format!("b1gload{w}"),
                mine: Vec::new(),
                last_op: None,
                seq: w as u64,
            };
            let stop = stop.clone();
            let total = total.clone();
            tokio::spawn(async move {
                let mut stats = Stats::default();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let outcome = c.step().await;
                    stats.record(t, outcome);
                    total.fetch_add(1, Ordering::Relaxed);
                }
                stats
            })
        })
        .collect();
    while started.elapsed() < a.duration {
        tokio::time::sleep(
            a.sample
                .min(a.duration.saturating_sub(started.elapsed()))
                .max(Duration::from_millis(10)),
        )
        .await;
        let rss = a.pid.and_then(rss_kib);
        let data = a.data_dir.as_deref().and_then(data_kib);
        samples.push((
            started.elapsed().as_secs(),
            total.load(Ordering::Relaxed),
            rss,
            data,
        ));
        eprintln!(
            "t={:>4}s requests={} rss={:?} KiB data={:?} KiB",
            started.elapsed().as_secs(),
            total.load(Ordering::Relaxed),
            rss,
            data
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Stats::default();
    for w in workers {
        let s = w.await.expect("worker");
        all.latencies_us.extend(s.latencies_us);
        for (k, v) in s.outcomes {
            *all.outcomes.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let pct = |p: f64| {
        all.latencies_us
            .get(
                ((all.latencies_us.len() as f64 * p) as usize)
                    .min(all.latencies_us.len().saturating_sub(1)),
            )
            .copied()
            .unwrap_or(0)
    };
    let rss_end = a.pid.and_then(rss_kib);
    let n = all.latencies_us.len();
    println!(
        "requests: {n} in {elapsed:.1} s ({:.0}/s), concurrency {}",
        n as f64 / elapsed,
        a.concurrency
    );
    println!(
        "latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.50) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
        all.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    println!("outcomes:");
    for (k, v) in &all.outcomes {
        println!("  {k:<40} {v}");
    }
    if let (Some(s), Some(e)) = (rss_start, rss_end) {
        println!("server RSS: start {s} KiB, end {e} KiB");
    }
    let summary = json!({
        "requests": n, "seconds": elapsed, "p50_ms": pct(0.50) as f64 / 1000.0, "p99_ms": pct(0.99) as f64 / 1000.0,
        "outcomes": all.outcomes, "rss_start_kib": rss_start, "rss_end_kib": rss_end,
        "samples": samples.iter().map(|(t, r, rss, data)| json!({"t": t, "requests": r, "rss_kib": rss, "data_kib": data})).collect::<Vec<_>>(),
    });
    println!("SUMMARY {summary}");
}
