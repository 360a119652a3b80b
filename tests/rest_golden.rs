//! Golden transcoding: for every RPC, a REST request goes through the gateway to a recording
//! gRPC backend; the test checks the exact gRPC method and request message the backend
//! received, and the exact JSON the client got back for the backend's canned reply.
//! Cases live in `tests/fixtures/transcoding.json`; messages are written there as proto3 JSON
//! with `@type`, so a fixture is readable and still exact (it is decoded to bytes through the
//! Any registry before comparing).

mod common;

use std::sync::Arc;

use compute_gateway::gateway::{Gateway, GatewayConfig, router};
use compute_gateway::json::Any;
use http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

fn any_bytes(json: &Value) -> Vec<u8> {
    let any: Any = serde_json::from_value(json.clone())
        .unwrap_or_else(|e| panic!("fixture message {json}: {e}"));
    any.value
}

#[tokio::test]
async fn every_rpc_transcodes_exactly_as_the_fixtures_say() {
    golden(GatewayConfig::default()).await;
}

/// The compiled-in services transcoded from their descriptors alone (`--transcode-dynamically`,
/// as a service loaded at run time is): the same fixtures hold, and every reply is the same
/// bytes as the typed path's.
#[tokio::test]
async fn the_dynamic_path_transcodes_every_rpc_byte_for_byte_alike() {
    let typed = golden(GatewayConfig::default()).await;
    let dynamic = golden(GatewayConfig {
        sources: compute_gateway::gateway::Sources {
            all_dynamic: true,
            ..Default::default()
        },
        ..GatewayConfig::default()
    })
    .await;
    assert_eq!(typed.len(), dynamic.len());
    for ((name, typed), (_, dynamic)) in typed.iter().zip(&dynamic) {
        assert_eq!(
            String::from_utf8_lossy(typed),
            String::from_utf8_lossy(dynamic),
            "{name}"
        );
    }
}

/// Runs every golden case through a gateway made with `config`; the reply bytes of each.
async fn golden(config: GatewayConfig) -> Vec<(String, Vec<u8>)> {
    let mut replies = Vec::new();
    let fixtures: Value =
        serde_json::from_str(include_str!("fixtures/transcoding.json")).expect("fixture JSON");
    let cases = fixtures.as_array().expect("a list of cases");
    let mut covered = std::collections::BTreeSet::new();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let (url, seen) = common::recording_backend(any_bytes(&case["backend_reply"])).await;
        let gw = Arc::new(Gateway::new(&url, config.clone()).expect("gateway"));
        let http = &case["http"];
        let mut req = Request::builder()
            .method(http["method"].as_str().expect("method"))
            .uri(http["path"].as_str().expect("path"));
        for (k, v) in http["headers"].as_object().into_iter().flatten() {
            req = req.header(k, v.as_str().expect("header value"));
        }
        let body = http.get("body").map(|b| b.to_string()).unwrap_or_default();
        let resp = router(gw)
            .oneshot(req.body(axum::body::Body::from(body)).expect("request"))
            .await
            .expect("response");
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        replies.push((name.to_string(), bytes.to_vec()));
        let got: Value = serde_json::from_slice(&bytes).expect("JSON reply");
        assert_eq!(status, 200, "{name}: {got}");

        let rec = std::mem::take(&mut *seen.lock().expect("lock"));
        let grpc = &case["grpc"];
        assert_eq!(
            rec.path,
            grpc["method"].as_str().expect("method"),
            "{name}: gRPC method"
        );
        let want = grpc["request"].clone();
        let got_request = serde_json::to_value(Any {
            type_url: want["@type"].as_str().expect("@type").into(),
            value: rec.message.clone(),
        })
        .expect("renders");
        assert_eq!(
            got_request, want,
            "{name}: the request the backend received"
        );
        assert_eq!(rec.message, any_bytes(&want), "{name}: request bytes");
        for (k, v) in grpc["metadata"].as_object().into_iter().flatten() {
            assert!(
                rec.metadata
                    .contains(&(k.clone(), v.as_str().expect("value").into())),
                "{name}: metadata {k} missing from {:?}",
                rec.metadata
            );
        }
        assert_eq!(got, case["response"], "{name}: JSON reply");
        covered.insert(rec.path);
    }
    // Every unary method of every service in proto/.
    for method in compute_gateway::pb::descriptor_pool()
        .services()
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .filter(|m| !m.is_client_streaming() && !m.is_server_streaming())
    {
        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        if path.contains("ApiEndpointService") {
            continue; // discovery for SDKs; its REST form is not part of the Compute API reference
        }
        assert!(covered.contains(&path), "no golden case for {path}");
    }
    replies
}
