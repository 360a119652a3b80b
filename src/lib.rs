//! compute-gateway: the Yandex Cloud Compute `ImageService` and the `OperationService`, served
//! over gRPC and over REST/JSON through a transcoding gateway driven by `google.api.http`.
//!
//! Module map, and who may import whom (arrows run down, never up; no two modules import each
//! other):
//!
//! ```text
//! main.rs ─> serve, gateway, backend, store, net, telemetry
//! serve     one process: backend + gateway over an in-process connection, ordered shutdown
//!   ├─> gateway   the REST/JSON transcoding gateway, a gRPC client of the backend
//!   │     └─> net, json, pb, telemetry
//!   └─> backend   the gRPC services over a store, reflection, health, IAM tokens and access
//!         └─> iam, store, net, json, pb, telemetry
//! iam       authorized keys, the JWT check, roles, permissions, the IAM config ─> store, json, pb
//! store     the Store trait and the embedded durable implementation (redb) ─> pb
//! net       accept loop and connections, FirstBytes, TLS, the HTTP/2 client to a backend,
//!           the in-process pipe, Shutdown ─> nothing of ours
//! json      canonical proto3 JSON for FieldMask, Timestamp and Any ─> pb
//! pb        generated protobuf code and the embedded descriptor set
//! telemetry metric names, the Prometheus recorder, log setup, OTLP span export (a leaf every
//!           layer may use)
//! ```
//!
//! `gateway` never imports `backend` or `store`: it reaches the backend only over gRPC, even
//! inside one process. `backend` never imports `gateway`.

pub mod backend;
pub mod gateway;
pub mod iam;
pub mod json;
pub mod net;
pub mod pb;
pub mod serve;
pub mod store;
pub mod telemetry;
