//! Write latency of an unrelated client during a burst of access-binding updates (issue 15,
//! finding 2: a burst once froze every write for 21 s). One client updates the labels of its
//! own image, one Update after another, first alone and then while `--attackers` clients send
//! the largest binding updates the API allows to another image without pause: SetAccessBindings
//! with 1,000 bindings, and UpdateAccessBindings adding 1,000 more, which the per-image cap
//! refuses. Prints the unrelated client's p50 / p99 / max in both phases, and what the attack
//! got. Used by bench/bindings.sh; runs only against loopback.
//!
//! ```sh
//! cargo run --release --example bindbench -- --grpc 127.0.0.1:50051 --attackers 8
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use compute_gateway::pb::yandex::cloud::access::*;
use compute_gateway::pb::yandex::cloud::compute::v1::image_service_client::ImageServiceClient;
use compute_gateway::pb::yandex::cloud::compute::v1::*;
use tonic::transport::Channel;

const FOLDER: &str = "b1gbind";
/// Updates the unrelated client makes in each phase.
const SAMPLES: usize = 300;

/// p50, p99 and max of some samples, in milliseconds.
fn quantiles(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.99), at(1.0))
}

async fn create(client: &mut ImageServiceClient<Channel>, name: &str) -> String {
    let op = client
        .create(CreateImageRequest {
            folder_id: FOLDER.into(),
            name: name.into(),
            source: Some(create_image_request::Source::DiskId("d".into())),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    op.metadata
        .and_then(|m| m.unpack::<CreateImageMetadata>().ok().flatten())
        .map(|m| m.image_id)
        .expect("an image id")
}

/// The unrelated client: [`SAMPLES`] Updates of its image's labels, one after another.
async fn victim(mut client: ImageServiceClient<Channel>, id: &str) -> (f64, f64, f64) {
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let started = Instant::now();
        client
            .update(UpdateImageRequest {
                image_id: id.into(),
                update_mask: Some(compute_gateway::json::FieldMask::new(["labels"])),
                labels: [("round".to_string(), i.to_string())].into(),
                ..Default::default()
            })
            .await
            .expect("the unrelated update succeeds");
        samples.push(started.elapsed());
    }
    quantiles(samples)
}

fn bindings(round: usize) -> Vec<AccessBinding> {
    (0..1000)
        .map(|i| AccessBinding {
            role_id: "viewer".into(),
            subject: Some(Subject {
                id: format!("user-{round:06}-{i:04}-padding-to-make-each-subject-long"),
                r#type: "userAccount".into(),
            }),
        })
        .collect()
}

/// One attacker: alternately sets 1,000 bindings and tries to add 1,000 more, until `stop`.
/// Returns its outcomes by gRPC code.
async fn attacker(
    mut client: ImageServiceClient<Channel>,
    target: String,
    me: usize,
    stop: Arc<AtomicBool>,
) -> BTreeMap<String, usize> {
    let mut outcomes = BTreeMap::new();
    let mut round = me * 1_000_000;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let code = if round.is_multiple_of(2) {
            client
                .set_access_bindings(SetAccessBindingsRequest {
                    resource_id: target.clone(),
                    access_bindings: bindings(round),
                })
                .await
                .map(|_| ())
        } else {
            client
                .update_access_bindings(UpdateAccessBindingsRequest {
                    resource_id: target.clone(),
                    access_binding_deltas: bindings(round)
                        .into_iter()
                        .map(|b| AccessBindingDelta {
                            action: AccessBindingAction::Add as i32,
                            access_binding: Some(b),
                        })
                        .collect(),
                })
                .await
                .map(|_| ())
        };
        let code = match code {
            Ok(()) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        *outcomes.entry(format!("{code:?}")).or_default() += 1;
    }
    outcomes
}

#[tokio::main]
async fn main() {
    let mut grpc = "127.0.0.1:50051".to_string();
    let mut attackers = 8;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--grpc" => grpc = value,
            "--attackers" => attackers = value.parse().expect("a count"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        grpc.starts_with("127.") || grpc.starts_with("localhost"),
        "loopback targets only: {grpc}"
    );
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut client = ImageServiceClient::new(channel.clone());
    let mine = create(&mut client, "victim").await;
    let target = create(&mut client, "target").await;
    let alone = victim(client.clone(), &mine).await;

    let stop = Arc::new(AtomicBool::new(false));
    // Each attacker has a connection of its own, as separate clients would.
    let mut tasks = Vec::new();
    for me in 0..attackers {
        let channel = Channel::from_shared(format!("http://{grpc}"))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        tasks.push(tokio::spawn(attacker(
            ImageServiceClient::new(channel),
            target.clone(),
            me,
            stop.clone(),
        )));
    }
    let started = Instant::now();
    let burst = victim(client.clone(), &mine).await;
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut outcomes = BTreeMap::new();
    for t in tasks {
        for (code, n) in t.await.expect("attacker") {
            *outcomes.entry(code).or_insert(0) += n;
        }
    }
    let attacks: usize = outcomes.values().sum();
    println!("| unrelated Update | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|");
    println!(
        "| alone | {:.2} | {:.2} | {:.2} |",
        alone.0, alone.1, alone.2
    );
    println!(
        "| during {attackers} attackers | {:.2} | {:.2} | {:.2} |",
        burst.0, burst.1, burst.2
    );
    println!(
        "attack: {attacks} binding updates of 1,000 entries in {seconds:.1} s ({:.0}/s): {outcomes:?}",
        attacks as f64 / seconds
    );
    println!(
        "ratio, during / alone: p50 {:.2}, p99 {:.2}",
        burst.0 / alone.0,
        burst.1 / alone.1
    );
}
