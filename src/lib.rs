//! compute-gateway: the Yandex Cloud Compute `ImageService` and the `OperationService`, served
//! over gRPC and over REST/JSON through a transcoding gateway driven by `google.api.http`.
//!
//! Module map (arrows of use run down only):
//! - [`pb`]: generated protobuf code and the embedded descriptor set.
//! - [`json`]: canonical proto3 JSON for FieldMask, Timestamp and Any; the message schema table.
//! - [`store`]: the Store trait and the embedded durable implementation (redb).
//! - [`backend`]: the gRPC services over the store, reflection and health.
//! - [`telemetry`]: metric names, the Prometheus recorder, log setup (used by every layer).
//! - [`tls`]: one PEM certificate and key as TLS configs for both listeners.
//! - [`gateway`]: the REST/JSON transcoding gateway (a gRPC client of the backend).

pub mod backend;
mod first_bytes;
pub mod gateway;
pub mod json;
pub mod pb;
pub mod store;
pub mod telemetry;
pub mod tls;
