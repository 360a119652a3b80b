//! End to end through the REST gateway and the real backend on port 0: the Update cases of the
//! reference page, the JSON shapes (int64 as strings, `Z` timestamps with nanoseconds, `@type`
//! on metadata and response), and headers.

mod common;

use common::{Options, TestServer};
use compute_gateway::pb::yandex::cloud::compute::v1::GetImageRequest;
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Rest {
    base: String,
    http: reqwest::Client,
}

impl Rest {
    fn new(s: &TestServer) -> Self {
        Self {
            base: s.http(),
            http: reqwest::Client::new(),
        }
    }
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(
            method.parse().expect("method"),
            format!("{}{path}", self.base),
        );
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.expect("send");
        let status = resp.status();
        (status, resp.json().await.expect("JSON body"))
    }
    async fn create(&self, body: Value) -> Value {
        let (status, op) = self.send("POST", "/compute/v1/images", Some(body)).await;
        assert_eq!(status, 200, "{op}");
        let id = op["id"].as_str().expect("id").to_string();
        // The create takes the server's create delay (50 ms); a stuck one fails here, it does
        // not hang the suite.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (_, op) = self.send("GET", &format!("/operations/{id}"), None).await;
            if op["done"] == true {
                return op["response"].clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "create {id} not done after 10 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    async fn patch(&self, id: &str, body: Value) -> (StatusCode, Value) {
        self.send("PATCH", &format!("/compute/v1/images/{id}"), Some(body))
            .await
    }
}

fn is_rfc3339_z(s: &str) -> bool {
    let frac = s
        .strip_suffix('Z')
        .and_then(|s| s.split('.').nth(1))
        .map(str::len)
        .unwrap_or(0);
    s.ends_with('Z') && s.as_bytes()[10] == b'T' && [0, 3, 6, 9].contains(&frac)
}

/// The cases through a gateway of its own (the `gateway` command), over TCP to the gRPC port.
#[tokio::test]
async fn update_cases_of_the_reference_page() {
    let s = TestServer::start_with(Options {
        gateway_over_tcp: true,
        ..Options::default()
    })
    .await;
    update_cases(&s).await;
}

/// The same cases with the gateway wired to the backend as `serve` wires it: over an
/// in-memory gRPC connection. The backend's TCP port serves gRPC clients alongside.
#[tokio::test]
async fn update_cases_over_the_in_process_connection() {
    let s = TestServer::start().await;
    update_cases(&s).await;
    // The public gRPC listener works next to the in-process one.
    let err = s
        .images()
        .get(GetImageRequest {
            image_id: "fd8nosuchimage".into(),
        })
        .await
        .expect_err("no such image");
    assert_eq!(err.code(), tonic::Code::NotFound);
    s.stop().await;
}

async fn update_cases(s: &TestServer) {
    let rest = Rest::new(s);
    let img = rest
        .create(json!({"folderId": "b1g", "name": "seed", "description": "d0", "minDiskSize": "8589934592", "labels": {"a": "1", "b": "2"}, "snapshotId": "snap1"}))
        .await;
    assert_eq!(
        img["@type"],
        "type.googleapis.com/yandex.cloud.compute.v1.Image"
    );
    let id = img["id"].as_str().expect("id").to_string();

    // The page's body: a string updateMask, minDiskSize as a string.
    let (status, op) = rest
        .patch(&id, json!({"updateMask": "name,minDiskSize", "name": "renamed", "description": "not masked", "minDiskSize": "10737418240"}))
        .await;
    assert_eq!(status, 200, "{op}");
    assert_eq!(op["done"], true);
    assert_eq!(op["description"], "Update image");
    assert_eq!(
        op["metadata"],
        json!({"@type": "type.googleapis.com/yandex.cloud.compute.v1.UpdateImageMetadata", "imageId": id})
    );
    let r = &op["response"];
    assert_eq!(
        r["@type"],
        "type.googleapis.com/yandex.cloud.compute.v1.Image"
    );
    assert_eq!(
        (
            r["name"].as_str(),
            r["description"].as_str(),
            r["minDiskSize"].as_str()
        ),
        (Some("renamed"), Some("d0"), Some("10737418240"))
    );
    assert!(
        r["size"].is_string() && r["storageSize"].is_string(),
        "int64 render as strings"
    );
    for field in ["createdAt", "modifiedAt"] {
        assert!(
            is_rfc3339_z(op[field].as_str().expect("timestamp")),
            "{field}: {}",
            op[field]
        );
    }
    assert!(is_rfc3339_z(r["createdAt"].as_str().expect("timestamp")));
    assert!(op.get("error").is_none(), "exactly one of error/response");

    // minDiskSize as a number, and in exponent form.
    let (status, op) = rest
        .patch(
            &id,
            json!({"updateMask": "minDiskSize", "minDiskSize": 21474836480i64}),
        )
        .await;
    assert_eq!(
        (status, op["response"]["minDiskSize"].as_str()),
        (StatusCode::OK, Some("21474836480"))
    );
    let (status, op) = rest
        .patch(
            &id,
            json!({"updateMask": "minDiskSize", "minDiskSize": 4.194304e6}),
        )
        .await;
    assert_eq!(
        (status, op["response"]["minDiskSize"].as_str()),
        (StatusCode::OK, Some("4194304"))
    );

    // Masked but absent: reset to the default.
    let (_, op) = rest
        .patch(&id, json!({"updateMask": "description,labels"}))
        .await;
    assert_eq!(op["response"]["description"], "");
    assert_eq!(op["response"]["labels"], json!({}));
    assert_eq!(op["response"]["name"], "renamed");

    // Labels are replaced as a whole.
    rest.patch(
        &id,
        json!({"updateMask": "labels", "labels": {"x": "1", "y": "2"}}),
    )
    .await;
    let (_, op) = rest
        .patch(&id, json!({"updateMask": "labels", "labels": {"z": "3"}}))
        .await;
    assert_eq!(op["response"]["labels"], json!({"z": "3"}));

    // No mask: every updatable field takes the request's value or its default.
    let (_, op) = rest.patch(&id, json!({"description": "all"})).await;
    let r = &op["response"];
    assert_eq!(
        (
            r["name"].as_str(),
            r["description"].as_str(),
            r["minDiskSize"].as_str()
        ),
        (Some(""), Some("all"), Some("0"))
    );
    assert_eq!(r["labels"], json!({}));

    // Proto names work as well as camelCase; null means unset.
    let (status, op) = rest
        .patch(
            &id,
            json!({"update_mask": "name", "name": "proto-names", "labels": null}),
        )
        .await;
    assert_eq!(
        (status, op["response"]["name"].as_str()),
        (StatusCode::OK, Some("proto-names"))
    );

    // The image reads back the same through Get.
    let (_, got) = rest
        .send("GET", &format!("/compute/v1/images/{id}"), None)
        .await;
    assert_eq!(got["name"], "proto-names");
    assert_eq!(got["description"], "all");
}

#[tokio::test]
async fn backend_errors_keep_code_and_details() {
    let s = TestServer::start().await;
    let rest = Rest::new(&s);
    let img = rest
        .create(json!({"folderId": "b1g", "name": "e", "diskId": "d"}))
        .await;
    let id = img["id"].as_str().expect("id");
    let (status, err) = rest.patch(id, json!({"updateMask": "family"})).await;
    assert_eq!(status, 400);
    assert_eq!(err["code"], 3);
    assert!(err["message"].as_str().expect("message").contains("family"));
    assert_eq!(
        err["details"][0]["@type"],
        "type.googleapis.com/google.rpc.BadRequest"
    );
    assert_eq!(
        err["details"][0]["fieldViolations"][0]["field"],
        "update_mask"
    );
    let (status, err) = rest
        .send("GET", "/compute/v1/images/fd8missing", None)
        .await;
    assert_eq!(
        (status, err["code"].as_i64()),
        (StatusCode::NOT_FOUND, Some(5))
    );
    let (status, err) = rest
        .send("GET", "/operations/epdnothere:cancel", None)
        .await;
    assert_eq!(
        (status, err["code"].as_i64()),
        (StatusCode::NOT_FOUND, Some(5))
    );
}

#[tokio::test]
async fn request_ids_and_idempotency_key_travel_through() {
    let s = TestServer::start().await;
    let rest = Rest::new(&s);
    let resp = rest
        .http
        .get(format!("{}/compute/v1/images?folderId=b1g", rest.base))
        .header("X-Request-Id", "mine-1")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.headers()["x-request-id"], "mine-1");
    let resp = rest
        .http
        .get(format!("{}/nowhere", rest.base))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.headers()["x-request-id"].len(),
        36,
        "a fresh UUID when the client sent none"
    );

    let img = rest
        .create(json!({"folderId": "b1g", "name": "idem", "diskId": "d"}))
        .await;
    let url = format!(
        "{}/compute/v1/images/{}",
        rest.base,
        img["id"].as_str().expect("id")
    );
    let send = |desc: &str| {
        rest.http
            .patch(&url)
            .header("Idempotency-Key", "key-1")
            .body(json!({"updateMask": "description", "description": desc}).to_string())
            .send()
    };
    let first: Value = send("one").await.expect("send").json().await.expect("json");
    let retry: Value = send("one").await.expect("send").json().await.expect("json");
    assert_eq!(first, retry, "the retry returns the original Operation");
    let conflict = send("two").await.expect("send");
    assert_eq!(conflict.status(), 400);
    let body: Value = conflict.json().await.expect("json");
    assert_eq!(body["code"], 9, "FAILED_PRECONDITION");
}
