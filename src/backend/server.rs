//! The gRPC server: every service of the backend, plus server reflection (v1 and v1alpha) and
//! health, on whatever connections it is given, until shutdown.

use std::time::Duration;

use crate::net::{Incoming, Shutdown};
use crate::pb::yandex::cloud::compute::v1::image_service_server::ImageServiceServer;
use crate::pb::yandex::cloud::endpoint::api_endpoint_service_server::ApiEndpointServiceServer;
use crate::pb::yandex::cloud::operation::operation_service_server::OperationServiceServer;

use super::endpoints::Endpoints;
use super::health;
use super::images::Images;
use super::observe::ObserveLayer;
use super::operations::Operations;
use super::retention;
use super::state::Backend;

/// An HTTP/2 PING after this long without a frame, and this long for its answer, so that a
/// peer that vanished without closing gives its connection back within a minute and a half
/// (grpc-go's server waits 2 h by default; its clients' own keepalive is often shorter).
const KEEP_ALIVE: Duration = Duration::from_secs(60);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Most concurrent streams on one connection, as on the REST port: one connection once held
/// 40,000 (and 364 MB) when there was no limit.
const MAX_CONCURRENT_STREAMS: u32 = 256;

/// Serves every service on the connections of `incoming` until `shutdown`, then lets the calls
/// in flight finish.
pub async fn serve(
    incoming: Incoming,
    backend: Backend,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let call_timeout = backend.config().call_timeout;
    let (health, health_service) = tonic_health::server::health_reporter();
    health::set_all(&health, tonic_health::ServingStatus::Serving).await;
    tokio::spawn(retention::run(
        backend.store().clone(),
        backend.config().retention,
        shutdown.clone(),
    ));
    tokio::spawn(health::follow_store(
        backend.store().clone(),
        backend.config().health,
        health,
        shutdown.clone(),
    ));
    let reflection_v1 = reflection()
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("the embedded descriptor sets are valid");
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEP_ALIVE))
        .http2_keepalive_timeout(Some(KEEP_ALIVE_TIMEOUT))
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .timeout(call_timeout)
        .layer(ObserveLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ImageServiceServer::new(Images(backend.clone())))
        .add_service(OperationServiceServer::new(Operations(backend.clone())))
        .add_service(ApiEndpointServiceServer::new(Endpoints(backend)))
        .serve_with_incoming_shutdown(incoming, shutdown.requested())
        .await
}

/// Server reflection of the services served here: the embedded set and health's.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}
