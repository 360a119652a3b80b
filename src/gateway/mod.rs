//! The REST/JSON gateway: every `google.api.http` rule of the descriptor pool becomes a route
//! that is transcoded into a gRPC call to the backend, over a real gRPC connection even when the
//! backend runs in the same process. It knows nothing of the backend's code or store.
//!
//! Where the routes come from (`sources.rs`: the compiled-in services, descriptor sets, server
//! reflection in `reflect.rs`, the HTTP config and auto-mapping of `rules.rs`), kept current by
//! `reload.rs`, which swaps the whole route set at once.
//!
//! Flow of one request (each file imports only those listed after it): the listener
//! (`server.rs`, with the operator's endpoints in `admin.rs` and the OpenAPI document in
//! `openapi.rs`) -> the layers of the edge (`edge.rs`: CORS, compression) -> the handler and the
//! state it reads (`handler.rs`, with the header policy of `headers.rs`) -> the route for the
//! method and path (`matcher.rs`, over the table of `routes.rs`, made from the rules of
//! `rules.rs` with the templates of `template.rs`) -> one canonical JSON value from the body,
//! the path and the query (`request.rs`, `query.rs`, `value.rs`) -> the route's typed or dynamic
//! call (`dispatch.rs`; streaming methods in `stream.rs`) over the backend of its service
//! (`client.rs`) -> the reply rendered once (`response.rs`), or one error body (`error.rs`).

mod admin;
mod client;
mod connect;
mod dispatch;
mod dynamic_json;
mod edge;
mod error;
mod grpc_web;
mod handler;
mod headers;
mod matcher;
mod media;
pub mod openapi;
pub mod query;
mod reflect;
mod reload;
pub mod request;
mod response;
mod routes;
mod rules;
mod server;
mod sources;
mod stream;
pub mod template;
mod value;

pub use client::BackendSpec;
pub use dispatch::Rpc;
pub use edge::{CorsError, CorsOrigins, EdgeOptions};
pub use error::GatewayError;
pub use handler::{Gateway, GatewayConfig, Routing, StartError};
pub use headers::HeaderPattern;
pub use matcher::{Match, Matcher};
pub use reload::ReloadError;
pub use response::RenderOptions;
pub use routes::{BodySelector, Route, RouteError, RouteTable};
pub use rules::ConfigError;
pub use server::{ListenerOptions, router, serve};
pub use sources::{AutoMap, Sources};
pub use value::InputOptions;
