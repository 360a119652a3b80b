//! The gRPC backend: `ImageService`, `OperationService` and `ApiEndpointService` over a
//! [`Store`](crate::store::Store), with server reflection (v1 and v1alpha) and
//! `grpc.health.v1.Health`. It knows nothing of HTTP routes; the gateway reaches it over gRPC
//! like any other client.
//!
//! Layout, each file importing only those listed after it: the gRPC server (`server.rs`, with
//! `observe.rs`); one thin file per service (`images.rs` with `access.rs`, `operations.rs`,
//! `endpoints.rs`); the shared state (`state.rs`); the create runner (`runner.rs`); health
//! (`health.rs`); reads and durable writes of the store (`storage.rs`); ids (`ids.rs`); List's
//! filter language (`filter.rs`); paging (`page.rs`); the API's field rules (`validate.rs`).

mod access;
mod auth;
mod endpoints;
mod filter;
mod health;
mod iam_tokens;
mod ids;
mod images;
mod observe;
mod operations;
mod page;
mod retention;
mod runner;
mod server;
mod state;
mod storage;
mod tokens;
mod validate;

pub use auth::RateLimit;
pub use health::HealthProbe;
pub use iam_tokens::{create_key, delete_key, list_keys};
pub use retention::Retention;
pub use server::serve;
pub use state::{AuthConfig, Backend, BackendConfig, MessageLimits};
pub use tokens::{Caller, Subject};

#[cfg(test)]
mod tests;
