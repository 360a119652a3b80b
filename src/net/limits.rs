//! What one listener's connections may hold: how many there are at once, and how long one may
//! keep a write waiting on a peer that does not read.
//!
//! Each listener has its own cap on open connections ([`ConnOptions::max_connections`]): a
//! flood of idle connections on one port uses up that port's share and never the file
//! descriptors the other port needs. The default shares out the process's descriptor limit
//! ([`fd_limit`], raised to its hard limit first) between two listeners, keeping some back for
//! the store, logs and the backend connection. A connection over the cap is accepted and
//! closed at once, as Envoy's listener connection limit does: the peer hears of it at once
//! instead of waiting in the kernel's backlog.
//!
//! A write that cannot make progress for [`ConnOptions::write_timeout`] (the peer's receive
//! window and the socket buffer are full: a client that asked for a large reply and does not
//! read it) fails with `TimedOut`, which ends the connection and frees what it held.

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// File descriptors kept back from the listeners' default caps: the store, log files, the
/// gateway's backend connection, DNS and the like.
const RESERVED_FDS: u64 = 128;

/// The process's open-file limit, raised once to its hard limit (as nginx and Envoy
/// recommend: the soft default of 1024 is far below what a server needs).
pub fn fd_limit() -> u64 {
    static LIMIT: OnceLock<u64> = OnceLock::new();
    *LIMIT.get_or_init(|| match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    })
}

/// How a listener's connections are bounded.
#[derive(Clone, Debug)]
pub struct ConnOptions {
    /// The listener's name in metrics and logs (`grpc`, `http`).
    pub name: &'static str,
    /// Time for a TLS handshake, if any, and again for the first bytes (see
    /// [`crate::net::incoming`]).
    pub handshake_timeout: Duration,
    /// Most connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Longest a write may wait for the peer to read; past it the connection is closed.
    pub write_timeout: Duration,
}

impl ConnOptions {
    /// The defaults for a listener named `name`: a 10 s handshake, a 30 s write timeout and
    /// [`default_max_connections`].
    pub fn named(name: &'static str) -> Self {
        Self {
            name,
            handshake_timeout: Duration::from_secs(10),
            max_connections: default_max_connections(),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// Half of what [`fd_limit`] leaves after [`RESERVED_FDS`] (so that two listeners together
/// stay under it), between 16 and 10,000.
pub fn default_max_connections() -> usize {
    let share = fd_limit().saturating_sub(RESERVED_FDS) / 2;
    share.clamp(16, 10_000) as usize
}

/// An I/O stream whose writes fail with `TimedOut` once one has waited `timeout` for the peer.
pub(crate) struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    /// Armed while a write is waiting.
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    pub(crate) fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            waiting: None,
        }
    }

    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Passes on a write's outcome; a write that waits starts (or checks) the deadline.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.waiting = None;
            return poll;
        }
        let timeout = self.timeout;
        let waiting = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if waiting.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer read nothing for {timeout:?}"),
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A peer that reads nothing: the writes fill the pipe, then wait, then time out.
    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_reads_times_out() {
        let (near, _far) = tokio::io::duplex(1024);
        let mut conn = WriteDeadline::new(near, Duration::from_secs(30));
        let chunk = [0u8; 256];
        let err = loop {
            if let Err(e) = conn.write(&chunk).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    /// A peer that reads, however slowly, keeps its connection.
    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_within_the_deadline_is_served() {
        use tokio::io::AsyncReadExt;
        let (near, mut far) = tokio::io::duplex(1024);
        let mut conn = WriteDeadline::new(near, Duration::from_secs(30));
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 512];
            while got < 64 * 1024 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                got += far.read(&mut buf).await.expect("read");
            }
            got
        });
        conn.write_all(&[7u8; 64 * 1024])
            .await
            .expect("every write made progress within 30 s");
        assert!(reader.await.expect("reader") >= 64 * 1024);
    }

    #[test]
    fn the_default_cap_leaves_room_under_the_fd_limit() {
        let cap = default_max_connections() as u64;
        assert!(cap >= 16);
        assert!(2 * cap + RESERVED_FDS <= fd_limit().max(2 * 16 + RESERVED_FDS));
    }
}
