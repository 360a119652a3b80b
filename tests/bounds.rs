//! Bounded under hostile use: each test replays, at a small scale, one attack that once took
//! the server down (issue 15's findings), and asserts the bound that now holds. Counts and
//! outcomes only; the timings of these attacks are in `bench/`.

mod common;

use common::TestServer;
use compute_gateway::backend::MessageLimits;
use compute_gateway::pb::google::rpc::{self, BadRequest};
use compute_gateway::pb::yandex::cloud::access::*;
use compute_gateway::pb::yandex::cloud::compute::v1::*;
use prost::Message;
use reqwest::Method;
use serde_json::Value;
use tonic::Code;

/// The Prometheus text of the process (every test server of this binary records into it).
async fn scrape(s: &TestServer) -> String {
    reqwest::get(format!("{}/metrics", s.http()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// Finding 1: a label value the client chooses (an HTTP method, a gRPC path) would be a new
/// series for the life of the process. Made-up methods and paths all land in closed sets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_and_paths_do_not_grow_the_metrics() {
    compute_gateway::telemetry::metrics();
    let s = TestServer::start().await;
    let http = reqwest::Client::new();
    let long = format!("M{}", "X".repeat(8 * 1024));
    for i in 0..40 {
        let method = if i == 0 {
            long.clone()
        } else {
            format!("INVENTED{i}")
        };
        let r = http
            .request(
                Method::from_bytes(method.as_bytes()).expect("a token"),
                format!("{}/compute/v1/images/fd8x{i}", s.http()),
            )
            .send()
            .await
            .expect("reply");
        assert_eq!(r.status(), 405, "{method:.20}");
        let r = http
            .request(
                Method::from_bytes(format!("PROBE{i}").as_bytes()).expect("a token"),
                format!("{}/made/up/path{i}", s.http()),
            )
            .send()
            .await
            .expect("reply");
        assert_eq!(r.status(), 404);
    }
    let mut grpc = tonic::client::Grpc::new(s.channel());
    for i in 0..40 {
        grpc.ready().await.expect("ready");
        let path = format!("/made.up.Service{i}/Method{i}");
        let status = grpc
            .unary::<(), (), _>(
                tonic::Request::new(()),
                path.parse().expect("a path"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .expect_err("no such method");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    }

    let text = scrape(&s).await;
    for invented in ["INVENTED", "PROBE", "XXXXXXXX", "made.up", "/made/up"] {
        assert!(
            !text.contains(invented),
            "{invented} became a label value:\n{text:.2000}"
        );
    }
    let sample = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sample of {series} in:\n{text}"))
    };
    assert!(
        sample(r#"http_requests_total{route="unmatched",method="OTHER",status="405"}"#) >= 40.0
    );
    assert!(
        sample(r#"http_requests_total{route="unmatched",method="OTHER",status="404"}"#) >= 40.0
    );
    assert!(sample(r#"grpc_server_requests_total{method="unknown",code="Unimplemented"}"#) >= 40.0);
    assert!(text.len() < 64 * 1024, "{} bytes of metrics", text.len());
}

fn create_req(folder: &str, name: &str) -> CreateImageRequest {
    CreateImageRequest {
        folder_id: folder.into(),
        name: name.into(),
        source: Some(create_image_request::Source::DiskId("disk1".into())),
        ..Default::default()
    }
}

fn binding(role: &str, subject: &str) -> AccessBinding {
    AccessBinding {
        role_id: role.into(),
        subject: Some(Subject {
            id: subject.into(),
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

/// Finding 2: an image's bindings had no total cap, and each change rewrites the whole list
/// on the one writer. UpdateAccessBindings cannot grow a list past 1000 (the most one
/// SetAccessBindings may set); a request that stays within it still works.
#[tokio::test]
async fn access_bindings_have_a_total_cap() {
    let s = TestServer::start().await;
    let op = s
        .images()
        .create(create_req("b1g", "bound"))
        .await
        .expect("create")
        .into_inner();
    let id = common::response::<Image>(&common::wait_done(&mut s.operations(), &op.id).await).id;
    let update = |deltas: Vec<AccessBindingDelta>| UpdateAccessBindingsRequest {
        resource_id: id.clone(),
        access_binding_deltas: deltas,
    };
    let add = |from: usize, to: usize| -> Vec<AccessBindingDelta> {
        (from..to)
            .map(|i| {
                delta(
                    AccessBindingAction::Add,
                    binding("viewer", &format!("u{i}")),
                )
            })
            .collect()
    };
    s.images()
        .update_access_bindings(update(add(0, 600)))
        .await
        .expect("600 bindings");
    s.images()
        .update_access_bindings(update(add(600, 1000)))
        .await
        .expect("1000 bindings in all");
    let err = s
        .images()
        .update_access_bindings(update(add(1000, 1001)))
        .await
        .expect_err("a 1001st binding");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("at most 1000"), "{}", err.message());
    // Remove one and add one in one request: the total stays 1000.
    let mut swap = add(1000, 1001);
    swap.insert(
        0,
        delta(AccessBindingAction::Remove, binding("viewer", "u0")),
    );
    s.images()
        .update_access_bindings(update(swap))
        .await
        .expect("a swap within the cap");
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = s
            .images()
            .list_access_bindings(ListAccessBindingsRequest {
                resource_id: id.clone(),
                page_size: 1000,
                page_token: token,
            })
            .await
            .expect("list")
            .into_inner();
        listed.extend(page.access_bindings);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed.len(), 1000);
    assert!(listed.contains(&binding("viewer", "u1000")));
    assert!(!listed.contains(&binding("viewer", "u0")));
}

/// Finding 3: an image of 300,000 license ids made a List reply larger than any client
/// reads. Product ids are capped, and a List page is cut to its byte budget (with a token for
/// the rest), so every page of the largest images can be read, over gRPC and REST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_bounded_and_every_list_page_can_be_read() {
    let s = TestServer::start().await;
    let mut too_many = create_req("b1g", "too-many");
    too_many.product_ids = (0..101).map(|i| format!("p{i}")).collect();
    let err = s
        .images()
        .create(too_many)
        .await
        .expect_err("101 product ids");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("product_ids: must have at most 100 elements, got 101"),
        "{}",
        err.message()
    );

    // The largest image the rules allow: 100 product ids of 50 characters, 64 labels of 63.
    let largest = |i: usize| {
        let mut r = create_req("b1g", &format!("large-{i:03}"));
        r.product_ids = (0..100).map(|p| format!("{p:0>50}")).collect();
        r.labels = (0..64)
            .map(|l| (format!("k{l:0>62}"), format!("{i:0>63}")))
            .collect();
        r.description = "d".repeat(256);
        r
    };
    const N: usize = 90;
    for i in 0..N {
        s.images()
            .create(largest(i))
            .await
            .expect("the largest image");
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut pages = 0;
    let mut token = String::new();
    loop {
        let page = s
            .images()
            .list(ListImagesRequest {
                folder_id: "b1g".into(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("every page can be read")
            .into_inner();
        assert!(
            page.encoded_len() <= 2 << 20,
            "{} bytes",
            page.encoded_len()
        );
        pages += 1;
        for img in page.images {
            assert!(seen.insert(img.name), "no image twice");
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), N);
    assert!(
        pages >= 2,
        "{N} of the largest images are more than one page"
    );

    let r = reqwest::get(format!(
        "{}/compute/v1/images?folderId=b1g&pageSize=1000",
        s.http()
    ))
    .await
    .expect("reply");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    let listed = body["images"].as_array().expect("images").len();
    assert!(0 < listed && listed < N, "{listed}");
    assert!(
        body["nextPageToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
}

/// Finding 8: one client's oversized `Grpc-Metadata-*` headers once made the backend drop the
/// gateway's one shared connection, failing other clients' calls. They are refused with 431
/// before anything is sent, and every other client's call succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_forwarded_metadata_fails_only_its_own_request() {
    let s = TestServer::start().await;
    let http = reqwest::Client::new();
    let op: Value = http
        .post(format!("{}/compute/v1/images", s.http()))
        .body(r#"{"folderId":"b1g","name":"shared","diskId":"d"}"#)
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let id = op["metadata"]["imageId"].as_str().expect("id").to_string();
    let get = format!("{}/compute/v1/images/{id}", s.http());
    let big = "v".repeat(3 * 1024);
    let attacker = {
        let (http, get, big) = (http.clone(), get.clone(), big.clone());
        tokio::spawn(async move {
            let mut refused = 0;
            for _ in 0..50 {
                let r = http
                    .get(&get)
                    .header("Grpc-Metadata-A", &big)
                    .header("Grpc-Metadata-B", &big)
                    .header("Grpc-Metadata-C", &big)
                    .send()
                    .await
                    .expect("a reply");
                assert_eq!(r.status(), 431);
                let body: Value = r.json().await.expect("json");
                assert_eq!(body["code"], 8, "{body}");
                refused += 1;
            }
            refused
        })
    };
    let mut ok = 0;
    for _ in 0..200 {
        let r = http.get(&get).send().await.expect("a reply");
        assert_eq!(r.status(), 200);
        ok += 1;
    }
    assert_eq!(attacker.await.expect("attacker"), 50);
    assert_eq!(ok, 200);
    // Within the limit, metadata still reaches the backend.
    let r = http
        .get(&get)
        .header("Grpc-Metadata-A", "v".repeat(2 * 1024))
        .send()
        .await
        .expect("a reply");
    assert_eq!(r.status(), 200);
}

/// Finding 10: a name-ordered page token once outgrew the API's own 100-character limit on
/// page tokens. Tokens of the longest names fit, and work.
#[tokio::test]
async fn page_tokens_of_the_longest_names_fit_the_limit() {
    let s = TestServer::start().await;
    let long = |c: char| format!("a{}", c.to_string().repeat(62));
    for c in ['x', 'y', 'z'] {
        s.images()
            .create(create_req("b1g", &long(c)))
            .await
            .expect("create");
    }
    for order_by in ["name", "name desc", "createdAt", "id desc"] {
        let mut names = Vec::new();
        let mut token = String::new();
        loop {
            let page = s
                .images()
                .list(ListImagesRequest {
                    folder_id: "b1g".into(),
                    page_size: 1,
                    page_token: token,
                    order_by: order_by.into(),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("{order_by}: {e:?}"))
                .into_inner();
            names.extend(page.images.into_iter().map(|i| i.name));
            if page.next_page_token.is_empty() {
                break;
            }
            assert!(
                page.next_page_token.len() <= 100,
                "{order_by}: {}",
                page.next_page_token
            );
            token = page.next_page_token;
        }
        assert_eq!(names.len(), 3, "{order_by}");
        if order_by == "name" {
            assert_eq!(names, [long('x'), long('y'), long('z')]);
        }
    }
}

/// Finding 12: an error naming 40,000 field violations was too large for a client to read.
/// An error names the first 20 and counts the rest.
#[tokio::test]
async fn an_error_names_at_most_20_violations_and_counts_the_rest() {
    let s = TestServer::start().await;
    let err = s
        .images()
        .set_access_bindings(SetAccessBindingsRequest {
            resource_id: "fd8x".into(),
            access_bindings: vec![binding("", ""); 1000],
        })
        .await
        .expect_err("1000 bad bindings");
    assert_eq!(err.code(), Code::InvalidArgument);
    let status = rpc::Status::decode(err.details()).expect("a google.rpc.Status");
    let bad = status.details[0]
        .unpack::<BadRequest>()
        .expect("decodes")
        .expect("BadRequest");
    assert_eq!(bad.field_violations.len(), 20);
    assert_eq!(bad.field_violations[0].field, "access_bindings[0].role_id");
    // Each binding breaks two rules (role and subject id): 2,000 in all.
    assert!(
        err.message().ends_with("; and 1980 more"),
        "{}",
        err.message()
    );
    assert!(err.message().len() < 2048, "{}", err.message().len());
}

/// Reads until the peer closes or resets; how many bytes came.
async fn read_to_close(conn: &mut tokio::net::TcpStream) -> usize {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n,
        }
    }
}

/// Finding 6: 1,100 idle connections to the gRPC port once used up every file descriptor,
/// and the REST port stopped answering too. Each listener has its own cap: past it a new
/// connection is closed at once, the other port keeps answering, and a freed place is taken
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_has_its_own_connection_cap() {
    use tokio::net::TcpStream;
    compute_gateway::telemetry::metrics();
    let s = TestServer::start_with(common::Options {
        listener: compute_gateway::gateway::ListenerOptions {
            max_connections: 8,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(s.grpc_addr).await.expect("connect"));
    }
    // The ninth is accepted and closed: the peer hears of it at once.
    let mut ninth = TcpStream::connect(s.grpc_addr).await.expect("connect");
    assert_eq!(read_to_close(&mut ninth).await, 0);
    // The REST port is not touched by the gRPC port's flood.
    let r = reqwest::get(format!("{}/compute/v1/images?folderId=b1g", s.http()))
        .await
        .expect("REST answers");
    assert_eq!(r.status(), 200);
    // A freed place is taken again.
    drop(idle);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut images = s.images();
        match images
            .list(ListImagesRequest {
                folder_id: "b1g".into(),
                ..Default::default()
            })
            .await
        {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no place freed: {e:?}"
                );
                tokio::task::yield_now().await;
            }
        }
    }
    let text = scrape(&s).await;
    assert!(
        text.lines().any(|l| l
            .strip_prefix(r#"net_connections_refused_total{listener="grpc"} "#)
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|n| n >= 1.0)),
        "{text}"
    );
}

/// Finding 6: a gRPC stream that never sends its request body once held its stream for ever,
/// and one connection could open 40,000 streams. The call ends DEADLINE_EXCEEDED at the
/// backend's call timeout, and the server announces its stream limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_streams_are_limited_and_a_stalled_body_times_out() {
    let s = TestServer::start_with(common::Options {
        call_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(s.grpc_addr)
        .await
        .expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2");
    tokio::spawn(conn);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!(
        "http://{}/yandex.cloud.compute.v1.ImageService/Get",
        s.grpc_addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .expect("request");
    // Headers only: the body never comes.
    let (reply, _body) = client.send_request(request, false).expect("stream");
    let reply = reply.await.expect("a reply");
    let status = reply
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().expect("ascii").to_string());
    let status = match status {
        Some(s) => s,
        None => {
            let mut body = reply.into_body();
            while body.data().await.is_some() {}
            let trailers = body.trailers().await.expect("trailers").expect("some");
            trailers["grpc-status"].to_str().expect("ascii").to_string()
        }
    };
    assert_eq!(status, (Code::DeadlineExceeded as i32).to_string());
    // The server's SETTINGS have come by now.
    assert_eq!(client.current_max_send_streams(), 256);
}

/// Finding 7: clients that asked for large replies and never read them held their memory
/// and connections for as long as they liked. A write that waits on the client longer than
/// the write timeout ends the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_its_replies_is_disconnected() {
    use tokio::io::AsyncWriteExt;
    let s = TestServer::start_with(common::Options {
        listener: compute_gateway::gateway::ListenerOptions {
            write_timeout: std::time::Duration::from_millis(500),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut big = create_req("b1g", "");
    big.product_ids = (0..100).map(|p| format!("{p:0>50}")).collect();
    for i in 0..20 {
        big.name = format!("big-{i}");
        s.images().create(big.clone()).await.expect("create");
    }
    // One reply's size, read whole by a client that reads.
    let one = reqwest::get(format!("{}/compute/v1/images?folderId=b1g", s.http()))
        .await
        .expect("reply")
        .bytes()
        .await
        .expect("body")
        .len();
    assert!(one > 100_000, "{one}");
    // Enough pipelined requests that their replies overflow every socket buffer on the way.
    let requests = (32 << 20) / one + 1;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small buffer");
    let mut conn = socket.connect(s.http_addr).await.expect("connect");
    let get = "GET /compute/v1/images?folderId=b1g HTTP/1.1\r\nHost: x\r\n\r\n";
    conn.write_all(get.repeat(requests).as_bytes())
        .await
        .expect("requests sent");
    // Not reading: the server's writes wait, then time out. (This wait is the client
    // misbehaving, not a wait for the server.)
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let received = read_to_close(&mut conn).await;
    assert!(
        received < requests * one,
        "{received} bytes of {requests} replies of {one}: the connection was not closed"
    );
}

/// Finding 4: nothing was ever purged, about 1.35 GB per million mutations. Done Operations
/// and idempotency keys past their retention are purged in the background: they are gone from
/// Get and from their image's history, a retry with an expired key is a new request, a create
/// still running stays, and the data file of a steady workload stops growing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_operations_and_keys_are_purged_and_the_file_stops_growing() {
    use compute_gateway::pb::yandex::cloud::operation::GetOperationRequest;
    let s = TestServer::start_with(common::Options {
        retention: compute_gateway::backend::Retention {
            operations: std::time::Duration::ZERO,
            idempotency_keys: std::time::Duration::ZERO,
            interval: std::time::Duration::from_millis(20),
        },
        // Long enough that a create is still running when the purges come.
        create_delay: std::time::Duration::from_secs(30),
        ..Default::default()
    })
    .await;
    let keyed = |r: UpdateImageRequest, key: &str| {
        let mut r = tonic::Request::new(r);
        r.metadata_mut()
            .insert("idempotency-key", key.parse().expect("ascii"));
        r
    };
    let running = s
        .images()
        .create(create_req("b1g", "running"))
        .await
        .expect("create")
        .into_inner();
    let image_id = running.metadata.as_ref().map(|m| {
        m.unpack::<CreateImageMetadata>()
            .expect("decodes")
            .expect("create metadata")
            .image_id
    });
    let image_id = image_id.expect("an image id");
    let update = UpdateImageRequest {
        image_id: image_id.clone(),
        update_mask: Some(compute_gateway::json::FieldMask::new(["description"])),
        description: "once".into(),
        ..Default::default()
    };
    let first = s
        .images()
        .update(keyed(update.clone(), "k1"))
        .await
        .expect("update")
        .into_inner();
    // Polls until the update's Operation is purged.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = s
            .operations()
            .get(GetOperationRequest {
                operation_id: first.id.clone(),
            })
            .await;
        match got {
            Err(e) if e.code() == Code::NotFound => break,
            _ => {
                assert!(tokio::time::Instant::now() < deadline, "never purged");
                tokio::task::yield_now().await;
            }
        }
    }
    let history = s
        .images()
        .list_operations(ListImageOperationsRequest {
            image_id: image_id.clone(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    let ids: Vec<&str> = history.operations.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(
        ids,
        [running.id.as_str()],
        "only the running create is left"
    );
    let again = s
        .images()
        .update(keyed(update, "k1"))
        .await
        .expect("a retry after the key expired")
        .into_inner();
    assert_ne!(again.id, first.id, "an expired key is a new request");

    // A steady workload: the data file stops growing (the embedded store's file; PostgreSQL
    // keeps its own).
    if s.on_postgres() {
        return;
    }
    let file = s.data_dir.join("compute.redb");
    let size = || std::fs::metadata(&file).expect("data file").len();
    let update_round = |i: usize| {
        let s = &s;
        let image_id = image_id.clone();
        async move {
            let mut r = tonic::Request::new(UpdateImageRequest {
                image_id,
                update_mask: Some(compute_gateway::json::FieldMask::new(["description"])),
                description: format!("round {i}"),
                ..Default::default()
            });
            r.metadata_mut()
                .insert("idempotency-key", format!("u{i}").parse().expect("ascii"));
            s.images().update(r).await.expect("update");
        }
    };
    for i in 0..500 {
        update_round(i).await;
    }
    let warm = size();
    for i in 500..2000 {
        update_round(i).await;
    }
    let end = size();
    // Kept, these 1,500 Operations and keys would take about 1.3 MB (870 bytes each; the file
    // grew 630 KB -> 2.1 MB with them). Purged, the file holds only what the purge has not
    // reached yet, and grows by at most a region or two while it settles.
    assert!(
        end <= warm + 256 * 1024,
        "the data file grew from {warm} to {end} bytes over 1,500 more keyed updates"
    );
}

/// A disk that fills up when told to: from then on the file cannot grow (a longer length, a
/// write past its end fail with "no space left"), as on a real full disk, where rewriting the
/// blocks a file has needs no new ones.
#[derive(Debug)]
struct FillableDisk {
    file: redb::backends::FileBackend,
    full: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FillableDisk {
    fn check(&self) -> std::io::Result<()> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
        }
        Ok(())
    }
}

impl redb::StorageBackend for FillableDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        if len > self.file.len()? {
            self.check()?;
        }
        self.file.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if offset + data.len() as u64 > self.file.len()? {
            self.check()?;
        }
        self.file.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.file.close()
    }
}

/// Finding 5: after the first ENOSPC every read and write answered 500, even after space
/// was freed, while /healthz said 200. Now a write on a full disk is UNAVAILABLE for that
/// write only, reads go on, health turns NOT_SERVING, and once there is space again writes
/// work and health comes back without a restart; nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_only_and_the_store_recovers_when_space_returns() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let full = Arc::new(AtomicBool::new(false));
    let (path, disk) = (dir.path().join("compute.redb"), full.clone());
    let open: compute_gateway::store::Opener = Arc::new(move || {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(compute_gateway::store::StoreError::other)?;
        let backend = FillableDisk {
            file: redb::backends::FileBackend::new(file)
                .map_err(compute_gateway::store::StoreError::from_redb)?,
            full: disk.clone(),
        };
        redb::Database::builder()
            .create_with_backend(backend)
            .map_err(compute_gateway::store::StoreError::from_redb)
    });
    let s = TestServer::start_in(
        dir.path(),
        common::Options {
            store: Some(open),
            health: compute_gateway::backend::HealthProbe {
                interval: std::time::Duration::from_millis(100),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let http = reqwest::Client::new();
    let create = |name: &str| {
        let body = format!(r#"{{"folderId":"b1g","name":"{name}","diskId":"d"}}"#);
        http.post(format!("{}/compute/v1/images", s.http()))
            .body(body)
            .send()
    };
    let r = create("before").await.expect("reply");
    assert_eq!(r.status(), 200);
    let op: Value = r.json().await.expect("json");
    let kept = op["metadata"]["imageId"].as_str().expect("id").to_string();

    full.store(true, Ordering::SeqCst);
    for name in ["during-1", "during-2"] {
        let r = create(name).await.expect("reply");
        assert_eq!(r.status(), 503, "a write on a full disk");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["code"], 14, "{body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("disk space")),
            "{body}"
        );
        // Reads go on.
        let r = http
            .get(format!("{}/compute/v1/images/{kept}", s.http()))
            .send()
            .await
            .expect("reply");
        assert_eq!(r.status(), 200, "a read on a full disk");
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(s.channel());
    let status_is = |want: i32| {
        let mut health = health.clone();
        async move {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let now = health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .expect("health")
                    .into_inner()
                    .status;
                if now == want {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "health stayed {now}"
                );
                tokio::task::yield_now().await;
            }
        }
    };
    status_is(2).await; // NOT_SERVING
    full.store(false, Ordering::SeqCst);
    status_is(1).await; // SERVING, with no client writing
    let r = create("after").await.expect("reply");
    assert_eq!(r.status(), 200, "writes work again");
    let listed: Value = http
        .get(format!("{}/compute/v1/images?folderId=b1g", s.http()))
        .send()
        .await
        .expect("reply")
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = listed["images"]
        .as_array()
        .expect("images")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{listed}");
    assert!(
        names.contains(&"before") && names.contains(&"after"),
        "{names:?}"
    );
    let _ = &mut health;
}

/// Finding 6: HTTP/2 connections were kept for ever, on both ports. A connection with no
/// request in flight for the idle timeout is closed with a GOAWAY; one that keeps sending
/// requests is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_on_both_ports_and_busy_ones_are_kept() {
    let idle = std::time::Duration::from_secs(1);
    let s = TestServer::start_with(common::Options {
        listener: compute_gateway::gateway::ListenerOptions {
            idle_timeout: idle,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let rest = http::Request::get(format!("http://{}/healthz", s.http_addr))
        .body(())
        .expect("request");
    let grpc = http::Request::post(format!(
        "http://{}/grpc.health.v1.Health/Check",
        s.grpc_addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .expect("request");
    tokio::join!(
        idle_and_busy(s.http_addr, rest, idle),
        idle_and_busy(s.grpc_addr, grpc, idle)
    );
}

/// On `addr`, a connection that repeats `request` every eighth of `idle` is kept for two
/// timeouts, and one that sends it once is closed gracefully soon after `idle`.
async fn idle_and_busy(
    addr: std::net::SocketAddr,
    template: http::Request<()>,
    idle: std::time::Duration,
) {
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (client, conn) = h2::client::handshake(tcp).await.expect("h2");
        (client, tokio::spawn(conn))
    };
    let call = |client: h2::client::SendRequest<bytes::Bytes>| {
        let mut request = http::Request::builder()
            .method(template.method())
            .uri(template.uri())
            .body(())
            .expect("request");
        *request.headers_mut() = template.headers().clone();
        async move {
            let mut client = client.ready().await.expect("ready");
            let grpc = request.method() == http::Method::POST;
            let (reply, mut body) = client.send_request(request, !grpc).expect("stream");
            if grpc {
                // An empty message, framed as gRPC frames it.
                body.send_data(bytes::Bytes::from_static(&[0; 5]), true)
                    .expect("body");
            }
            let reply = reply.await.expect("reply");
            assert_eq!(reply.status(), 200, "{addr}");
            let mut body = reply.into_body();
            while body.data().await.is_some() {}
            client
        }
    };
    // Busy: a request every eighth of the timeout, for two timeouts.
    let (busy, busy_conn) = connect().await;
    let mut busy = call(busy).await;
    for _ in 0..16 {
        tokio::time::sleep(idle / 8).await;
        busy = call(busy).await;
    }
    assert!(
        !busy_conn.is_finished(),
        "{addr}: a busy connection is kept"
    );
    // Idle: closed by the server after one request.
    let (quiet, quiet_conn) = connect().await;
    let _quiet = call(quiet).await;
    let ended = tokio::time::timeout(idle * 10, quiet_conn)
        .await
        .unwrap_or_else(|_| panic!("{addr}: the idle connection was not closed"));
    let ended = ended.expect("task");
    assert!(ended.is_ok(), "{addr}: closed gracefully: {ended:?}");
}

/// The gRPC services' message limits are the operator's (`--grpc-max-recv-bytes`,
/// `--grpc-max-send-bytes`): a request over the first and a reply over the second are refused
/// with a status that names the limit, and calls within both go through.
#[tokio::test]
async fn grpc_message_limits_are_configurable() {
    let s = TestServer::start_with(common::Options {
        grpc_messages: MessageLimits {
            max_recv_bytes: 2048,
            max_send_bytes: 4096,
        },
        ..Default::default()
    })
    .await;
    let mut images = s.images();
    let create = |name: &str, description: String| CreateImageRequest {
        folder_id: "b1g".into(),
        name: name.into(),
        description,
        source: Some(create_image_request::Source::DiskId("d".into())),
        ..Default::default()
    };
    let mut big = create("big", String::new());
    big.labels = (0..40).map(|i| (format!("k{i}"), "v".repeat(60))).collect();
    let refused = images
        .create(big)
        .await
        .expect_err("over the receive limit");
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("2048"), "{refused:?}");
    for i in 0..20 {
        let op = images
            .create(create(&format!("img-{i}"), "d".repeat(200)))
            .await
            .expect("within the limits")
            .into_inner();
        common::wait_done(&mut s.operations(), &op.id).await;
    }
    let list = |page_size| ListImagesRequest {
        folder_id: "b1g".into(),
        page_size,
        ..Default::default()
    };
    let refused = images
        .list(list(20))
        .await
        .expect_err("over the send limit");
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("4096"), "{refused:?}");
    let page = images
        .list(list(5))
        .await
        .expect("a page within it")
        .into_inner();
    assert_eq!(page.images.len(), 5);
}
