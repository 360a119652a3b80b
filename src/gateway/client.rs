//! The gateway's client of the backend: its one HTTP/2 connection ([`Upstream`]), the deadline
//! of each call, and how replies are rendered.

use std::time::Duration;

use crate::net::Upstream;

use super::response::RenderOptions;

/// The gateway's connection to the backend, shared by every request (cheap to clone).
#[derive(Clone)]
pub(crate) struct BackendClient {
    upstream: Upstream,
    timeout: Duration,
    render: RenderOptions,
}

impl BackendClient {
    /// A client over `upstream`; calls time out after `timeout`.
    pub(crate) fn new(upstream: Upstream, timeout: Duration, render: RenderOptions) -> Self {
        Self {
            upstream,
            timeout,
            render,
        }
    }

    /// The connection calls go on.
    pub(crate) fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The deadline of each call.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How replies are rendered.
    pub(crate) fn render_options(&self) -> RenderOptions {
        self.render
    }

    /// A tonic client on the connection. Its own limit on reply size is off: the connection's
    /// ([`crate::net::UpstreamOptions::max_reply_bytes`]) applies, and fails the call with a
    /// typed error instead of a status that would look like the backend's.
    pub(crate) fn grpc(&self) -> tonic::client::Grpc<Upstream> {
        tonic::client::Grpc::with_origin(self.upstream.clone(), self.upstream.origin())
            .max_decoding_message_size(usize::MAX)
    }
}
