//! A deadline on a connection's first bytes, until the protocol is known.
//!
//! hyper-util's `auto` builder reads up to the 24-byte HTTP/2 preface to choose between HTTP/1
//! and HTTP/2, and it has no timer while it does (hyperium/hyper#3756). hyper's header-read
//! timeout only starts once HTTP/1 is chosen, and HTTP/2 has none. Without this, a peer that
//! connects and sends nothing, or part of the preface, holds its connection and its task for as
//! long as it likes.
//!
//! [`FirstBytes`] fails a read with `TimedOut` if the deadline passes first. It is disarmed
//! when it can tell that the peer speaks HTTP/1 (a byte that differs from the preface; hyper's
//! header-read timeout takes over from there) or when the preface and the whole first frame,
//! the client's SETTINGS, have arrived (an idle HTTP/2 connection is normal from then on).
//!
//! The gRPC listener speaks HTTP/2 only and has the same gap in its handshake, so it uses this
//! too (grpc-go's server bounds the same stretch with its `ConnectionTimeout`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;

/// An I/O stream whose reads fail once `timeout` has passed and the protocol is not yet known.
pub(crate) struct FirstBytes<S> {
    inner: S,
    /// `None` once disarmed.
    deadline: Option<Pin<Box<Sleep>>>,
    /// The first bytes read, as far as the end of the first HTTP/2 frame header.
    head: [u8; PREFACE.len() + FRAME_HEADER],
    seen: usize,
}

impl<S> FirstBytes<S> {
    /// Watches `inner` for `timeout`.
    pub(crate) fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            head: [0; PREFACE.len() + FRAME_HEADER],
            seen: 0,
        }
    }

    /// The stream it wraps.
    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Takes note of bytes read; disarms the deadline once the protocol is known.
    fn saw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return; // end of stream: the read says so itself
        }
        let before = self.seen;
        let kept = bytes.len().min(self.head.len().saturating_sub(before));
        self.head[before..before + kept].copy_from_slice(&bytes[..kept]);
        self.seen += bytes.len();
        let compared = self.seen.min(PREFACE.len());
        if before < compared && self.head[before..compared] != PREFACE[before..compared] {
            self.deadline = None; // HTTP/1: hyper's header-read timeout applies
            return;
        }
        if self.seen >= self.head.len() {
            let length = u32::from_be_bytes([
                0,
                self.head[PREFACE.len()],
                self.head[PREFACE.len() + 1],
                self.head[PREFACE.len() + 2],
            ]) as usize;
            if self.seen >= self.head.len() + length {
                self.deadline = None; // HTTP/2 with its first frame read
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstBytes<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(deadline) = this.deadline.as_mut() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        let expired = deadline.as_mut().poll(cx).is_ready();
        let start = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.saw(&buf.filled()[start..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if expired => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer sent no request in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstBytes<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// The server end wrapped, and the peer's end.
    fn pair() -> (FirstBytes<DuplexStream>, DuplexStream) {
        let (server, peer) = tokio::io::duplex(1024);
        (FirstBytes::new(server, TIMEOUT), peer)
    }

    /// Reads what the peer sent; the error if the read fails; `None` if it still waits an
    /// hour (of paused time) later.
    async fn read(server: &mut FirstBytes<DuplexStream>) -> Option<io::Result<Vec<u8>>> {
        let mut buf = [0u8; 256];
        let read = server.read(&mut buf);
        match tokio::time::timeout(Duration::from_secs(3600), read).await {
            Ok(read) => Some(read.map(|n| buf[..n].to_vec())),
            Err(_) => None,
        }
    }

    fn timed_out(read: Option<io::Result<Vec<u8>>>) -> bool {
        matches!(read, Some(Err(e)) if e.kind() == io::ErrorKind::TimedOut)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out_at_the_deadline() {
        let (mut server, _peer) = pair();
        let started = tokio::time::Instant::now();
        assert!(timed_out(read(&mut server).await));
        assert_eq!(started.elapsed(), TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn part_of_the_preface_then_silence_times_out() {
        let (mut server, mut peer) = pair();
        peer.write_all(&PREFACE[..10]).await.expect("write");
        assert_eq!(
            read(&mut server).await.expect("read").expect("bytes"),
            PREFACE[..10]
        );
        assert!(timed_out(read(&mut server).await));
    }

    #[tokio::test(start_paused = true)]
    async fn the_preface_without_its_settings_times_out() {
        let (mut server, mut peer) = pair();
        peer.write_all(PREFACE).await.expect("write");
        // A SETTINGS frame header announcing 6 bytes, of which 3 come.
        peer.write_all(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0])
            .await
            .expect("write");
        assert_eq!(
            read(&mut server).await.expect("read").expect("bytes").len(),
            36
        );
        assert!(timed_out(read(&mut server).await));
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_peer_with_its_settings_sent_may_then_idle() {
        let (mut server, mut peer) = pair();
        peer.write_all(PREFACE).await.expect("write");
        peer.write_all(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100])
            .await
            .expect("write");
        assert_eq!(
            read(&mut server).await.expect("read").expect("bytes").len(),
            39
        );
        assert!(
            read(&mut server).await.is_none(),
            "still waiting, with no deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_http1_peer_is_left_to_hypers_own_timeout() {
        let (mut server, mut peer) = pair();
        // "P" could still be the preface; "PO" cannot.
        peer.write_all(b"P").await.expect("write");
        read(&mut server).await.expect("read").expect("bytes");
        peer.write_all(b"OST /x HTTP/1.1\r\n").await.expect("write");
        read(&mut server).await.expect("read").expect("bytes");
        assert!(
            read(&mut server).await.is_none(),
            "still waiting, with no deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_hangs_up_reads_as_the_end_not_a_timeout() {
        let (mut server, peer) = pair();
        drop(peer);
        assert_eq!(read(&mut server).await.expect("read").expect("end"), b"");
    }
}
