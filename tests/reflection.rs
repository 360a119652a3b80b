//! Server reflection v1 and v1alpha and the health service, over a real socket, as grpcurl
//! uses them.

mod common;

use common::TestServer;
use prost::Message;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_reflection::pb::{v1, v1alpha};

const SERVICES: [&str; 3] = [
    "yandex.cloud.compute.v1.ImageService",
    "yandex.cloud.operation.OperationService",
    "grpc.health.v1.Health",
];

#[tokio::test]
async fn v1_lists_services_and_serves_descriptors_with_http_options() {
    use v1::server_reflection_client::ServerReflectionClient;
    use v1::server_reflection_request::MessageRequest;
    use v1::server_reflection_response::MessageResponse;
    let s = TestServer::start().await;
    let mut client = ServerReflectionClient::new(s.channel());
    let ask = |m: MessageRequest| v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let requests = vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(
            "yandex.cloud.compute.v1.ImageService".into(),
        )),
    ];
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("stream")
        .into_inner();

    let Some(MessageResponse::ListServicesResponse(list)) = stream
        .message()
        .await
        .expect("msg")
        .expect("some")
        .message_response
    else {
        panic!("list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in SERVICES {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    let Some(MessageResponse::FileDescriptorResponse(files)) = stream
        .message()
        .await
        .expect("msg")
        .expect("some")
        .message_response
    else {
        panic!("files")
    };
    let file = files
        .file_descriptor_proto
        .iter()
        .map(|b| {
            (
                prost_types::FileDescriptorProto::decode(b.as_slice()).expect("decodes"),
                b,
            )
        })
        .find(|(f, _)| f.name() == "yandex/cloud/compute/v1/image_service.proto")
        .expect("image_service.proto");
    assert!(file.0.service.iter().any(|s| s.name() == "ImageService"));
    // The raw bytes still carry the (google.api.http) option values, which prost_types would drop.
    let raw = String::from_utf8_lossy(file.1);
    assert!(
        raw.contains("/compute/v1/images/{image_id}"),
        "google.api.http options were stripped"
    );
    assert!(
        raw.contains("UpdateImageMetadata"),
        "yandex.cloud.api.operation options were stripped"
    );
}

#[tokio::test]
async fn v1alpha_lists_services_too() {
    use v1alpha::server_reflection_client::ServerReflectionClient;
    use v1alpha::server_reflection_request::MessageRequest;
    use v1alpha::server_reflection_response::MessageResponse;
    let s = TestServer::start().await;
    let mut client = ServerReflectionClient::new(s.channel());
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("stream")
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = stream
        .message()
        .await
        .expect("msg")
        .expect("some")
        .message_response
    else {
        panic!("list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in SERVICES {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
}

#[tokio::test]
async fn health_reports_serving() {
    let s = TestServer::start().await;
    let mut health = HealthClient::new(s.channel());
    for service in [
        "",
        "yandex.cloud.compute.v1.ImageService",
        "yandex.cloud.operation.OperationService",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("check")
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
}
