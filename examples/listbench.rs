//! List cost as a folder grows: fills one folder to each size given (1,000, 10,000 and 100,000
//! images by default) over gRPC, and at each size measures a page of 1 and a page of 100, by id
//! and by name, and the latency of an unrelated Get while 16 clients list pages of 100. Prints
//! one markdown row per size, then the ratios of the largest size to the smallest: a List that
//! costs O(page) keeps them near 1. Used by bench/list.sh; runs only against loopback.
//!
//! ```sh
//! cargo run --release --example listbench -- --grpc 127.0.0.1:50051 --sizes 1000,10000,100000
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use compute_gateway::pb::yandex::cloud::compute::v1::image_service_client::ImageServiceClient;
use compute_gateway::pb::yandex::cloud::compute::v1::*;
use tonic::transport::Channel;

const FOLDER: &str = "b1gbench";
const SAMPLES: usize = 200;
const LISTERS: usize = 16;

/// Latency quantiles of some samples, in milliseconds.
fn quantiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.99))
}

async fn list_latency(
    client: &ImageServiceClient<Channel>,
    size: i64,
    order_by: &str,
) -> (f64, f64) {
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        client
            .clone()
            .list(ListImagesRequest {
                folder_id: FOLDER.into(),
                page_size: size,
                order_by: order_by.into(),
                ..Default::default()
            })
            .await
            .expect("list");
        samples.push(started.elapsed());
    }
    quantiles(samples)
}

/// Get latency of one image while [`LISTERS`] clients list pages of 100 without pause.
async fn get_under_listers(client: &ImageServiceClient<Channel>, id: &str) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut listers = Vec::new();
    for _ in 0..LISTERS {
        let (client, stop) = (client.clone(), stop.clone());
        listers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                client
                    .clone()
                    .list(ListImagesRequest {
                        folder_id: FOLDER.into(),
                        page_size: 100,
                        ..Default::default()
                    })
                    .await
                    .expect("list");
            }
        }));
    }
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        client
            .clone()
            .get(GetImageRequest {
                image_id: id.into(),
            })
            .await
            .expect("get");
        samples.push(started.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for l in listers {
        l.await.expect("lister");
    }
    quantiles(samples)
}

/// Creates images `from..to` in the folder, 64 at a time.
async fn fill(client: &ImageServiceClient<Channel>, from: usize, to: usize) -> String {
    let mut last = String::new();
    let mut next = from;
    while next < to {
        let batch: Vec<_> = (next..to.min(next + 64))
            .map(|i| {
                let mut client = client.clone();
                tokio::spawn(async move {
                    let op = client
                        .create(CreateImageRequest {
                            folder_id: FOLDER.into(),
                            name: format!("image-{i:07}"),
                            source: Some(create_image_request::Source::DiskId("d".into())),
                            ..Default::default()
                        })
                        .await
                        .expect("create")
                        .into_inner();
                    op.metadata
                        .and_then(|m| m.unpack::<CreateImageMetadata>().ok().flatten())
                        .map(|m| m.image_id)
                        .unwrap_or_default()
                })
            })
            .collect();
        next = to.min(next + 64);
        for b in batch {
            last = b.await.expect("create task");
        }
    }
    last
}

#[tokio::main]
async fn main() {
    let mut grpc = "127.0.0.1:50051".to_string();
    let mut sizes = vec![1_000, 10_000, 100_000];
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--grpc" => grpc = value,
            "--sizes" => {
                sizes = value
                    .split(',')
                    .map(|s| s.parse().expect("a size"))
                    .collect();
            }
            other => panic!("unknown flag {other}"),
        }
    }
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let client = ImageServiceClient::new(channel);
    println!(
        "| images | page of 1, p50 / p99 ms | page of 100, p50 / p99 ms | page of 100 by name, p50 / p99 ms | Get under {LISTERS} listers, p50 / p99 ms |"
    );
    println!("|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    let mut filled = 0;
    for size in sizes {
        let id = fill(&client, filled, size).await;
        filled = size;
        let one = list_latency(&client, 1, "").await;
        let hundred = list_latency(&client, 100, "").await;
        let by_name = list_latency(&client, 100, "name").await;
        let get = get_under_listers(&client, &id).await;
        println!(
            "| {size} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |",
            one.0, one.1, hundred.0, hundred.1, by_name.0, by_name.1, get.0, get.1
        );
        rows.push((size, one, hundred, by_name, get));
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last())
        && rows.len() > 1
    {
        println!();
        println!(
            "{} / {} images, p50 ratio: page of 1 {:.2}, page of 100 {:.2}, by name {:.2}, Get under listers {:.2}",
            last.0,
            first.0,
            last.1.0 / first.1.0,
            last.2.0 / first.2.0,
            last.3.0 / first.3.0,
            last.4.0 / first.4.0
        );
    }
}
