//! What every server and client of the process shares, and nothing of HTTP routes or gRPC
//! services: the stop signal ([`Shutdown`]); the connections a server serves ([`incoming`],
//! each a [`Conn`], bounded in time before its first request by [`FirstBytes`], and in number
//! and write time by [`ConnOptions`]); serving HTTP on them ([`serve_http`], for both ports); TLS
//! ([`Tls`], [`client_config`]); W3C trace context ([`TraceParent`]); the HTTP/2 client to a backend (`Upstream`, failing with a
//! typed [`UpstreamError`]); and the in-process connection of `serve` (`pipe`).
//!
//! It imports nothing else of the crate but the metric names of `telemetry`: `backend` and
//! `gateway` both build on it, and never on each other.

mod deadline;
mod first_bytes;
mod incoming;
mod limits;
mod pipe;
mod serve;
mod shutdown;
mod tls;
mod trace;
mod upstream;

pub use deadline::{DeadlineLayer, grpc_timeout_value, parse_grpc_timeout};
pub use incoming::{Conn, Incoming, Peer, incoming};
pub use limits::{ConnOptions, default_max_connections, fd_limit};
pub(crate) use pipe::pipe;
pub use serve::{HttpOptions, serve_http};
pub use shutdown::{Shutdown, TriggerOnDrop};
pub(crate) use tls::provider as tls_provider;
pub use tls::{Tls, TlsError, client_builder, client_config, client_roots};
pub use trace::TraceParent;
pub use upstream::{BackendTls, DialError, StreamingCall, UpstreamError, UrlError};
pub(crate) use upstream::{Pool, Upstream, UpstreamOptions};
