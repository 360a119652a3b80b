//! The gRPC server: every service of the backend, plus server reflection (v1 and v1alpha) and
//! health, on whatever connections it is given, until shutdown. Served over HTTP/2 by the
//! shared connection loop of [`crate::net::serve_http`], which closes idle connections (tonic's
//! own `Server` has no idle timeout); each call is bounded by [`DeadlineLayer`].

use std::time::Duration;

use tonic::codec::CompressionEncoding;
use tonic::service::{RecoverErrorLayer, Routes};
use tonic::transport::server::Connected as _;
use tower::ServiceBuilder;

use crate::net::{DeadlineLayer, HttpOptions, Incoming, Shutdown, serve_http};
use crate::pb::yandex::cloud::compute::v1::image_service_server::ImageServiceServer;
use crate::pb::yandex::cloud::endpoint::api_endpoint_service_server::ApiEndpointServiceServer;
use crate::pb::yandex::cloud::iam::v1::iam_token_service_server::IamTokenServiceServer;
use crate::pb::yandex::cloud::operation::operation_service_server::OperationServiceServer;

use super::auth::AuthLayer;
use super::endpoints::Endpoints;
use super::health;
use super::iam_tokens::IamTokens;
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
/// The largest header block a client may send (tonic's default is 16 KiB).
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// How long shutdown waits for the calls in flight.
const DRAIN: Duration = Duration::from_secs(10);

/// A service that takes requests compressed with gzip or zstd (the `grpc-encoding` of gRPC's
/// message compression), compresses its replies with one of them when the client's
/// `grpc-accept-encoding` lists it, and keeps to the message size limits.
macro_rules! configured {
    ($server:expr, $limits:expr) => {
        $server
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size($limits.max_recv_bytes)
            .max_encoding_message_size($limits.max_send_bytes)
    };
}

/// Serves every service on the connections of `incoming` until `shutdown`, then lets the calls
/// in flight finish.
pub async fn serve(incoming: Incoming, backend: Backend, shutdown: Shutdown) {
    let call_timeout = backend.config().call_timeout;
    let idle_timeout = backend.config().idle_timeout;
    let limits = backend.config().messages;
    let spans = backend.config().spans.clone();
    if backend.access().limiter.is_some() {
        tokio::spawn(forget_idle_callers(backend.clone(), shutdown.clone()));
    }
    let (health, health_service) = tonic_health::server::health_reporter();
    health::set_all(&health, tonic_health::ServingStatus::Serving).await;
    tokio::spawn(backend.runner().clone().take_over(shutdown.clone()));
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
    let routes = Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(configured!(
            ImageServiceServer::new(Images(backend.clone())),
            limits
        ))
        .add_service(configured!(
            OperationServiceServer::new(Operations(backend.clone())),
            limits
        ))
        .add_service(configured!(
            IamTokenServiceServer::new(IamTokens(backend.clone())),
            limits
        ))
        .add_service(configured!(
            ApiEndpointServiceServer::new(Endpoints(backend.clone())),
            limits
        ))
        .prepare();
    let service = ServiceBuilder::new()
        .layer(RecoverErrorLayer::new())
        .layer(ObserveLayer { spans })
        .layer(DeadlineLayer::new(call_timeout))
        .layer(AuthLayer(backend.access().clone()))
        .service(routes);
    let options = HttpOptions {
        http2_only: true,
        header_read_timeout: Duration::from_secs(10),
        max_concurrent_streams: MAX_CONCURRENT_STREAMS,
        max_header_bytes: MAX_HEADER_BYTES,
        keep_alive: (KEEP_ALIVE, KEEP_ALIVE_TIMEOUT),
        idle_timeout,
        drain: DRAIN,
    };
    // Each request carries its connection's addresses, as tonic's `Server` gives them
    // (`Request::remote_addr`).
    let make_service = |conn: &crate::net::Conn| {
        let info = conn.connect_info();
        ServiceBuilder::new()
            .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(info.clone());
                req.map(tonic::body::Body::new)
            })
            .service(service.clone())
    };
    serve_http(incoming, make_service, options, shutdown).await;
}

/// Server reflection of the services served here: the embedded set and health's.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Every minute, the rate limiter forgets the callers that are back to a full burst.
async fn forget_idle_callers(backend: Backend, shutdown: Shutdown) {
    let stop = shutdown.requested();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        if let Some(limiter) = &backend.access().limiter {
            limiter.forget_idle();
        }
    }
}
