//! The PostgreSQL store (`--database-url`): the API over it, its data kept across a restart,
//! and two servers sharing one database, whose writes are serialised across both (names
//! unique in a folder, idempotency keys honoured whichever server answers). Skipped, with one
//! line saying why, when no PostgreSQL server answers (see `common::pg`).

mod common;

use common::pg::TestDatabase;
use common::{Options, TestServer};
use compute_gateway::pb::yandex::cloud::compute::v1::{
    CreateImageRequest, GetImageRequest, ListImagesRequest, create_image_request,
};
use serde_json::{Value, json};

fn on(url: &str) -> Options {
    Options {
        database_url: Some(url.to_string()),
        create_delay: std::time::Duration::from_millis(20),
        ..Options::default()
    }
}

fn create(folder: &str, name: &str) -> CreateImageRequest {
    CreateImageRequest {
        folder_id: folder.into(),
        name: name.into(),
        source: Some(create_image_request::Source::Uri(
            "https://example.com/i.img".into(),
        )),
        ..Default::default()
    }
}

async fn rest(s: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut req = client.request(
        method.parse().expect("method"),
        format!("{}{path}", s.http()),
    );
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("response");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON"))
}

#[tokio::test]
async fn the_api_works_on_postgresql_and_its_data_outlives_the_server() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let s = TestServer::start_in(dir.path(), on(&db.url)).await;
    let mut images = s.images();
    let mut ops = s.operations();
    let mut ids = Vec::new();
    for i in 0..5 {
        let op = images
            .create(create("f1", &format!("img-{i}")))
            .await
            .expect("create")
            .into_inner();
        let done = common::wait_done(&mut ops, &op.id).await;
        let image: compute_gateway::pb::yandex::cloud::compute::v1::Image = common::response(&done);
        ids.push(image.id);
    }
    // Pages in every order, the same as on the embedded store.
    let (status, page) = rest(
        &s,
        "GET",
        "/compute/v1/images?folderId=f1&pageSize=2&orderBy=name%20desc",
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let names: Vec<&str> = page["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| i["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["img-4", "img-3"]);
    let token = page["nextPageToken"].as_str().expect("token").to_string();
    let (_, next) = rest(
        &s,
        "GET",
        &format!("/compute/v1/images?folderId=f1&pageSize=2&orderBy=name%20desc&pageToken={token}"),
        None,
    )
    .await;
    assert_eq!(next["images"][0]["name"], "img-2");
    // A name is unique in its folder.
    let (status, got) = rest(
        &s,
        "POST",
        "/compute/v1/images",
        Some(json!({"folderId": "f1", "name": "img-0", "uri": "https://example.com/i.img"})),
    )
    .await;
    assert_eq!(status, 409, "{got}");
    // An update, and its history.
    let (status, _) = rest(
        &s,
        "PATCH",
        &format!("/compute/v1/images/{}", ids[0]),
        Some(json!({"updateMask": "description", "description": "kept"})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, history) = rest(
        &s,
        "GET",
        &format!("/compute/v1/images/{}/operations", ids[0]),
        None,
    )
    .await;
    assert_eq!(
        history["operations"].as_array().expect("ops").len(),
        2,
        "{history}"
    );
    s.stop().await;

    // Another server on the same database finds it all.
    let s = TestServer::start_in(dir.path(), on(&db.url)).await;
    let image = s
        .images()
        .get(GetImageRequest {
            image_id: ids[0].clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(image.description, "kept");
    let listed = s
        .images()
        .list(ListImagesRequest {
            folder_id: "f1".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.images.len(), 5);
    s.stop().await;
}

#[tokio::test]
async fn two_servers_on_one_database_serialise_their_writes() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let (da, db_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = TestServer::start_in(da.path(), on(&db.url)).await;
    let b = TestServer::start_in(db_dir.path(), on(&db.url)).await;

    // The same name, asked of both at once, many times: one create per name wins.
    let mut tasks = Vec::new();
    for i in 0..20 {
        for s in [&a, &b] {
            let mut images = s.images();
            tasks.push(tokio::spawn(async move {
                images
                    .create(create("race", &format!("n{i}")))
                    .await
                    .is_ok()
            }));
        }
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.expect("task"));
    }
    assert_eq!(won, 20, "exactly one create per name");

    // An idempotency key used on one server is honoured by the other.
    let key = "3f1d7e52-2b8a-4d0e-9a35-5c1e2a9b7c10";
    let mut first = tonic::Request::new(create("idem", "once"));
    first
        .metadata_mut()
        .insert("idempotency-key", key.parse().expect("key"));
    let op1 = a.images().create(first).await.expect("create").into_inner();
    let mut again = tonic::Request::new(create("idem", "once"));
    again
        .metadata_mut()
        .insert("idempotency-key", key.parse().expect("key"));
    let op2 = b.images().create(again).await.expect("retry").into_inner();
    assert_eq!(
        op1.id, op2.id,
        "the retry on the other server returns the first Operation"
    );

    // What one writes, the other reads.
    let listed = b
        .images()
        .list(ListImagesRequest {
            folder_id: "race".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.images.len(), 20);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_database_that_cannot_be_reached_is_a_clear_start_error() {
    let dead = common::dead_address().await;
    let url = format!("postgres://postgres@{dead}/nothing?connect_timeout=1");
    let opened = compute_gateway::store::PostgresStore::open(
        &url,
        compute_gateway::store::PostgresOptions {
            connect_timeout: std::time::Duration::from_secs(1),
            ..Default::default()
        },
    );
    let e = opened.err().expect("nothing listens there").to_string();
    assert!(e.contains("--database-url"), "{e}");
}

#[tokio::test]
async fn a_create_whose_server_died_is_finished_by_another_after_its_lease() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let survivor = TestServer::start_in(dir.path(), on(&db.url)).await;
    let (mut doomed, ready) = common::serve_process(
        &[
            "--create-delay-ms".as_ref(),
            "300".as_ref(),
            "--database-url".as_ref(),
            db.url.as_ref(),
        ],
        std::process::Stdio::null(),
    );
    let grpc = ready["grpc"].as_str().expect("grpc").to_string();
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut images =
        compute_gateway::pb::yandex::cloud::compute::v1::image_service_client::ImageServiceClient::new(
            channel,
        );
    let op = images
        .create(create("lease", "orphan"))
        .await
        .expect("create")
        .into_inner();
    assert!(!op.done);
    // The server that started the create dies before finishing it.
    doomed.kill().expect("kill -9");
    doomed.wait().expect("reaped");

    // The survivor finishes it once its lease expires: READY, not lost.
    let mut ops = survivor.operations();
    let done = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        common::wait_done(&mut ops, &op.id),
    )
    .await
    .expect("finished within the lease");
    let image: compute_gateway::pb::yandex::cloud::compute::v1::Image = common::response(&done);
    assert_eq!(
        image.status,
        compute_gateway::pb::yandex::cloud::compute::v1::image::Status::Ready as i32
    );
    survivor.stop().await;
}

#[tokio::test]
async fn connections_to_the_database_use_tls_as_sslmode_says() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let settings =
        db.admin_query("SELECT current_setting('ssl'), current_setting('ssl_cert_file'), $1::text");
    let (ssl, cert): (String, String) = (settings[0].get(0), settings[0].get(1));
    if ssl != "on" || std::fs::File::open(&cert).is_err() {
        eprintln!(
            "TLS to PostgreSQL not tested: the server has no TLS, or its certificate is not readable here"
        );
        return;
    }
    // verify-full, the CA being the server's own certificate (Debian's is for `localhost`).
    let local = db.url.replacen("@127.0.0.1:", "@localhost:", 1);
    let verified = format!("{local}?sslmode=verify-full&sslrootcert={cert}");
    let dir = tempfile::tempdir().expect("dir");
    let s = TestServer::start_in(dir.path(), on(&verified)).await;
    let op = s
        .images()
        .create(create("tls", "over-tls"))
        .await
        .expect("create over a verified TLS connection")
        .into_inner();
    common::wait_done(&mut s.operations(), &op.id).await;
    let (tls, plain) = db.connections_by_tls();
    assert!(tls > 0 && plain == 0, "TLS {tls}, plain {plain}");
    s.stop().await;

    // The same certificate is not valid for another name: the start fails.
    let wrong_name = format!("{}?sslmode=verify-full&sslrootcert={cert}", db.url);
    let opened = compute_gateway::store::PostgresStore::open(
        &wrong_name,
        compute_gateway::store::PostgresOptions {
            connect_timeout: std::time::Duration::from_secs(1),
            ..Default::default()
        },
    );
    let e = opened.err().expect("the name does not match").to_string();
    assert!(e.contains("certificate not valid for name"), "{e}");

    // sslmode=disable: plain text.
    let plain_url = format!("{}?sslmode=disable", db.url);
    let s = TestServer::start_in(dir.path(), on(&plain_url)).await;
    s.images()
        .get(GetImageRequest {
            image_id: op.id.clone(),
        })
        .await
        .expect_err("an operation id is no image");
    // (The first server's connections, all TLS, may take a moment to leave the list.)
    let (_, plain) = db.connections_by_tls();
    assert!(plain > 0, "no plain-text connection");
    s.stop().await;
}

#[tokio::test]
async fn the_iam_key_commands_work_on_the_database_while_servers_run() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let s = TestServer::start_in(dir.path(), on(&db.url)).await;
    let iam = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_compute-gateway"))
            .arg("iam")
            .args(args)
            .args(["--database-url", &db.url])
            .output()
            .expect("run the binary");
        assert!(
            out.status.success(),
            "iam {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let key: Value = serde_json::from_str(&iam(&["create-key", "--service-account-id", "ajepg"]))
        .expect("the key's JSON");
    let id = key["id"].as_str().expect("key id").to_string();
    assert_eq!(key["service_account_id"], "ajepg", "{key}");
    let listed = iam(&["list-keys"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&format!("{id}\tajepg\t"))),
        "{listed}"
    );
    iam(&["delete-key", &id]);
    assert!(!iam(&["list-keys"]).contains(&id));
    s.stop().await;
}

#[tokio::test]
async fn a_replica_that_starts_leaves_the_others_creates_and_cancel_works_from_any() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = TestServer::start_in(
        dir_a.path(),
        Options {
            create_delay: std::time::Duration::from_millis(1500),
            ..on(&db.url)
        },
    )
    .await;
    let first = a
        .images()
        .create(create("any", "first"))
        .await
        .expect("create")
        .into_inner();
    // A replica starting meanwhile does not finish a create that is another live replica's.
    let b = TestServer::start_in(dir_b.path(), on(&db.url)).await;
    let op = |s: &TestServer, id: &str| {
        let mut ops = s.operations();
        let id = id.to_string();
        async move {
            ops.get(
                compute_gateway::pb::yandex::cloud::operation::GetOperationRequest {
                    operation_id: id,
                },
            )
            .await
            .expect("operation")
            .into_inner()
        }
    };
    assert!(
        !op(&b, &first.id).await.done,
        "finished by a replica that only started"
    );
    // Cancelled on the other replica.
    let cancelled = b
        .operations()
        .cancel(
            compute_gateway::pb::yandex::cloud::operation::CancelOperationRequest {
                operation_id: first.id.clone(),
            },
        )
        .await
        .expect("cancel")
        .into_inner();
    assert!(cancelled.done);
    // A create started after it on the first replica finishes: the first one's timer has
    // fired too, and found it cancelled.
    let second = a
        .images()
        .create(create("any", "second"))
        .await
        .expect("create")
        .into_inner();
    common::wait_done(&mut a.operations(), &second.id).await;
    let after = op(&a, &first.id).await;
    match after.result {
        Some(compute_gateway::pb::yandex::cloud::operation::operation::Result::Error(e)) => {
            assert_eq!(e.code, tonic::Code::Cancelled as i32, "{e:?}")
        }
        other => panic!("the cancelled create ended in {other:?}"),
    }
    let gone = a
        .images()
        .get(GetImageRequest {
            image_id: common::unpack::<
                compute_gateway::pb::yandex::cloud::compute::v1::CreateImageMetadata,
            >(first.metadata.as_ref().expect("metadata"))
            .image_id,
        })
        .await
        .expect_err("the cancelled create's image is gone");
    assert_eq!(gone.code(), tonic::Code::NotFound);
    a.stop().await;
    b.stop().await;
}
