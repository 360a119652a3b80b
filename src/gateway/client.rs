//! The gateway's client of its backends: their HTTP/2 connections ([`Pool`]: one backend, or
//! several that calls are spread over), the message compression on them, and how replies are
//! rendered.

use tonic::codec::CompressionEncoding;

use crate::net::Pool;

use super::response::RenderOptions;

/// The gateway's connection to the backend, shared by every request (cheap to clone).
#[derive(Clone)]
pub(crate) struct BackendClient {
    upstream: Pool,
    render: RenderOptions,
    compression: Option<CompressionEncoding>,
}

impl BackendClient {
    /// A client over `upstream`, whose messages are compressed with `compression`, if any.
    pub(crate) fn new(
        upstream: Pool,
        render: RenderOptions,
        compression: Option<CompressionEncoding>,
    ) -> Self {
        Self {
            upstream,
            render,
            compression,
        }
    }

    /// The backends calls go to.
    pub(crate) fn upstream(&self) -> &Pool {
        &self.upstream
    }

    /// How replies are rendered.
    pub(crate) fn render_options(&self) -> RenderOptions {
        self.render
    }

    /// A tonic client on the connection. Its own limit on reply size is off: the connection's
    /// ([`crate::net::UpstreamOptions::max_reply_bytes`]) applies, and fails the call with a
    /// typed error instead of a status that would look like the backend's.
    ///
    /// With compression, requests are compressed and compressed replies are asked for
    /// (`grpc-accept-encoding`).
    pub(crate) fn grpc(&self) -> tonic::client::Grpc<Pool> {
        let grpc = tonic::client::Grpc::with_origin(self.upstream.clone(), self.upstream.origin())
            .max_decoding_message_size(usize::MAX);
        match self.compression {
            Some(encoding) => grpc.send_compressed(encoding).accept_compressed(encoding),
            None => grpc,
        }
    }
}
