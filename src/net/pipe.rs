//! The in-process connection of `serve`: the gateway reaches the backend of its own process
//! over a real gRPC connection (HTTP/2, the same client and server stacks and codecs as over
//! TCP) carried by an in-memory pipe instead of loopback TCP, which spares both ends the
//! kernel's TCP work on every call. Being in memory it is plaintext even when the public
//! listeners use TLS.

use tokio::io::DuplexStream;
use tokio::sync::mpsc;

use super::incoming::{Conn, Incoming};
use super::upstream::{Dial, Dialing, Io};

/// Bytes each direction of an in-process connection buffers.
const PIPE_BYTES: usize = 256 << 10;

/// A dialer whose every dial opens a new pipe, and the connections it opens as the server sees
/// them. The stream ends once the dialer is dropped.
pub(crate) fn pipe() -> (PipeDialer, Incoming) {
    // Unbounded: a dial never waits for the server to take the connection.
    let (dialled, connections) = mpsc::unbounded_channel();
    let connections = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::UnboundedReceiverStream::new(connections),
        Conn::pipe,
    );
    (PipeDialer(dialled), Incoming::from_stream(connections))
}

/// Dials the backend of this process: one pipe per dial, its server end handed to the server.
pub(crate) struct PipeDialer(mpsc::UnboundedSender<DuplexStream>);

impl Dial for PipeDialer {
    fn dial(&self) -> Dialing<'_> {
        let (client, server) = tokio::io::duplex(PIPE_BYTES);
        let sent = self.0.send(server).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "the in-process backend has stopped",
            )
        });
        Box::pin(async move { sent.map(|()| Box::new(client) as Box<dyn Io>) })
    }
}
