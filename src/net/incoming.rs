//! The connections a server serves: one accept loop for every listener, and one stream of
//! connections ([`Incoming`]) that both servers consume, whatever the connections run on
//! (plain TCP, TLS, or the in-process pipe of `serve`).
//!
//! Each TCP connection is bounded in time before its first request: its TLS handshake, if any,
//! and then its first bytes ([`FirstBytes`]) each get `handshake_timeout`. Handshakes run in
//! tasks of their own, so a slow one never holds up the accept loop. A listener holds at most
//! `max_connections`, and a write that waits too long on its peer ends its connection (see
//! `limits.rs`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::first_bytes::FirstBytes;
use super::limits::{ConnOptions, WriteDeadline};
use super::shutdown::Shutdown;
use super::tls::handshake;

/// Connections accepted but not yet taken by the server: the accept loop waits beyond this.
const BACKLOG: usize = 64;
/// How long the accept loop rests after a failed accept (out of file descriptors and the like)
/// instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// One accepted connection: plain TCP, TLS over TCP (handshake done), or the in-process pipe
/// of `serve` (`pipe.rs`, the gateway's own connection). A TCP connection holds its place
/// under its listener's cap until it is dropped.
pub struct Conn {
    transport: Transport,
    _slot: Option<Slot>,
}

enum Transport {
    Tcp(WriteDeadline<FirstBytes<TcpStream>>),
    Tls(Box<WriteDeadline<FirstBytes<TlsStream<TcpStream>>>>),
    Pipe(DuplexStream),
}

/// A connection's place under its listener's cap, counted in `net_connections_open`.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: metrics::Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

impl Conn {
    pub(super) fn pipe(stream: DuplexStream) -> Self {
        Self {
            transport: Transport::Pipe(stream),
            _slot: None,
        }
    }

    fn tcp(transport: Transport, slot: Slot) -> Self {
        Self {
            transport,
            _slot: Some(slot),
        }
    }

    /// The peer's address (none for the in-process pipe).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.connect_info().remote_addr
    }

    /// Who is at the other end, as each request on the connection carries it.
    pub fn peer(&self) -> Peer {
        Peer {
            remote: self.remote_addr(),
            tls: matches!(self.transport, Transport::Tls(_)),
        }
    }

    fn io(self: Pin<&mut Self>) -> Pin<&mut (dyn Io + '_)> {
        match &mut self.get_mut().transport {
            Transport::Tcp(s) => Pin::new(s as &mut dyn Io),
            Transport::Tls(s) => Pin::new(&mut **s as &mut dyn Io),
            Transport::Pipe(s) => Pin::new(s as &mut dyn Io),
        }
    }
}

/// The other end of a connection, in the extensions of every request that came over it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Peer {
    /// The client's address (none for the in-process pipe).
    pub remote: Option<SocketAddr>,
    /// Whether the client connected over TLS.
    pub tls: bool,
}

/// What a connection is read and written through.
trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match &self.transport {
            Transport::Tcp(s) => s.get_ref().get_ref().connect_info(),
            Transport::Tls(s) => s.get_ref().get_ref().get_ref().0.connect_info(),
            Transport::Pipe(_) => TcpConnectInfo {
                local_addr: None,
                remote_addr: None,
            },
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Tcp(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
            Transport::Pipe(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}

/// A stream of connections to serve; it ends when its source stops (shutdown, or the pipe's
/// dialer is gone).
pub struct Incoming(Pin<Box<dyn Stream<Item = io::Result<Conn>> + Send>>);

impl Incoming {
    /// The connections of `stream`, as they come.
    pub(super) fn from_stream(stream: impl Stream<Item = Conn> + Send + 'static) -> Self {
        Self(Box::pin(tokio_stream::StreamExt::map(stream, Ok)))
    }

    /// The connections of `self` and `other`, as they come from either.
    pub fn merge(self, other: Incoming) -> Incoming {
        Self(Box::pin(tokio_stream::StreamExt::merge(self.0, other.0)))
    }
}

impl Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.as_mut().poll_next(cx)
    }
}

/// The connections made on `listener` until `shutdown`, over TLS when `tls` is set, bounded
/// as `options` says: each has its handshake timeout for its handshake and again for its first
/// bytes, and at most `max_connections` are open at once. The listener is closed once shutdown
/// begins (or the stream is dropped), so new connections are refused from then on.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    options: ConnOptions,
    shutdown: Shutdown,
) -> Incoming {
    let (accepted, receiver) = mpsc::channel(BACKLOG);
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let open = metrics::gauge!(crate::telemetry::CONNECTIONS_OPEN, "listener" => options.name);
    let refused =
        metrics::counter!(crate::telemetry::CONNECTIONS_REFUSED, "listener" => options.name);
    tokio::spawn(async move {
        let stop = shutdown.requested();
        tokio::pin!(stop);
        let mut full = false;
        loop {
            let tcp = tokio::select! {
                tcp = accept(&listener) => tcp,
                () = &mut stop => break,
                () = accepted.closed() => break,
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                // Over the cap: closed at once. Logged when the listener fills, not per peer.
                refused.increment(1);
                if !full {
                    tracing::warn!(
                        listener = options.name,
                        max_connections = options.max_connections,
                        "connection limit reached; closing new connections until some end"
                    );
                }
                full = true;
                continue;
            };
            full = false;
            open.increment(1.0);
            let slot = Slot {
                _permit: permit,
                open: open.clone(),
            };
            let (handshake_timeout, write_timeout) =
                (options.handshake_timeout, options.write_timeout);
            match &acceptor {
                None => {
                    let io =
                        WriteDeadline::new(FirstBytes::new(tcp, handshake_timeout), write_timeout);
                    if accepted
                        .send(Conn::tcp(Transport::Tcp(io), slot))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Some(acceptor) => {
                    let (acceptor, accepted) = (acceptor.clone(), accepted.clone());
                    tokio::spawn(async move {
                        // A failed or slow handshake just drops the connection.
                        if let Some(tls) = handshake(&acceptor, tcp, handshake_timeout).await {
                            let io = Box::new(WriteDeadline::new(tls, write_timeout));
                            let _ = accepted.send(Conn::tcp(Transport::Tls(io), slot)).await;
                        }
                    });
                }
            }
        }
    });
    Incoming::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver))
}

/// The next connection on `listener`, with Nagle's algorithm off (small replies must not wait
/// for it). A failed accept is logged and retried after [`ACCEPT_BACKOFF`].
async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return stream;
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn connections_come_through_and_shutdown_closes_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = Shutdown::new();
        let mut conns = incoming(listener, None, ConnOptions::named("test"), shutdown.clone());
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let mut conn = conns.next().await.expect("a connection").expect("ok");
        assert_eq!(
            conn.remote_addr(),
            Some(client.local_addr().expect("client address"))
        );
        client.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ping");
        shutdown.trigger();
        assert!(conns.next().await.is_none(), "the stream ends at shutdown");
        // The listener is gone: new connections are refused.
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
